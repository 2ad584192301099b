// The weight gradients of every kernel cell as one product over all steps, sum_t a_t^T dz_t
// (jaxrnn/kernels/ops.py: _prev_outer, _steps_outer). Shared parts: common.h.

#include "common.h"

// Operand order, defined here once (see JAXRNN_KERNEL in common.h).
#define JAXRNN_STEPS_OUTER(ARG, RET, ATTR) \
  ARG(F32, h0) ARG(F32, hs) ARG(F32, dz) RET(F32, out) ATTR(bool, shifted)

namespace {

// C[0:MR, 0:kLanes*NV] += A[0:K, 0:MR]^T @ W[0:K, 0:kLanes*NV]: the micro-product with A read
// down its columns (A (K, MR) row-major with stride lda), for products of the form X^T dZ. The
// tile follows the register file (kLanes, kTileRows in common.h).
template <int MR, int NV>
JAXRNN_INLINE void micro_tn(int K, const float* A, int lda, const float* W, int ldw, float* C, int ldc) {
  vreg acc[MR][NV];
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = load_vec(C + (size_t)r * ldc + kLanes * v);
  for (int k = 0; k < K; ++k) {
    vreg w[NV];
    for (int v = 0; v < NV; ++v) w[v] = load_vec(W + (size_t)k * ldw + kLanes * v);
    const float* a = A + (size_t)k * lda;
    for (int r = 0; r < MR; ++r)
      for (int v = 0; v < NV; ++v) acc[r][v] += a[r] * w[v];
  }
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) store_vec(C + (size_t)r * ldc + kLanes * v, acc[r][v]);
}

template <int NV, int MR = kTileRows>
JAXRNN_INLINE void micro_tn_rows(int rows, int K, const float* A, int lda, const float* W, int ldw,
                          float* C, int ldc) {
  if constexpr (MR == 1) {
    return micro_tn<1, NV>(K, A, lda, W, ldw, C, ldc);
  } else {
    if (rows >= MR) return micro_tn<MR, NV>(K, A, lda, W, ldw, C, ldc);
    return micro_tn_rows<NV, MR - 1>(rows, K, A, lda, W, ldw, C, ldc);
  }
}

// A (rows, cols) block of W with row stride ldw, copied contiguous (row stride cols).
JAXRNN_INLINE void pack_panel(const float* w, int ldw, int rows, int cols, float* out) {
  for (int k = 0; k < rows; ++k)
    for (int j = 0; j < cols; ++j) out[(size_t)k * cols + j] = w[(size_t)k * ldw + j];
}

// C[:, n0:n1] += A (K, M)^T @ W (K, :)[:, n0:n1]. K is taken in slabs whose W panel stays in L1
// while every block of C's rows passes over it. The panel is first copied contiguous: read in
// place its rows are ldw floats apart (4 KiB for LSTM at hidden 256), a new page every row, which
// the prefetchers do not cross and which overflow the first-level TLB (NOTES.md lever 28).
void gemm_tn_cols(int K, int M, const float* A, int lda, const float* W, int ldw, float* C,
                  int ldc, int n0, int n1) {
  constexpr int kSlab = 128;
  alignas(64) float panel[kSlab * kTileCols];
  for (int k0 = 0; k0 < K; k0 += kSlab) {
    const int kc = std::min(kSlab, K - k0);
    const float* a = A + (size_t)k0 * lda;
    const float* w = W + (size_t)k0 * ldw;
    int n = n0;
    for (; n + kTileCols <= n1; n += kTileCols) {
      pack_panel(w + n, ldw, kc, kTileCols, panel);
      for (int m0 = 0; m0 < M; m0 += kTileRows)
        micro_tn_rows<2>(std::min(kTileRows, M - m0), kc, a + m0, lda, panel, kTileCols,
                         C + (size_t)m0 * ldc + n, ldc);
    }
    for (; n + kLanes <= n1; n += kLanes) {
      pack_panel(w + n, ldw, kc, kLanes, panel);
      for (int m0 = 0; m0 < M; m0 += kTileRows)
        micro_tn_rows<1>(std::min(kTileRows, M - m0), kc, a + m0, lda, panel, kLanes,
                         C + (size_t)m0 * ldc + n, ldc);
    }
    for (; n < n1; ++n)
      for (int m = 0; m < M; ++m) {
        float s = 0.f;
        for (int k = 0; k < kc; ++k) s += a[(size_t)k * lda + m] * w[(size_t)k * ldw + n];
        C[(size_t)m * ldc + n] += s;
      }
  }
}

// The weight gradients as one product over all steps: sum_t a_t^T dz_t, where a_t is hs[t]
// (input weights: hs is x) or, when shifted, the carry entering step t, [h0; hs[:-1]]
// (recurrent weights). Read in place: XLA would first copy hs into a shifted (T, B, H) buffer,
// and x into a second row-major copy. At config A those copies pushed the training step's
// temporaries past glibc's 32 MiB mmap ceiling, so that every step faulted in fresh pages
// (GRU: ~13,000 faults per step, 55 vs 42 ms). Columns are split between threads.
JAXRNN_KERNEL(StepsOuter, JAXRNN_STEPS_OUTER) {
  Shapes s("jaxrnn_steps_outer", "T, B, H from hs; N from dz");
  const int T = (int)s.dim(hs, "hs", 3, 0), B = (int)s.dim(hs, "hs", 3, 1), H = (int)s.dim(hs, "hs", 3, 2);
  const int N = (int)s.dim(dz, "dz", 3, 2);
  if (shifted) JAXRNN_EXPECT(s, h0, B, H);
  JAXRNN_EXPECT(s, dz, T, B, N);
  JAXRNN_EXPECT(s, out, H, N);
  if (!s.ok()) return s.error();
  float* C = out->typed_data();
  std::memset(C, 0, sizeof(float) * H * N);
  if (T == 0) return ffi::Error::Success();
  const float* DZ = dz.typed_data();
  const int64_t work = (int64_t)T * B * H * N;
  int nthreads = work < (1 << 20) ? 1 : team_size(pool, kParallelMinWork);
  const Chunks ch = make_chunks(N, nthreads);
  run_phases(ch.count() > 1 ? &pool : nullptr, nthreads, 1, ch.count(), [&](int, int c) {
    const int n0 = ch.start[c], n1 = ch.start[c + 1];
    if (shifted) {
      gemm_tn_cols(B, H, h0.typed_data(), H, DZ, N, C, N, n0, n1);
      gemm_tn_cols((T - 1) * B, H, hs.typed_data(), H, DZ + (size_t)B * N, N, C, N, n0, n1);
    } else {
      gemm_tn_cols(T * B, H, hs.typed_data(), H, DZ, N, C, N, n0, n1);
    }
  });
  return ffi::Error::Success();
}

}  // namespace

JAXRNN_MEMBER_HANDLER(jaxrnn_steps_outer, StepsOuter, JAXRNN_STEPS_OUTER, out, 2)
