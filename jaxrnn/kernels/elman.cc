// The Elman-type kernels: h' = (1 - a) h + a tanh(x W_x + b + h W_h), the Elman net and the fully
// recurrent net (a = 1) and the leaky reservoir (a < 1). Shared parts: common.h.

#include "common.h"

// Operand order of each handler, defined here once (see JAXRNN_KERNEL in ffi_glue.h).
#define JAXRNN_ELMAN_FORWARD(ARG, RET, ATTR)                                                \
  ARG(F32, x) ARG(F32, w_x) ARG(F32, bias) ARG(F32, w_h) ARG(F32, h0) ARG(S32, lengths)     \
  RET(F32, hs) RET(F32, ss) ATTR(bool, masked) ATTR(bool, save_s) ATTR(float, leak)
#define JAXRNN_ELMAN_BACKWARD(ARG, RET, ATTR)                                               \
  ARG(F32, w_h) ARG(F32, ss) ARG(F32, d_hs) ARG(S32, lengths) RET(F32, dz) RET(F32, dh0)    \
  ATTR(bool, masked) ATTR(float, leak)

namespace {

// h' = (1 - a) h + a tanh(xp + h W_h); a = 1 is the Elman net, a < 1 a leaky reservoir.
// Training with a < 1 also saves s = tanh(.) per step (with a = 1 it equals h').
JAXRNN_KERNEL(ElmanForward, JAXRNN_ELMAN_FORWARD) {
  Shapes s("jaxrnn_elman_forward", "T, B, F from x; H from h0");
  const int T = (int)s.dim(x, "x", 3, 0), B = (int)s.dim(x, "x", 3, 1), F = (int)s.dim(x, "x", 3, 2);
  const int H = (int)s.dim(h0, "h0", 2, 1);
  JAXRNN_EXPECT(s, w_x, F, H);
  JAXRNN_EXPECT(s, bias, H);
  JAXRNN_EXPECT(s, w_h, H, H);
  JAXRNN_EXPECT(s, h0, B, H);
  if (masked) JAXRNN_EXPECT(s, lengths, B);
  JAXRNN_EXPECT(s, hs, T, B, H);
  if (save_s) JAXRNN_EXPECT(s, ss, T, B, H);
  if (!s.ok()) return s.error();
  const float* X = x.typed_data();
  const float* W = w_h.typed_data();
  const int32_t* lens = masked ? lengths.typed_data() : nullptr;
  float* HS = hs->typed_data();
  float* SS = save_s ? ss->typed_data() : nullptr;
  std::vector<float> zbuf((size_t)B * H);
  const Ticket plan = plan_call(pool, jaxrnn_tuner::kElmanForward, save_s + 2 * masked, T, B, H, F,
                              (int64_t)B * H * H, T, (int64_t)(F + H) * H * 4);
  const Strips WX = make_strips(w_x.typed_data(), F, H, H), WH = make_strips(W, H, H, H);

  drive(pool, plan, T, B, H, [&](int t, int b0, int b1, int u0, int u1) {
    const float* h_prev = t ? HS + (size_t)(t - 1) * B * H : h0.typed_data();
    float* h_t = HS + (size_t)t * B * H;
    float* z = zbuf.data();
    gates_units(b1 - b0, F, H, 1, X + ((size_t)t * B + b0) * F, WX, bias.typed_data(),
                h_prev + (size_t)b0 * H, &WH, z + (size_t)b0 * H, u0, u1);
    for (int b = b0; b < b1; ++b) {
      const float* zb = z + (size_t)b * H;
      const float* hp = h_prev + (size_t)b * H;
      float* hb = h_t + (size_t)b * H;
      float* sb = SS ? SS + ((size_t)t * B + b) * H : nullptr;
      if (!step_valid(lens, t, b)) {
        for (int j = u0; j < u1; ++j) hb[j] = hp[j];
        if (sb)
          for (int j = u0; j < u1; ++j) sb[j] = 0.f;
        continue;
      }
      if (leak == 1.f) {
#pragma omp simd
        for (int j = u0; j < u1; ++j) hb[j] = tanhf_(zb[j]);
      } else {
        // Two copies: a store under an `if` inside the loop keeps GCC from vectorising it;
        // so does reading the captured `leak` in it (a load the stores might alias).
        const float lk = leak;
        if (sb) {
#pragma omp simd
          for (int j = u0; j < u1; ++j) {
            const float s = tanhf_(zb[j]);
            hb[j] = (1.f - lk) * hp[j] + lk * s;
            sb[j] = s;
          }
        } else {
#pragma omp simd
          for (int j = u0; j < u1; ++j) hb[j] = (1.f - lk) * hp[j] + lk * tanhf_(zb[j]);
        }
      }
    }
  });
  return ffi::Error::Success();
}

JAXRNN_KERNEL(ElmanBackward, JAXRNN_ELMAN_BACKWARD) {
  Shapes s("jaxrnn_elman_backward", "T, B, H from ss");
  const int T = (int)s.dim(ss, "ss", 3, 0), B = (int)s.dim(ss, "ss", 3, 1), H = (int)s.dim(ss, "ss", 3, 2);
  JAXRNN_EXPECT(s, w_h, H, H);
  JAXRNN_EXPECT(s, d_hs, T, B, H);
  if (masked) JAXRNN_EXPECT(s, lengths, B);
  JAXRNN_EXPECT(s, dz, T, B, H);
  JAXRNN_EXPECT(s, dh0, B, H);
  if (!s.ok()) return s.error();
  const Strips WT = make_strips(w_h.typed_data(), H, H, H, /*transposed=*/true);
  const float* SS = ss.typed_data();  // tanh outputs (== hs when leak == 1)
  const float* DHS = d_hs.typed_data();
  const int32_t* lens = masked ? lengths.typed_data() : nullptr;
  float* DZ = dz->typed_data();
  float* dh = dh0->typed_data();
  std::memset(dh, 0, sizeof(float) * B * H);
  const Ticket plan = plan_call(pool, jaxrnn_tuner::kElmanBackward, 2 * masked, T, B, H, 0,
                              (int64_t)B * H * H, T + 1, (int64_t)H * H * 4);

  drive(pool, plan, T + 1, B, H, [&](int k, int b0, int b1, int u0, int u1) {
    const int t = T - 1 - k;
    if (k > 0)
      gemm_strips(b1 - b0, 0, H, DZ + ((size_t)(t + 1) * B + b0) * H, H, WT,
                  dh + (size_t)b0 * H, H, dh + (size_t)b0 * H, H, u0, u1);
    if (t < 0) return;
    for (int b = b0; b < b1; ++b) {
      const float* sb = SS + ((size_t)t * B + b) * H;
      float* dzb = DZ + ((size_t)t * B + b) * H;
      float* dhb = dh + (size_t)b * H;
      const float* dyb = DHS + ((size_t)t * B + b) * H;
      if (!step_valid(lens, t, b)) {
        for (int j = u0; j < u1; ++j) { dhb[j] += dyb[j]; dzb[j] = 0.f; }
        continue;
      }
#pragma omp simd
      for (int j = u0; j < u1; ++j) {
        const float dht_ = dhb[j] + dyb[j];
        dzb[j] = dht_ * leak * (1.f - sb[j] * sb[j]);
        dhb[j] = dht_ * (1.f - leak);
      }
    }
  });
  return ffi::Error::Success();
}

}  // namespace

JAXRNN_MEMBER_HANDLER(jaxrnn_elman_forward, ElmanForward, JAXRNN_ELMAN_FORWARD, lengths, 1)
JAXRNN_MEMBER_HANDLER(jaxrnn_elman_backward, ElmanBackward, JAXRNN_ELMAN_BACKWARD, lengths, 1)
