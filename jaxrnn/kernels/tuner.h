// The plan table: which plan (team size, and unit or row split) each shape class runs with on
// this machine, chosen by timing the candidates on the calls the program makes anyway.
//
// Why: the best plan moved with every CPU the machine class had (NOTES levers 12, 20, 25, 27,
// 30, 33), and each move needed a developer's hand change to the rules in plan.h. The choice
// is the kind that cuDNN's benchmark mode and FFTW's wisdom make by measurement, so the kernels
// make it that way too: the first calls of a shape class try each candidate in turn (round
// robin, so that every candidate sees the same machine), kTuneSamples times each, and the class
// then keeps the fastest by its best call. Every plan gives the same values bit for bit (each
// product sums in one fixed order, whatever the split), so tuning changes no number; a call
// being tuned is a real call, only its speed differs. The rules' plan is tried too and is kept
// unless another is faster by more than kTuneMargin (timing noise must not move a plan).
//
// The table is shared by every translation unit of the library (inline variables outside the
// unnamed namespace), guarded by one mutex taken twice per call (a few tens of nanoseconds next
// to calls of tens of microseconds and more: smaller calls are not tuned, plan.h). Python reads
// it and preloads it from the cache file beside the library (kernels/tune.py).

#ifndef JAXRNN_KERNELS_TUNER_H_
#define JAXRNN_KERNELS_TUNER_H_

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <tuple>
#include <vector>

