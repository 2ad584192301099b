// The row team: the batch rows split into one group per thread, with no barrier at all. Rows
// never meet, so a group runs the whole sequence on its rows; run_row_groups(pool, nthreads,
// nphases, block) calls block(g, p0, p1) for phases [p0, p1) of group g, in order, in blocks
// of kRowBlockSteps phases.
//
// A group's phases are a chain, but nothing ties a group to a thread (its state is all in the
// call's buffers), so a thread whose own group is done takes another between two blocks. On a
// shared machine that keeps the team's CPU time working: a fixed split would end when the rows
// of the thread that shares its core end. A thread with nothing left asks for a busy group,
// and the owner hands it over after a block only if that block was slow (kSlowBlockFactor
// times the call's fastest per phase: its thread lost its core), so on a quiet machine groups
// stay put and each row's state stays in its core's cache. The arithmetic of a phase does not
// depend on the thread that runs it, so the values are the same bit for bit.
//
// A member may start late: the pool thread that runs it wakes from its sleep, and on a virtual
// machine its idle CPU too, in tens of microseconds to milliseconds (benchmarks/NOTES.md, lever
// 33). Its group then has no owner, and a thread that would leave it alone until its own group
// is done ends the call one group's time later, twice one thread's time at worst: a second mode
// on a quiet machine. So a thread that finds, after a block, a group nobody has taken leaves
// its own (unowned, for anyone to take) and takes turns, one block each; the late member takes
// whichever group is free when it comes. Groups are owned as soon as every member has started,
// and then no thread leaves its group.

#ifndef JAXRNN_KERNELS_ROW_TEAM_H_
#define JAXRNN_KERNELS_ROW_TEAM_H_

#include <algorithm>
#include <atomic>
#include <climits>
#include <cstdint>
#include <memory>
#include <thread>

#include "team.h"

namespace {

constexpr int kRowBlockSteps = 4;
constexpr int kSlowBlockFactor = 2;

// JAXRNN_KERNEL_TURNS=0 turns off the turns a thread takes with the group of a member that has
// not started (RowTeam::work), to measure what they are worth (benchmarks/NOTES.md, lever 33).
inline bool turns_from_env() {
  static const bool on = [] {
    const char* env = std::getenv("JAXRNN_KERNEL_TURNS");
    return !(env && std::strcmp(env, "0") == 0);
  }();
  return on;
}

struct alignas(64) RowGroup {
  std::atomic<int> next{0};        // the first phase not yet run
  std::atomic<int> owner{-1};      // the thread that runs (or was handed) this group, or -1
  std::atomic<int> wanted_by{-1};  // a thread with nothing else to do that waits for it, or -1
};

// The handover is direct: the owner sets the group's owner to the waiting thread, which finds
// it its own at its next look (a group released for anyone to take went straight back to the
// slow owner, which looks at its own group first, while the waiting thread slept). A thread
// wants at most one group at a time and withdraws that want when it takes other work; if the
// owner took the want first, the group is handed to it all the same and waits, owned, until it
// looks again: no group ever has two threads, and no phase runs twice or out of order.
//
// The call returns as soon as every group is done, without waiting for the helpers to leave (a
// helper waiting for work may be asleep or queued behind another process when the last group
// ends). So everything a helper touches outside a block is in RowTeam, which the helper's task
// shares, and it calls `block` (on the caller's stack) only while it owns a group that is not
// done, during which the caller cannot return.
// The blocks one thread ran in a call, on its own cache line and written by that thread alone
// (a shared counter bumped per block would be a line the team's threads pass between them every
// block); the caller adds them to the team counters when the call ends. Each block's count is
// written before the release store that ends the block, so the caller, which has seen every
// group done, reads every count.
struct alignas(64) BlocksRun {
  std::atomic<int64_t> n{0};
  void count_one() { n.store(n.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed); }
};

struct RowTeam {
  RowTeam(int nthreads, int nphases) : groups(new RowGroup[nthreads]),
                                       blocks_run(new BlocksRun[nthreads]), nthreads(nthreads),
                                       nphases(nphases) {}
  std::unique_ptr<RowGroup[]> groups;
  std::unique_ptr<BlocksRun[]> blocks_run;
  const int nthreads, nphases;
  std::atomic<int64_t> fastest_ns{INT64_MAX};  // per phase, over every block of the call
  TeamCpus cpus;
  std::thread::id caller;

