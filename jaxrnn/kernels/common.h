// What every fused CPU sequence kernel shares (XLA FFI custom calls; one source per cell family,
// lstm.cc, gru.cc, elman.cc, jordan.cc, minimal.cc, outer.cc, each its own translation unit).
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
//
// Everything here is in an unnamed namespace (functions not marked inline, as they were in the
// single file, so that GCC's inlining choices stay what they were): each family's translation
// unit gets its own copy, its own inlining budget, and a new kernel cannot use up another's
// (benchmarks/NOTES.md lever 19; the hot helpers are also forced inline).

#ifndef JAXRNN_KERNELS_COMMON_H_
#define JAXRNN_KERNELS_COMMON_H_

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#if defined(__linux__)
#include <sched.h>
#endif

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

// The hot helpers are force-inlined: GCC's inliner works to a budget per translation unit, and
// once the minGRU/minLSTM and Jordan kernels were added to the single file the kernels then
// were, it stopped inlining the exp and the micro-products into the LSTM kernel, which then ran
// 2x slower (config B forward: 5.0 -> 10.7 ms per call; benchmarks/NOTES.md lever 19).
#define JAXRNN_INLINE inline __attribute__((always_inline))

// ----------------------------------------------------------------------------- operands
//
// Each handler's operands are listed once, in order, by a macro taking three macros:
//   #define JAXRNN_LSTM_FORWARD(ARG, RET, ATTR) ARG(F32, x) ... RET(F32, hs) ... ATTR(bool, masked)
// From that one list come the kernel function's parameters (JAXRNN_KERNEL), the FFI binding and
// an exported string naming the operands in order, "<target>_operands", which Python's
// ops._call reads so that it passes every operand by name (JAXRNN_HANDLER).
#define JAXRNN_P_ARG(T, n) , ffi::Buffer<ffi::T> n
#define JAXRNN_P_RET(T, n) , ffi::ResultBuffer<ffi::T> n
#define JAXRNN_P_ATTR(T, n) , T n
#define JAXRNN_B_ARG(T, n) .Arg<ffi::Buffer<ffi::T>>()
#define JAXRNN_B_RET(T, n) .Ret<ffi::Buffer<ffi::T>>()
#define JAXRNN_B_ATTR(T, n) .Attr<T>(#n)
#define JAXRNN_S_ARG(T, n) "arg:" #n ","
#define JAXRNN_S_RET(T, n) "ret:" #n ","
#define JAXRNN_S_ATTR(T, n) "attr:" #T ":" #n ","

// The head of a kernel: ffi::Error Name(ffi::ThreadPool pool, <the operands in their order>).
#define JAXRNN_KERNEL(Name, OPERANDS) \
  ffi::Error Name(ffi::ThreadPool pool OPERANDS(JAXRNN_P_ARG, JAXRNN_P_RET, JAXRNN_P_ATTR))

// At file scope, after the kernel: the exported handler and its operand list.
#define JAXRNN_HANDLER(symbol, Name, OPERANDS)                                               \
  XLA_FFI_DEFINE_HANDLER_SYMBOL(symbol, Name,                                              \
                                ffi::Ffi::Bind().Ctx<ffi::ThreadPool>()                    \
                                    OPERANDS(JAXRNN_B_ARG, JAXRNN_B_RET, JAXRNN_B_ATTR));  \
  extern "C" __attribute__((visibility("default"))) const char* symbol##_operands() {      \
    return OPERANDS(JAXRNN_S_ARG, JAXRNN_S_RET, JAXRNN_S_ATTR) "";                          \
  }

namespace {

// ----------------------------------------------------------------------------- shape checks

// Every kernel checks every buffer it touches against the others before it reads or writes
// any of them (issue 15.2: a (B, 64) carry with (8, 24) weights once made the GRU kernel read
// past its buffers). The first mismatch becomes an InvalidArgument error naming the target,
// the operand, the expected shape in symbols and numbers, and where the symbols came from:
//   jaxrnn_gru_forward: w_h must be (H, 3 * H) = (64, 192), got (8, 24) [T, B, F from x; H from h0]
template <ffi::DataType D>
ffi::Span<const int64_t> dims_of(ffi::Buffer<D>& b) { return b.dimensions(); }
template <ffi::DataType D>
ffi::Span<const int64_t> dims_of(ffi::Result<ffi::Buffer<D>>& b) { return b->dimensions(); }

inline std::string spell(ffi::Span<const int64_t> d) {
  std::string s = "(";
  for (size_t i = 0; i < d.size(); ++i) s += (i ? ", " : "") + std::to_string(d[i]);
  return s + (d.size() == 1 ? ",)" : ")");
}

class Shapes {
 public:
  Shapes(const char* target, const char* origin) : target_(target), origin_(origin) {}

