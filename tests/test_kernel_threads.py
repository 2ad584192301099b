"""The kernels' thread teams: concurrent calls, and the team tests under ThreadSanitizer.

The team code is lock-free (phase_team.h, row_team.h): a ThreadSanitizer build of the kernels
(``JAXRNN_KERNEL_SANITIZE=thread``, cached separately) runs the team-size, busy-machine,
one-CPU, vmap and concurrency tests, and no report may have both of its accesses in the
kernels. XLA itself is not instrumented: TSan sees its locks but not its atomics, nor its own
loads and stores, so what it hands over with atomics (a buffer to the kernel, a task to a pool
thread) reads as unordered. The kernels state their hand-over of a task (team.h,
schedule_handed_over); the accesses of XLA's and NumPy's intercepted calls (malloc, free,
memcpy) are dropped (tests/tsan.supp says why, and why not otherwise).
"""

import os
import re
import subprocess
import sys
import threading
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn
from jaxrnn import kernels

pytestmark = pytest.mark.skipif(kernels._compiler() is None, reason="no C++ compiler")


def test_concurrent_calls_each_give_their_own_values(monkeypatch):
    # Calls from several Python threads at once share XLA's pool: their teams' helpers
    # interleave, and each call must still give exactly its one-thread values.
    monkeypatch.setenv("JAXRNN_KERNEL_THREADS", "2")
    B, T, F = 16, 12, 8
    jobs = []
    for seed, cell in enumerate([jaxrnn.lstm(64), jaxrnn.elman(128)]):
        p = cell.init(jax.random.key(seed), F)
        xs = jax.random.normal(jax.random.key(seed + 10), (B, T, F))
        grad = jax.jit(jax.grad(lambda p, xs, c=cell: jnp.sum(jnp.sin(jaxrnn.run(c, p, xs)[1]))))
        jobs.append((grad, p, xs))

    def values(job):
        grad, p, xs = job
        return [np.asarray(a) for a in jax.tree_util.tree_leaves(grad(p, xs))]

    monkeypatch.setenv("JAXRNN_KERNEL_THREADS", "1")
    want = [values(job) for job in jobs]
    monkeypatch.setenv("JAXRNN_KERNEL_THREADS", "2")
    got: dict = {}
    errors = []

    def worker(i):
        try:
            got[i] = [values(jobs[i % len(jobs)]) for _ in range(2)]
        except Exception as err:  # reported below, in the test's thread
            errors.append(err)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2 * len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    assert len(got) == len(threads)
    for i, runs in got.items():
        for run in runs:
            for a, b in zip(run, want[i % len(jobs)], strict=True):
                np.testing.assert_array_equal(a, b)


def _tsan_runtime() -> str | None:
    cxx = kernels._compiler()
    if cxx is None or not sys.platform.startswith("linux"):
        return None
    path = subprocess.run([cxx, "-print-file-name=libtsan.so"], capture_output=True,
                          text=True).stdout.strip()
    return path if os.path.isabs(path) and os.path.exists(path) else None


# The tests run under TSan: every team size and split, the busy machine's handovers, a process
# on one CPU, members split over threads, concurrent calls.
_UNDER_TSAN = [
    "tests/test_kernels.py::test_row_split_on_a_busy_machine_gives_one_threads_values_bit_for_bit",
    "tests/test_kernels.py::test_a_team_confined_to_one_cpu_finishes_with_one_threads_values",
    "tests/test_kernel_vmap.py::test_members_split_over_threads",
    "tests/test_kernel_threads.py::test_concurrent_calls_each_give_their_own_values",
]
_TEAM_SIZES = "test_any_team_size_gives_the_equations"

# Why the run needs no suppressions, and what an entry there must say: the file's comments.
_SUPPRESSIONS = Path(__file__).parent / "tsan.supp"
# ignore_interceptors_accesses: the accesses of intercepted calls (XLA's, NumPy's and Python's
# malloc, free and memcpy) are not checked, their locks are (tests/tsan.supp).
_TSAN_OPTIONS = "ignore_interceptors_accesses=1 report_signal_unsafe=0 halt_on_error=0 exitcode=0"