  bool all_done() const {
    for (int c = 0; c < nthreads; ++c)
      if (groups[c].next.load(std::memory_order_acquire) < nphases) return false;
    return true;
  }

  // Whether a group other than g is unfinished and nobody's: its member has not started yet.
  bool another_free(int g) const {
    for (int c = 0; c < nthreads; ++c)
      if (c != g && groups[c].owner.load(std::memory_order_relaxed) == -1 &&
          groups[c].next.load(std::memory_order_relaxed) < nphases)
        return true;
    return false;
  }

  // Runs groups as thread `home` until none is left to run or to wait for.
  template <class Block>
  void work(int home, Block& block) {
    IdleWait idle;
    int wanting = -1;  // the group this thread has asked for, if any
    int first = home;  // where the look for a group starts: its own, or past the one it left
    for (;;) {
      int g = -1;
      bool unfinished = false;
      for (int k = 0; k < nthreads && g < 0; ++k) {  // handed to it, or free; its own first
        const int c = (first + k) % nthreads;
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
      first = home;
      RowGroup& grp = groups[g];
      int hand_to = -1;
      for (;;) {
        const int p0 = grp.next.load(std::memory_order_relaxed);
        const int p1 = std::min(nphases, p0 + kRowBlockSteps);
        const int64_t t0 = now_ns();
        block(g, p0, p1);
        blocks_run[home].count_one();
        const int64_t per_phase = (now_ns() - t0) / (p1 - p0);
        int64_t best = fastest_ns.load(std::memory_order_relaxed);
        while (per_phase < best && !fastest_ns.compare_exchange_weak(best, per_phase,
                                                                     std::memory_order_relaxed)) {
        }
        // From here on, once this group is done, the caller may return: no `block` after it.
        grp.next.store(p1, std::memory_order_release);
        if (p1 >= nphases) break;
        if (turns_from_env() && another_free(g)) {  // a member is late: take turns with its group until it comes
          first = (g + 1) % nthreads;
          jaxrnn_counters::add(jaxrnn_counters::kRowTurns);
          break;
        }
        if (per_phase > kSlowBlockFactor * std::min(best, per_phase)) {  // slow: hand it over
          int w = grp.wanted_by.load(std::memory_order_relaxed);
          if (w >= 0 && w != home &&
              grp.wanted_by.compare_exchange_strong(w, -1, std::memory_order_relaxed)) {
            hand_to = w;
            jaxrnn_counters::add(jaxrnn_counters::kRowHandovers);
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
  jaxrnn_counters::add(jaxrnn_counters::kRowCalls);
  Block* block_ptr = &block;
  for (int home = 1; home < nthreads; ++home) {
    const int64_t scheduled = now_ns();
    schedule_handed_over(pool, [team, home, block_ptr, scheduled]() {
      jaxrnn_counters::add(jaxrnn_counters::kHelperStartNs, now_ns() - scheduled);
      // A pool that cannot take the task runs it inline on the caller: do nothing then. A
      // task that starts after the call has returned finds every group done.
      if (std::this_thread::get_id() == team->caller) return;
      if (team->all_done()) {
        jaxrnn_counters::add(jaxrnn_counters::kHelpersMissed);
        return;
      }
      move_away_from_team(team->cpus);
      team->work(home, *block_ptr);
    });
  }
  team->work(0, block);  // returns once every group is done, so no block is running any more
  int64_t helper_blocks = 0;
  for (int home = 1; home < nthreads; ++home)
    helper_blocks += team->blocks_run[home].n.load(std::memory_order_relaxed);
  jaxrnn_counters::add(jaxrnn_counters::kRowBlocksCaller,
                       team->blocks_run[0].n.load(std::memory_order_relaxed));
  jaxrnn_counters::add(jaxrnn_counters::kRowBlocksHelper, helper_blocks);
}

}  // namespace

#endif  // JAXRNN_KERNELS_ROW_TEAM_H_