  // Extent `axis` of an operand that must have rank `rank` (0 after a failed check).
  template <class Buf>
  int64_t dim(Buf& buf, const char* name, size_t rank, size_t axis) {
    const auto d = dims_of(buf);
    if (d.size() != rank) {
      fail(std::string(name) + " must have rank " + std::to_string(rank) + ", got shape " + spell(d));
      return 0;
    }
    if (d[axis] > INT_MAX) fail(std::string(name) + " is too large: " + spell(d));
    return d[axis];
  }

  template <class Buf>
  void expect(Buf& buf, const char* name, const char* spelled, std::initializer_list<int64_t> want) {
    const auto d = dims_of(buf);
    bool same = d.size() == want.size();
    for (size_t i = 0; same && i < d.size(); ++i) same = d[i] == want.begin()[i];
    if (same) return;
    const std::vector<int64_t> w(want);
    fail(std::string(name) + " must be " + spelled + " = " +
         spell(ffi::Span<const int64_t>(w.data(), w.size())) + ", got " + spell(d));
  }

  void require(bool holds, const std::string& what) {
    if (!holds) fail(what);
  }

  bool ok() const { return error_.empty(); }
  ffi::Error error() const {
    return ok() ? ffi::Error::Success()
                : ffi::Error(ffi::ErrorCode::kInvalidArgument, error_);
  }

