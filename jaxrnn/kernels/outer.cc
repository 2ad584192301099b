// The weight gradients of every kernel cell as one product over all steps, sum_t a_t^T dz_t
// (jaxrnn/kernels/ops.py: _prev_outer, _steps_outer). Shared parts: common.h.

#include "common.h"

// Operand order, defined here once (see JAXRNN_KERNEL in ffi_glue.h).
#define JAXRNN_STEPS_OUTER(ARG, RET, ATTR) \
  ARG(F32, h0) ARG(F32, hs) ARG(F32, dz) RET(F32, out) ATTR(bool, shifted)
#define JAXRNN_ROWS_TIMES(ARG, RET, ATTR) \
  ARG(F32, a) ARG(F32, w) ARG(F32, bias) RET(F32, out) ATTR(bool, transposed) ATTR(bool, biased)
#define JAXRNN_COLUMN_SUMS(ARG, RET, ATTR) ARG(F32, a) RET(F32, out)

namespace {

// C[0:MR, 0:kLanes*NV] += A[0:K, 0:MR]^T @ W[0:K, 0:kLanes*NV]: the micro-product with A read
// down its columns (A (K, MR) row-major with stride lda), for products of the form X^T dZ. The
// tile follows the register file (kLanes, kTileRows in products.h).
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
// and x into a second row-major copy, temporaries that for large models passed glibc's mmap
// threshold, so that every step faulted in fresh pages. Columns are split between threads.
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
  run_phases(ch.count() > 1 ? &pool : nullptr, 1, ch.count(), [&](int, int c) {
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

// The products around the recurrences that XLA would otherwise compute (the input gradient
// dZ W_x^T, minGRU/minLSTM's projection x W_x + b, the bias gradients' column sums) are done
// here so that a kernel cell's values never depend on the thread count: XLA's CPU reductions
// and products split their sums by the size of its thread pool, which follows the process's
// CPU affinity (issue 27: a process confined to one CPU got other bias gradients). Here every
// output element is summed in one fixed order whatever the team: rows or columns are split
// between threads, the summed axis never.

// out (M, N) = a[:, :K] (M, Ka >= K) @ W (+ bias), W (K, N) or, when transposed, given as
// (N, K). Rows are split between threads; each thread takes its rows in blocks whose rows of
// `a` stay in L2 while every column panel passes over them.
JAXRNN_KERNEL(RowsTimes, JAXRNN_ROWS_TIMES) {
  Shapes s("jaxrnn_rows_times", "M, Ka from a; K, N from w");
  const int M = (int)s.dim(a, "a", 2, 0), Ka = (int)s.dim(a, "a", 2, 1);
  const int K = (int)s.dim(w, "w", 2, transposed ? 1 : 0);
  const int N = (int)s.dim(w, "w", 2, transposed ? 0 : 1);
  s.require(K <= Ka, "a must have at least K = " + std::to_string(K) + " columns, got " +
                         std::to_string(Ka));
  if (biased) JAXRNN_EXPECT(s, bias, N);
  JAXRNN_EXPECT(s, out, M, N);
  if (!s.ok()) return s.error();
  const Strips W = make_strips(w.typed_data(), K, N, N, transposed);
  const float* A = a.typed_data();
  const float* b = biased ? bias.typed_data() : nullptr;
  float* C = out->typed_data();
  if (M == 0 || N == 0) return ffi::Error::Success();
  if (K == 0) {
    for (int m = 0; m < M; ++m)
      for (int n = 0; n < N; ++n) C[(size_t)m * N + n] = b ? b[n] : 0.f;
    return ffi::Error::Success();
  }
  const int block = std::max(kTileRows, (int)((64 << 10) / K) / kTileRows * kTileRows);
  const int64_t work = (int64_t)M * K * N;
  const int nthreads = work < (1 << 20) ? 1 : std::min(team_size(pool, kParallelMinWork),
                                                       std::max(1, M / kTileRows));
  run_phases(nthreads > 1 ? &pool : nullptr, 1, nthreads, [&](int, int c) {
    const int m0 = (int)((int64_t)M * c / nthreads), m1 = (int)((int64_t)M * (c + 1) / nthreads);
    for (int r = m0; r < m1; r += block) {
      const int rows = std::min(block, m1 - r);
      gemm_strips(rows, 0, K, A + (size_t)r * Ka, Ka, W, b, 0, C + (size_t)r * N, N, 0, N);
    }
  });
  return ffi::Error::Success();
}

// out (N,) = the sum of a's rows (a (M, N)), each column summed from row 0 down. Columns are
// split between threads.
JAXRNN_KERNEL(ColumnSums, JAXRNN_COLUMN_SUMS) {
  Shapes s("jaxrnn_column_sums", "M, N from a");
  const int M = (int)s.dim(a, "a", 2, 0), N = (int)s.dim(a, "a", 2, 1);
  JAXRNN_EXPECT(s, out, N);
  if (!s.ok()) return s.error();
  const float* A = a.typed_data();
  float* C = out->typed_data();
  std::memset(C, 0, sizeof(float) * N);
  const int nthreads = (int64_t)M * N < (1 << 20) ? 1 : team_size(pool, kParallelMinWork);
  const Chunks ch = make_chunks(N, nthreads);
  run_phases(ch.count() > 1 ? &pool : nullptr, 1, ch.count(), [&](int, int c) {
    const int n0 = ch.start[c], n1 = ch.start[c + 1];
    for (int m = 0; m < M; ++m) {
      const float* row = A + (size_t)m * N;
#pragma omp simd
      for (int n = n0; n < n1; ++n) C[n] += row[n];
    }
  });
  return ffi::Error::Success();
}

}  // namespace

JAXRNN_MEMBER_HANDLER(jaxrnn_rows_times, RowsTimes, JAXRNN_ROWS_TIMES, w, 2)
JAXRNN_MEMBER_HANDLER(jaxrnn_column_sums, ColumnSums, JAXRNN_COLUMN_SUMS, out, 1)
JAXRNN_MEMBER_HANDLER(jaxrnn_steps_outer, StepsOuter, JAXRNN_STEPS_OUTER, out, 2)

// What this build is, for kernels.build_info(): the vector width and register tile its ISA
// gave, and whether team members can be moved between CPUs on this platform.
extern "C" __attribute__((visibility("default"))) const char* jaxrnn_build_info() {
  static const std::string info = "lanes=" + std::to_string(kLanes) +
                                  " tile_rows=" + std::to_string(kTileRows) +
                                  " move_threads=" + std::to_string(JAXRNN_CAN_MOVE_THREADS);
  return info.c_str();
}