namespace jaxrnn_tuner {

// The kernels whose calls take a plan (kernels/tune.py lists the same names in this order).
enum Kernel : int {
  kLstmForward, kLstmBackward, kGruForward, kGruBackward, kElmanForward, kElmanBackward,
  kJordanForward, kJordanBackward, kKernelCount
};
inline const char* const kKernelNames[kKernelCount] = {
    "lstm_forward", "lstm_backward", "gru_forward", "gru_backward",
    "elman_forward", "elman_backward", "jordan_forward", "jordan_backward"};

struct Plan {
  int threads = 1;
  bool rows = false;  // split the batch rows (row team) rather than the units (phase team)
  bool operator==(const Plan& o) const { return threads == o.threads && rows == o.rows; }
};

// A shape class: the kernel, its variant (training or not), the sizes that set the step's
// work, the sequence length to a power of two (it sets how often a team's start-up cost is
// paid), and the largest team the call may have (the same CPU with more cores is another
// machine).
struct Key {
  int kernel, variant, B, H, F, log2_T, max_threads;
  bool operator<(const Key& o) const {
    return std::tie(kernel, variant, B, H, F, log2_T, max_threads) <
           std::tie(o.kernel, o.variant, o.B, o.H, o.F, o.log2_T, o.max_threads);
  }
};

constexpr int kTuneSamples = 3;        // timed calls per candidate
constexpr double kTuneMargin = 0.05;   // a plan must beat the rules' by this much to be kept
constexpr int kMaxCandidates = 12;

enum State : int { kTuning = 0, kMeasured = 1, kPreloaded = 2 };

struct Entry {
  Key key;
  State state = kTuning;
  Plan rule;                  // what plan.h's rules give
  Plan chosen;                // the plan in use once settled
  int calls = 0;              // calls seen while tuning (the first is a warm-up, not timed)
  std::vector<Plan> candidates;
  std::vector<int> samples;
  std::vector<int64_t> best_ns;
  int64_t tuning_ns = 0;      // the time the tuned calls took in all
};

inline std::mutex mu;
inline std::vector<Entry> entries;      // stable indices: entries are only ever appended
inline std::map<Key, int> index;
inline int generation = 0;              // bumped by a reset: older tickets are then void

// The candidates for a class: one thread, and for each team size up to max_threads (powers of
// two and max_threads itself) the unit split and, with a row per thread, the row split; the
// rules' plan first.
inline std::vector<Plan> candidates_for(const Key& k, Plan rule) {
  std::vector<Plan> out{rule};
  auto add = [&](Plan p) {
    if ((int)out.size() < kMaxCandidates && std::find(out.begin(), out.end(), p) == out.end())
      out.push_back(p);
  };
  add(Plan{1, false});
  std::vector<int> sizes;
  for (int n = 2; n < k.max_threads; n *= 2) sizes.push_back(n);
  if (k.max_threads >= 2) sizes.push_back(k.max_threads);
  for (int n : sizes) {
    if (k.H >= 32) add(Plan{n, false});  // make_chunks: at least two chunks of 16 units
    if (k.B >= n) add(Plan{n, true});
  }
  return out;
}

// What a call runs with, and (entry >= 0) the sample it gives the table.
struct Ticket {
  Plan plan;
  int entry = -1;
  int candidate = -1;
  int64_t start_ns = 0;
  int generation = 0;
};

inline Entry& entry_for(const Key& k, Plan rule) {
  auto it = index.find(k);
  if (it != index.end()) return entries[it->second];
  Entry e;
  e.key = k;
  e.rule = e.chosen = rule;
  e.candidates = candidates_for(k, rule);
  e.samples.assign(e.candidates.size(), 0);
  e.best_ns.assign(e.candidates.size(), INT64_MAX);
  index.emplace(k, (int)entries.size());
  entries.push_back(std::move(e));
  return entries.back();
}

inline Ticket choose(const Key& k, Plan rule, int64_t now) {
  std::lock_guard<std::mutex> lock(mu);
  Entry& e = entry_for(k, rule);
  if (e.state != kTuning) return Ticket{e.chosen};
  const int call = e.calls++;
  if (call == 0 || e.candidates.size() < 2) return Ticket{rule};  // warm-up: first-touch costs
  const int c = (call - 1) % (int)e.candidates.size();
  return Ticket{e.candidates[c], (int)(&e - entries.data()), c, now, generation};
}

inline const char* plan_words(Plan p, char* buf, size_t n) {
  if (p.threads == 1)
    std::snprintf(buf, n, "1 thread");
  else
    std::snprintf(buf, n, "%d threads by %s", p.threads, p.rows ? "rows" : "units");
  return buf;
}

inline bool verbose() {
  const char* env = std::getenv("JAXRNN_KERNEL_TUNE");
  return !(env && std::strcmp(env, "quiet") == 0);
}

// Settles an entry once every candidate has kTuneSamples samples (caller holds mu).
inline void settle(Entry& e) {
  for (int s : e.samples)
    if (s < kTuneSamples) return;
  int best = 0;
  for (int c = 1; c < (int)e.candidates.size(); ++c)
    if (e.best_ns[c] < e.best_ns[best]) best = c;
  // candidates[0] is the rules' plan: keep it unless beaten by more than the margin.
  if ((double)e.best_ns[best] * (1.0 + kTuneMargin) >= (double)e.best_ns[0]) best = 0;
  e.chosen = e.candidates[best];
  e.state = kMeasured;
  if (verbose()) {
    char a[48], b[48];
    std::fprintf(stderr,
                 "jaxrnn: kernel plan for %s%s B=%d H=%d F=%d T~2^%d: %s (%.3f ms a call; the "
                 "rules' %s: %.3f ms), %zu plans tried in %.2f s\n",
                 kKernelNames[e.key.kernel], e.key.variant ? " (training)" : "", e.key.B,
                 e.key.H, e.key.F, e.key.log2_T, plan_words(e.chosen, a, sizeof a),
                 e.best_ns[best] / 1e6, plan_words(e.rule, b, sizeof b), e.best_ns[0] / 1e6,
                 e.candidates.size(), e.tuning_ns / 1e9);
  }
}

// Records how long a tuned call took; `valid` is false when the call did not run its plan to
// the end as planned (it went alone after stalls: that time says nothing about the plan).
inline void finish(const Ticket& t, int64_t now, bool valid) {
  if (t.entry < 0) return;
  std::lock_guard<std::mutex> lock(mu);
  if (t.generation != generation || t.entry >= (int)entries.size()) return;
  Entry& e = entries[t.entry];
  if (e.state != kTuning) return;
  e.tuning_ns += now - t.start_ns;
  if (!valid) return;
  e.samples[t.candidate] += 1;
  e.best_ns[t.candidate] = std::min(e.best_ns[t.candidate], now - t.start_ns);
  settle(e);
}

}  // namespace jaxrnn_tuner

