// The LSTM kernels (gate order i, f, g, o; jaxrnn/cells/lstm.py): the forward pass over all steps
// and the backward pass for the gate pre-activations' cotangents. Shared parts: common.h.

#include "common.h"

// Operand order of each handler, defined here once (see JAXRNN_KERNEL in ffi_glue.h).
#define JAXRNN_LSTM_FORWARD(ARG, RET, ATTR)                                                 \
  ARG(F32, x) ARG(F32, w_x) ARG(F32, bias) ARG(F32, w_h) ARG(F32, h0) ARG(F32, c0)          \
  ARG(S32, lengths) RET(F32, hs) RET(F32, c_last) RET(F32, cs) RET(F32, gates)              \
  ATTR(bool, masked) ATTR(bool, training)
#define JAXRNN_LSTM_BACKWARD(ARG, RET, ATTR)                                                \
  ARG(F32, w_h) ARG(F32, gates) ARG(F32, cs) ARG(F32, c0) ARG(F32, d_hs) ARG(F32, d_c_last) \
  ARG(S32, lengths) RET(F32, dz) RET(F32, dh0) RET(F32, dc0) ATTR(bool, masked)

namespace {

// Gate order (i, f, g, o). Training saves the activated gates and every cell state.
JAXRNN_KERNEL(LstmForward, JAXRNN_LSTM_FORWARD) {
  Shapes s("jaxrnn_lstm_forward", "T, B, F from x; H from h0");
  const int T = (int)s.dim(x, "x", 3, 0), B = (int)s.dim(x, "x", 3, 1), F = (int)s.dim(x, "x", 3, 2);
  const int H = (int)s.dim(h0, "h0", 2, 1), G = 4 * H;
  JAXRNN_EXPECT(s, w_x, F, 4 * H);
  JAXRNN_EXPECT(s, bias, 4 * H);
  JAXRNN_EXPECT(s, w_h, H, 4 * H);
  JAXRNN_EXPECT(s, h0, B, H);
  JAXRNN_EXPECT(s, c0, B, H);
  if (masked) JAXRNN_EXPECT(s, lengths, B);
  JAXRNN_EXPECT(s, hs, T, B, H);
  JAXRNN_EXPECT(s, c_last, B, H);
  if (training) {
    JAXRNN_EXPECT(s, cs, T, B, H);
    JAXRNN_EXPECT(s, gates, T, B, 4 * H);
  }
  if (!s.ok()) return s.error();
  const float* X = x.typed_data();
  const float* W = w_h.typed_data();
  const int32_t* lens = masked ? lengths.typed_data() : nullptr;
  float* HS = hs->typed_data();
  float* CS = training ? cs->typed_data() : nullptr;
  float* Z = training ? gates->typed_data() : nullptr;
  std::vector<float> zbuf(training ? 0 : (size_t)B * G), cbuf(training ? 0 : (size_t)2 * B * H);
  const Ticket plan = plan_call(pool, jaxrnn_tuner::kLstmForward, training + 2 * masked, T, B, H, F,
                              (int64_t)B * G * H, T, (int64_t)(F + H) * G * 4);
  if (T == 0) {
    std::memcpy(c_last->typed_data(), c0.typed_data(), sizeof(float) * B * H);
    return ffi::Error::Success();
  }
  const Strips WX = make_strips(w_x.typed_data(), F, G, H), WH = make_strips(W, H, G, H);

  drive(pool, plan, T, B, H, [&](int t, int b0, int b1, int u0, int u1) {
    const float* h_prev = t ? HS + (size_t)(t - 1) * B * H : h0.typed_data();
    const float* c_prev = t ? (CS ? CS + (size_t)(t - 1) * B * H : cbuf.data() + (size_t)((t - 1) & 1) * B * H)
                            : c0.typed_data();
    float* c_t = CS ? CS + (size_t)t * B * H : cbuf.data() + (size_t)(t & 1) * B * H;
    float* z = Z ? Z + (size_t)t * B * G : zbuf.data();
    float* h_t = HS + (size_t)t * B * H;
    gates_units(b1 - b0, F, H, 4, X + ((size_t)t * B + b0) * F, WX, bias.typed_data(),
                h_prev + (size_t)b0 * H, &WH, z + (size_t)b0 * G, u0, u1);
    for (int b = b0; b < b1; ++b) {
      float* zb = z + (size_t)b * G;
      const float* cp = c_prev + (size_t)b * H;
      const float* hp = h_prev + (size_t)b * H;
      float* cb = c_t + (size_t)b * H;
      float* hb = h_t + (size_t)b * H;
      if (!step_valid(lens, t, b)) {  // past this sequence's end the carry is frozen
        for (int j = u0; j < u1; ++j) { hb[j] = hp[j]; cb[j] = cp[j]; }
        continue;
      }
#pragma omp simd
      for (int j = u0; j < u1; ++j) {
        const float i = sigmoidf(zb[j]), f = sigmoidf(zb[H + j]);
        const float g = tanhf_(zb[2 * H + j]), o = sigmoidf(zb[3 * H + j]);
        const float cn = f * cp[j] + i * g;
        zb[j] = i; zb[H + j] = f; zb[2 * H + j] = g; zb[3 * H + j] = o;
        cb[j] = cn;
        hb[j] = o * tanhf_(cn);
      }
    }
  });
  const float* c_fin = CS ? CS + (size_t)(T - 1) * B * H : cbuf.data() + (size_t)((T - 1) & 1) * B * H;
  std::memcpy(c_last->typed_data(), c_fin, sizeof(float) * B * H);
  return ffi::Error::Success();
}

// Cotangents of the gate pre-activations dz (T, B, 4H), and of h0 and c0, from the cotangents
// of every step's h (dhs) and of the last cell state.
JAXRNN_KERNEL(LstmBackward, JAXRNN_LSTM_BACKWARD) {
  Shapes s("jaxrnn_lstm_backward", "T, B from gates; H from c0");
  const int T = (int)s.dim(gates, "gates", 3, 0), B = (int)s.dim(gates, "gates", 3, 1);
  const int H = (int)s.dim(c0, "c0", 2, 1), G = 4 * H;
  JAXRNN_EXPECT(s, w_h, H, 4 * H);
  JAXRNN_EXPECT(s, gates, T, B, 4 * H);
  JAXRNN_EXPECT(s, cs, T, B, H);
  JAXRNN_EXPECT(s, c0, B, H);
  JAXRNN_EXPECT(s, d_hs, T, B, H);
  JAXRNN_EXPECT(s, d_c_last, B, H);
  if (masked) JAXRNN_EXPECT(s, lengths, B);
  JAXRNN_EXPECT(s, dz, T, B, 4 * H);
  JAXRNN_EXPECT(s, dh0, B, H);
  JAXRNN_EXPECT(s, dc0, B, H);
  if (!s.ok()) return s.error();
  const Strips WT = make_strips(w_h.typed_data(), G, H, H, /*transposed=*/true);  // W_h^T (G, H)
  const float* Zs = gates.typed_data();
  const float* CS = cs.typed_data();
  const float* DHS = d_hs.typed_data();
  const int32_t* lens = masked ? lengths.typed_data() : nullptr;
  float* DZ = dz->typed_data();
  float* dh = dh0->typed_data();  // the running d h carry; ends as d h0
  float* dc = dc0->typed_data();  // the running d c carry; ends as d c0
  std::memset(dh, 0, sizeof(float) * B * H);
  std::memcpy(dc, d_c_last.typed_data(), sizeof(float) * B * H);
  const Ticket plan = plan_call(pool, jaxrnn_tuner::kLstmBackward, 2 * masked, T, B, H, 0,
                              (int64_t)B * G * H, T + 1, (int64_t)G * H * 4);

  // Phase k: d h for step T-k from dz of step T-k+1 (k > 0), then the gates of step T-1-k.
  drive(pool, plan, T + 1, B, H, [&](int k, int b0, int b1, int u0, int u1) {
    const int t = T - 1 - k;
    if (k > 0) {
      // dh holds the part of d h_t that bypasses the product (frozen rows); add dz_{t+1} W_h^T.
      gemm_strips(b1 - b0, 0, G, DZ + ((size_t)(t + 1) * B + b0) * G, G, WT,
                  dh + (size_t)b0 * H, H, dh + (size_t)b0 * H, H, u0, u1);
    }
    if (t < 0) return;
    const float* zt = Zs + (size_t)t * B * G;
    const float* ct = CS + (size_t)t * B * H;
    const float* cp_all = t ? CS + (size_t)(t - 1) * B * H : c0.typed_data();
    const float* dht = DHS + (size_t)t * B * H;
    float* dzt = DZ + (size_t)t * B * G;
    for (int b = b0; b < b1; ++b) {
      const float* zb = zt + (size_t)b * G;
      float* dzb = dzt + (size_t)b * G;
      float* dhb = dh + (size_t)b * H;
      float* dcb = dc + (size_t)b * H;
      const float* dyb = dht + (size_t)b * H;
      if (!step_valid(lens, t, b)) {  // frozen carry: its cotangent passes through unchanged
        for (int j = u0; j < u1; ++j) {
          dhb[j] += dyb[j];
          dzb[j] = dzb[H + j] = dzb[2 * H + j] = dzb[3 * H + j] = 0.f;
        }
        continue;
      }
      const float* cb = ct + (size_t)b * H;
      const float* cpb = cp_all + (size_t)b * H;
#pragma omp simd
      for (int j = u0; j < u1; ++j) {
        const float i = zb[j], f = zb[H + j], g = zb[2 * H + j], o = zb[3 * H + j];
        const float dht_ = dhb[j] + dyb[j];
        const float tc = tanhf_(cb[j]);
        const float dcn = dcb[j] + dht_ * o * (1.f - tc * tc);
        dzb[j] = dcn * g * i * (1.f - i);
        dzb[H + j] = dcn * cpb[j] * f * (1.f - f);
        dzb[2 * H + j] = dcn * i * (1.f - g * g);
        dzb[3 * H + j] = dht_ * tc * o * (1.f - o);
        dcb[j] = dcn * f;
        dhb[j] = 0.f;
      }
    }
  });
  return ffi::Error::Success();
}

}  // namespace

JAXRNN_MEMBER_HANDLER(jaxrnn_lstm_forward, LstmForward, JAXRNN_LSTM_FORWARD, lengths, 1)
JAXRNN_MEMBER_HANDLER(jaxrnn_lstm_backward, LstmBackward, JAXRNN_LSTM_BACKWARD, lengths, 1)
