// The phase team: one barrier per phase. Runs fn(phase, chunk) for every chunk of phases
// 0..nphases-1, every chunk of a phase finishing before any chunk of the next one starts; the
// unit split of a recurrence (a phase is a step, a chunk a range of hidden units in every gate
// block) and every one-phase job (weight-gradient products, member-wise ensembles) run on it.
//
// Thread `id` (0 = the caller) owns chunk `id`, so that its slice of the weights stays in its
// core's cache from step to step. The caller also does a helper's chunk when the helper has not
// started, or has not claimed it within a short wait, and a caller that waits too long on its
// helpers twice in a call finishes the call alone (a helper descheduled on a busy machine would
// otherwise stall every step after it). Which thread runs a chunk never changes its values.

#ifndef JAXRNN_KERNELS_PHASE_TEAM_H_
#define JAXRNN_KERNELS_PHASE_TEAM_H_

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include "team.h"

namespace {

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

inline bool try_claim(TeamState& st, int phase, int c) {
  int expected = phase - 1;
  return st.claimed[c].compare_exchange_strong(expected, phase, std::memory_order_acq_rel);
}

// Thread `id` runs its own chunk; the caller then each helper's that is not claimed in time.
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

// A stall: the caller waited on a phase longer than kStallFactor times its own chunk took (and
// at least kStallMinNs). After kStallsBeforeSolo of them it runs the rest of the call alone
// (the helpers see `solo`, finish the phase they hold and leave), and the calls of the next
// kSoloHoldNs in this translation unit start alone (plan.h, team_size), so that a busy machine
// costs them no stalls at all; after that a team is tried again.
constexpr int64_t kStallMinNs = 200 * 1000;
constexpr int kStallFactor = 8;
constexpr int kStallsBeforeSolo = 2;
constexpr int64_t kSoloHoldNs = 1000 * 1000 * 1000;

// When the last call that went alone did so, plus kSoloHoldNs (0: none).
inline std::atomic<int64_t>& solo_until_ns() {
  static std::atomic<int64_t> until{0};
  return until;
}

// Runs fn(phase, chunk) for every chunk of phases 0..nphases-1, all chunks of a phase finishing
// before any chunk of the next one starts; one thread per chunk (pool == nullptr: the caller
// alone).
template <class Fn>
void run_phases(ffi::ThreadPool* pool, int nphases, int nchunks, Fn fn) {
  const int nhelpers = pool ? nchunks - 1 : 0;  // one chunk per thread (see make_chunks)
  auto st = std::make_shared<TeamState>(nchunks, nhelpers);
  st->caller = std::this_thread::get_id();
  if (nhelpers) {
    note_caller_cpu(st->cpus);
    jaxrnn_counters::add(jaxrnn_counters::kPhaseCalls);
  }
  Fn* fn_ptr = &fn;
  for (int h = 0; h < nhelpers; ++h) {
    const int home = h + 1;
    const int64_t scheduled = now_ns();
    schedule_handed_over(*pool, [st, h, home, nphases, nchunks, fn_ptr, scheduled]() {
      jaxrnn_counters::add(jaxrnn_counters::kHelperStartNs, now_ns() - scheduled);
      // A pool that cannot take the task runs it inline on the caller: do nothing then.
      if (std::this_thread::get_id() == st->caller) return;
      int expected = 0;
      if (!st->helper_state[h].compare_exchange_strong(expected, 1)) {  // cancelled
        jaxrnn_counters::add(jaxrnn_counters::kHelpersMissed);
        return;
      }
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
        if (stalled) jaxrnn_counters::add(jaxrnn_counters::kStalls);
        if (stalled && ++stalls == kStallsBeforeSolo) {
          jaxrnn_counters::add(jaxrnn_counters::kSoloSwitches);
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

[[maybe_unused]] Chunks make_chunks(int H, int nthreads) {
  Chunks ch;
  const int blocks = std::max(1, H / 16);
  const int n = std::max(1, std::min(blocks, nthreads));
  for (int i = 0; i <= n; ++i) ch.start.push_back(i == n ? H : 16 * (int)((int64_t)blocks * i / n));
  return ch;
}

}  // namespace

#endif  // JAXRNN_KERNELS_PHASE_TEAM_H_