 private:
  void fail(const std::string& what) {
    if (ok()) error_ = std::string(target_) + ": " + what + " [" + origin_ + "]";
  }
  const char* target_;
  const char* origin_;
  std::string error_;
};

// s.expect for an operand, its name and shape spelled from the source: JAXRNN_EXPECT(s, h0, B, H)
#define JAXRNN_EXPECT(s, buf, ...) (s).expect(buf, #buf, "(" #__VA_ARGS__ ")", {__VA_ARGS__})

// ----------------------------------------------------------------------------- small products

// The register file decides the product's tile, an ISA property rather than a vendor's:
// AVX-512 has 32 vector registers of 16 floats, AVX/AVX2 16 of 8, SSE 16 of 4. A tile of
// kTileRows rows by two vectors keeps its accumulators, the two weight vectors and the
// broadcast in registers: 8 x 2 + 2 + 1 = 19 of 32, or 6 x 2 + 2 + 1 = 15 of 16. (A 16-float
// vector type on AVX2, as these kernels had until the AMD EPYC of family 23 showed it, makes GCC
// keep a 8 x 2 tile of them on the stack: every product 10x slower than XLA's.)
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
std::vector<float> transpose(const float* W, int K, int N) {
  std::vector<float> t((size_t)K * N);
  for (int k = 0; k < K; ++k)
    for (int n = 0; n < N; ++n) t[(size_t)n * K + k] = W[(size_t)k * N + n];
  return t;
}

// A weight matrix W (K, N) copied once per call into strips of kLanes columns, each strip's K
// rows contiguous: strip s holds W[:, s*kLanes : (s+1)*kLanes]. Read row-major, the product
// walks a panel's rows N floats apart, a new 4 KiB page every row or two at LSTM A (N = 1024):
// the hardware prefetchers stop at page boundaries and the loads of the weights missed (perf on
// the AVX2 EPYC: a sixth of the product's samples on one weight load). In strips they are one
// stream. Only when every column range asked for starts and ends on a strip boundary (the gate
// blocks of H units, H a multiple of kLanes); otherwise the row-major W is used as it is.
// The arithmetic is the same either way (each output sums over k in the same order).
struct Strips {
  const float* W = nullptr;  // the row-major original
  int K = 0, N = 0;
  std::vector<float> data;   // empty: not packed
  std::vector<float> rowmajor;  // a transposed W that could not be packed
};

// W (K, N), or W^T when `transposed` (W is then (N, K) and the strips are of its transpose).
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
void gemm_units(int M, int K, const float* A, const Strips& W, int H, int gates,
                const float* Cin, int ldcin, float* C, int u0, int u1) {
  const int G = gates * H;
  for (int q = 0; q < gates; ++q)
    gemm_strips(M, 0, K, A, K, W, Cin, ldcin, C, G, q * H + u0, q * H + u1);
}

// z[:, units of every gate] = b + x_t W_x (+ h_{t-1} W_h when w_h is given).
void gates_units(int B, int F, int H, int gates, const float* x_t, const Strips& w_x,
                 const float* b, const float* h_prev, const Strips* w_h, float* z, int u0,
                 int u1) {
  gemm_units(B, F, x_t, w_x, H, gates, b, 0, z, u0, u1);
  if (w_h) gemm_units(B, H, h_prev, *w_h, H, gates, z, gates * H, z, u0, u1);
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

// The CPU each member of a team started on (move_away_from_team).
struct TeamCpus {
  std::mutex mu;
  std::vector<int> cpus;
};

struct TeamState {
  explicit TeamState(int nchunks, int nhelpers)
      : claimed(nchunks), helper_state(nhelpers) {
    for (auto& c : claimed) c.store(-1);
    for (auto& h : helper_state) h.store(0);
  }
  TeamCpus cpus;
  std::atomic<int> open{-1};        // the phase threads may work on now
  std::atomic<int64_t> done{0};     // chunks finished, over all phases
  std::atomic<bool> solo{false};    // the caller finishes the call alone (helpers stalled)
  std::vector<std::atomic<int>> claimed;       // last phase each chunk was claimed for
  std::vector<std::atomic<int>> helper_state;  // 0 not started, 1 running, 2 finished, 3 cancelled
  std::thread::id caller;
};

// JAXRNN_KERNEL_SPREAD=0 turns off what keeps a team spread over the CPUs on a shared machine
// (move_away_from_team and IdleWait's sleep; to measure them: NOTES.md lever 32).
inline bool spread_from_env() {
  static const bool on = [] {
    const char* env = std::getenv("JAXRNN_KERNEL_SPREAD");
    return !(env && std::strcmp(env, "0") == 0);
  }();
  return on;
}

// Moves the calling team member off any CPU another member of its team started on. On a
// shared machine the scheduler often wakes a helper onto the CPU of the thread that woke it
// (the caller) and leaves it there: with one busy process on two cores, the team's two threads
// then share one core while the busy process has the other to itself, and the team gets one
// core where a fair share of three threads on two would give it 1.33 (measured at config A,
// Elman forward: in 478 of 899 samples of /proc both running team threads were on one CPU and
// the busy process on the other; the process's CPU time per call was 0.97x its wall time,
// against 1.35x for two threads of plain work beside the same busy process). The move is an
// affinity without the team's CPUs, which the kernel applies at once, and then the thread's
// own affinity again: the thread stays where it was moved to, but the scheduler remains free
// to move it later, e.g. onto a CPU that a team member leaves idle (IdleWait). Nothing
// happens when the thread is alone on its CPU, when the process may use no other CPU
// (taskset, a cpuset), or outside Linux. Which thread runs a chunk never changes a result.
inline void move_away_from_team(TeamCpus& st) {
#if defined(__linux__)
  std::lock_guard<std::mutex> lock(st.mu);
  int cpu = sched_getcpu();
  cpu_set_t own;
  if (cpu >= 0 && spread_from_env() &&
      std::find(st.cpus.begin(), st.cpus.end(), cpu) != st.cpus.end() &&
      sched_getaffinity(0, sizeof(own), &own) == 0) {
    cpu_set_t away = own;
    for (int c : st.cpus)
      if (c >= 0 && c < CPU_SETSIZE) CPU_CLR(c, &away);
    if (CPU_COUNT(&away) > 0 && sched_setaffinity(0, sizeof(away), &away) == 0) {
      cpu = sched_getcpu();
      sched_setaffinity(0, sizeof(own), &own);
    }
  }
  st.cpus.push_back(cpu);
#else
  (void)st;
#endif
}

// The caller's CPU, the first of the team's (see move_away_from_team).
inline void note_caller_cpu(TeamCpus& st) {
#if defined(__linux__)
  std::lock_guard<std::mutex> lock(st.mu);
  st.cpus.push_back(sched_getcpu());
#else
  (void)st;
#endif
}

// How a team member with nothing left to do in a call waits for the others: a short spin, then
// sleeps of kIdleSleepUs. An idle CPU is what makes the scheduler move a runnable team member
// queued behind another process onto it (or that process off a member's CPU); a spinning or
// yielding thread keeps its CPU busy, and the member it waits for keeps sharing a core. Measured
// with one busy process, forward ms per call (NOTES.md lever 32): the move above alone
// changed little (Elman A 23.4 -> 20-23), the sleep alone nothing (as lever 29 found), the two
// together Elman A 23.4 -> 17.5, GRU A 65 -> 49, LSTM B 26.5 -> 21.
constexpr int kIdleSpins = 4000;
constexpr int kIdleSleepUs = 50;

struct IdleWait {
  int spins = 0;
  void wait() {
    if (++spins < kIdleSpins)
      cpu_relax();
    else if (spread_from_env())
      std::this_thread::sleep_for(std::chrono::microseconds(kIdleSleepUs));
    else
      std::this_thread::yield();
  }
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

// A team that waits for a stalled member is slower than one thread: on a shared machine a
// helper that loses its core for a time slice (milliseconds) holds up every step after it
// (issue 16: LSTM B forward 4x slower with one busy process). The caller therefore times its
// waits: a phase it waits on for longer than kStallFactor times its own chunk took (and at
// least kStallMinNs) is a stall, and after kStallsBeforeSolo of them it runs the rest of the
// call alone (the helpers see `solo`, finish the phase they hold and leave). A call that went
// alone also makes the calls of the next kSoloHoldNs in this translation unit start alone
// (team_size), so that a busy machine costs those calls no stalls at all; after that a team is
// tried again.
constexpr int64_t kStallMinNs = 200 * 1000;
constexpr int kStallFactor = 8;
constexpr int kStallsBeforeSolo = 2;
constexpr int64_t kSoloHoldNs = 1000 * 1000 * 1000;

inline int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// When the last call that went alone did so, plus kSoloHoldNs (0: none).
inline std::atomic<int64_t>& solo_until_ns() {
  static std::atomic<int64_t> until{0};
  return until;
}

// Runs fn(phase, chunk) for every chunk of phases 0..nphases-1, all chunks of a phase finishing
// before any chunk of the next one starts.
template <class Fn>
void run_phases(ffi::ThreadPool* pool, int nthreads, int nphases, int nchunks, Fn fn) {
  const int nhelpers = pool ? nchunks - 1 : 0;  // one chunk per thread (see make_chunks)
  auto st = std::make_shared<TeamState>(nchunks, nhelpers);
  st->caller = std::this_thread::get_id();
  if (nhelpers) note_caller_cpu(st->cpus);
  Fn* fn_ptr = &fn;
  for (int h = 0; h < nhelpers; ++h) {
    const int home = h + 1;
    pool->Schedule([st, h, home, nphases, nchunks, fn_ptr]() {
      // A pool that cannot take the task runs it inline on the caller: do nothing then.
      if (std::this_thread::get_id() == st->caller) return;
      int expected = 0;
      if (!st->helper_state[h].compare_exchange_strong(expected, 1)) return;  // cancelled
      move_away_from_team(st->cpus);
      int last = -1;
      Backoff backoff;
      for (;;) {
        const int p = st->open.load(std::memory_order_acquire);
        if (p >= nphases || st->solo.load(std::memory_order_acquire)) break;
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
  int stalls = 0;
  for (int p = 0; p < nphases; ++p) {
    st->open.store(p, std::memory_order_release);
    const int64_t target = (int64_t)(p + 1) * nchunks;
    if (stalls >= kStallsBeforeSolo) {  // alone: every chunk not already taken
      for (int c = 0; c < nchunks; ++c)
        if (try_claim(*st, p, c)) {
          fn(p, c);
          st->done.fetch_add(1, std::memory_order_acq_rel);
        }
    } else {
      const int64_t t0 = nhelpers ? now_ns() : 0;
      claim_and_work(*st, p, 0, nchunks, fn);
      if (nhelpers && st->done.load(std::memory_order_acquire) < target) {
        const int64_t t1 = now_ns();
        const int64_t bound = std::max(kStallMinNs, kStallFactor * (t1 - t0));
        bool stalled = false;
        Backoff backoff;
        while (st->done.load(std::memory_order_acquire) < target) {
          backoff.wait();
          if (!stalled && (backoff.spins & 255) == 0) stalled = now_ns() - t1 > bound;
        }
        if (stalled && ++stalls == kStallsBeforeSolo) {
          st->solo.store(true, std::memory_order_release);
          solo_until_ns().store(now_ns() + kSoloHoldNs, std::memory_order_relaxed);
        }
        continue;
      }
    }
    Backoff backoff;
    while (st->done.load(std::memory_order_acquire) < target) backoff.wait();
  }
  st->open.store(nphases, std::memory_order_release);
  // fn lives on this stack: wait for every helper that started, cancel those that did not.
  for (int h = 0; h < nhelpers; ++h) {
    int expected = 0;
    if (!st->helper_state[h].compare_exchange_strong(expected, 3)) {
      IdleWait idle;  // the caller's work is done: a helper may still be on its last chunk
      while (st->helper_state[h].load(std::memory_order_acquire) != 2) idle.wait();
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
// Measured (NOTES.md lever 12, AVX-512): a clear gain for the Elman net at config A (16 rows per
// thread), none at config B (4 rows per thread: the product's 8-row register blocks run half
// empty). On AVX2 (6-row tile, lever 27) 4 rows per thread fill two thirds of the tile, and the
// row split at config B was 1.1-1.7x the unit split's speed. So a thread's rows must fill at
// least two thirds of a register tile: 6 rows with AVX-512, 4 with AVX2 or SSE.
constexpr int64_t kRowSplitMaxWeightBytes = 512 << 10;
constexpr int kRowSplitMinRows = (2 * kTileRows + 2) / 3;

//
// With two register tiles of rows per thread the weights need not fit L2 (NOTES.md lever 30):
// every weight a thread loads then feeds 2 x kTileRows rows, a quarter of a byte per
// multiply-add at most, which the shared L3 streams with room to spare (config A, 16 rows per
// thread on AVX2: LSTM forward 44.6 -> 38.5 ms, training 127.5 -> 114.6 ms against the unit
// split, whose per-step barrier also costs the most on a shared machine). Above
// kRowSplitWideMaxWeightBytes the weights would leave L3 and each thread would stream its own
// copy from memory: the unit split reads them once.
constexpr int64_t kRowSplitWideMaxWeightBytes = 4 << 20;

inline bool row_split(int nthreads, int B, int64_t weight_bytes,
                      int64_t max_weight_bytes = kRowSplitMaxWeightBytes) {
  if (nthreads < 2 || B < kRowSplitMinRows * nthreads) return false;
  return weight_bytes <= max_weight_bytes ||
         (B >= 2 * kTileRows * nthreads && weight_bytes <= kRowSplitWideMaxWeightBytes);
}

// The row split with one group of rows per thread, run in blocks of kRowBlockSteps phases.
// A group's phases are a chain (each needs the one before), but nothing ties a group to a
// thread: its state is all in the call's buffers. So a thread whose own group is done takes
// another group between two of its blocks. On a shared machine that is what keeps the team's
// CPU time working: with one busy process on two cores, one thread of the team shares its core
// and runs at about half speed, and a fixed split ends when that thread's rows do (the whole
// call at the slow thread's pace, measured ~55% of quiet speed: issue 16). A thread that has
// nothing left asks for a busy group; the group's owner hands it over after
// a block only if that block was slow (more than kSlowBlockFactor times the call's fastest per
// phase, i.e. its thread lost its core during the block), so on a quiet machine groups stay put
// and each row's state stays in its core's cache. The arithmetic of a phase does not depend on
// the thread that runs it, so results are the same bit for bit.
constexpr int kRowBlockSteps = 4;
constexpr int kSlowBlockFactor = 2;

struct alignas(64) RowGroup {
  std::atomic<int> next{0};        // the first phase not yet run
  std::atomic<int> owner{-1};      // the thread that runs (or was handed) this group, or -1
  std::atomic<int> wanted_by{-1};  // a thread with nothing else to do that waits for it, or -1
};

// block(g, p0, p1) runs phases [p0, p1) of row group g, in order.
//
// The handover is direct: the owner sets the group's owner to the waiting thread, which finds
// it its own at its next look. (Releasing the group for anyone to take let the slow thread,
// which looks at its own group first, take it straight back while the waiting thread slept
// in IdleWait: traced at config B with one busy process, no handover happened at all.) A
// thread wants at most one group at a time and withdraws that want when it takes other work;
// if the owner took the want first, the group is handed to it all the same and waits, owned,
// until it looks again: no group ever has two threads, and no phase runs twice or out of order.
//
// The call returns as soon as every group is done, without waiting for the helpers to leave:
// a helper that waits for work may be asleep or queued behind another process when the last
// group ends (traced: calls whose groups were all done at 3.4 ms returned at 8-9 ms). So
// everything a helper touches outside a block is in RowTeam, which the helper's task shares,
// and it calls `block` (on the caller's stack) only while it owns a group that is not done,
// during which the caller cannot return.
struct RowTeam {
  RowTeam(int nthreads, int nphases) : groups(new RowGroup[nthreads]), nthreads(nthreads),
                                       nphases(nphases) {}
  std::unique_ptr<RowGroup[]> groups;
  const int nthreads, nphases;
  std::atomic<int64_t> fastest_ns{INT64_MAX};  // per phase, over every block of the call
  TeamCpus cpus;
  std::thread::id caller;

  bool all_done() const {
    for (int c = 0; c < nthreads; ++c)
      if (groups[c].next.load(std::memory_order_acquire) < nphases) return false;
    return true;
  }

  // Runs groups as thread `home` until none is left to run or to wait for.
  template <class Block>
  void work(int home, Block& block) {
    IdleWait idle;
    int wanting = -1;  // the group this thread has asked for, if any
    for (;;) {
      int g = -1;
      bool unfinished = false;
      for (int k = 0; k < nthreads && g < 0; ++k) {  // handed to it, or free; its own first
        const int c = (home + k) % nthreads;
        RowGroup& grp = groups[c];
        if (grp.next.load(std::memory_order_acquire) >= nphases) continue;
        unfinished = true;
        int none = -1;
        const int own = grp.owner.load(std::memory_order_acquire);
        if (own == home) {
          g = c;
        } else if (own == -1 &&
                   grp.owner.compare_exchange_strong(none, home, std::memory_order_acq_rel)) {
          // A group whose last block ran while this thread looked at it is done: not ours.
          if (grp.next.load(std::memory_order_acquire) >= nphases) {
            grp.owner.store(-1, std::memory_order_release);
            continue;
          }
          g = c;
        }
      }
      if (g < 0) {
        if (!unfinished) return;
        if (wanting >= 0 && groups[wanting].next.load(std::memory_order_acquire) >= nphases)
          wanting = -1;  // ended in its owner's hands: ask for another
        if (wanting < 0) {  // ask for the first group someone else runs
          for (int k = 1; k < nthreads && wanting < 0; ++k) {
            const int c = (home + k) % nthreads;
            if (groups[c].next.load(std::memory_order_acquire) >= nphases) continue;
            int none = -1;
            if (groups[c].wanted_by.compare_exchange_strong(none, home,
                                                            std::memory_order_relaxed))
              wanting = c;
          }
        }
        idle.wait();
        continue;
      }
      if (wanting >= 0) {  // withdraw the want, unless its owner took it already (see above)
        int me = home;
        groups[wanting].wanted_by.compare_exchange_strong(me, -1, std::memory_order_relaxed);
        wanting = -1;
      }
      idle.spins = 0;
      RowGroup& grp = groups[g];
      int hand_to = -1;
      for (;;) {
        const int p0 = grp.next.load(std::memory_order_relaxed);
        const int p1 = std::min(nphases, p0 + kRowBlockSteps);
        const int64_t t0 = now_ns();
        block(g, p0, p1);
        const int64_t per_phase = (now_ns() - t0) / (p1 - p0);
        int64_t best = fastest_ns.load(std::memory_order_relaxed);
        while (per_phase < best && !fastest_ns.compare_exchange_weak(best, per_phase,
                                                                     std::memory_order_relaxed)) {
        }
        // From here on, once this group is done, the caller may return: no `block` after it.
        grp.next.store(p1, std::memory_order_release);
        if (p1 >= nphases) break;
        if (per_phase > kSlowBlockFactor * std::min(best, per_phase)) {  // slow: hand it over
          int w = grp.wanted_by.load(std::memory_order_relaxed);
          if (w >= 0 && w != home &&
              grp.wanted_by.compare_exchange_strong(w, -1, std::memory_order_relaxed)) {
            hand_to = w;
            break;
          }
        }
      }
      grp.owner.store(hand_to, std::memory_order_release);
    }
  }
};

template <class Block>
void run_row_groups(ffi::ThreadPool& pool, int nthreads, int nphases, Block block) {
  auto team = std::make_shared<RowTeam>(nthreads, nphases);
  team->caller = std::this_thread::get_id();
  note_caller_cpu(team->cpus);
  Block* block_ptr = &block;
  for (int home = 1; home < nthreads; ++home) {
    pool.Schedule([team, home, block_ptr]() {
      // A pool that cannot take the task runs it inline on the caller: do nothing then. A
      // task that starts after the call has returned finds every group done.
      if (std::this_thread::get_id() == team->caller || team->all_done()) return;
      move_away_from_team(team->cpus);
      team->work(home, *block_ptr);
    });
  }
  team->work(0, block);  // returns once every group is done, so no block is running any more
}

// step(phase, b0, b1, u0, u1) does rows [b0, b1) and units [u0, u1) of one phase; phases must
// run in order for each row.
template <class Step>
void drive(ffi::ThreadPool& pool, int nthreads, int nphases, int B, int H,
           int64_t weight_bytes, Step step) {
  if (row_split(nthreads, B, weight_bytes)) {
    run_row_groups(pool, nthreads, nphases, [&](int g, int p0, int p1) {
      const int b0 = (int)((int64_t)B * g / nthreads), b1 = (int)((int64_t)B * (g + 1) / nthreads);
      for (int p = p0; p < p1; ++p) step(p, b0, b1, 0, H);
    });
    return;
  }
  const Chunks ch = make_chunks(H, nthreads);
  run_phases(&pool, nthreads, nphases, ch.count(), [&](int p, int c) {
    step(p, 0, B, ch.start[c], ch.start[c + 1]);
  });
}

// Below this many multiply-adds per step (the recurrent product's, as the kernels count it),
// one thread: a step is then some microseconds (LSTM at config B, 8 rows and hidden 128: 0.5M,
// ~10 us), the per-step hand-off costs a sizeable part of it, and on a shared machine a team
// member that loses its core stalls every step. One thread was measured no slower at config B
// on a quiet machine (issue 16); config A (LSTM 8.4M, GRU 6.3M, Elman 2.1M) keeps its team.
// Was 1 << 16 (NOTES.md lever 20).
// The bound is in vector multiply-adds, so that it means about the same step time on every
// ISA: 1M scalar multiply-adds with 16 lanes (measured on the AVX-512 Xeon), 512K with AVX2's
// 8 lanes (NOTES.md lever 25: on the AVX2 EPYC one thread took 31-41 ms at LSTM B forward where
// two took 24-35 ms).
constexpr int64_t kParallelMinWork = (int64_t{1} << 20) * kLanes / 16;

// JAXRNN_KERNEL_THREADS, read at every call: a number fixes the team size whatever the work
// (1: always one thread), "auto" or unset leaves it to the rules here. Returns 0 for auto.
inline int threads_from_env() {
  const char* env = std::getenv("JAXRNN_KERNEL_THREADS");
  if (!env || !*env || std::strcmp(env, "auto") == 0) return 0;
  return std::max(0, std::atoi(env));
}

// Set while a thread runs whole members of an ensemble (MemberAxes::run below): the kernel it
// runs for a member then keeps to that thread, the other members being the other threads' work.
inline bool& running_members() {
  static thread_local bool on = false;
  return on;
}

int team_size(ffi::ThreadPool& pool, int64_t work_per_step) {
  if (running_members()) return 1;
  if (const int fixed = threads_from_env()) return fixed;
  if (work_per_step < kParallelMinWork) return 1;
  if (now_ns() < solo_until_ns().load(std::memory_order_relaxed)) return 1;  // see run_phases
  const int64_t n = pool.num_threads();
  const int hw = (int)std::thread::hardware_concurrency();
  return (int)std::max<int64_t>(1, std::min<int64_t>(n, hw > 0 ? hw : 1));
}

// The team `drive` runs a call with: team_size's, except below the per-step bound, where a
// call that can split its rows still gets a team when the call as a whole is large enough. The
// bound is there for the per-step hand-off, which the row split does not have: it hands off
// once per call (measured on the AVX2 EPYC at config B, 2 threads with the row split against 1:
// GRU 11.2 vs 15.9 ms, Elman 3.9 vs 5.6 ms per forward call; NOTES.md lever 27).
constexpr int64_t kRowSplitMinCallWork = kParallelMinWork * 16;

int drive_team(ffi::ThreadPool& pool, int64_t work_per_step, int nphases, int B,
               int64_t weight_bytes, int64_t max_weight_bytes = kRowSplitMaxWeightBytes) {
  if (running_members() || threads_from_env() || work_per_step >= kParallelMinWork)
    return team_size(pool, work_per_step);
  if (work_per_step * nphases < kRowSplitMinCallWork) return 1;
  const int n = std::min(team_size(pool, kParallelMinWork), std::max(1, B / kRowSplitMinRows));
  return row_split(n, B, weight_bytes, max_weight_bytes) ? n : 1;
}

JAXRNN_INLINE bool step_valid(const int32_t* lens, int t, int b) { return !lens || t < lens[b]; }

// ----------------------------------------------------------------------------- member axes
//
// An ensemble (jaxrnn/train/ensemble.py) vmaps a model over K members, each with its own
// weights. A handler declared with JAXRNN_MEMBER_HANDLER (below) takes the whole ensemble in one
// call: ops._call then declares it vmap_method="broadcast_all", so that under vmap every operand
// and result gains the same leading axes (one per vmap, unbatched operands broadcast), and the
// handler runs the kernel once per member on views of that member's slice of every buffer.
// Members never meet, so threads take whole members, one at a time from a shared counter, with
// no barrier until the last member is done (the per-step hand-off of a unit split weighs most
// on the small models ensembles are made of, and was why a K = 8 ensemble of hidden-32 LSTMs
// ran single-threaded, one member after another: issue 18). A thread that loses its core holds
// up only the member it is on. The kernel inside keeps to its thread (running_members).
//
// How many axes are member axes is read from one operand, the anchor, whose rank per member is
// fixed (`lengths`, always (B,) or the placeholder (1,)); every other operand must lead with
// the same axes.

// Below this many elements in all buffers of all members together, the members run on the
// calling thread (the work is then some tens of microseconds, about what starting a helper
// costs). The number of elements stands in for the work, which the wrapper does not know.
constexpr int64_t kMemberSplitMinElements = 1 << 16;

int member_team_size(ffi::ThreadPool& pool, int64_t members, int64_t elements) {
  if (members < 2 || running_members()) return 1;
  int n = threads_from_env();
  if (!n) {
    if (elements < kMemberSplitMinElements) return 1;
    const int hw = (int)std::thread::hardware_concurrency();
    n = (int)std::max<int64_t>(1, std::min<int64_t>(pool.num_threads(), hw > 0 ? hw : 1));
  }
  return (int)std::min<int64_t>(n, members);
}

class MemberAxes {
 public:
  template <class Buf>
  MemberAxes(const char* target, Buf& anchor, const char* name, size_t rank) : target_(target) {
    const auto d = dims_of(anchor);
    if (d.size() < rank) {
      fail(std::string(name) + " must have rank " + std::to_string(rank) +
           " (plus leading member axes), got shape " + spell(d));
      return;
    }
    lead_.assign(d.begin(), d.begin() + (d.size() - rank));
    for (int64_t n : lead_) count_ *= n;
    anchor_ = name;
  }

  // No member axes: the handler is the kernel itself.
  bool none() const { return ok() && lead_.empty(); }
  int64_t count() const { return count_; }

  // One view per member of `buf` (which must lead with the member axes): the member's slice,
  // its shape the rest of buf's. The views point into buf's own shape, which outlives the call.
  template <ffi::DataType D, class Buf>
  std::vector<XLA_FFI_Buffer> views(Buf& buf, const char* name) {
    const auto d = dims_of(buf);
    const size_t L = lead_.size();
    bool leads = d.size() >= L;
    for (size_t i = 0; leads && i < L; ++i) leads = d[i] == lead_[i];
    if (!leads) {
      fail(std::string(name) + " must lead with the member axes " +
           spell(ffi::Span<const int64_t>(lead_.data(), lead_.size())) + " of " + anchor_ +
           ", got shape " + spell(d));
      return {};
    }
    int64_t per = 1;
    for (size_t i = L; i < d.size(); ++i) per *= d[i];
    elements_ += per * count_;
    char* base = static_cast<char*>(data_of(buf));
    std::vector<XLA_FFI_Buffer> out((size_t)count_);
    for (int64_t m = 0; m < count_; ++m) {
      XLA_FFI_Buffer& v = out[(size_t)m];
      v.struct_size = XLA_FFI_Buffer_STRUCT_SIZE;
      v.extension_start = nullptr;
      v.dtype = static_cast<XLA_FFI_DataType>(D);
      v.data = base + (size_t)m * per * sizeof(ffi::NativeType<D>);
      v.rank = (int64_t)(d.size() - L);
      v.dims = const_cast<int64_t*>(d.begin() + L);
    }
    return out;
  }

  // body(m) for every member m; the first member's error that failed, if any.
  template <class Body>
  ffi::Error run(ffi::ThreadPool& pool, Body body) {
    std::vector<ffi::Error> errors((size_t)count_);
    const int nthreads = member_team_size(pool, count_, elements_);
    if (nthreads <= 1) {
      for (int64_t m = 0; m < count_; ++m) errors[(size_t)m] = body(m);
    } else {
      std::atomic<int64_t> next{0};
      run_phases(&pool, nthreads, 1, nthreads, [&](int, int) {
        const bool was = running_members();
        running_members() = true;
        for (int64_t m; (m = next.fetch_add(1, std::memory_order_relaxed)) < count_;)
          errors[(size_t)m] = body(m);
        running_members() = was;
      });
    }
    for (int64_t m = 0; m < count_; ++m)
      if (errors[(size_t)m].failure())
        return ffi::Error(errors[(size_t)m].errc().value_or(ffi::ErrorCode::kInternal),
                          "member " + std::to_string(m) + " of " + std::to_string(count_) +
                              ": " + errors[(size_t)m].message());
    return ffi::Error::Success();
  }

  bool ok() const { return error_.empty(); }
  ffi::Error error() const {
    return ffi::Error(ffi::ErrorCode::kInvalidArgument, error_);
  }

 private:
  template <ffi::DataType D>
  static void* data_of(ffi::Buffer<D>& b) { return b.untyped_data(); }
  template <ffi::DataType D>
  static void* data_of(ffi::Result<ffi::Buffer<D>>& b) { return b->untyped_data(); }
  void fail(const std::string& what) {
    if (ok()) error_ = std::string(target_) + ": " + what;
  }
  const char* target_;
  const char* anchor_ = "";
  std::vector<int64_t> lead_;
  int64_t count_ = 1;
  int64_t elements_ = 0;
  std::string error_;
};

}  // namespace

// The member-wise handler of kernel Name (see "member axes" above): views of every operand per
// member, then Name per member. Operand names get a suffix (x -> x_members_) for their views.
#define JAXRNN_MV_ARG(T, n) const auto n##_members_ = members_.views<ffi::T>(n, #n);
#define JAXRNN_MV_ATTR(T, n)
#define JAXRNN_MP_ARG(T, n) , n
#define JAXRNN_MC_ARG(T, n) , ffi::Buffer<ffi::T>(&n##_members_[(size_t)member_])
#define JAXRNN_MC_RET(T, n) , ffi::ResultBuffer<ffi::T>(ffi::Buffer<ffi::T>(&n##_members_[(size_t)member_]))

// At file scope, after the kernel, instead of JAXRNN_HANDLER: the exported handler takes leading
// member axes (read from operand `anchor`, of rank `rank` per member) on every operand, and
// "<symbol>_member_anchor" names the anchor, which tells ops._call the handler batches members.
#define JAXRNN_MEMBER_HANDLER(symbol, Name, OPERANDS, anchor, rank)                          \
  namespace {                                                                                \
  JAXRNN_KERNEL(Name##Members, OPERANDS) {                                                   \
    MemberAxes members_(#symbol, anchor, #anchor, rank);                                     \
    if (members_.none()) return Name(pool OPERANDS(JAXRNN_MP_ARG, JAXRNN_MP_ARG, JAXRNN_MP_ARG)); \
    OPERANDS(JAXRNN_MV_ARG, JAXRNN_MV_ARG, JAXRNN_MV_ATTR)                                   \
    if (!members_.ok()) return members_.error();                                             \
    return members_.run(pool, [&](int64_t member_) {                                         \
      return Name(pool OPERANDS(JAXRNN_MC_ARG, JAXRNN_MC_RET, JAXRNN_MP_ARG));               \
    });                                                                                      \
  }                                                                                          \
  }                                                                                          \
  JAXRNN_HANDLER(symbol, Name##Members, OPERANDS)                                            \
  extern "C" __attribute__((visibility("default"))) const char* symbol##_member_anchor() {  \
    return #anchor;                                                                          \
  }

#endif  // JAXRNN_KERNELS_COMMON_H_
