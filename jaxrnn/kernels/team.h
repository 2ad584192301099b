// Team primitives shared by both schedulers (phase_team.h, row_team.h): how a thread waits, how
// a team keeps its members on different CPUs, the clock, and the environment's say.
//
// A team is the calling thread plus helpers taken from XLA's intra-op thread pool for one
// call. Which thread runs a piece of work never changes its arithmetic, so nothing here can
// change a result: it only decides how fast a call is, and on a shared machine that depends
// mostly on keeping the team's threads on different cores and its idle members off the CPU.

#ifndef JAXRNN_KERNELS_TEAM_H_
#define JAXRNN_KERNELS_TEAM_H_

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <thread>
#include <vector>

// Moving a thread between CPUs needs Linux's sched_getcpu/sched_setaffinity; elsewhere a team
// still runs, its members wherever the scheduler puts them (kernels.status() says so).
#if defined(__linux__)
#include <sched.h>
#define JAXRNN_CAN_MOVE_THREADS 1
#else
#define JAXRNN_CAN_MOVE_THREADS 0
#endif

// XLA's thread pool hands a task to a helper through code ThreadSanitizer does not see (it is
// not instrumented): a TSan build states that hand-over, so that what the caller wrote before
// scheduling the task counts as seen by the task. JAXRNN_HAND_OVER(p) is the caller's side,
// JAXRNN_TAKE_OVER(p) the task's, on the same address.
#if defined(__SANITIZE_THREAD__)
#include <sanitizer/tsan_interface.h>
#define JAXRNN_HAND_OVER(p) __tsan_release(p)
#define JAXRNN_TAKE_OVER(p) __tsan_acquire(p)
#else
#define JAXRNN_HAND_OVER(p) ((void)(p))
#define JAXRNN_TAKE_OVER(p) ((void)(p))
#endif

#include <utility>

namespace {

// A task on its way to a pool thread. ffi::ThreadPool::Schedule moves the task into a closure
// it allocates, after anything the caller can mark, and the pool thread reads that closure
// before the task's first line: the hand-over is stated on the closure's own copy, by the move
// that makes it (the caller's last write) and before the task reads it (its first read).
template <class Task>
class HandedOver {
 public:
  explicit HandedOver(Task task) : task_(std::move(task)) {}
  HandedOver(HandedOver&& from) : task_(std::move(from.task_)) { JAXRNN_HAND_OVER(this); }
  HandedOver(const HandedOver& from) : task_(from.task_) { JAXRNN_HAND_OVER(this); }
  HandedOver& operator=(const HandedOver&) = delete;
  void operator()() {
    JAXRNN_TAKE_OVER(this);
    task_();
  }

 private:
  Task task_;
};

// Runs task() on a thread of XLA's pool (or inline on the caller, when the pool cannot take
// it), what the caller wrote before this call seen by the task under ThreadSanitizer too.
template <class Pool, class Task>
void schedule_handed_over(Pool& pool, Task task) {
  pool.Schedule([handed = HandedOver<Task>(std::move(task))]() mutable { handed(); });
}

}  // namespace

#include "ffi_glue.h"

// Counts of what the teams did (kernels.team_counters()), to tell which calls of a run were
// slow for a reason the team knows: a stall, a call held alone, a helper that started late or
// never took part. One set for the whole library: an inline variable outside the unnamed
// namespace is shared by every translation unit. A relaxed add per event, a handful per call.
namespace jaxrnn_counters {
enum Counter : int {
  kPhaseCalls,      // calls on the phase team (with helpers)
  kStalls,          // phases the caller waited on past the stall bound (phase_team.h)
  kSoloSwitches,    // calls that went on alone after kStallsBeforeSolo stalls
  kHeldSolo,        // calls that started alone because an earlier call went alone (plan.h)
  kRowCalls,        // calls on the row team
  kRowBlocksCaller, // row blocks the calling thread ran
  kRowBlocksHelper, // row blocks the helpers ran
  kRowHandovers,    // row groups handed from a slow owner to a waiting thread
  kRowTurns,        // row groups left after a block for one whose member had not started
  kHelperStartNs,   // sum over helpers of the time from Schedule to the task's start
  kHelpersMissed,   // helper tasks that started after the work was all done (took no part)
  kIdleSleeps,      // IdleWait sleeps
  kCount
};
inline std::atomic<int64_t> values[kCount];
inline void add(Counter c, int64_t n = 1) { values[c].fetch_add(n, std::memory_order_relaxed); }
}  // namespace jaxrnn_counters

