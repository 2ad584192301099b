// The minGRU / minLSTM kernels (jaxrnn/cells/minimal.py): no product per step, the
// coefficients are inline exps of the projected input. Shared parts: common.h.

#include "common.h"

// Operand order of each handler, defined here once (see JAXRNN_KERNEL in ffi_glue.h).
#define JAXRNN_MIN_FORWARD(ARG, RET, ATTR) \
  ARG(F32, xp) ARG(F32, h0) ARG(S32, lengths) RET(F32, hs) ATTR(int64_t, kind) ATTR(bool, masked)
#define JAXRNN_MIN_BACKWARD(ARG, RET, ATTR)                                                 \
  ARG(F32, xp) ARG(F32, hs) ARG(F32, h0) ARG(F32, d_hs) ARG(S32, lengths) RET(F32, dxp)     \
  RET(F32, dh0) ATTR(int64_t, kind) ATTR(bool, masked)

namespace {

// h_t = a_t * h_{t-1} + c_t * g(k_h), the coefficients functions of the step's projected input
// xp_t alone (Feng et al. 2024; jaxrnn/cells/minimal.py):
//   minGRU  (xp blocks z, h~):    a = sigma(-k_z),  c = sigma(k_z)
//   minLSTM (xp blocks f, i, h~): a = f / (f + i),  c = i / (f + i),  f = sigma(k_f), i = sigma(k_i)
//   g(v) = v + 1/2 for v >= 0, sigma(v) below.
// No product per step: inside an XLA while loop the loop's own per-step cost was most of the
// time, and computed by XLA over all steps the coefficients' transcendentals (the cell's
// log-space form) cost more than the recurrence. Here they
// are a few inline exps per element, computed again in the backward pass instead of saved.
// Elements never meet, so each thread takes its rows (or units) through every step with no
// barrier.
enum MinKind { kMinGru = 0, kMinLstm = 1 };

// g(k_h) and g'(k_h), branch-free so that the element loops vectorise.
JAXRNN_INLINE float min_g(float kh, float sh) { return kh >= 0.f ? kh + 0.5f : sh; }
JAXRNN_INLINE float min_dg(float kh, float sh) { return kh >= 0.f ? 1.f : sh * (1.f - sh); }

// minLSTM's gate ratio a = f / (f + i) (and c = 1 - a, computed as its own ratio to keep its
// precision when small) without under- or overflow for any k_f, k_i: multiplying by
// (1 + e^-k_f)(1 + e^-k_i) gives a = (1 + e^-k_i) / (2 + e^-k_i + e^-k_f); every exponent is
// shifted by m = max(0, -k_f, -k_i) so that the largest term is 1 and the sum is >= 1.
// Infinite gates give XLA's limits: the shifted exponent of the term that is the maximum is 0
// exactly (inf - inf would be NaN), and both gates shut (k_f = k_i = -inf) is 0 / 0 = NaN, as
// in the cell's log-space form. A NaN gate makes its exponent, and so a and c, NaN.
JAXRNN_INLINE float shifted_by(float e, float m) { return e == m ? 0.f : e - m; }

JAXRNN_INLINE void min_lstm_ratio(float kf, float ki, float& a, float& c) {
  const float m = std::max(0.f, std::max(-kf, -ki));
  const float e0 = exp_bounded(clamp_exp(shifted_by(0.f, m)));
  const float ei = exp_bounded(clamp_exp(shifted_by(-ki, m)));
  const float ef = exp_bounded(clamp_exp(shifted_by(-kf, m)));
  const float shut = (kf == -INFINITY && ki == -INFINITY) ? NAN : 0.f;
  const float na = e0 + ei, nc = e0 + ef, inv = 1.f / (na + nc);
  a = na * inv + shut;
  c = nc * inv + shut;
}

// fn(b0, b1, u0, u1) over all steps: rows split between threads when there are enough, else
// units (in 16-wide blocks).
template <class Fn>
void min_team(ffi::ThreadPool& pool, int64_t T, int B, int H, Fn fn) {
  const int nthreads = T * B * H < (1 << 17) ? 1 : team_size(pool, kParallelMinWork);
  if (nthreads > 1 && B >= nthreads) {
    run_phases(&pool, 1, nthreads, [&](int, int c) {
      fn((int)((int64_t)B * c / nthreads), (int)((int64_t)B * (c + 1) / nthreads), 0, H);
    });
    return;
  }
  const Chunks ch = make_chunks(H, nthreads);
  run_phases(ch.count() > 1 ? &pool : nullptr, 1, ch.count(),
             [&](int, int c) { fn(0, B, ch.start[c], ch.start[c + 1]); });
}

template <int kind>
void min_forward(ffi::ThreadPool& pool, int64_t T, int B, int H, const float* XP, const float* H0,
                 const int32_t* lens, float* HS) {
  const int G = (kind == kMinGru ? 2 : 3) * H;
  min_team(pool, T, B, H, [&](int b0, int b1, int u0, int u1) {
    for (int64_t t = 0; t < T; ++t)
      for (int b = b0; b < b1; ++b) {
        const float* hp = t ? HS + ((size_t)(t - 1) * B + b) * H : H0 + (size_t)b * H;
        float* ht = HS + ((size_t)t * B + b) * H;
        if (!step_valid(lens, (int)t, b)) {
          for (int j = u0; j < u1; ++j) ht[j] = hp[j];
          continue;
        }
        const float* xp = XP + ((size_t)t * B + b) * G;
        if (kind == kMinGru) {
#pragma omp simd
          for (int j = u0; j < u1; ++j) {
            const float kz = xp[j], kh = xp[H + j];
            ht[j] = sigmoidf(-kz) * hp[j] + sigmoidf(kz) * min_g(kh, sigmoidf(kh));
          }
        } else {
#pragma omp simd
          for (int j = u0; j < u1; ++j) {
            const float kh = xp[2 * H + j];
            float a, c;
            min_lstm_ratio(xp[j], xp[H + j], a, c);
            ht[j] = a * hp[j] + c * min_g(kh, sigmoidf(kh));
          }
        }
      }
  });
}

// Reverse sweep: gh, the cotangent of h_t, is dy_t plus a_{t+1} times the next step's; from it
// dk (written over xp's own slot of the step: xp_t is read before dk_t is written) and, at the
// end, dh0.
template <int kind>
void min_backward(ffi::ThreadPool& pool, int64_t T, int B, int H, float* XP_DK, const float* HS,
                  const float* H0, const float* DY, const int32_t* lens, float* DH) {
  const int G = (kind == kMinGru ? 2 : 3) * H;
  min_team(pool, T, B, H, [&](int b0, int b1, int u0, int u1) {
    for (int b = b0; b < b1; ++b)
      for (int j = u0; j < u1; ++j) DH[(size_t)b * H + j] = 0.f;
    for (int64_t t = T - 1; t >= 0; --t)
      for (int b = b0; b < b1; ++b) {
        float* gh = DH + (size_t)b * H;
        const float* dy = DY + ((size_t)t * B + b) * H;
        float* xp = XP_DK + ((size_t)t * B + b) * G;
        if (!step_valid(lens, (int)t, b)) {  // the carry passed through unchanged
          for (int j = u0; j < u1; ++j) gh[j] += dy[j];
          for (int blk = 0; blk < G / H; ++blk)
            for (int j = u0; j < u1; ++j) xp[blk * H + j] = 0.f;
          continue;
        }
        const float* hp = t ? HS + ((size_t)(t - 1) * B + b) * H : H0 + (size_t)b * H;
        // h = a h_prev + c g(k_h): dh/dk_h = c g'(k_h); the gates enter through a and c with
        // dc = -da, so dh/dk = (h_prev - g) da/dk, where for minGRU da/dk_z = -a c and for
        // minLSTM da/dk_f = a c (1 - f), da/dk_i = -a c (1 - i).
        if (kind == kMinGru) {
#pragma omp simd
          for (int j = u0; j < u1; ++j) {
            const float kz = xp[j], kh = xp[H + j], sh = sigmoidf(kh);
            const float a = sigmoidf(-kz), c = sigmoidf(kz);
            const float g = gh[j] + dy[j];
            xp[j] = -g * a * c * (hp[j] - min_g(kh, sh));
            xp[H + j] = g * c * min_dg(kh, sh);
            gh[j] = g * a;
          }
        } else {
#pragma omp simd
          for (int j = u0; j < u1; ++j) {
            const float kf = xp[j], ki = xp[H + j], kh = xp[2 * H + j], sh = sigmoidf(kh);
            float a, c;
            min_lstm_ratio(kf, ki, a, c);
            const float g = gh[j] + dy[j];
            const float gac = g * a * c * (hp[j] - min_g(kh, sh));
            xp[j] = gac * sigmoidf(-kf);
            xp[H + j] = -gac * sigmoidf(-ki);
            xp[2 * H + j] = g * c * min_dg(kh, sh);
            gh[j] = g * a;
          }
        }
      }
  });
}

JAXRNN_KERNEL(MinForward, JAXRNN_MIN_FORWARD) {
  Shapes s("jaxrnn_min_forward", "T, B from xp; H from h0; k = 2 (minGRU) or 3 (minLSTM)");
  s.require(kind == kMinGru || kind == kMinLstm, "kind must be 0 (minGRU) or 1 (minLSTM), got " + std::to_string(kind));
  const int64_t T = s.dim(xp, "xp", 3, 0);
  const int B = (int)s.dim(xp, "xp", 3, 1), H = (int)s.dim(h0, "h0", 2, 1), k = kind == kMinGru ? 2 : 3;
  JAXRNN_EXPECT(s, xp, T, B, k * H);
  JAXRNN_EXPECT(s, h0, B, H);
  if (masked) JAXRNN_EXPECT(s, lengths, B);
  JAXRNN_EXPECT(s, hs, T, B, H);
  if (!s.ok()) return s.error();
  const int32_t* lens = masked ? lengths.typed_data() : nullptr;
  if (kind == kMinGru)
    min_forward<kMinGru>(pool, T, B, H, xp.typed_data(), h0.typed_data(), lens, hs->typed_data());
  else
    min_forward<kMinLstm>(pool, T, B, H, xp.typed_data(), h0.typed_data(), lens, hs->typed_data());
  return ffi::Error::Success();
}

// Inputs: xp (aliased to the dk output: overwritten step by step), hs, h0, d_hs, lens.
JAXRNN_KERNEL(MinBackward, JAXRNN_MIN_BACKWARD) {
  Shapes s("jaxrnn_min_backward", "T, B, G from xp; H from h0; G = 2 H (minGRU) or 3 H (minLSTM)");
  s.require(kind == kMinGru || kind == kMinLstm, "kind must be 0 (minGRU) or 1 (minLSTM), got " + std::to_string(kind));
  const int64_t T = s.dim(xp, "xp", 3, 0);
  const int B = (int)s.dim(xp, "xp", 3, 1), G = (int)s.dim(xp, "xp", 3, 2);
  const int H = (int)s.dim(h0, "h0", 2, 1), k = kind == kMinGru ? 2 : 3;
  JAXRNN_EXPECT(s, xp, T, B, k * H);
  JAXRNN_EXPECT(s, hs, T, B, H);
  JAXRNN_EXPECT(s, h0, B, H);
  JAXRNN_EXPECT(s, d_hs, T, B, H);
  if (masked) JAXRNN_EXPECT(s, lengths, B);
  JAXRNN_EXPECT(s, dxp, T, B, G);
  JAXRNN_EXPECT(s, dh0, B, H);
  if (!s.ok()) return s.error();
  float* DK = dxp->typed_data();
  if (DK != xp.typed_data()) std::memcpy(DK, xp.typed_data(), sizeof(float) * T * B * G);
  const int32_t* lens = masked ? lengths.typed_data() : nullptr;
  if (kind == kMinGru)
    min_backward<kMinGru>(pool, T, B, H, DK, hs.typed_data(), h0.typed_data(), d_hs.typed_data(),
                          lens, dh0->typed_data());
  else
    min_backward<kMinLstm>(pool, T, B, H, DK, hs.typed_data(), h0.typed_data(), d_hs.typed_data(),
                           lens, dh0->typed_data());
  return ffi::Error::Success();
}

}  // namespace

JAXRNN_MEMBER_HANDLER(jaxrnn_min_forward, MinForward, JAXRNN_MIN_FORWARD, lengths, 1)
JAXRNN_MEMBER_HANDLER(jaxrnn_min_backward, MinBackward, JAXRNN_MIN_BACKWARD, lengths, 1)
