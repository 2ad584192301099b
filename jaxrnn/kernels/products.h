// Products: the register-blocked micro-kernel and the small matrix products built on it.
//
// Every product here sums each output over k in one fixed order (k = 0, 1, ..., one multiply-add
// per k into one accumulator), whatever the blocking of rows and columns: how a problem is split
// between threads can never change a value.
//
// The tile follows the register file, an ISA property: AVX-512 has 32 vector registers of 16
// floats, AVX/AVX2 16 of 8, SSE and NEON 16 (NEON: 32) of 4. A tile of kTileRows rows by two
// vectors keeps its accumulators, the two weight vectors and the broadcast in registers:
// 8 x 2 + 2 + 1 = 19 of 32, or 6 x 2 + 2 + 1 = 15 of 16 (a tile too large for the register file
// is kept on the stack by GCC, 10x slower). The vectors are GCC's portable vector extension, so
// the same source compiles for any target.

#ifndef JAXRNN_KERNELS_PRODUCTS_H_
#define JAXRNN_KERNELS_PRODUCTS_H_

#include <cstddef>
#include <vector>

#include "ffi_glue.h"

namespace {

#if defined(__AVX512F__)
constexpr int kLanes = 16;
constexpr int kTileRows = 8;
#elif defined(__AVX__)
constexpr int kLanes = 8;
constexpr int kTileRows = 6;
#else
constexpr int kLanes = 4;
constexpr int kTileRows = 6;
#endif
constexpr int kTileCols = 2 * kLanes;  // columns of the wide tile (two vectors)
typedef float vreg __attribute__((vector_size(4 * kLanes)));
typedef float vregu __attribute__((vector_size(4 * kLanes), aligned(4)));

JAXRNN_INLINE vreg load_vec(const float* p) { return *reinterpret_cast<const vregu*>(p); }
JAXRNN_INLINE void store_vec(float* p, vreg v) { *reinterpret_cast<vregu*>(p) = v; }

// C[0:MR, 0:kLanes*NV] = Cin (or 0) + A[0:MR, 0:K] @ W[0:K, 0:kLanes*NV], where vector v of
// row k of W is at W + k * ldw + v * vs (vs = kLanes for a row-major W; see Strips for the
// other layout). Cin rows may have stride 0 (a bias broadcast over rows).
template <int MR, int NV>
JAXRNN_INLINE void micro(int K, const float* A, int lda, const float* W, int ldw, size_t vs,
                         const float* Cin, int ldcin, float* C, int ldc) {
  vreg acc[MR][NV];
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v)
      acc[r][v] = Cin ? load_vec(Cin + (size_t)r * ldcin + kLanes * v) : vreg{};
  for (int k = 0; k < K; ++k) {
    vreg w[NV];
    for (int v = 0; v < NV; ++v) w[v] = load_vec(W + (size_t)k * ldw + vs * v);
    for (int r = 0; r < MR; ++r) {
      const float a = A[(size_t)r * lda + k];
      for (int v = 0; v < NV; ++v) acc[r][v] += a * w[v];
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) store_vec(C + (size_t)r * ldc + kLanes * v, acc[r][v]);
}

// micro<rows, NV> for 1 <= rows <= MR (a block of rows at the end of the batch).
template <int NV, int MR = kTileRows>
JAXRNN_INLINE void micro_rows(int rows, int K, const float* A, int lda, const float* W, int ldw,
                              size_t vs, const float* Cin, int ldcin, float* C, int ldc) {
  if constexpr (MR == 1) {
    return micro<1, NV>(K, A, lda, W, ldw, vs, Cin, ldcin, C, ldc);
  } else {
    if (rows >= MR) return micro<MR, NV>(K, A, lda, W, ldw, vs, Cin, ldcin, C, ldc);
    return micro_rows<NV, MR - 1>(rows, K, A, lda, W, ldw, vs, Cin, ldcin, C, ldc);
  }
}

// C[:, n0:n1] = Cin[:, n0:n1] (or 0) + A (M, K) @ W[:, n0:n1] for the whole vectors of columns
// from n0 (returns the first column not done); panel(n) gives where column n's vector of row 0
// is, with its row stride and vector stride. Column panels outside, row blocks inside: a
// (K, kTileCols) panel of W is read once from L2 and then reused from L1 by every block of rows.
// Rows in blocks of near-equal size, at most kTileRows each: 8 rows with AVX2's 6-row tile are
// two blocks of 4, not 6 + 2 (a 2 x 2 block has 4 accumulators, too few to hide the
// multiply-add's latency, and reads the weight panel again for 2 rows).
template <class Panel>
JAXRNN_INLINE int gemm_vectors(int M, int K, const float* A, int lda, Panel panel,
                               const float* Cin, int ldcin, float* C, int ldc, int n0, int n1) {
  const int blocks = (M + kTileRows - 1) / kTileRows;
  int n = n0;
  for (; n + kTileCols <= n1; n += kTileCols) {
    const auto [w, ldw, vs] = panel(n);
    for (int i = 0; i < blocks; ++i) {
      const int m0 = i * M / blocks, m1 = (i + 1) * M / blocks;
      micro_rows<2>(m1 - m0, K, A + (size_t)m0 * lda, lda, w, ldw, vs,
                    Cin ? Cin + (size_t)m0 * ldcin + n : nullptr, ldcin,
                    C + (size_t)m0 * ldc + n, ldc);
    }
  }
  for (; n + kLanes <= n1; n += kLanes) {
    const auto [w, ldw, vs] = panel(n);
    for (int i = 0; i < blocks; ++i) {
      const int m0 = i * M / blocks, m1 = (i + 1) * M / blocks;
      micro_rows<1>(m1 - m0, K, A + (size_t)m0 * lda, lda, w, ldw, vs,
                    Cin ? Cin + (size_t)m0 * ldcin + n : nullptr, ldcin,
                    C + (size_t)m0 * ldc + n, ldc);
    }
  }
  return n;
}

struct PanelAt {
  const float* w;
  int ldw;
  size_t vs;
};

// C[:, n0:n1] = Cin[:, n0:n1] (or 0) + A (M, K) @ W[:, n0:n1]; all row-major.
[[maybe_unused]]
void gemm_cols(int M, int K, const float* A, int lda, const float* W, int ldw, const float* Cin,
               int ldcin, float* C, int ldc, int n0, int n1) {
  int n = gemm_vectors(M, K, A, lda, [&](int c) { return PanelAt{W + c, ldw, (size_t)kLanes}; },
                       Cin, ldcin, C, ldc, n0, n1);
  for (; n < n1; ++n)  // fewer than kLanes columns left (hidden sizes not a multiple of it)
    for (int m = 0; m < M; ++m) {
      float s = Cin ? Cin[(size_t)m * ldcin + n] : 0.f;
      for (int k = 0; k < K; ++k) s += A[(size_t)m * lda + k] * W[(size_t)k * ldw + n];
      C[(size_t)m * ldc + n] = s;
    }
}

// W (K, N) -> W^T (N, K), for the backward product d h_{t-1} = d hp_t W_h^T.
[[maybe_unused]] std::vector<float> transpose(const float* W, int K, int N) {
  std::vector<float> t((size_t)K * N);
  for (int k = 0; k < K; ++k)
    for (int n = 0; n < N; ++n) t[(size_t)n * K + k] = W[(size_t)k * N + n];
  return t;
}

// A weight matrix W (K, N) copied once per call into strips of kLanes columns, each strip's K
// rows contiguous: strip s holds W[:, s*kLanes : (s+1)*kLanes]. Read row-major, a panel's rows
// are N floats apart, a new 4 KiB page every row or two for wide gate blocks, and the hardware
// prefetchers stop at page boundaries; in strips a panel is one stream. Used only when every
// column range asked for starts and ends on a strip boundary (gate blocks of H units, H a
// multiple of kLanes); otherwise the row-major W is read as it is, with the same arithmetic.
struct Strips {
  const float* W = nullptr;  // the row-major original
  int K = 0, N = 0;
  std::vector<float> data;   // empty: not packed
  std::vector<float> rowmajor;  // a transposed W that could not be packed
};

// W (K, N), or W^T when `transposed` (W is then (N, K) and the strips are of its transpose).
[[maybe_unused]]
Strips make_strips(const float* W, int K, int N, int align, bool transposed = false) {
  Strips s;
  s.K = K;
  s.N = N;
  if (!transposed) s.W = W;
  if (align % kLanes != 0 || N % kLanes != 0) {
    if (transposed) {  // the row-major transpose, for gemm_cols
      s.rowmajor = transpose(W, N, K);
      s.W = s.rowmajor.data();
    }
    return s;
  }
  s.data.resize((size_t)K * N);
  float* out = s.data.data();
  for (int st = 0; st < N / kLanes; ++st)
    for (int k = 0; k < K; ++k)
      for (int l = 0; l < kLanes; ++l) {
        const int n = st * kLanes + l;
        *out++ = transposed ? W[(size_t)n * K + k] : W[(size_t)k * N + n];
      }
  return s;
}
// C[:, n0:n1] = Cin[:, n0:n1] (or 0) + A (M, K) @ W[k0:k0+K, n0:n1].
[[maybe_unused]]
void gemm_strips(int M, int k0, int K, const float* A, int lda, const Strips& W, const float* Cin,
                 int ldcin, float* C, int ldc, int n0, int n1) {
  if (W.data.empty())
    return gemm_cols(M, K, A, lda, W.W + (size_t)k0 * W.N, W.N, Cin, ldcin, C, ldc, n0, n1);
  const size_t vs = (size_t)W.K * kLanes;
  const float* base = W.data.data() + (size_t)k0 * kLanes;
  gemm_vectors(M, K, A, lda, [&](int c) { return PanelAt{base + (size_t)(c / kLanes) * vs, kLanes, vs}; },
               Cin, ldcin, C, ldc, n0, n1);
}

// The recurrent product restricted to hidden units [u0, u1) of every gate block.
[[maybe_unused]] void gemm_units(int M, int K, const float* A, const Strips& W, int H, int gates,
                const float* Cin, int ldcin, float* C, int u0, int u1) {
  const int G = gates * H;
  for (int q = 0; q < gates; ++q)
    gemm_strips(M, 0, K, A, K, W, Cin, ldcin, C, G, q * H + u0, q * H + u1);
}

// z[:, units of every gate] = b + x_t W_x (+ h_{t-1} W_h when w_h is given).
[[maybe_unused]]
void gates_units(int B, int F, int H, int gates, const float* x_t, const Strips& w_x,
                 const float* b, const float* h_prev, const Strips* w_h, float* z, int u0,
                 int u1) {
  gemm_units(B, F, x_t, w_x, H, gates, b, 0, z, u0, u1);
  if (w_h) gemm_units(B, H, h_prev, *w_h, H, gates, z, gates * H, z, u0, u1);
}

}  // namespace

#endif  // JAXRNN_KERNELS_PRODUCTS_H_
