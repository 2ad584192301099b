// Activations: exp, sigmoid and tanh in a form GCC vectorises inline in the gate loops, with
// NaN and inf propagated as XLA does.

#ifndef JAXRNN_KERNELS_ACTIVATIONS_H_
#define JAXRNN_KERNELS_ACTIVATIONS_H_

#include <cmath>
#include <cstdint>

#include "ffi_glue.h"

namespace {

// exp in a form GCC vectorises inline inside the `omp simd` loops (glibc's vector expf is a call
// per vector, slower in the gate passes): x = n ln2 + r (ln2 in two parts), exp(r) by Cephes'
// degree-7 polynomial, 2^n put into the exponent bits. Error ~2 ulp; sigmoid and tanh stay
// within 3e-7 of float64.
// Callers pass x through clamp_exp (below): for x in [-88, 88.5], n is in [-127, 128], where the
// exponent bits give 0 (n = -127) and inf (n = 128) exactly, so that exp underflows to 0 and
// overflows to inf as expf does, and sigmoid/tanh saturate to exactly 0, 1 and -1 as XLA's do.
// A NaN argument makes the polynomial NaN, and the product with it NaN whatever the bits of 2^n.
JAXRNN_INLINE float exp_bounded(float x) {
  const float n = std::floor(std::fma(x, 1.44269504088896341f, 0.5f));
  float r = std::fma(n, -0.693145751953125f, x);
  r = std::fma(n, -1.428606765330187045e-06f, r);
  float p = 1.9875691500e-4f;
  p = std::fma(p, r, 1.3981999507e-3f);
  p = std::fma(p, r, 8.3334519073e-3f);
  p = std::fma(p, r, 4.1665795894e-2f);
  p = std::fma(p, r, 1.6666665459e-1f);
  p = std::fma(p, r, 5.0000001201e-1f);
  p = std::fma(p, r * r, r + 1.f);
  const int32_t bits = (int32_t)n + 127;  // n is NaN only when p is: then any bits will do
  return p * __builtin_bit_cast(float, (int32_t)((uint32_t)bits << 23));
}

// Clamps written so that a NaN falls through both comparisons (std::min/max would return the
// bound): a NaN anywhere in the inputs, carries or weights stays NaN, as on XLA's path
// (issue 15.1). GCC still emits one vector min and one max for each. The clamp goes on exp's
// own argument: its bounds are those of exp_bounded, not symmetric.
JAXRNN_INLINE float clamp_exp(float x) { return x > 88.5f ? 88.5f : (x < -88.f ? -88.f : x); }
JAXRNN_INLINE float sigmoidf(float x) { return 1.f / (1.f + exp_bounded(clamp_exp(-x))); }
JAXRNN_INLINE float tanhf_(float x) { return 1.f - 2.f / (1.f + exp_bounded(clamp_exp(2.f * x))); }

}  // namespace

#endif  // JAXRNN_KERNELS_ACTIVATIONS_H_