extern "C" __attribute__((weak, visibility("default"))) int64_t jaxrnn_team_counter(int which) {
  return which >= 0 && which < jaxrnn_counters::kCount
             ? jaxrnn_counters::values[which].load(std::memory_order_relaxed)
             : -1;
}

namespace {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

inline int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
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

// JAXRNN_KERNEL_SPREAD=0 turns off what keeps a team spread over the CPUs on a shared machine
// (move_away_from_team and IdleWait's sleep), to measure what they are worth.
inline bool spread_from_env() {
  static const bool on = [] {
    const char* env = std::getenv("JAXRNN_KERNEL_SPREAD");
    return !(env && std::strcmp(env, "0") == 0);
  }();
  return on;
}

// The CPU each member of a team started on (move_away_from_team).
struct TeamCpus {
  std::mutex mu;
  std::vector<int> cpus;
};

// Moves the calling team member off any CPU another member of its team started on. The
// scheduler often wakes a helper onto the CPU of the thread that woke it and leaves it there;
// beside a busy process the team's threads then share one core while the other process has a
// core to itself. The move is an affinity without the team's CPUs, applied at once, then the
// thread's own affinity again: the thread stays where it was moved to, and the scheduler stays
// free to move it later (onto a CPU a member leaves idle, IdleWait). Nothing happens when the
// thread is alone on its CPU, when the process may use no other CPU (taskset, a cpuset), or
// without JAXRNN_CAN_MOVE_THREADS.
inline void move_away_from_team(TeamCpus& st) {
#if JAXRNN_CAN_MOVE_THREADS
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
#if JAXRNN_CAN_MOVE_THREADS
  std::lock_guard<std::mutex> lock(st.mu);
  st.cpus.push_back(sched_getcpu());
#else
  (void)st;
#endif
}

// How a team member with nothing left to do in a call waits for the others: a short spin, then
// short sleeps. An idle CPU is what lets the scheduler move a member queued behind another
// process onto it; a spinning or yielding thread keeps its CPU busy, and the member it waits
// for keeps sharing a core. (The move above and this sleep help only together:
// benchmarks/NOTES.md, lever 32.)
constexpr int kIdleSpins = 4000;
constexpr int kIdleSleepUs = 50;

struct IdleWait {
  int spins = 0;
  void wait() {
    if (++spins < kIdleSpins) {
      cpu_relax();
    } else if (spread_from_env()) {
      jaxrnn_counters::add(jaxrnn_counters::kIdleSleeps);
      std::this_thread::sleep_for(std::chrono::microseconds(kIdleSleepUs));
    } else {
      std::this_thread::yield();
    }
  }
};

// JAXRNN_KERNEL_THREADS, read at every call: a number fixes the team size whatever the work
// (1: always one thread), "auto" or unset leaves it to the rules (plan.h). Returns 0 for auto.
inline int threads_from_env() {
  const char* env = std::getenv("JAXRNN_KERNEL_THREADS");
  if (!env || !*env || std::strcmp(env, "auto") == 0) return 0;
  return std::max(0, std::atoi(env));
}

// Set while a thread runs whole members of an ensemble (members.h): the kernel it runs for a
// member then keeps to that thread, the other members being the other threads' work.
inline bool& running_members() {
  static thread_local bool on = false;
  return on;
}

}  // namespace

#endif  // JAXRNN_KERNELS_TEAM_H_
