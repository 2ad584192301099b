// Fused sequence kernels for the hot recurrent cells (LSTM, GRU, Elman), as XLA FFI custom calls
// on CPU.
//
// Why they exist: inside `lax.scan`, XLA's CPU while loop costs about as much per step as the
// recurrent matrix product itself (benchmarks/NOTES.md, shared PERF-NOTES). These kernels run
// the whole time loop in one call: each step is two small matrix products (input and recurrent,
// with the kernel's own register-blocked product) and one elementwise pass, with no per-step
// dispatch. The input projection is computed per step inside the kernel rather than for all
// steps before it: a (T, B, G) buffer of projections cost more in fresh-page faults and memory
// traffic than batching saved (LSTM at config A: 30 vs 21 ms per call). The weight gradients
// are one large product over all steps each, after the backward loop (StepsOuter).
//
// Threading: each step's work is split by hidden unit into one chunk per thread. A chunk owns
// the same units in every gate block, so its gate nonlinearities need nothing from other chunks
// and one barrier per step suffices. The caller thread and helpers taken from XLA's intra-op
// thread pool each own a chunk, so that a thread's slice of the weights stays in its core's cache
// from step to step (work stealing between steady threads measured slower for the Elman net).
// A helper that has not started, or has not claimed its chunk within a short wait, has its chunk
// done by the caller.
//
// Layouts are row-major and time-major: x (T, B, F), hs (T, B, H), weights (F, G) and (H, G)
// with the gate blocks side by side in the order the Python cells use, biases (G,).

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

// The hot helpers are force-inlined: GCC's inliner works to a budget for the whole file, and
// once the minGRU/minLSTM and Jordan kernels were added it stopped inlining the exp and the
// micro-products into the LSTM kernel, which then ran 2x slower (config B forward: 5.0 -> 10.7
// ms per call; benchmarks/NOTES.md lever 19).
#define JAXRNN_INLINE inline __attribute__((always_inline))

