// The GRU kernels (reset-after form, gate order r, z, n; jaxrnn/cells/gru.py). Shared parts:
// common.h.

#include "common.h"

// Operand order of each handler, defined here once (see JAXRNN_KERNEL in ffi_glue.h).
#define JAXRNN_GRU_FORWARD(ARG, RET, ATTR)                                                  \
  ARG(F32, x) ARG(F32, w_x) ARG(F32, bias) ARG(F32, w_h) ARG(F32, b_h) ARG(F32, h0)         \
  ARG(S32, lengths) RET(F32, hs) RET(F32, saved) ATTR(bool, masked) ATTR(bool, training)
#define JAXRNN_GRU_BACKWARD(ARG, RET, ATTR)                                                 \
  ARG(F32, w_h) ARG(F32, saved) ARG(F32, hs) ARG(F32, h0) ARG(F32, d_hs) ARG(S32, lengths)  \
  RET(F32, d4) RET(F32, dh0) ATTR(bool, masked)

namespace {

// reset_after form, gate order (r, z, n): hp = h W_h + b_h, r = s(xr + hr), u = s(xz + hz),
// n = tanh(xn + r * hn), h' = (1 - u) n + u h. Training saves (r, u, n, hn) per step.
JAXRNN_KERNEL(GruForward, JAXRNN_GRU_FORWARD) {
  Shapes s("jaxrnn_gru_forward", "T, B, F from x; H from h0");
  const int T = (int)s.dim(x, "x", 3, 0), B = (int)s.dim(x, "x", 3, 1), F = (int)s.dim(x, "x", 3, 2);
  const int H = (int)s.dim(h0, "h0", 2, 1), G = 3 * H;
  JAXRNN_EXPECT(s, w_x, F, 3 * H);
  JAXRNN_EXPECT(s, bias, 3 * H);
  JAXRNN_EXPECT(s, w_h, H, 3 * H);
  JAXRNN_EXPECT(s, b_h, 3 * H);
  JAXRNN_EXPECT(s, h0, B, H);
  if (masked) JAXRNN_EXPECT(s, lengths, B);
  JAXRNN_EXPECT(s, hs, T, B, H);
  if (training) JAXRNN_EXPECT(s, saved, T, B, 4 * H);
  if (!s.ok()) return s.error();
  const float* X = x.typed_data();
  const float* W = w_h.typed_data();
  const int32_t* lens = masked ? lengths.typed_data() : nullptr;
  float* HS = hs->typed_data();
  float* SV = training ? saved->typed_data() : nullptr;
  std::vector<float> hp((size_t)B * G), xpb((size_t)B * G);
  const Ticket plan = plan_call(pool, jaxrnn_tuner::kGruForward, training + 2 * masked, T, B, H, F,
                              (int64_t)B * G * H, T, (int64_t)(F + H) * G * 4);
  const Strips WX = make_strips(w_x.typed_data(), F, G, H), WH = make_strips(W, H, G, H);

  drive(pool, plan, T, B, H, [&](int t, int b0, int b1, int u0, int u1) {
    const float* h_prev = t ? HS + (size_t)(t - 1) * B * H : h0.typed_data();
    float* h_t = HS + (size_t)t * B * H;
    gemm_units(b1 - b0, H, h_prev + (size_t)b0 * H, WH, H, 3, b_h.typed_data(), 0,
               hp.data() + (size_t)b0 * G, u0, u1);
    gates_units(b1 - b0, F, H, 3, X + ((size_t)t * B + b0) * F, WX, bias.typed_data(),
                nullptr, nullptr, xpb.data() + (size_t)b0 * G, u0, u1);
    const float* xt = xpb.data();
    for (int b = b0; b < b1; ++b) {
      const float* xb = xt + (size_t)b * G;
      const float* hpb = hp.data() + (size_t)b * G;
      const float* hprev = h_prev + (size_t)b * H;
      float* hb = h_t + (size_t)b * H;
      float* sv = SV ? SV + ((size_t)t * B + b) * 4 * H : nullptr;
      if (!step_valid(lens, t, b)) {
        for (int j = u0; j < u1; ++j) hb[j] = hprev[j];
        if (sv)
          for (int j = u0; j < u1; ++j) sv[j] = sv[H + j] = sv[2 * H + j] = sv[3 * H + j] = 0.f;
        continue;
      }
      // Two copies of the loop: with the stores to `sv` under an `if` inside it, GCC
      // vectorises neither (the gate pass then ran scalar: a third of the forward's time).
      if (sv) {
#pragma omp simd
        for (int j = u0; j < u1; ++j) {
          const float r = sigmoidf(xb[j] + hpb[j]);
          const float u = sigmoidf(xb[H + j] + hpb[H + j]);
          const float hn = hpb[2 * H + j];
          const float n = tanhf_(xb[2 * H + j] + r * hn);
          hb[j] = (1.f - u) * n + u * hprev[j];
          sv[j] = r; sv[H + j] = u; sv[2 * H + j] = n; sv[3 * H + j] = hn;
        }
      } else {
#pragma omp simd
        for (int j = u0; j < u1; ++j) {
          const float r = sigmoidf(xb[j] + hpb[j]);
          const float u = sigmoidf(xb[H + j] + hpb[H + j]);
          const float n = tanhf_(xb[2 * H + j] + r * hpb[2 * H + j]);
          hb[j] = (1.f - u) * n + u * hprev[j];
        }
      }
    }
  });
  return ffi::Error::Success();
}

// Cotangents, written over the saved (r, u, n, hn) of each step as (d r_pre, d u_pre, d n_pre,
// d hn): those of xp are the first three blocks, those of hp blocks 1, 2 and 4 (they differ
// only in the n block, d hn = d n_pre * r). Reusing the saved buffer spares two fresh
// (T, B, 3H) buffers. Also the cotangent of h0.
JAXRNN_KERNEL(GruBackward, JAXRNN_GRU_BACKWARD) {
  Shapes s("jaxrnn_gru_backward", "T, B from hs; H from h0");
  const int T = (int)s.dim(hs, "hs", 3, 0), B = (int)s.dim(hs, "hs", 3, 1);
  const int H = (int)s.dim(h0, "h0", 2, 1), G = 3 * H, G4 = 4 * H;
  JAXRNN_EXPECT(s, w_h, H, 3 * H);
  JAXRNN_EXPECT(s, saved, T, B, 4 * H);
  JAXRNN_EXPECT(s, hs, T, B, H);
  JAXRNN_EXPECT(s, h0, B, H);
  JAXRNN_EXPECT(s, d_hs, T, B, H);
  if (masked) JAXRNN_EXPECT(s, lengths, B);
  JAXRNN_EXPECT(s, d4, T, B, 4 * H);
  JAXRNN_EXPECT(s, dh0, B, H);
  if (!s.ok()) return s.error();
  const Strips WT = make_strips(w_h.typed_data(), G, H, H, /*transposed=*/true);  // W_h^T (3H, H)
  const float* SV = saved.typed_data();
  const float* HS = hs.typed_data();
  const float* DHS = d_hs.typed_data();
  const int32_t* lens = masked ? lengths.typed_data() : nullptr;
  float* D4 = d4->typed_data();  // may be the same memory as SV
  float* dh = dh0->typed_data();
  std::memset(dh, 0, sizeof(float) * B * H);
  const Ticket plan = plan_call(pool, jaxrnn_tuner::kGruBackward, 2 * masked, T, B, H, 0,
                              (int64_t)B * G * H, T + 1, (int64_t)G * H * 4);

  drive(pool, plan, T + 1, B, H, [&](int k, int b0, int b1, int u0, int u1) {
    const int t = T - 1 - k;
    if (k > 0) {  // dh += d(r, u)_pre W_h[:, :2H]^T + d hn W_h[:, 2H:]^T
      const float* d4n = D4 + ((size_t)(t + 1) * B + b0) * G4;
      float* dhr = dh + (size_t)b0 * H;
      gemm_strips(b1 - b0, 0, 2 * H, d4n, G4, WT, dhr, H, dhr, H, u0, u1);
      gemm_strips(b1 - b0, 2 * H, H, d4n + 3 * H, G4, WT, dhr, H, dhr, H, u0, u1);
    }
    if (t < 0) return;
    const float* h_prev = t ? HS + (size_t)(t - 1) * B * H : h0.typed_data();
    for (int b = b0; b < b1; ++b) {
      const float* sv = SV + ((size_t)t * B + b) * G4;
      float* db4 = D4 + ((size_t)t * B + b) * G4;
      float* dhb = dh + (size_t)b * H;
      const float* dyb = DHS + ((size_t)t * B + b) * H;
      const float* hpv = h_prev + (size_t)b * H;
      if (!step_valid(lens, t, b)) {
        for (int j = u0; j < u1; ++j) {
          dhb[j] += dyb[j];
          db4[j] = db4[H + j] = db4[2 * H + j] = db4[3 * H + j] = 0.f;
        }
        continue;
      }
#pragma omp simd
      for (int j = u0; j < u1; ++j) {
        const float r = sv[j], u = sv[H + j], n = sv[2 * H + j], hn = sv[3 * H + j];
        const float dht_ = dhb[j] + dyb[j];
        const float dnp = dht_ * (1.f - u) * (1.f - n * n);
        const float dup = dht_ * (hpv[j] - n) * u * (1.f - u);
        const float drp = dnp * hn * r * (1.f - r);
        db4[j] = drp; db4[H + j] = dup; db4[2 * H + j] = dnp; db4[3 * H + j] = dnp * r;
        dhb[j] = dht_ * u;  // the direct path u * h_{t-1}; the product adds the rest
      }
    }
  });
  return ffi::Error::Success();
}

}  // namespace

JAXRNN_MEMBER_HANDLER(jaxrnn_gru_forward, GruForward, JAXRNN_GRU_FORWARD, lengths, 1)
JAXRNN_MEMBER_HANDLER(jaxrnn_gru_backward, GruBackward, JAXRNN_GRU_BACKWARD, lengths, 1)
