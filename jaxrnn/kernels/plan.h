// The plan of a call: how many threads, and whether they split the hidden units (phase team,
// one barrier per step) or the batch rows (row team, no barrier). These are the only choices
// that depend on the CPU; none of them changes a value, as every product sums each output in
// one fixed order (products.h) and every elementwise pass is per element.
//
// plan_call picks it: for a call large enough to time, the plan table's (tuner.h: measured on
// this machine, cached per CPU); otherwise, with JAXRNN_KERNEL_TUNE=0, with a fixed
// JAXRNN_KERNEL_THREADS, while a busy machine holds calls alone, or for an ensemble member,
// the rules below. The rules are also the first candidate the table tries.
//
// The rules, in what they cost:
// - The unit split hands off once per step: below kParallelMinWork vector multiply-adds per
//   step that hand-off is a sizeable part of the step, and on a shared machine a member that
//   loses its core stalls every step, so one thread.
// - The row split hands off once per call, so a call whose rows can fill two thirds of a
//   register tile per thread gets a team even below that bound, when the whole call is large.
// - Rows split while the weights fit a core's L2, or up to L3 when each thread has two
//   register tiles of rows (each weight loaded then feeds enough multiply-adds for L3 to keep
//   up); past that the unit split reads each weight once instead of once per thread.
// The measurements behind each bound are in benchmarks/NOTES.md (levers 12, 20, 25, 27, 30).

#ifndef JAXRNN_KERNELS_PLAN_H_
#define JAXRNN_KERNELS_PLAN_H_

#include <algorithm>
#include <cstdint>
#include <thread>

#include "phase_team.h"
#include "products.h"
#include "row_team.h"
#include "team.h"
#include "tuner.h"

namespace {

// In vector multiply-adds, so that the bound means about the same step time on every ISA.
constexpr int64_t kParallelMinWork = (int64_t{1} << 20) * kLanes / 16;

constexpr int64_t kRowSplitMaxWeightBytes = 512 << 10;
constexpr int64_t kRowSplitWideMaxWeightBytes = 4 << 20;
constexpr int kRowSplitMinRows = (2 * kTileRows + 2) / 3;
constexpr int64_t kRowSplitMinCallWork = kParallelMinWork * 16;

inline bool row_split(int nthreads, int B, int64_t weight_bytes,
                      int64_t max_weight_bytes = kRowSplitMaxWeightBytes) {
  if (nthreads < 2 || B < kRowSplitMinRows * nthreads) return false;
  return weight_bytes <= max_weight_bytes ||
         (B >= 2 * kTileRows * nthreads && weight_bytes <= kRowSplitWideMaxWeightBytes);
}

[[maybe_unused]] int team_size(ffi::ThreadPool& pool, int64_t work_per_step) {
  if (running_members()) return 1;
  if (const int fixed = threads_from_env()) return fixed;
  if (work_per_step < kParallelMinWork) return 1;
  if (now_ns() < solo_until_ns().load(std::memory_order_relaxed)) {  // phase_team.h
    jaxrnn_counters::add(jaxrnn_counters::kHeldSolo);
    return 1;
  }
  const int64_t n = pool.num_threads();
  const int hw = (int)std::thread::hardware_concurrency();
  return (int)std::max<int64_t>(1, std::min<int64_t>(n, hw > 0 ? hw : 1));
}

// The team `drive` runs a call with: team_size's, except below the per-step bound, where a
// call that can split its rows still gets a team when the call as a whole is large enough.
[[maybe_unused]] int drive_team(ffi::ThreadPool& pool, int64_t work_per_step, int nphases, int B,
               int64_t weight_bytes, int64_t max_weight_bytes = kRowSplitMaxWeightBytes) {
  if (running_members() || threads_from_env() || work_per_step >= kParallelMinWork)
    return team_size(pool, work_per_step);
  if (work_per_step * nphases < kRowSplitMinCallWork) return 1;
  const int n = std::min(team_size(pool, kParallelMinWork), std::max(1, B / kRowSplitMinRows));
  return row_split(n, B, weight_bytes, max_weight_bytes) ? n : 1;
}

using jaxrnn_tuner::Plan;
using jaxrnn_tuner::Ticket;

// JAXRNN_KERNEL_TUNE=0: the rules alone, as before the plan table (read at every call).
inline bool tune_from_env() {
  const char* env = std::getenv("JAXRNN_KERNEL_TUNE");
  return !(env && std::strcmp(env, "0") == 0);
}

// Calls with less work than this (about 10 us of multiply-adds on one core) are not tuned: a
// team cannot pay for itself there, and their times are mostly the clock's noise.
constexpr int64_t kTuneMinCallWork = kParallelMinWork;

inline int log2_floor(int n) {
  int k = 0;
  while (n > 1) { n >>= 1; ++k; }
  return k;
}

// The plan of one call of `kernel` (variant: what else changes its work, e.g. training), and
// the ticket that times it for the table while its shape class is being tuned.
[[maybe_unused]] Ticket plan_call(ffi::ThreadPool& pool, jaxrnn_tuner::Kernel kernel, int variant,
                                  int T, int B, int H, int F, int64_t work_per_step, int nphases,
                                  int64_t weight_bytes,
                                  int64_t max_weight_bytes = kRowSplitMaxWeightBytes) {
  const int64_t now = now_ns();
  const bool held = now < solo_until_ns().load(std::memory_order_relaxed);
  const int n = drive_team(pool, work_per_step, nphases, B, weight_bytes, max_weight_bytes);
  const Plan rule{n, row_split(n, B, weight_bytes, max_weight_bytes)};
  if (held || running_members() || threads_from_env() || !tune_from_env() ||
      work_per_step * nphases < kTuneMinCallWork)
    return Ticket{rule};
  const int max_threads = team_size(pool, kParallelMinWork);
  if (max_threads < 2) return Ticket{rule};
  const jaxrnn_tuner::Key key{kernel, variant, B, H, F, log2_floor(T), max_threads};
  return jaxrnn_tuner::choose(key, rule, now);
}

// The end of a call's time loop: its time goes to the table if the call was being tuned. A
// call that went alone after stalls (phase_team.h) did not run its plan: its time is dropped.
inline void end_of_call(const Ticket& t) {
  if (t.entry < 0) return;
  const int64_t now = now_ns();
  jaxrnn_tuner::finish(t, now, solo_until_ns().load(std::memory_order_relaxed) <= t.start_ns);
}

// step(phase, b0, b1, u0, u1) does rows [b0, b1) and units [u0, u1) of one phase; phases must
// run in order for each row.
template <class Step>
void drive(ffi::ThreadPool& pool, const Ticket& ticket, int nphases, int B, int H, Step step) {
  const int nthreads = ticket.plan.threads;
  if (nthreads > 1 && ticket.plan.rows) {
    run_row_groups(pool, nthreads, nphases, [&](int g, int p0, int p1) {
      const int b0 = (int)((int64_t)B * g / nthreads), b1 = (int)((int64_t)B * (g + 1) / nthreads);
      for (int p = p0; p < p1; ++p) step(p, b0, b1, 0, H);
    });
  } else {
    const Chunks ch = make_chunks(H, nthreads);
    run_phases(&pool, nphases, ch.count(), [&](int p, int c) {
      step(p, 0, B, ch.start[c], ch.start[c + 1]);
    });
  }
  end_of_call(ticket);
}

JAXRNN_INLINE bool step_valid(const int32_t* lens, int t, int b) { return !lens || t < lens[b]; }

}  // namespace

#endif  // JAXRNN_KERNELS_PLAN_H_