namespace {

// ----------------------------------------------------------------------------- small products

// 16 floats: one AVX-512 register, two AVX2 registers; GCC picks the instructions for the
// machine the kernels are compiled on (-march=native).
typedef float vf16 __attribute__((vector_size(64)));
typedef float vf16u __attribute__((vector_size(64), aligned(4)));

JAXRNN_INLINE vf16 load16(const float* p) { return *reinterpret_cast<const vf16u*>(p); }
JAXRNN_INLINE void store16(float* p, vf16 v) { *reinterpret_cast<vf16u*>(p) = v; }

// C[0:MR, 0:16*NV] = Cin (or 0) + A[0:MR, 0:K] @ W[0:K, 0:16*NV]; Cin rows may have stride 0
// (a bias broadcast over rows).
template <int MR, int NV>
JAXRNN_INLINE void micro(int K, const float* A, int lda, const float* W, int ldw, const float* Cin,
                  int ldcin, float* C, int ldc) {
  vf16 acc[MR][NV];
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v)
      acc[r][v] = Cin ? load16(Cin + (size_t)r * ldcin + 16 * v) : vf16{};
  for (int k = 0; k < K; ++k) {
    vf16 w[NV];
    for (int v = 0; v < NV; ++v) w[v] = load16(W + (size_t)k * ldw + 16 * v);
    for (int r = 0; r < MR; ++r) {
      const float a = A[(size_t)r * lda + k];
      for (int v = 0; v < NV; ++v) acc[r][v] += a * w[v];
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) store16(C + (size_t)r * ldc + 16 * v, acc[r][v]);
}

template <int NV>
JAXRNN_INLINE void micro_rows(int rows, int K, const float* A, int lda, const float* W, int ldw,
                       const float* Cin, int ldcin, float* C, int ldc) {
  switch (rows) {
    case 8: return micro<8, NV>(K, A, lda, W, ldw, Cin, ldcin, C, ldc);
    case 7: return micro<7, NV>(K, A, lda, W, ldw, Cin, ldcin, C, ldc);
    case 6: return micro<6, NV>(K, A, lda, W, ldw, Cin, ldcin, C, ldc);
    case 5: return micro<5, NV>(K, A, lda, W, ldw, Cin, ldcin, C, ldc);
    case 4: return micro<4, NV>(K, A, lda, W, ldw, Cin, ldcin, C, ldc);
    case 3: return micro<3, NV>(K, A, lda, W, ldw, Cin, ldcin, C, ldc);
    case 2: return micro<2, NV>(K, A, lda, W, ldw, Cin, ldcin, C, ldc);
    default: return micro<1, NV>(K, A, lda, W, ldw, Cin, ldcin, C, ldc);
  }
}

// C[:, n0:n1] = Cin[:, n0:n1] (or 0) + A (M, K) @ W[:, n0:n1]; all row-major. Column panels
// outside, row blocks inside: a (K, 32) panel of W (32 KiB at K = 256) is read once from L2 and
// then reused from L1 by every block of rows.
void gemm_cols(int M, int K, const float* A, int lda, const float* W, int ldw, const float* Cin,
               int ldcin, float* C, int ldc, int n0, int n1) {
  int n = n0;
  for (; n + 32 <= n1; n += 32)
    for (int m0 = 0; m0 < M; m0 += 8)
      micro_rows<2>(std::min(8, M - m0), K, A + (size_t)m0 * lda, lda, W + n, ldw,
                    Cin ? Cin + (size_t)m0 * ldcin + n : nullptr, ldcin,
                    C + (size_t)m0 * ldc + n, ldc);
  for (; n + 16 <= n1; n += 16)
    for (int m0 = 0; m0 < M; m0 += 8)
      micro_rows<1>(std::min(8, M - m0), K, A + (size_t)m0 * lda, lda, W + n, ldw,
                    Cin ? Cin + (size_t)m0 * ldcin + n : nullptr, ldcin,
                    C + (size_t)m0 * ldc + n, ldc);
  for (; n < n1; ++n)  // fewer than 16 columns left (hidden sizes not a multiple of 16)
    for (int m = 0; m < M; ++m) {
      float s = Cin ? Cin[(size_t)m * ldcin + n] : 0.f;
      for (int k = 0; k < K; ++k) s += A[(size_t)m * lda + k] * W[(size_t)k * ldw + n];
      C[(size_t)m * ldc + n] = s;
    }
}

// The recurrent product restricted to hidden units [u0, u1) of every gate block.
void gemm_units(int M, int K, const float* A, const float* W, int H, int gates,
                const float* Cin, int ldcin, float* C, int u0, int u1) {
  const int G = gates * H;
  for (int q = 0; q < gates; ++q)
    gemm_cols(M, K, A, K, W, G, Cin, ldcin, C, G, q * H + u0, q * H + u1);
}

// z[:, units of every gate] = b + x_t W_x (+ h_{t-1} W_h when w_h is given).
void gates_units(int B, int F, int H, int gates, const float* x_t, const float* w_x,
                 const float* b, const float* h_prev, const float* w_h, float* z, int u0,
                 int u1) {
  gemm_units(B, F, x_t, w_x, H, gates, b, 0, z, u0, u1);
  if (w_h) gemm_units(B, H, h_prev, w_h, H, gates, z, gates * H, z, u0, u1);
}

// W (K, N) -> W^T (N, K), for the backward product d h_{t-1} = d hp_t W_h^T.
std::vector<float> transpose(const float* W, int K, int N) {
  std::vector<float> t((size_t)K * N);
  for (int k = 0; k < K; ++k)
    for (int n = 0; n < N; ++n) t[(size_t)n * K + k] = W[(size_t)k * N + n];
  return t;
}

// ----------------------------------------------------------------------------- nonlinearities

// exp in a form GCC vectorises inline inside the `omp simd` loops: x = n ln2 + r (ln2 in two
// parts), exp(r) by Cephes' degree-7 polynomial, 2^n put into the exponent bits. Error ~2 ulp.
// Measured against glibc's vector expf (a call per vector) in the LSTM gate pass at config B:
// 1.1 vs 1.5 us per step and thread; sigmoid and tanh stay within 3e-7 of float64.
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

// ----------------------------------------------------------------------------- team of threads

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

// Spin, then yield: on an oversubscribed machine a pure spin would starve the thread we wait on.
struct Backoff {
  int spins = 0;
  void wait() {
    if (++spins < 4000) {
      cpu_relax();
    } else {
      std::this_thread::yield();
    }
  }
};

struct TeamState {
  explicit TeamState(int nchunks, int nhelpers)
      : claimed(nchunks), helper_state(nhelpers) {
    for (auto& c : claimed) c.store(-1);
    for (auto& h : helper_state) h.store(0);
  }
  std::atomic<int> open{-1};        // the phase threads may work on now
  std::atomic<int64_t> done{0};     // chunks finished, over all phases
  std::vector<std::atomic<int>> claimed;       // last phase each chunk was claimed for
  std::vector<std::atomic<int>> helper_state;  // 0 not started, 1 running, 2 finished, 3 cancelled
  std::thread::id caller;
};

inline bool try_claim(TeamState& st, int phase, int c) {
  int expected = phase - 1;
  return st.claimed[c].compare_exchange_strong(expected, phase, std::memory_order_acq_rel);
}

// Thread `id` (0 = the caller) owns chunk `id`: its slice of the weights then stays in its
// core's cache from step to step. The caller also takes a helper's chunk when the helper has not
// started, or has not claimed it within a short wait (a helper descheduled by a busy machine
// would otherwise stall every step).
constexpr int kStealAfterSpins = 2000;

template <class Fn>
void claim_and_work(TeamState& st, int phase, int id, int nchunks, Fn& fn) {
  if (try_claim(st, phase, id)) {
    fn(phase, id);
    st.done.fetch_add(1, std::memory_order_acq_rel);
  }
  if (id != 0) return;
  for (int c = 1; c < nchunks; ++c) {
    const int h = st.helper_state[c - 1].load(std::memory_order_acquire);
    if (h == 1) {  // running: give it a moment to claim its own chunk
      for (int spin = 0; spin < kStealAfterSpins; ++spin) {
        if (st.claimed[c].load(std::memory_order_acquire) >= phase) break;
        cpu_relax();
      }
    }
    if (try_claim(st, phase, c)) {
      fn(phase, c);
      st.done.fetch_add(1, std::memory_order_acq_rel);
    }
  }
}

// Runs fn(phase, chunk) for every chunk of phases 0..nphases-1, all chunks of a phase finishing
// before any chunk of the next one starts.
template <class Fn>
void run_phases(ffi::ThreadPool* pool, int nthreads, int nphases, int nchunks, Fn fn) {
  const int nhelpers = pool ? nchunks - 1 : 0;  // one chunk per thread (see make_chunks)
  auto st = std::make_shared<TeamState>(nchunks, nhelpers);
  st->caller = std::this_thread::get_id();
  Fn* fn_ptr = &fn;
  for (int h = 0; h < nhelpers; ++h) {
    const int home = h + 1;
    pool->Schedule([st, h, home, nphases, nchunks, fn_ptr]() {
      // A pool that cannot take the task runs it inline on the caller: do nothing then.
      if (std::this_thread::get_id() == st->caller) return;
      int expected = 0;
      if (!st->helper_state[h].compare_exchange_strong(expected, 1)) return;  // cancelled
      int last = -1;
      Backoff backoff;
      for (;;) {
        const int p = st->open.load(std::memory_order_acquire);
        if (p >= nphases) break;
        if (p > last) {
          claim_and_work(*st, p, home, nchunks, *fn_ptr);
          last = p;
          backoff.spins = 0;
        } else {
          backoff.wait();
        }
      }
      st->helper_state[h].store(2, std::memory_order_release);
    });
  }
  for (int p = 0; p < nphases; ++p) {
    st->open.store(p, std::memory_order_release);
    claim_and_work(*st, p, 0, nchunks, fn);
    const int64_t target = (int64_t)(p + 1) * nchunks;
    Backoff backoff;
    while (st->done.load(std::memory_order_acquire) < target) backoff.wait();
  }
  st->open.store(nphases, std::memory_order_release);
  // fn lives on this stack: wait for every helper that started, cancel those that did not.
  for (int h = 0; h < nhelpers; ++h) {
    int expected = 0;
    if (!st->helper_state[h].compare_exchange_strong(expected, 3)) {
      Backoff backoff;
      while (st->helper_state[h].load(std::memory_order_acquire) != 2) backoff.wait();
    }
  }
}

// Unit chunks: one per thread, each a multiple of 16 units where possible, so that the
// product's columns fill whole vectors.
struct Chunks {
  std::vector<int> start;
  int count() const { return (int)start.size() - 1; }
};

Chunks make_chunks(int H, int nthreads) {
  Chunks ch;
  const int blocks = std::max(1, H / 16);
  const int n = std::max(1, std::min(blocks, nthreads));
  for (int i = 0; i <= n; ++i) ch.start.push_back(i == n ? H : 16 * (int)((int64_t)blocks * i / n));
  return ch;
}

// Row split: with the weights small enough to sit in every core's L2, the threads split the batch
// rows instead of the units. Rows never meet, so each thread runs the whole sequence on its
// rows with no barrier at all (the per-step barrier weighs most when a step is small), and a
// thread that shares its core with another process slows only its own rows. With larger
// weights the unit split keeps each core's weight slice at half the size.
// Measured (NOTES.md lever 12): a clear gain for the Elman net at config A (16 rows per
// thread), none at config B (4 rows per thread: the product's 8-row register blocks run half
// empty), so rows are split only in whole blocks of 8.
constexpr int64_t kRowSplitMaxWeightBytes = 512 << 10;
constexpr int kRowSplitMinRows = 8;

// step(phase, b0, b1, u0, u1) does rows [b0, b1) and units [u0, u1) of one phase; phases must
// run in order for each row.
template <class Step>
void drive(ffi::ThreadPool& pool, int nthreads, int nphases, int B, int H,
           int64_t weight_bytes, Step step) {
  if (nthreads > 1 && B >= kRowSplitMinRows * nthreads && weight_bytes <= kRowSplitMaxWeightBytes) {
    run_phases(&pool, nthreads, 1, nthreads, [&](int, int c) {
      const int b0 = (int)((int64_t)B * c / nthreads), b1 = (int)((int64_t)B * (c + 1) / nthreads);
      for (int p = 0; p < nphases; ++p) step(p, b0, b1, 0, H);
    });
    return;
  }
  const Chunks ch = make_chunks(H, nthreads);
  run_phases(&pool, nthreads, nphases, ch.count(), [&](int p, int c) {
    step(p, 0, B, ch.start[c], ch.start[c + 1]);
  });
}

// Below this many multiply-adds per step, threads cost more than they save.
constexpr int64_t kParallelMinWork = 1 << 16;

int team_size(ffi::ThreadPool& pool, int64_t work_per_step) {
  if (work_per_step < kParallelMinWork) return 1;
  const int64_t n = pool.num_threads();
  const int hw = (int)std::thread::hardware_concurrency();
  if (const char* env = std::getenv("JAXRNN_KERNEL_THREADS")) return std::max(1, std::atoi(env));
  return (int)std::max<int64_t>(1, std::min<int64_t>(n, hw > 0 ? hw : 1));
}

JAXRNN_INLINE bool step_valid(const int32_t* lens, int t, int b) { return !lens || t < lens[b]; }

// ----------------------------------------------------------------------------- LSTM

// Gate order (i, f, g, o). Training saves the activated gates and every cell state.
ffi::Error LstmForward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> wx,
                       ffi::Buffer<ffi::F32> bias, ffi::Buffer<ffi::F32> wh,
                       ffi::Buffer<ffi::F32> h0, ffi::Buffer<ffi::F32> c0,
                       ffi::Buffer<ffi::S32> lens_buf, ffi::ResultBuffer<ffi::F32> hs_out,
                       ffi::ResultBuffer<ffi::F32> c_last_out, ffi::ResultBuffer<ffi::F32> cs_out,
                       ffi::ResultBuffer<ffi::F32> gates_out, bool masked, bool training) {
  const auto d = x.dimensions();
  const int T = (int)d[0], B = (int)d[1], F = (int)d[2], G = (int)wh.dimensions()[1], H = G / 4;
  const float* X = x.typed_data();
  const float* W = wh.typed_data();
  const int32_t* lens = masked ? lens_buf.typed_data() : nullptr;
  float* HS = hs_out->typed_data();
  float* CS = training ? cs_out->typed_data() : nullptr;
  float* Z = training ? gates_out->typed_data() : nullptr;
  std::vector<float> zbuf(training ? 0 : (size_t)B * G), cbuf(training ? 0 : (size_t)2 * B * H);
  const int nthreads = team_size(pool, (int64_t)B * G * H);
  if (T == 0) {
    std::memcpy(c_last_out->typed_data(), c0.typed_data(), sizeof(float) * B * H);
    return ffi::Error::Success();
  }

  drive(pool, nthreads, T, B, H, (int64_t)(F + H) * G * 4, [&](int t, int b0, int b1, int u0, int u1) {
    const float* h_prev = t ? HS + (size_t)(t - 1) * B * H : h0.typed_data();
    const float* c_prev = t ? (CS ? CS + (size_t)(t - 1) * B * H : cbuf.data() + (size_t)((t - 1) & 1) * B * H)
                            : c0.typed_data();
    float* c_t = CS ? CS + (size_t)t * B * H : cbuf.data() + (size_t)(t & 1) * B * H;
    float* z = Z ? Z + (size_t)t * B * G : zbuf.data();
    float* h_t = HS + (size_t)t * B * H;
    gates_units(b1 - b0, F, H, 4, X + ((size_t)t * B + b0) * F, wx.typed_data(), bias.typed_data(),
                h_prev + (size_t)b0 * H, W, z + (size_t)b0 * G, u0, u1);
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
  std::memcpy(c_last_out->typed_data(), c_fin, sizeof(float) * B * H);
  return ffi::Error::Success();
}

// Cotangents of the gate pre-activations dz (T, B, 4H), and of h0 and c0, from the cotangents
// of every step's h (dhs) and of the last cell state.
ffi::Error LstmBackward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> wh, ffi::Buffer<ffi::F32> gates,
                        ffi::Buffer<ffi::F32> cs, ffi::Buffer<ffi::F32> c0,
                        ffi::Buffer<ffi::F32> dhs_buf, ffi::Buffer<ffi::F32> dc_last,
                        ffi::Buffer<ffi::S32> lens_buf, ffi::ResultBuffer<ffi::F32> dz_out,
                        ffi::ResultBuffer<ffi::F32> dh0_out, ffi::ResultBuffer<ffi::F32> dc0_out,
                        bool masked) {
  const auto d = gates.dimensions();
  const int T = (int)d[0], B = (int)d[1], G = (int)d[2], H = G / 4;
  const std::vector<float> WT = transpose(wh.typed_data(), H, G);  // (G, H)
  const float* Zs = gates.typed_data();
  const float* CS = cs.typed_data();
  const float* DHS = dhs_buf.typed_data();
  const int32_t* lens = masked ? lens_buf.typed_data() : nullptr;
  float* DZ = dz_out->typed_data();
  float* dh = dh0_out->typed_data();  // the running d h carry; ends as d h0
  float* dc = dc0_out->typed_data();  // the running d c carry; ends as d c0
  std::memset(dh, 0, sizeof(float) * B * H);
  std::memcpy(dc, dc_last.typed_data(), sizeof(float) * B * H);
  const int nthreads = team_size(pool, (int64_t)B * G * H);

  // Phase k: d h for step T-k from dz of step T-k+1 (k > 0), then the gates of step T-1-k.
  drive(pool, nthreads, T + 1, B, H, (int64_t)G * H * 4, [&](int k, int b0, int b1, int u0, int u1) {
    const int t = T - 1 - k;
    if (k > 0) {
      // dh holds the part of d h_t that bypasses the product (frozen rows); add dz_{t+1} W_h^T.
      gemm_cols(b1 - b0, G, DZ + ((size_t)(t + 1) * B + b0) * G, G, WT.data(), H,
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

// ----------------------------------------------------------------------------- GRU

// reset_after form, gate order (r, z, n): hp = h W_h + b_h, r = s(xr + hr), u = s(xz + hz),
// n = tanh(xn + r * hn), h' = (1 - u) n + u h. Training saves (r, u, n, hn) per step.
ffi::Error GruForward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> wx,
                      ffi::Buffer<ffi::F32> bias, ffi::Buffer<ffi::F32> wh,
                      ffi::Buffer<ffi::F32> bh, ffi::Buffer<ffi::F32> h0,
                      ffi::Buffer<ffi::S32> lens_buf, ffi::ResultBuffer<ffi::F32> hs_out,
                      ffi::ResultBuffer<ffi::F32> saved_out, bool masked, bool training) {
  const auto d = x.dimensions();
  const int T = (int)d[0], B = (int)d[1], F = (int)d[2], G = (int)wh.dimensions()[1], H = G / 3;
  const float* X = x.typed_data();
  const float* W = wh.typed_data();
  const int32_t* lens = masked ? lens_buf.typed_data() : nullptr;
  float* HS = hs_out->typed_data();
  float* SV = training ? saved_out->typed_data() : nullptr;
  std::vector<float> hp((size_t)B * G), xpb((size_t)B * G);
  const int nthreads = team_size(pool, (int64_t)B * G * H);

  drive(pool, nthreads, T, B, H, (int64_t)(F + H) * G * 4, [&](int t, int b0, int b1, int u0, int u1) {
    const float* h_prev = t ? HS + (size_t)(t - 1) * B * H : h0.typed_data();
    float* h_t = HS + (size_t)t * B * H;
    gemm_units(b1 - b0, H, h_prev + (size_t)b0 * H, W, H, 3, bh.typed_data(), 0,
               hp.data() + (size_t)b0 * G, u0, u1);
    gates_units(b1 - b0, F, H, 3, X + ((size_t)t * B + b0) * F, wx.typed_data(), bias.typed_data(),
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
#pragma omp simd
      for (int j = u0; j < u1; ++j) {
        const float r = sigmoidf(xb[j] + hpb[j]);
        const float u = sigmoidf(xb[H + j] + hpb[H + j]);
        const float hn = hpb[2 * H + j];
        const float n = tanhf_(xb[2 * H + j] + r * hn);
        hb[j] = (1.f - u) * n + u * hprev[j];
        if (sv) { sv[j] = r; sv[H + j] = u; sv[2 * H + j] = n; sv[3 * H + j] = hn; }
      }
    }
  });
  return ffi::Error::Success();
}

// Cotangents, written over the saved (r, u, n, hn) of each step as (d r_pre, d u_pre, d n_pre,
// d hn): those of xp are the first three blocks, those of hp blocks 1, 2 and 4 (they differ
// only in the n block, d hn = d n_pre * r). Reusing the saved buffer spares two fresh
// (T, B, 3H) buffers. Also the cotangent of h0.
ffi::Error GruBackward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> wh, ffi::Buffer<ffi::F32> saved,
                       ffi::Buffer<ffi::F32> hs, ffi::Buffer<ffi::F32> h0,
                       ffi::Buffer<ffi::F32> dhs_buf, ffi::Buffer<ffi::S32> lens_buf,
                       ffi::ResultBuffer<ffi::F32> d4_out, ffi::ResultBuffer<ffi::F32> dh0_out,
                       bool masked) {
  const auto d = hs.dimensions();
  const int T = (int)d[0], B = (int)d[1], H = (int)d[2], G = 3 * H, G4 = 4 * H;
  const std::vector<float> WT = transpose(wh.typed_data(), H, G);  // (3H, H)
  const float* SV = saved.typed_data();
  const float* HS = hs.typed_data();
  const float* DHS = dhs_buf.typed_data();
  const int32_t* lens = masked ? lens_buf.typed_data() : nullptr;
  float* D4 = d4_out->typed_data();  // may be the same memory as SV
  float* dh = dh0_out->typed_data();
  std::memset(dh, 0, sizeof(float) * B * H);
  const int nthreads = team_size(pool, (int64_t)B * G * H);

  drive(pool, nthreads, T + 1, B, H, (int64_t)G * H * 4, [&](int k, int b0, int b1, int u0, int u1) {
    const int t = T - 1 - k;
    if (k > 0) {  // dh += d(r, u)_pre W_h[:, :2H]^T + d hn W_h[:, 2H:]^T
      const float* d4 = D4 + ((size_t)(t + 1) * B + b0) * G4;
      float* dhr = dh + (size_t)b0 * H;
      gemm_cols(b1 - b0, 2 * H, d4, G4, WT.data(), H, dhr, H, dhr, H, u0, u1);
      gemm_cols(b1 - b0, H, d4 + 3 * H, G4, WT.data() + (size_t)2 * H * H, H, dhr, H, dhr, H, u0,
                u1);
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

// ----------------------------------------------------------------------------- Elman

// h' = (1 - a) h + a tanh(xp + h W_h); a = 1 is the Elman net, a < 1 a leaky reservoir.
// Training with a < 1 also saves s = tanh(.) per step (with a = 1 it equals h').
ffi::Error ElmanForward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> wx,
                        ffi::Buffer<ffi::F32> bias, ffi::Buffer<ffi::F32> wh,
                        ffi::Buffer<ffi::F32> h0, ffi::Buffer<ffi::S32> lens_buf,
                        ffi::ResultBuffer<ffi::F32> hs_out, ffi::ResultBuffer<ffi::F32> ss_out,
                        bool masked, bool save_s, float leak) {
  const auto d = x.dimensions();
  const int T = (int)d[0], B = (int)d[1], F = (int)d[2], H = (int)wh.dimensions()[0];
  const float* X = x.typed_data();
  const float* W = wh.typed_data();
  const int32_t* lens = masked ? lens_buf.typed_data() : nullptr;
  float* HS = hs_out->typed_data();
  float* SS = save_s ? ss_out->typed_data() : nullptr;
  std::vector<float> zbuf((size_t)B * H);
  const int nthreads = team_size(pool, (int64_t)B * H * H);

  drive(pool, nthreads, T, B, H, (int64_t)(F + H) * H * 4, [&](int t, int b0, int b1, int u0, int u1) {
    const float* h_prev = t ? HS + (size_t)(t - 1) * B * H : h0.typed_data();
    float* h_t = HS + (size_t)t * B * H;
    float* z = zbuf.data();
    gates_units(b1 - b0, F, H, 1, X + ((size_t)t * B + b0) * F, wx.typed_data(), bias.typed_data(),
                h_prev + (size_t)b0 * H, W, z + (size_t)b0 * H, u0, u1);
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
#pragma omp simd
        for (int j = u0; j < u1; ++j) {
          const float s = tanhf_(zb[j]);
          hb[j] = (1.f - leak) * hp[j] + leak * s;
          if (sb) sb[j] = s;
        }
      }
    }
  });
  return ffi::Error::Success();
}

ffi::Error ElmanBackward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> wh, ffi::Buffer<ffi::F32> ss,
                         ffi::Buffer<ffi::F32> dhs_buf, ffi::Buffer<ffi::S32> lens_buf,
                         ffi::ResultBuffer<ffi::F32> dz_out, ffi::ResultBuffer<ffi::F32> dh0_out,
                         bool masked, float leak) {
  const auto d = ss.dimensions();
  const int T = (int)d[0], B = (int)d[1], H = (int)d[2];
  const std::vector<float> WT = transpose(wh.typed_data(), H, H);
  const float* SS = ss.typed_data();  // tanh outputs (== hs when leak == 1)
  const float* DHS = dhs_buf.typed_data();
  const int32_t* lens = masked ? lens_buf.typed_data() : nullptr;
  float* DZ = dz_out->typed_data();
  float* dh = dh0_out->typed_data();
  std::memset(dh, 0, sizeof(float) * B * H);
  const int nthreads = team_size(pool, (int64_t)B * H * H);

  drive(pool, nthreads, T + 1, B, H, (int64_t)H * H * 4, [&](int k, int b0, int b1, int u0, int u1) {
    const int t = T - 1 - k;
    if (k > 0)
      gemm_cols(b1 - b0, H, DZ + ((size_t)(t + 1) * B + b0) * H, H, WT.data(), H,
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

// ----------------------------------------------------------------------------- Jordan

// h_t = tanh(x_t W_x + b + y_{t-1} U), y_t = tanh(h_t V + b_y): the recurrence runs through the
// readout, so each step is two dependent products, split between threads as two phases (units
// of H, then units of O) or, with enough rows and weights that fit every core's L2, by rows with
// no barrier at all (as `drive` does for one product).
constexpr int64_t kJordanRowSplitMaxWeightBytes = 768 << 10;

// fn(p, b0, b1, n0, n1): phase p on rows [b0, b1) and units [n0, n1) of H (p % 2 == h_parity)
// or of O (otherwise).
template <class Fn>
void drive_two(ffi::ThreadPool& pool, int nthreads, int nphases, int h_parity, int B, int H,
               int O, int64_t weight_bytes, Fn fn) {
  auto width = [&](int p) { return p % 2 == h_parity ? H : O; };
  if (nthreads > 1 && B >= kRowSplitMinRows * nthreads &&
      weight_bytes <= kJordanRowSplitMaxWeightBytes) {
    run_phases(&pool, nthreads, 1, nthreads, [&](int, int c) {
      const int b0 = (int)((int64_t)B * c / nthreads), b1 = (int)((int64_t)B * (c + 1) / nthreads);
      for (int p = 0; p < nphases; ++p) fn(p, b0, b1, 0, width(p));
    });
    return;
  }
  const int n = std::max(1, std::min(nthreads, std::min(H / 16, O / 16)));
  const Chunks ch_h = make_chunks(H, n), ch_o = make_chunks(O, n);
  run_phases(n > 1 ? &pool : nullptr, n, nphases, n, [&](int p, int c) {
    const Chunks& ch = p % 2 == h_parity ? ch_h : ch_o;
    fn(p, 0, B, ch.start[c], ch.start[c + 1]);
  });
}

// Outputs: ys (T, B, O), the carries (frozen past a row's length); in training also every h_t.
ffi::Error JordanForward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> x, ffi::Buffer<ffi::F32> wx,
                         ffi::Buffer<ffi::F32> bias, ffi::Buffer<ffi::F32> wyh,
                         ffi::Buffer<ffi::F32> wy, ffi::Buffer<ffi::F32> by,
                         ffi::Buffer<ffi::F32> y0, ffi::Buffer<ffi::S32> lens_buf,
                         ffi::ResultBuffer<ffi::F32> ys_out, ffi::ResultBuffer<ffi::F32> hs_out,
                         bool masked, bool training) {
  const auto d = x.dimensions();
  const int T = (int)d[0], B = (int)d[1], F = (int)d[2];
  const int H = (int)wx.dimensions()[1], O = (int)wy.dimensions()[1];
  const float* X = x.typed_data();
  const int32_t* lens = masked ? lens_buf.typed_data() : nullptr;
  float* YS = ys_out->typed_data();
  float* HSV = training ? hs_out->typed_data() : nullptr;
  std::vector<float> hbuf(training ? 0 : (size_t)B * H), zo((size_t)B * O);
  const int nthreads = team_size(pool, (int64_t)B * (F + O + O) * H);
  const int64_t wbytes = (int64_t)(F * H + 2 * O * H) * 4;

  drive_two(pool, nthreads, 2 * T, 0, B, H, O, wbytes, [&](int p, int b0, int b1, int n0, int n1) {
    const int t = p / 2, rows = b1 - b0;
    const float* y_prev = t ? YS + (size_t)(t - 1) * B * O : y0.typed_data();
    float* h_t = HSV ? HSV + (size_t)t * B * H : hbuf.data();
    if (p % 2 == 0) {  // h_t on units [n0, n1)
      float* hr = h_t + (size_t)b0 * H;
      gemm_cols(rows, F, X + ((size_t)t * B + b0) * F, F, wx.typed_data(), H, bias.typed_data(), 0,
                hr, H, n0, n1);
      gemm_cols(rows, O, y_prev + (size_t)b0 * O, O, wyh.typed_data(), H, hr, H, hr, H, n0, n1);
      for (int b = 0; b < rows; ++b) {
        float* hb = hr + (size_t)b * H;
#pragma omp simd
        for (int j = n0; j < n1; ++j) hb[j] = tanhf_(hb[j]);
      }
      return;
    }
    // y_t on units [n0, n1)
    float* zr = zo.data() + (size_t)b0 * O;
    gemm_cols(rows, H, h_t + (size_t)b0 * H, H, wy.typed_data(), O, by.typed_data(), 0, zr, O, n0, n1);
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
ffi::Error JordanBackward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> wyh, ffi::Buffer<ffi::F32> wy,
                          ffi::Buffer<ffi::F32> hsv, ffi::Buffer<ffi::F32> ys,
                          ffi::Buffer<ffi::F32> dys, ffi::Buffer<ffi::S32> lens_buf,
                          ffi::ResultBuffer<ffi::F32> dz1_out, ffi::ResultBuffer<ffi::F32> dz2_out,
                          ffi::ResultBuffer<ffi::F32> dy0_out, bool masked) {
  const auto d = hsv.dimensions();
  const int T = (int)d[0], B = (int)d[1], H = (int)d[2], O = (int)wy.dimensions()[1];
  const std::vector<float> VT = transpose(wy.typed_data(), H, O);   // (O, H)
  const std::vector<float> UT = transpose(wyh.typed_data(), O, H);  // (H, O)
  const float* HS = hsv.typed_data();
  const float* Y = ys.typed_data();
  const float* DY = dys.typed_data();
  const int32_t* lens = masked ? lens_buf.typed_data() : nullptr;
  float* DZ1 = dz1_out->typed_data();
  float* DZ2 = dz2_out->typed_data();
  float* DY0 = dy0_out->typed_data();
  std::vector<float> gy((size_t)B * O), back((size_t)B * O);
  const int nthreads = team_size(pool, (int64_t)B * 2 * O * H);
  const int64_t wbytes = (int64_t)2 * O * H * 4;

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

  drive_two(pool, nthreads, 2 * T + 1, 1, B, H, O, wbytes, [&](int p, int b0, int b1, int n0, int n1) {
    const int rows = b1 - b0;
    if (p == 0) {
      for (int b = b0; b < b1; ++b) start_step(T - 1, b, nullptr, n0, n1);
      return;
    }
    const int t = T - 1 - (p - 1) / 2;
    if (p % 2 == 1) {  // dz1_t on units [n0, n1) of H
      float* dz1 = DZ1 + ((size_t)t * B + b0) * H;
      gemm_cols(rows, O, DZ2 + ((size_t)t * B + b0) * O, O, VT.data(), H, nullptr, 0, dz1, H, n0, n1);
      for (int b = 0; b < rows; ++b) {
        float* db = dz1 + (size_t)b * H;
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

// ----------------------------------------------------------------------------- recurrent weight gradient

// C[0:MR, 0:16*NV] += A[0:K, 0:MR]^T @ W[0:K, 0:16*NV]: the micro-product with A read down its
// columns (A (K, MR) row-major with stride lda), for products of the form X^T dZ.
template <int MR, int NV>
JAXRNN_INLINE void micro_tn(int K, const float* A, int lda, const float* W, int ldw, float* C, int ldc) {
  vf16 acc[MR][NV];
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = load16(C + (size_t)r * ldc + 16 * v);
  for (int k = 0; k < K; ++k) {
    vf16 w[NV];
    for (int v = 0; v < NV; ++v) w[v] = load16(W + (size_t)k * ldw + 16 * v);
    const float* a = A + (size_t)k * lda;
    for (int r = 0; r < MR; ++r)
      for (int v = 0; v < NV; ++v) acc[r][v] += a[r] * w[v];
  }
  for (int r = 0; r < MR; ++r)
    for (int v = 0; v < NV; ++v) store16(C + (size_t)r * ldc + 16 * v, acc[r][v]);
}

template <int NV>
JAXRNN_INLINE void micro_tn_rows(int rows, int K, const float* A, int lda, const float* W, int ldw,
                          float* C, int ldc) {
  switch (rows) {
    case 8: return micro_tn<8, NV>(K, A, lda, W, ldw, C, ldc);
    case 7: return micro_tn<7, NV>(K, A, lda, W, ldw, C, ldc);
    case 6: return micro_tn<6, NV>(K, A, lda, W, ldw, C, ldc);
    case 5: return micro_tn<5, NV>(K, A, lda, W, ldw, C, ldc);
    case 4: return micro_tn<4, NV>(K, A, lda, W, ldw, C, ldc);
    case 3: return micro_tn<3, NV>(K, A, lda, W, ldw, C, ldc);
    case 2: return micro_tn<2, NV>(K, A, lda, W, ldw, C, ldc);
    default: return micro_tn<1, NV>(K, A, lda, W, ldw, C, ldc);
  }
}

// C[:, n0:n1] += A (K, M)^T @ W (K, :)[:, n0:n1]. K is taken in slabs whose W panel stays in L1
// while every block of C's rows passes over it.
void gemm_tn_cols(int K, int M, const float* A, int lda, const float* W, int ldw, float* C,
                  int ldc, int n0, int n1) {
  constexpr int kSlab = 128;
  for (int k0 = 0; k0 < K; k0 += kSlab) {
    const int kc = std::min(kSlab, K - k0);
    const float* a = A + (size_t)k0 * lda;
    const float* w = W + (size_t)k0 * ldw;
    int n = n0;
    for (; n + 32 <= n1; n += 32)
      for (int m0 = 0; m0 < M; m0 += 8)
        micro_tn_rows<2>(std::min(8, M - m0), kc, a + m0, lda, w + n, ldw, C + (size_t)m0 * ldc + n, ldc);
    for (; n + 16 <= n1; n += 16)
      for (int m0 = 0; m0 < M; m0 += 8)
        micro_tn_rows<1>(std::min(8, M - m0), kc, a + m0, lda, w + n, ldw, C + (size_t)m0 * ldc + n, ldc);
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
ffi::Error StepsOuter(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> h0, ffi::Buffer<ffi::F32> hs,
                      ffi::Buffer<ffi::F32> dz, ffi::ResultBuffer<ffi::F32> out, bool shifted) {
  const auto d = hs.dimensions();
  const int T = (int)d[0], B = (int)d[1], H = (int)d[2], N = (int)dz.dimensions()[2];
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

// ----------------------------------------------------------------------------- minGRU / minLSTM

// h_t = a_t * h_{t-1} + c_t * g(k_h), the coefficients functions of the step's projected input
// xp_t alone (Feng et al. 2024; jaxrnn/cells/minimal.py):
//   minGRU  (xp blocks z, h~):    a = sigma(-k_z),  c = sigma(k_z)
//   minLSTM (xp blocks f, i, h~): a = f / (f + i),  c = i / (f + i),  f = sigma(k_f), i = sigma(k_i)
//   g(v) = v + 1/2 for v >= 0, sigma(v) below.
// No product per step: inside an XLA while loop the loop's own per-step cost was most of the
// time, and computed by XLA over all steps the coefficients' transcendentals (the cell's
// log-space form) cost more than the recurrence (minLSTM at config B: 4.3 of 5.8 ms). Here they
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
    run_phases(&pool, nthreads, 1, nthreads, [&](int, int c) {
      fn((int)((int64_t)B * c / nthreads), (int)((int64_t)B * (c + 1) / nthreads), 0, H);
    });
    return;
  }
  const Chunks ch = make_chunks(H, nthreads);
  run_phases(ch.count() > 1 ? &pool : nullptr, nthreads, 1, ch.count(),
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

ffi::Error MinForward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> xp, ffi::Buffer<ffi::F32> h0,
                      ffi::Buffer<ffi::S32> lens_buf, ffi::ResultBuffer<ffi::F32> hs_out,
                      int64_t kind, bool masked) {
  const auto d = xp.dimensions();
  const int64_t T = d[0];
  const int B = (int)d[1], H = (int)h0.dimensions()[1];
  const int32_t* lens = masked ? lens_buf.typed_data() : nullptr;
  if (kind == kMinGru)
    min_forward<kMinGru>(pool, T, B, H, xp.typed_data(), h0.typed_data(), lens, hs_out->typed_data());
  else
    min_forward<kMinLstm>(pool, T, B, H, xp.typed_data(), h0.typed_data(), lens, hs_out->typed_data());
  return ffi::Error::Success();
}

// Inputs: xp (aliased to the dk output: overwritten step by step), hs, h0, d_hs, lens.
ffi::Error MinBackward(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> xp, ffi::Buffer<ffi::F32> hs,
                       ffi::Buffer<ffi::F32> h0, ffi::Buffer<ffi::F32> dhs,
                       ffi::Buffer<ffi::S32> lens_buf, ffi::ResultBuffer<ffi::F32> dk_out,
                       ffi::ResultBuffer<ffi::F32> dh0_out, int64_t kind, bool masked) {
  const auto d = xp.dimensions();
  const int64_t T = d[0];
  const int B = (int)d[1], G = (int)d[2], H = (int)h0.dimensions()[1];
  float* DK = dk_out->typed_data();
  if (DK != xp.typed_data()) std::memcpy(DK, xp.typed_data(), sizeof(float) * T * B * G);
  const int32_t* lens = masked ? lens_buf.typed_data() : nullptr;
  if (kind == kMinGru)
    min_backward<kMinGru>(pool, T, B, H, DK, hs.typed_data(), h0.typed_data(), dhs.typed_data(),
                          lens, dh0_out->typed_data());
  else
    min_backward<kMinLstm>(pool, T, B, H, DK, hs.typed_data(), h0.typed_data(), dhs.typed_data(),
                           lens, dh0_out->typed_data());
  return ffi::Error::Success();
}

}  // namespace

using F32 = ffi::Buffer<ffi::F32>;
using S32 = ffi::Buffer<ffi::S32>;
using R32 = ffi::ResultBuffer<ffi::F32>;

XLA_FFI_DEFINE_HANDLER_SYMBOL(jaxrnn_lstm_forward, LstmForward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>()
                                  .Arg<F32>().Arg<S32>()
                                  .Ret<F32>().Ret<F32>().Ret<F32>().Ret<F32>()
                                  .Attr<bool>("masked").Attr<bool>("training"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(jaxrnn_lstm_backward, LstmBackward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>()
                                  .Arg<F32>().Arg<S32>()
                                  .Ret<F32>().Ret<F32>().Ret<F32>()
                                  .Attr<bool>("masked"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(jaxrnn_gru_forward, GruForward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>()
                                  .Arg<F32>().Arg<S32>()
                                  .Ret<F32>().Ret<F32>()
                                  .Attr<bool>("masked").Attr<bool>("training"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(jaxrnn_gru_backward, GruBackward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>()
                                  .Arg<S32>()
                                  .Ret<F32>().Ret<F32>()
                                  .Attr<bool>("masked"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(jaxrnn_elman_forward, ElmanForward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>()
                                  .Arg<S32>()
                                  .Ret<F32>().Ret<F32>()
                                  .Attr<bool>("masked").Attr<bool>("save_s").Attr<float>("leak"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(jaxrnn_elman_backward, ElmanBackward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<F32>().Arg<F32>().Arg<F32>().Arg<S32>()
                                  .Ret<F32>().Ret<F32>()
                                  .Attr<bool>("masked").Attr<float>("leak"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(jaxrnn_steps_outer, StepsOuter,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<F32>().Arg<F32>().Arg<F32>()
                                  .Ret<F32>()
                                  .Attr<bool>("shifted"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(jaxrnn_min_forward, MinForward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<F32>().Arg<F32>().Arg<S32>()
                                  .Ret<F32>()
                                  .Attr<int64_t>("kind").Attr<bool>("masked"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(jaxrnn_min_backward, MinBackward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>().Arg<S32>()
                                  .Ret<F32>().Ret<F32>()
                                  .Attr<int64_t>("kind").Attr<bool>("masked"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(jaxrnn_jordan_forward, JordanForward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>()
                                  .Arg<F32>().Arg<F32>().Arg<S32>()
                                  .Ret<F32>().Ret<F32>()
                                  .Attr<bool>("masked").Attr<bool>("training"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(jaxrnn_jordan_backward, JordanBackward,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::ThreadPool>()
                                  .Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>().Arg<F32>()
                                  .Arg<S32>()
                                  .Ret<F32>().Ret<F32>().Ret<F32>()
                                  .Attr<bool>("masked"));
