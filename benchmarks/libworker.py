"""Time one library's steps in this process, and nothing else.

The fair way to time peers (issue 26): each library runs in its own fresh process, one after
another, so no other library's threads are awake beside it (jaxrnn's kernel team and XLA's pool
would otherwise take a core from PyTorch stepped in lock-step with them). A worker gets a list
of rows (config, mode, cell), and for each row compiles the step, times it quiet and then, where
asked, beside competing busy processes (:mod:`benchmarks.contention`), then drops it.

Rows name a jaxrnn cell (``lib`` ``jaxrnn``, or the variants ``jaxrnn-plain-scan``: fused path
off, ``jaxrnn-xla-fused``: CPU kernels off) or a peer family (``lib`` one of
:data:`benchmarks.competitors.PEERS`).
"""

from __future__ import annotations

import os
import sys
import time

JAXRNN_LIBS = ("jaxrnn", "jaxrnn-plain-scan", "jaxrnn-xla-fused")


def _log(msg):
    print(msg, file=sys.stderr, flush=True)


def _config(row):
    from benchmarks.configs import Config

    return Config(**row["config"])


def _entry(name):
    from benchmarks.registry import all_cells

    entries = {e.name: e for e in all_cells()[0]}
    if name not in entries:
        raise ValueError(f"cell: unknown {name!r}; available {sorted(entries)}")
    return entries[name]


def _jaxrnn_runner(lib, row):
    from benchmarks import competitors as C
    from jaxrnn import kernels

    e, cfg = _entry(row["cell"]), _config(row)
    kw = row.get("run_kwargs") or {}
    if lib == "jaxrnn-plain-scan":
        return C.jaxrnn_runner(lambda H: e.make(H)._replace(parts=None), cfg, row["mode"],
                               run_kwargs=kw, run_fn=e.run, lib=lib)
    if lib == "jaxrnn-xla-fused":
        with kernels.disabled():
            return C.jaxrnn_runner(e.make, cfg, row["mode"], run_kwargs=kw, run_fn=e.run, lib=lib)
    return C.jaxrnn_runner(e.make, cfg, row["mode"], run_kwargs=kw, run_fn=e.run)


def sibling_processes() -> list[int] | None:
    """Other live child processes of this worker's parent (the harness): none while the harness
    runs one worker at a time. None where ``/proc`` does not list children."""
    ppid, me = os.getppid(), os.getpid()
    try:
        tasks = os.listdir(f"/proc/{ppid}/task")
    except OSError:
        return None
    kids = set()
    for tid in tasks:
        try:
            with open(f"/proc/{ppid}/task/{tid}/children") as f:
                kids.update(int(p) for p in f.read().split())
        except OSError:
            return None
    from benchmarks.contention import is_running

    return sorted(p for p in kids if p != me and is_running(p))


def _tune_row(runner, log=_log) -> int:
    """Untimed calls of a jaxrnn row until the kernels' plan table has settled every shape class
    the row's step meets (kernels/tune.py, warm_up), so that no timed call runs a candidate
    plan; the number of calls (0 without kernels, or with JAXRNN_KERNEL_TUNE=0)."""
    try:
        from jaxrnn.kernels import tune
    except ImportError:  # a checkout from before the plan table
        return 0
    t0 = time.perf_counter()
    calls = tune.warm_up(runner.call)
    if calls > 1:
        log(f"    kernel plans tuned in {calls} untimed calls, {time.perf_counter() - t0:.1f} s")
    return calls


def build(lib: str, row: dict):
    """The row's step, compiled and run once: a :class:`benchmarks.competitors.Runner`."""
    from benchmarks import competitors as C

    if lib in JAXRNN_LIBS:
        return _jaxrnn_runner(lib, row)
    if lib == "torch":  # alone in this process: no JAX pool beside it
        return C.torch_inprocess_runner(row["family"], _config(row), row["mode"])
    if lib not in C.PEERS:
        raise ValueError(f"lib: expected one of {sorted(C.PEERS)} or {JAXRNN_LIBS}, got {lib!r}")
    return C.PEERS[lib](row["family"], _config(row), row["mode"])


def _row_meta(lib, row, runner):
    meta = {"config": row["config"], "mode": row["mode"], "lib": lib, "cell": row["cell"],
            "peer_family": row.get("family"), "note": runner.note,
            "compile_s": runner.compile_s, "mem_bytes": runner.mem_bytes}
    if lib in JAXRNN_LIBS:
        from benchmarks.sections import has_kernel, step_flops

        e = _entry(row["cell"])
        meta.update(flops=step_flops(e, _config(row), row["mode"]), kernel=has_kernel(e),
                    note=meta["note"] or e.note,
                    run_kwargs={k: str(v) for k, v in (row.get("run_kwargs") or {}).items()})
    return meta