// The table's interface for kernels/tune.py (weak: every translation unit defines it, the
// linker keeps one).
// Fields of an entry, in order: kernel, variant, B, H, F, log2_T, max_threads, state,
// chosen threads, chosen rows, rule threads, rule rows, tuning_ns, calls, candidate count, then per
// candidate: threads, rows, samples, best_ns (INT64_MAX when none).
extern "C" __attribute__((weak, visibility("default"))) int jaxrnn_tune_entries() {
  std::lock_guard<std::mutex> lock(jaxrnn_tuner::mu);
  return (int)jaxrnn_tuner::entries.size();
}

extern "C" __attribute__((weak, visibility("default"))) int jaxrnn_tune_entry(int i, int64_t* out,
                                                                             int cap) {
  using namespace jaxrnn_tuner;
  std::lock_guard<std::mutex> lock(mu);
  if (i < 0 || i >= (int)entries.size()) return -1;
  const Entry& e = entries[i];
  std::vector<int64_t> v{e.key.kernel, e.key.variant, e.key.B, e.key.H, e.key.F, e.key.log2_T,
                         e.key.max_threads, e.state, e.chosen.threads, e.chosen.rows,
                         e.rule.threads, e.rule.rows, e.tuning_ns, e.calls,
                         (int64_t)e.candidates.size()};
  for (size_t c = 0; c < e.candidates.size(); ++c)
    v.insert(v.end(), {e.candidates[c].threads, e.candidates[c].rows, e.samples[c],
                       e.best_ns[c]});
  const int n = std::min<int>(cap, (int)v.size());
  std::copy(v.begin(), v.begin() + n, out);
  return (int)v.size();
}

extern "C" __attribute__((weak, visibility("default"))) const char* jaxrnn_tune_kernel_name(
    int kernel) {
  return kernel >= 0 && kernel < jaxrnn_tuner::kKernelCount ? jaxrnn_tuner::kKernelNames[kernel]
                                                            : "";
}

// A plan from the cache file: the class keeps it and is not tuned again in this process.
// Returns 0, or -1 for a key or plan that does not make sense here (the cache is ignored then).
extern "C" __attribute__((weak, visibility("default"))) int jaxrnn_tune_preload(
    int kernel, int variant, int B, int H, int F, int log2_T, int max_threads, int threads,
    int rows) {
  using namespace jaxrnn_tuner;
  if (kernel < 0 || kernel >= kKernelCount || B < 1 || H < 1 || F < 0 || threads < 1 ||
      threads > max_threads || (rows && threads > B))
    return -1;
  std::lock_guard<std::mutex> lock(mu);
  const Key k{kernel, variant, B, H, F, log2_T, max_threads};
  const Plan p{threads, rows != 0};
  Entry& e = entry_for(k, p);  // a new entry: the rules' plan is unknown here, p stands in
  e.chosen = p;
  e.state = kPreloaded;
  return 0;
}

// Forgets every plan (kernels.tune.reset): the next calls tune again.
extern "C" __attribute__((weak, visibility("default"))) void jaxrnn_tune_reset() {
  std::lock_guard<std::mutex> lock(jaxrnn_tuner::mu);
  jaxrnn_tuner::entries.clear();
  jaxrnn_tuner::index.clear();
  jaxrnn_tuner::generation += 1;
}

#endif  // JAXRNN_KERNELS_TUNER_H_
