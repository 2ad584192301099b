// The Jordan-net kernels: h_t = tanh(x_t W_x + b + y_{t-1} W_yh), y_t = tanh(h_t W_y + b_y)
// (jaxrnn/cells/jordan.py). Shared parts: common.h.

#include "common.h"

// Operand order of each handler, defined here once (see JAXRNN_KERNEL in ffi_glue.h).
#define JAXRNN_JORDAN_FORWARD(ARG, RET, ATTR)                                               \
  ARG(F32, x) ARG(F32, w_x) ARG(F32, bias) ARG(F32, w_yh) ARG(F32, w_y) ARG(F32, b_y)       \
  ARG(F32, y0) ARG(S32, lengths) RET(F32, ys) RET(F32, hs) ATTR(bool, masked)               \
  ATTR(bool, training)
#define JAXRNN_JORDAN_BACKWARD(ARG, RET, ATTR)                                              \
  ARG(F32, w_yh) ARG(F32, w_y) ARG(F32, hs) ARG(F32, ys) ARG(F32, d_ys) ARG(S32, lengths)   \
  RET(F32, dz1) RET(F32, dz2) RET(F32, dy0) ATTR(bool, masked)

namespace {

// h_t = tanh(x_t W_x + b + y_{t-1} U), y_t = tanh(h_t V + b_y): the recurrence runs through the
// readout, so each step is two dependent products, split between threads as two phases (units
// of H, then units of O) or, with enough rows and weights that fit every core's L2, by rows with
// no barrier at all (as `drive` does for one product).
constexpr int64_t kJordanRowSplitMaxWeightBytes = 768 << 10;

// fn(p, b0, b1, n0, n1): phase p on rows [b0, b1) and units [n0, n1) of H (p % 2 == h_parity)
// or of O (otherwise).
template <class Fn>
void drive_two(ffi::ThreadPool& pool, const Ticket& ticket, int nphases, int h_parity, int B,
               int H, int O, Fn fn) {
  auto width = [&](int p) { return p % 2 == h_parity ? H : O; };
  const int nthreads = ticket.plan.threads;
  if (nthreads > 1 && ticket.plan.rows) {
    run_row_groups(pool, nthreads, nphases, [&](int g, int p0, int p1) {
      const int b0 = (int)((int64_t)B * g / nthreads), b1 = (int)((int64_t)B * (g + 1) / nthreads);
      for (int p = p0; p < p1; ++p) fn(p, b0, b1, 0, width(p));
    });
  } else {
    const int n = std::max(1, std::min(nthreads, std::min(H / 16, O / 16)));
    const Chunks ch_h = make_chunks(H, n), ch_o = make_chunks(O, n);
    run_phases(n > 1 ? &pool : nullptr, nphases, n, [&](int p, int c) {
      const Chunks& ch = p % 2 == h_parity ? ch_h : ch_o;
      fn(p, 0, B, ch.start[c], ch.start[c + 1]);
    });
  }
  end_of_call(ticket);
}

// Outputs: ys (T, B, O), the carries (frozen past a row's length); in training also every h_t.
JAXRNN_KERNEL(JordanForward, JAXRNN_JORDAN_FORWARD) {
  Shapes s("jaxrnn_jordan_forward", "T, B, F from x; H from w_x; O from y0");
  const int T = (int)s.dim(x, "x", 3, 0), B = (int)s.dim(x, "x", 3, 1), F = (int)s.dim(x, "x", 3, 2);
  const int H = (int)s.dim(w_x, "w_x", 2, 1), O = (int)s.dim(y0, "y0", 2, 1);
  JAXRNN_EXPECT(s, w_x, F, H);
  JAXRNN_EXPECT(s, bias, H);
  JAXRNN_EXPECT(s, w_yh, O, H);
  JAXRNN_EXPECT(s, w_y, H, O);
  JAXRNN_EXPECT(s, b_y, O);
  JAXRNN_EXPECT(s, y0, B, O);
  if (masked) JAXRNN_EXPECT(s, lengths, B);
  JAXRNN_EXPECT(s, ys, T, B, O);
  if (training) JAXRNN_EXPECT(s, hs, T, B, H);
  if (!s.ok()) return s.error();
  const float* X = x.typed_data();
  const int32_t* lens = masked ? lengths.typed_data() : nullptr;
  float* YS = ys->typed_data();
  float* HSV = training ? hs->typed_data() : nullptr;
  std::vector<float> hbuf(training ? 0 : (size_t)B * H), zo((size_t)B * O);
  const int64_t wbytes = (int64_t)(F * H + 2 * O * H) * 4;
  const Ticket plan = plan_call(pool, jaxrnn_tuner::kJordanForward, training + 2 * masked, T, B,
                                H, F, (int64_t)B * (F + O + O) * H, 2 * T, wbytes,
                                kJordanRowSplitMaxWeightBytes);

  drive_two(pool, plan, 2 * T, 0, B, H, O, [&](int p, int b0, int b1, int n0, int n1) {
    const int t = p / 2, rows = b1 - b0;
    const float* y_prev = t ? YS + (size_t)(t - 1) * B * O : y0.typed_data();
    float* h_t = HSV ? HSV + (size_t)t * B * H : hbuf.data();
    if (p % 2 == 0) {  // h_t on units [n0, n1)
      float* hr = h_t + (size_t)b0 * H;
      gemm_cols(rows, F, X + ((size_t)t * B + b0) * F, F, w_x.typed_data(), H, bias.typed_data(), 0,
                hr, H, n0, n1);
      gemm_cols(rows, O, y_prev + (size_t)b0 * O, O, w_yh.typed_data(), H, hr, H, hr, H, n0, n1);
      for (int b = 0; b < rows; ++b) {
        float* hb = hr + (size_t)b * H;
#pragma omp simd
        for (int j = n0; j < n1; ++j) hb[j] = tanhf_(hb[j]);
      }
      return;
    }
    // y_t on units [n0, n1)
    float* zr = zo.data() + (size_t)b0 * O;
    gemm_cols(rows, H, h_t + (size_t)b0 * H, H, w_y.typed_data(), O, b_y.typed_data(), 0, zr, O, n0, n1);
    for (int b = b0; b < b1; ++b) {
      const float* zb = zo.data() + (size_t)b * O;
      const float* yp = y_prev + (size_t)b * O;
      float* yb = YS + ((size_t)t * B + b) * O;
      if (!step_valid(lens, t, b)) {
        for (int j = n0; j < n1; ++j) yb[j] = yp[j];
        continue;
      }
#pragma omp simd
      for (int j = n0; j < n1; ++j) yb[j] = tanhf_(zb[j]);
    }
  });
  return ffi::Error::Success();
}

// The reverse pass. gy, the cotangent of y_t, is d_ys[t] plus what step t+1 sends back (dz1 U^T,
// or its own gy where that step was padding). Phase 0 prepares step T-1; then per step, units
// of H: dz1_t = (dz2_t V^T) (1 - h_t^2); units of O: the cotangent sent to y_{t-1}, and from it
// dz2_{t-1} (or, after step 0, d y0). Padded steps have dz1 = dz2 = 0.
JAXRNN_KERNEL(JordanBackward, JAXRNN_JORDAN_BACKWARD) {
  Shapes s("jaxrnn_jordan_backward", "T, B, H from hs; O from ys");
  const int T = (int)s.dim(hs, "hs", 3, 0), B = (int)s.dim(hs, "hs", 3, 1), H = (int)s.dim(hs, "hs", 3, 2);
  const int O = (int)s.dim(ys, "ys", 3, 2);
  JAXRNN_EXPECT(s, w_yh, O, H);
  JAXRNN_EXPECT(s, w_y, H, O);
  JAXRNN_EXPECT(s, ys, T, B, O);
  JAXRNN_EXPECT(s, d_ys, T, B, O);
  if (masked) JAXRNN_EXPECT(s, lengths, B);
  JAXRNN_EXPECT(s, dz1, T, B, H);
  JAXRNN_EXPECT(s, dz2, T, B, O);
  JAXRNN_EXPECT(s, dy0, B, O);
  if (!s.ok()) return s.error();
  if (T == 0) {  // nothing ran: y0 reached no output (phase 0 below would read step -1)
    std::memset(dy0->typed_data(), 0, sizeof(float) * B * O);
    return ffi::Error::Success();
  }
  const std::vector<float> VT = transpose(w_y.typed_data(), H, O);   // (O, H)
  const std::vector<float> UT = transpose(w_yh.typed_data(), O, H);  // (H, O)
  const float* HS = hs.typed_data();
  const float* Y = ys.typed_data();
  const float* DY = d_ys.typed_data();
  const int32_t* lens = masked ? lengths.typed_data() : nullptr;
  float* DZ1 = dz1->typed_data();
  float* DZ2 = dz2->typed_data();
  float* DY0 = dy0->typed_data();
  std::vector<float> gy((size_t)B * O), back((size_t)B * O);
  const int64_t wbytes = (int64_t)2 * O * H * 4;
  const Ticket plan = plan_call(pool, jaxrnn_tuner::kJordanBackward, 2 * masked, T, B, H, O,
                                (int64_t)B * 2 * O * H, 2 * T + 1, wbytes,
                                kJordanRowSplitMaxWeightBytes);

  // gy_t = d_ys[t] + sent; dz2_t from it (rows b, units [n0, n1)).
  auto start_step = [&](int t, int b, const float* sent, int n0, int n1) {
    const float* dyb = DY + ((size_t)t * B + b) * O;
    const float* yb = Y + ((size_t)t * B + b) * O;
    float* gb = gy.data() + (size_t)b * O;
    float* dz = DZ2 + ((size_t)t * B + b) * O;
    const bool valid = step_valid(lens, t, b);
#pragma omp simd
    for (int j = n0; j < n1; ++j) {
      const float g = dyb[j] + (sent ? sent[j] : 0.f);
      gb[j] = g;
      dz[j] = valid ? g * (1.f - yb[j] * yb[j]) : 0.f;
    }
  };

  drive_two(pool, plan, 2 * T + 1, 1, B, H, O, [&](int p, int b0, int b1, int n0, int n1) {
    const int rows = b1 - b0;
    if (p == 0) {
      for (int b = b0; b < b1; ++b) start_step(T - 1, b, nullptr, n0, n1);
      return;
    }
    const int t = T - 1 - (p - 1) / 2;
    if (p % 2 == 1) {  // dz1_t on units [n0, n1) of H
      float* dz1t = DZ1 + ((size_t)t * B + b0) * H;
      gemm_cols(rows, O, DZ2 + ((size_t)t * B + b0) * O, O, VT.data(), H, nullptr, 0, dz1t, H, n0, n1);
      for (int b = 0; b < rows; ++b) {
        float* db = dz1t + (size_t)b * H;
        const float* hb = HS + ((size_t)t * B + b0 + b) * H;
#pragma omp simd
        for (int j = n0; j < n1; ++j) db[j] *= 1.f - hb[j] * hb[j];
      }
      return;
    }
    // units [n0, n1) of O: what step t sends to y_{t-1}
    float* br = back.data() + (size_t)b0 * O;
    gemm_cols(rows, H, DZ1 + ((size_t)t * B + b0) * H, H, UT.data(), O, nullptr, 0, br, O, n0, n1);
    for (int b = b0; b < b1; ++b) {
      float* sent = back.data() + (size_t)b * O;
      if (!step_valid(lens, t, b)) {  // y_t was y_{t-1}: its cotangent passes through
        const float* gb = gy.data() + (size_t)b * O;
        for (int j = n0; j < n1; ++j) sent[j] = gb[j];
      }
      if (t > 0) {
        start_step(t - 1, b, sent, n0, n1);
      } else {
        for (int j = n0; j < n1; ++j) DY0[(size_t)b * O + j] = sent[j];
      }
    }
  });
  return ffi::Error::Success();
}

}  // namespace

JAXRNN_MEMBER_HANDLER(jaxrnn_jordan_forward, JordanForward, JAXRNN_JORDAN_FORWARD, lengths, 1)
JAXRNN_MEMBER_HANDLER(jaxrnn_jordan_backward, JordanBackward, JAXRNN_JORDAN_BACKWARD, lengths, 1)