def timed_calls(runner, reps, warmup, min_reps=None, max_s=None) -> list[float]:
    """Seconds of each of ``reps`` calls after ``warmup`` untimed ones; where ``max_s`` is
    given, it stops early once the timed calls took that long and there are ``min_reps``."""
    for _ in range(warmup):
        runner.call()
    times = []
    t_start = time.perf_counter()
    while len(times) < reps:
        t0 = time.perf_counter()
        runner.call()
        times.append(time.perf_counter() - t0)
        if (max_s is not None and len(times) >= (min_reps or reps)
                and time.perf_counter() - t_start >= max_s):
            break
    return times


def time_row(runner, tokens, reps, warmup, condition="quiet", busy_n=1, min_reps=None,
             max_s=None) -> dict:
    """``reps`` timed calls (:func:`timed_calls`) after ``warmup`` untimed ones, quiet or
    beside ``busy_n`` busy processes (started before the warm-up calls, killed after the timed
    ones)."""
    from benchmarks.contention import busy_processes, share_used
    from benchmarks.measure import summarise

    if condition == "quiet":
        times = timed_calls(runner, reps, warmup, min_reps, max_s)
        return {"contention": "quiet", **summarise(times, tokens), "times_s": times}
    if condition != "busy":
        raise ValueError(f"contention: expected 'quiet' or 'busy', got {condition!r}")
    with busy_processes(busy_n) as procs:
        times = timed_calls(runner, reps, warmup, min_reps, max_s)
        info = {"busy_procs": busy_n, "busy_pids": [b.pid for b in procs],
                "busy_cores_used": share_used(procs)}
    return {"contention": "busy", **info, **summarise(times, tokens), "times_s": times}


def run_lib(spec: dict, log=_log) -> dict:
    """Every row of ``spec`` for library ``spec["lib"]``: its records (one per row and
    condition). jaxrnn workers also measure the matmul ceiling at their start and end."""
    lib = spec["lib"]
    res = {"lib": lib, "records": [], "notes": [], "load_start": os.getloadavg(),
           "repeat": spec.get("repeat", 0), "ceiling_flops": [], "pid": os.getpid(),
           "siblings_start": sibling_processes() if spec.get("fresh_worker") else None}
    is_jaxrnn = lib in JAXRNN_LIBS
    if is_jaxrnn:
        from benchmarks.measure import matmul_ceiling
        from jaxrnn import kernels

        res["kernels_status"] = kernels.status()
        res["ceiling_flops"].append(matmul_ceiling(spec.get("ceiling_n", 1024)))
    from benchmarks.competitors import PeerMissing

    for row in spec["rows"]:
        cfg = _config(row)
        row_lib = row.get("variant", lib)  # jaxrnn's variants run in jaxrnn's worker
        try:
            runner = build(row_lib, row)
        except PeerMissing as err:
            res["notes"].append(f"{lib}: skipped {row.get('family')} ({err})")
            continue
        meta = _row_meta(row_lib, row, runner)
        if row_lib in JAXRNN_LIBS:
            meta["tune_calls"] = _tune_row(runner, log)
        # one warm-up call is enough for the large steps (C), whose calls take a second
        warmup = row.get("warmup", 1 if cfg.tokens * cfg.hidden >= 2**22 else 2)
        for condition in row.get("contention", spec.get("contention", ["quiet"])):
            quiet = condition == "quiet"
            reps = spec["reps"] if quiet else spec.get("busy_reps", spec["reps"])
            cap = spec.get("row_seconds")  # long rows stop at half their calls, not fewer
            rec = time_row(runner, cfg.tokens, reps, warmup, condition,
                           spec.get("busy_procs", 1), min_reps=max(1, reps // 2),
                           max_s=None if cap is None else cap * (1.0 if quiet else 0.5))
            res["records"].append({**meta, **rec, "repeat": res["repeat"],
                                   "stage": spec.get("stage", "main")})
            log(f"  {row_lib:18s} {cfg.name:8s} {row['mode']:7s} {row['cell']:16s} {condition:5s} "
                f"{rec['median_s'] * 1e3:9.2f} ms  iqr/median {100 * rec['spread']:.0f}%")
        del runner
    if is_jaxrnn:
        from benchmarks.measure import matmul_ceiling

        res["ceiling_flops"].append(matmul_ceiling(spec.get("ceiling_n", 1024)))
    res["load_end"] = os.getloadavg()
    res["siblings_end"] = sibling_processes() if spec.get("fresh_worker") else None
    return res