def kernel_races(log: str) -> list[str]:
    """The data-race reports of a TSan log that are the kernels': every access whose stack TSan
    could restore has its top frame in the kernels' library. A stack TSan lost (its history is
    bounded: "[failed to restore the stack]") clears nothing: the hand-over of a task to XLA's
    pool, written in the kernels just before, showed as one restored and one lost stack."""
    found = []
    for report in log.split("==================")[1:]:
        if "WARNING: ThreadSanitizer: data race" not in report:
            continue
        tops = []
        for section in re.split(r"^  (?=\S)", report, flags=re.M):
            if not re.match(r"(?:Previous )?(?:[Aa]tomic )?(?:[Rr]ead|[Ww]rite) of size", section):
                continue
            frames = [f for f in re.findall(r"^    #\d+ .*$", section, re.M) if "libtsan" not in f]
            if frames:
                tops.append("rnn_kernels-tsan" in frames[0])
        if tops and all(tops):
            found.append(report.strip()[:3000])
    return found


def test_kernel_races_are_told_from_xlas():
    ours = ("  Write of size 4 at 0x1 by thread T2:\n"
            "    #0 run_phases phase_team.h:120 (rnn_kernels-tsan-ab.so+0x1)\n"
            "  Previous read of size 4 at 0x1 by main thread:\n"
            "    #0 memcpy sanitizer_common_interceptors.inc:827 (libtsan.so+0x5)\n"
            "    #1 drive plan.h:80 (rnn_kernels-tsan-ab.so+0x2)\n")
    lost = ("  Read of size 8 at 0x3 by thread T3:\n"
            "    #0 operator() row_team.h:192 (rnn_kernels-tsan-ab.so+0x6)\n"
            "  Previous write of size 8 at 0x3 by thread T4:\n"
            "    [failed to restore the stack]\n\n"
            "  Location is heap block of size 40 at 0x3 allocated by thread T4:\n"
            "    #0 operator new tsan_new_delete.cpp:64 (libtsan.so+0x7)\n")
    xlas = ("  Read of size 8 at 0x2 by main thread:\n"
            "    #0 make_strips products.h:169 (rnn_kernels-tsan-ab.so+0x3)\n"
            "  Previous write of size 8 at 0x2 by thread T13:\n"
            "    #0 xla::Foo() <null> (libjax_common.so+0x4)\n")
    log = "".join(f"==================\nWARNING: ThreadSanitizer: data race\n{r}"
                  for r in (ours, lost, xlas)) + "==================\n"
    assert [r.count("rnn_kernels") for r in kernel_races(log)] == [2, 1]


@pytest.mark.slow
@pytest.mark.skipif(_tsan_runtime() is None, reason="no ThreadSanitizer runtime (libtsan)")
def test_the_team_tests_are_clean_under_thread_sanitizer(tmp_path):
    env = {**os.environ, "JAXRNN_KERNEL_SANITIZE": "thread", "JAX_PLATFORMS": "cpu",
           "LD_PRELOAD": _tsan_runtime(),
           "TSAN_OPTIONS": f"{_TSAN_OPTIONS} suppressions={_SUPPRESSIONS} "
                           f"log_path={tmp_path / 'tsan'}"}
    root = Path(__file__).parent.parent
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-n", "0", "-p", "no:randomly",
         "-p", "no:cacheprovider", *_UNDER_TSAN, "tests/test_kernels.py", "-k",
         f"{_TEAM_SIZES} or busy_machine or one_cpu or members_split or concurrent"],
        capture_output=True, text=True, timeout=3000, env=env, cwd=root)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    logs = "".join(p.read_text(errors="replace") for p in tmp_path.glob("tsan*"))
    races = kernel_races(logs)
    assert not races, f"{len(races)} races in the kernels, the first:\n{races[0]}"


def test_team_counters_count_every_row_block_once(monkeypatch):
    # kernels.team_counters() tells a slow call's cause (benchmarks/NOTES.md, lever 33): each
    # block of a row group is run exactly once, by the caller or a helper, whoever took it
    # (turns with a late helper's group, handovers), so a call's blocks add up to the groups
    # times the blocks per group; the row split never touches the phase team's stall rule.
    monkeypatch.setenv("JAXRNN_KERNEL_THREADS", "2")
    B, T, F, H = 32, 9, 5, 64  # rows split: 2 groups of 16, blocks of 4, 4 and 1 steps
    cell = jaxrnn.elman(H)
    p = cell.init(jax.random.key(0), F)
    xs = jax.random.normal(jax.random.key(1), (B, T, F))
    f = jax.jit(lambda p, xs: jaxrnn.run(cell, p, xs)[1])
    jax.block_until_ready(f(p, xs))
    before = kernels.team_counters()
    for _ in range(5):
        jax.block_until_ready(f(p, xs))
    after = kernels.team_counters()
    d = {k: after[k] - before[k] for k in after}
    assert d["row_calls"] == 5
    assert d["row_blocks_caller"] + d["row_blocks_helper"] == 5 * 2 * 3
    assert d["phase_calls"] == d["stalls"] == d["solo_switches"] == 0
