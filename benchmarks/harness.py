"""Command line of the harness: ``python -m benchmarks [--quick] [--contended] [--sections ...]``.

The parent process only orchestrates: every section (a configuration, the LSTM sequence-length
sweep, the compile-time check, a peak-RSS probe) runs in a fresh worker process whose
environment carries the allocator setting under test, because glibc reads its ``MALLOC_*``
settings at start-up, and the kernels' team size (``--kernel-threads``, as
``JAXRNN_KERNEL_THREADS``). Inside a worker all libraries are timed interleaved; with
``--contended`` (and in a full run's A and B sections) each config section is timed quiet and
then again while competing busy processes run (:mod:`benchmarks.contention`). Every run records
the CPU model, its ISA flags, the core count and the load average before and after.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
ROOT = Path(__file__).resolve().parent.parent
PEER_NAMES = ("flax", "equinox", "keras", "torch")
KERNEL_THREADS_ENV = "JAXRNN_KERNEL_THREADS"
# the environment a worker reports it ran under (set per section by the parent)
WORKER_ENV_KEYS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_",
                   KERNEL_THREADS_ENV, "JAXRNN_KERNELS", "XLA_FLAGS", "OMP_WAIT_POLICY",
                   "BENCH_TORCH_OMP_WAIT_POLICY")


# --------------------------------------------------------------------------- worker side

def _cell_entries(names):
    """The registry's cells named in ``names`` (all if empty; ``"kernel"``: those with a
    whole-sequence kernel path and a peer)."""
    from benchmarks.registry import all_cells

    entries, notes = all_cells()
    if names == "kernel":
        return [e for e in entries if e.peer and _has_kernel(e)], notes
    if names:
        unknown = set(names) - {e.name for e in entries}
        if unknown:
            raise ValueError(
                f"--cells: unknown {sorted(unknown)}; available {[e.name for e in entries]}"
            )
        entries = [e for e in entries if e.name in names]
    return entries, notes


def _flops(entry, cfg, mode) -> float:
    """Useful FLOPs of one call: the cell's step cost (XLA's count) times T; a training step
    counts 3x the forward (forward, input- and weight-gradients) plus the readout."""
    from benchmarks.competitors import jaxrnn_step_flops

    fwd = jaxrnn_step_flops(entry.make, cfg) * cfg.T
    if mode == "forward":
        return fwd
    return 3.0 * (fwd + 2.0 * cfg.tokens * entry.make(cfg.hidden).output_size * cfg.out)


def _peer_flops(family, cfg, mode) -> float:
    import jaxrnn
    from benchmarks.registry import Entry

    make = {"lstm": jaxrnn.lstm, "gru": jaxrnn.gru, "rnn": jaxrnn.elman,
            "jordan": lambda H: jaxrnn.jordan(H, H)}[family]
    return _flops(Entry(family, make, family), cfg, mode)


def _has_kernel(entry) -> bool:
    """Whether the entry runs a whole-sequence kernel path (the "kernel cells" of the targets):
    its cell offers one and it runs through ``jaxrnn.run`` (``parallel_run`` takes none)."""
    from jaxrnn.engine.backends import cpu_kernels

    plain_run = getattr(entry, "run", None) is None
    return plain_run and entry.make(4).name in cpu_kernels.ADAPTERS


def _timed(runners, reps, warmup, min_seconds, condition, busy_n, log):
    """``interleaved`` quiet, or with ``busy_n`` competing busy processes running throughout
    (started after compilation, before the warm-up calls; killed as the timing ends)."""
    from benchmarks.contention import busy_processes, share_used
    from benchmarks.measure import interleaved

    if condition == "quiet":
        return interleaved(runners, reps, warmup=warmup, min_seconds=min_seconds), {}
    if condition != "busy":
        raise ValueError(f"contention: expected 'quiet' or 'busy', got {condition!r}")
    with busy_processes(busy_n) as procs:
        times = interleaved(runners, reps, warmup=warmup, min_seconds=min_seconds)
        info = {"busy_procs": busy_n, "busy_pids": [b.pid for b in procs],
                "busy_cores_used": share_used(procs)}
    log(f"    busy processes {info['busy_pids']} stopped; they used "
        f"{info['busy_cores_used'] or 0:.2f} cores")
    return times, info


def _measure_group(cfg, mode, family, entries, peers, reps, min_seconds, run_kwargs, log,
                   plain_too=(), contention=("quiet",), busy_n=1):
    """All jaxrnn cells compared with one peer family, and the peers, interleaved. Cells named
    in ``plain_too`` are also timed with the fused path switched off (``parts=None``). Each
    condition in ``contention`` (``"quiet"``, ``"busy"``: with ``busy_n`` competing busy
    processes) times the same compiled programs again, so quiet and contended figures of one
    library come from one executable."""
    from benchmarks import competitors as C
    from benchmarks.measure import summarise
    from jaxrnn import kernels
    from jaxrnn.engine.backends import cpu_kernels

    runners, meta, notes = {}, {}, []
    for e in entries:
        kw = run_kwargs(e, cfg, mode) if callable(run_kwargs) else run_kwargs
        key = f"jaxrnn:{e.name}"
        runners[key] = C.jaxrnn_runner(e.make, cfg, mode, run_kwargs=kw, run_fn=e.run)
        meta[key] = {"lib": "jaxrnn", "cell": e.name, "peer_family": family, "note": e.note,
                     "flops": _flops(e, cfg, mode), "kernel": _has_kernel(e),
                     "run_kwargs": {k: str(v) for k, v in (kw or {}).items()}}
        if e.name in plain_too and e.make(4).parts is not None:
            key = f"jaxrnn-plain-scan:{e.name}"
            runners[key] = C.jaxrnn_runner(lambda H, e=e: e.make(H)._replace(parts=None), cfg,
                                           mode, run_kwargs=kw, run_fn=e.run)
            meta[key] = {"lib": "jaxrnn-plain-scan", "cell": e.name, "peer_family": family,
                         "note": "fused path off", "flops": _flops(e, cfg, mode)}
        if e.name in plain_too and e.make(4).name in cpu_kernels.ADAPTERS:
            # the same cell with the CPU kernels off: the XLA fused scan (engine/backends/fused.py)
            key = f"jaxrnn-xla-fused:{e.name}"
            with kernels.disabled():
                runners[key] = C.jaxrnn_runner(e.make, cfg, mode, run_kwargs=kw, run_fn=e.run)
            meta[key] = {"lib": "jaxrnn-xla-fused", "cell": e.name, "peer_family": family,
                         "note": "kernels off", "flops": _flops(e, cfg, mode)}
    if family is not None:
        for p in peers:
            try:
                r = C.PEERS[p](family, cfg, mode)
            except C.PeerMissing as err:
                notes.append(f"{p}: skipped ({err})")
                continue
            key = f"{p}:{family}"
            runners[key] = r
            meta[key] = {"lib": p, "cell": family, "peer_family": family, "note": r.note,
                         "flops": _peer_flops(family, cfg, mode)}
    warmup = 1 if cfg.T * cfg.batch > 2**16 else 2
    out = []
    for condition in contention:
        log(f"  {cfg.name} {mode:7s} [{family}] {condition}: timing {', '.join(runners)}")
        times, info = _timed(runners, reps, warmup, min_seconds, condition, busy_n, log)
        for key, r in runners.items():
            out.append({"config": cfg._asdict(), "mode": mode, **meta[key],
                        "contention": condition, **info,
                        **summarise(times[key], cfg.tokens),
                        "compile_s": r.compile_s, "mem_bytes": r.mem_bytes})
    return out, notes


def _group_by_family(entries):
    groups = {}
    for e in entries:
        groups.setdefault(e.peer, []).append(e)
    return groups


def worker(spec: dict) -> dict:
    """Run one section in this process; return its JSON record."""
    from benchmarks import configs as K
    from benchmarks.measure import matmul_ceiling, max_rss_bytes

    log = (lambda msg: print(msg, file=sys.stderr, flush=True))
    kind = spec["kind"]
    res = {"spec": spec, "records": [], "notes": [], "load_start": os.getloadavg(),
           "env": {k: os.environ[k] for k in sorted(os.environ) if k in WORKER_ENV_KEYS}}
    # the ceiling's product size: 1024 for reports; the harness's self-tests ask for less
    ceiling_n = spec.get("ceiling_n", 1024)
    res["ceiling_flops"] = [matmul_ceiling(ceiling_n)]

    if kind == "config":
        name = spec["config"]
        cfg = K.CONFIGS[name] if name in K.CONFIGS else K.Config(**spec["config_dims"])
        entries, notes = _cell_entries(spec.get("cells"))
        res["notes"] += notes
        for mode in spec["modes"]:
            for family, group in _group_by_family(entries).items():
                recs, notes = _measure_group(cfg, mode, family, group, spec["peers"], spec["reps"],
                                             spec.get("min_seconds", 0.0), None, log,
                                             plain_too=spec.get("plain_too", ()),
                                             contention=spec.get("contention", ["quiet"]),
                                             busy_n=spec.get("busy_procs", 1))
                res["records"] += recs
                res["notes"] += notes
    elif kind == "sweep":
        import jaxrnn
        from benchmarks.registry import Entry

        lstm = Entry("lstm", jaxrnn.lstm, "lstm")
        for T in spec["Ts"]:
            cfg = K.sweep_config(T)
            for mode in spec["modes"]:
                peers = spec["peers"] if T <= spec["peer_max_T"] else []
                long_train = mode == "train" and T >= K.SWEEP_REMAT_FROM_T
                kw = {"remat": K.SWEEP_REMAT_CHUNK} if long_train else {}
                reps = spec["reps"] if T <= 2048 else max(3, spec["reps"] // 4)
                recs, notes = _measure_group(cfg, mode, "lstm", [lstm], peers, reps, 0.0, kw, log)
                res["records"] += recs
                res["notes"] += notes
    elif kind == "compile":
        res["records"] += _compile_check(spec["Ts"], log)
    elif kind == "convlstm":
        from benchmarks.extras import convlstm_section

        res["records"] += convlstm_section(spec, log)
    elif kind == "minsweep":
        from benchmarks.extras import min_sweep_section

        res["records"] += min_sweep_section(spec, log)
    elif kind == "rss":
        import jaxrnn
        from benchmarks import competitors as C
        from benchmarks.measure import interleaved, summarise

        cfg = K.sweep_config(spec["T"])
        base = max_rss_bytes()
        r = C.jaxrnn_runner(jaxrnn.lstm, cfg, spec["mode"], run_kwargs=spec.get("run_kwargs") or {})
        times = interleaved({"jaxrnn": r}, spec.get("reps", 2), warmup=0)["jaxrnn"]
        peak = max_rss_bytes()
        # The same step without remat is only compiled, not run (it would need several GiB):
        # XLA's planned memory for it is the "without" figure beside the measured "with".
        plain = C.jaxrnn_runner(jaxrnn.lstm, cfg, spec["mode"], execute=False)
        res["records"].append({"T": spec["T"], "mode": spec["mode"], "lib": "jaxrnn",
                               "cell": "lstm",
                               "run_kwargs": spec.get("run_kwargs") or {},
                               "baseline_rss_bytes": base, "peak_rss_bytes": peak,
                               "xla_planned_bytes": r.mem_bytes, "compile_s": r.compile_s,
                               "xla_planned_bytes_no_remat": plain.mem_bytes,
                               **summarise(times, cfg.tokens)})
    else:
        raise ValueError(f"spec kind: unknown {kind!r}")
    res["ceiling_flops"].append(matmul_ceiling(ceiling_n))
    res["load_end"] = os.getloadavg()
    return res


def _compile_check(Ts, log):
    """First-call compile time (trace + lower + XLA compile) of a 2-layer LSTM training step."""
    import jax
    import jax.numpy as jnp

    import jaxrnn
    from benchmarks.competitors import adam_step

    out = []
    for T in Ts:
        net = jaxrnn.stacked([jaxrnn.lstm(256), jaxrnn.lstm(256)])
        readout = jaxrnn.dense(16)
        k1, k2 = jax.random.split(jax.random.key(0))
        params = (net.init(k1, 64), readout.init(k2, 256))
        x = jnp.zeros((8, T, 64))
        y = jnp.zeros((8, T, 16))

        def loss(p, x, y, net=net, readout=readout):
            hs = net.apply(p[0], x)
            return jnp.mean((readout.apply(p[1], hs) - y) ** 2)

        step, opt = adam_step(loss)
        state = (params, opt.init(params))
        t0 = time.perf_counter()
        jax.jit(step).lower(state, x, y).compile()
        dt = time.perf_counter() - t0
        log(f"  compile 2-layer LSTM train step T={T}: {dt:.2f} s")
        out.append({"T": T, "compile_s": dt, "layers": 2, "hidden": 256, "batch": 8})
    return out


# --------------------------------------------------------------------------- parent side

def section_label(allocator: str, kernel_threads: str | None) -> str:
    """How a section's setting is named in tables and targets: the allocator, and the kernels'
    team size where the run set one (``--kernel-threads``)."""
    return allocator if kernel_threads is None else f"{allocator}, threads={kernel_threads}"


def worker_env(allocator: str, kernel_threads: str | None, base=None) -> dict:
    """The environment of a fresh worker: the allocator's ``MALLOC_*`` settings (glibc reads
    them at start-up) and, where given, ``JAXRNN_KERNEL_THREADS`` (the kernels read it when they
    run; unset it means the kernels' own choice)."""
    from benchmarks.configs import ALLOCATORS

    env = dict(os.environ if base is None else base)
    for k in ALLOCATORS["tuned"]:
        env.pop(k, None)
    env.update(ALLOCATORS[allocator])
    if kernel_threads == "default":  # the kernels' built-in choice: the variable unset
        env.pop(KERNEL_THREADS_ENV, None)
    elif kernel_threads is not None:
        env[KERNEL_THREADS_ENV] = str(kernel_threads)
    env["KERAS_BACKEND"] = "jax"
    env.setdefault("PYTHONPATH", str(ROOT))
    return env


def _spawn(spec: dict, allocator: str, inprocess: bool, log) -> dict:
    kt = spec.get("kernel_threads")
    if inprocess:
        if kt is not None and os.environ.get(KERNEL_THREADS_ENV) != (
                None if kt == "default" else str(kt)):
            raise ValueError("--kernel-threads needs a fresh worker per setting: drop "
                             "--inprocess (or set JAXRNN_KERNEL_THREADS yourself)")
        res = worker(spec)
    else:
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks", "--worker", json.dumps(spec)],
            cwd=ROOT, env=worker_env(allocator, kt), stdout=subprocess.PIPE, text=True,
        )
        if proc.returncode != 0:
            log(f"worker failed ({proc.returncode}) for {spec}")
            return {"spec": spec, "records": [], "notes": [f"worker failed: {spec}"],
                    "ceiling_flops": [], "allocator": allocator, "kernel_threads": kt,
                    "label": section_label(allocator, kt)}
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        res["wall_s"] = time.perf_counter() - t0
    res["allocator"] = allocator
    res["kernel_threads"] = kt
    res["label"] = section_label(allocator, kt)
    for r in res["records"]:
        r["allocator"] = allocator
        r["kernel_threads"] = kt
    return res


# configurations that get a contended section in a full run (the targets' configurations)
CONTENDED_CONFIGS = ("A", "B")
SMOKE_DIMS = dict(batch=2, T=8, features=4, hidden=8, out=3)


def smoke(jobs: list[tuple[dict, str]]) -> list[tuple[dict, str]]:
    """The same sections (same cells, peers, conditions, workers) at tiny sizes and 2 reps:
    ``--smoke`` checks that a command runs end to end in a minute or two, measuring nothing."""
    out = []
    for spec, alloc in jobs:
        spec = dict(spec, reps=min(spec.get("reps", 2), 2), ceiling_n=128)
        kind = spec["kind"]
        if kind == "config" and "config_dims" not in spec:
            spec["config_dims"] = dict(name=f"smoke-{spec['config']}", **SMOKE_DIMS)
            spec["config"] = spec["config_dims"]["name"]
        elif kind == "sweep":
            spec.update(Ts=[8, 16], peer_max_T=16)
        elif kind == "compile":
            spec["Ts"] = [8, 16]
        elif kind == "rss":
            spec.update(T=64, run_kwargs={"remat": 8})
        elif kind == "convlstm":
            spec["config_dims"] = dict(name="smoke-video", batch=2, T=3, height=4, width=4,
                                       in_channels=1, channels=2)
        elif kind == "minsweep":
            spec.update(Ts=[8], dims=dict(batch=2, features=3, hidden=4))
        out.append((spec, alloc))
    return out


def plan(args) -> list[tuple[dict, str]]:
    """The sections of a run, each with its allocator setting; ``--smoke``: the same at tiny
    sizes (:func:`smoke`)."""
    jobs = _plan(args)
    return smoke(jobs) if getattr(args, "smoke", False) else jobs


def _plan(args) -> list[tuple[dict, str]]:
    """``--kernel-threads`` repeats every config section once per setting (a fresh worker
    each); ``--contended`` times each of them quiet and then under contention (a full run does
    so at A and B, default allocator)."""
    from benchmarks import configs as K

    chosen = args.peers if args.peers is not None else (
        ["flax", "torch"] if args.quick else list(PEER_NAMES))
    peers = [p for p in chosen if p not in args.skip_peers]
    reps = args.reps
    threads = args.kernel_threads or [None]
    busy = {"busy_procs": args.busy_procs}
    jobs = []
    if args.extras:  # only the ConvLSTM and the minimal-cell sweep
        return _extras_jobs(args, reps)
    if args.tiny:
        dims = dict(name="tiny", batch=2, T=8, features=4, hidden=8, out=3)
        for kt in threads:
            spec = {"kind": "config", "config": "tiny", "config_dims": dims,
                    "cells": args.cells, "modes": ["forward", "train"], "peers": peers,
                    "reps": reps, "contention": ["quiet", "busy"] if args.contended else ["quiet"],
                    "ceiling_n": 256, **busy}
            if kt is not None:
                spec["kernel_threads"] = kt
            jobs.append((spec, "default"))
        return jobs
    full = not (args.quick or args.configs or args.cells or args.allocators)
    configs = args.configs or (["A", "B"] if args.quick else ["A", "B", "C"])
    allocs = args.allocators or (["default"] if args.quick else ["default", "tuned"])
    for kt in threads:
        for alloc in allocs:
            for c in configs:
                if alloc != "default" and c == "C" and not args.allocators:
                    continue  # both allocators only where the targets are (A, B), to keep it short
                contended = args.contended or (
                    full and alloc == "default" and c in CONTENDED_CONFIGS)
                cells = args.cells or (K.QUICK_CELLS if args.quick else None)
                spec = {"kind": "config", "config": c, "cells": cells,
                        "modes": ["forward", "train"], "peers": peers, "reps": reps,
                        "plain_too": [] if args.quick else list(K.PLAIN_TOO),
                        "contention": ["quiet", "busy"] if contended else ["quiet"], **busy}
                if kt is not None:
                    spec["kernel_threads"] = kt
                jobs.append((spec, alloc))
    if "sweep" not in args.skip and not args.quick:
        Ts = K.SWEEP_T_FULL
        jobs.append(({"kind": "sweep", "Ts": list(Ts), "modes": ["forward", "train"],
                      "peers": [p for p in peers if p in ("flax", "torch")], "reps": reps,
                      "peer_max_T": 8192}, "default"))
    if not args.quick:
        jobs += _extras_jobs(args, reps)
    if "compile" not in args.skip:
        jobs.append(({"kind": "compile", "Ts": [128, 8192]}, "default"))
    if "rss" not in args.skip and not args.quick:
        jobs.append(({"kind": "rss", "T": K.SWEEP_T_LONG, "mode": "train", "reps": 2,
                      "run_kwargs": {"remat": K.SWEEP_REMAT_CHUNK}}, "default"))
    return jobs


def _extras_jobs(args, reps) -> list[tuple[dict, str]]:
    from benchmarks import extras as X

    jobs = []
    if "convlstm" not in args.skip:
        jobs.append(({"kind": "convlstm", "modes": ["forward", "train"], "reps": reps},
                     "default"))
    if "minsweep" not in args.skip:
        jobs.append(({"kind": "minsweep", "Ts": list(X.MIN_SWEEP_T),
                      "modes": ["forward", "train"], "reps": reps}, "default"))
    return jobs


def versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("jax", "jaxlib", "jaxrnn", "flax", "optax", "equinox", "keras", "torch", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    from jaxrnn import kernels

    # whether jaxrnn's compiled CPU kernels were in use (they fall back to XLA without a compiler)
    out["jaxrnn CPU kernels"] = kernels.status().split(" (")[0]
    return out


# CPU features the kernels' code generation (-march=native) and XLA's CPU backend can use
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512dq", "avx512cd",
             "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni",
             "amx_tile", "amx_bf16", "amx_int8")


def cpuinfo(text: str | None = None) -> dict:
    """The first processor's model name, vendor, family/model/stepping and flags, from
    ``/proc/cpuinfo`` (empty where there is none)."""
    if text is None:
        try:
            text = Path("/proc/cpuinfo").read_text()
        except OSError:
            return {}
    info = {}
    for line in text.splitlines():
        if not line.strip():
            if info:
                break  # the first processor's block is enough
            continue
        key, _, val = line.partition(":")
        info.setdefault(key.strip(), val.strip())
    return info


def machine() -> dict:
    """What the claims depend on: the CPU model, its relevant ISA flags, the cores this process
    may use, memory, and the load average now (the caller records it before and after)."""
    info = cpuinfo()
    flags = set(info.get("flags", "").split())
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    return {"cpu": info.get("model name") or platform.processor() or platform.machine(),
            "vendor": info.get("vendor_id"),
            "cpu_family_model_stepping": "/".join(
                info.get(k, "?") for k in ("cpu family", "model", "stepping")),
            "isa": {f: f in flags for f in ISA_FLAGS} if flags else {},
            "cores": os.cpu_count(), "usable_cores": usable, "memory_bytes": mem,
            "platform": platform.platform(), "loadavg": list(os.getloadavg())}


def _kernel_threads(text: str) -> list[str]:
    """``--kernel-threads 1,auto``: a comma-separated list of team sizes: integers >= 1,
    ``auto``, or ``default`` (the variable unset)."""
    out = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in out if t not in ("auto", "default") and not (t.isdigit() and int(t) >= 1)]
    if not out or bad or len(set(out)) != len(out):
        raise argparse.ArgumentTypeError(
            "expected a comma-separated list of distinct integers >= 1, 'auto' or 'default' "
            f"(e.g. 1,auto), got {text!r}")
    return out


def run_mode(args) -> str:
    """The run's name in file names and BENCHMARKS.md blocks."""
    if args.extras:
        return "extras"
    subset = args.configs or args.cells or args.allocators or args.skip or args.peers is not None
    mode = "tiny" if args.tiny else "quick" if args.quick else "custom" if subset else "full"
    if mode != "full" and args.contended:
        mode += "-contended"  # a full run always has its contended section
    if args.kernel_threads:
        mode += "-threads"
    if getattr(args, "smoke", False):
        mode += "-smoke"
    return mode


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    ap.add_argument("--quick", action="store_true",
                    help="configs A and B, every kernel cell, against Flax and PyTorch, no "
                         "sweep (a few minutes; twice that with --contended)")
    ap.add_argument("--tiny", action="store_true", help="a tiny configuration (harness self-test)")
    ap.add_argument("--smoke", action="store_true",
                    help="run this command's sections at tiny sizes and 2 reps (an end-to-end "
                         "check of e.g. --quick --contended; measures nothing)")
    ap.add_argument("--contended", action="store_true",
                    help="time every config section quiet and then again with competing busy "
                         "processes (--busy-procs) that the harness starts and kills; a full "
                         "run does this at A and B anyway")
    ap.add_argument("--busy-procs", type=int, default=1,
                    help="competing busy processes in the contended timings (default 1)")
    ap.add_argument("--kernel-threads", type=_kernel_threads, default=None,
                    help="e.g. 1,auto: repeat every config section once per setting of "
                         "JAXRNN_KERNEL_THREADS (a fresh worker each; 'default' = unset)")
    ap.add_argument("--configs", nargs="*", help="subset of A B C")
    ap.add_argument("--cells", nargs="*", help="subset of jaxrnn cells")
    ap.add_argument("--allocators", nargs="*", choices=["default", "tuned"])
    ap.add_argument("--skip", nargs="*", default=[],
                    choices=["sweep", "compile", "rss", "convlstm", "minsweep"])
    ap.add_argument("--extras", action="store_true",
                    help="only the ConvLSTM and the minGRU/minLSTM-vs-LSTM/GRU T sweep; the "
                         "report goes to --markdown (default BENCHMARKS.md)")
    ap.add_argument("--peers", nargs="*", choices=list(PEER_NAMES),
                    help="peers to measure (default: all; --quick: flax torch)")
    ap.add_argument("--skip-peers", nargs="*", default=[], choices=list(PEER_NAMES))
    ap.add_argument("--reps", type=int, default=10, help="timed repetitions (>= 10 for reports)")
    ap.add_argument("--inprocess", action="store_true", help="run sections in this process")
    ap.add_argument("--out", type=Path, default=RESULTS, help="folder for JSON and PNG")
    ap.add_argument("--markdown", type=Path, default=None,
                    help="update this file's block for this CPU model and run mode (default: "
                         "BENCHMARKS.md for full and quick runs)")
    ap.add_argument("--no-markdown", action="store_true", help="write no Markdown file")
    ap.add_argument("--dry-run", action="store_true",
                    help="print the sections this command would run, and run none")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:
        res = worker(json.loads(args.worker))
        print(json.dumps(res))
        return res
    if args.reps < 1:
        ap.error(f"--reps: expected >= 1, got {args.reps}")
    if args.busy_procs < 1:
        ap.error(f"--busy-procs: expected >= 1, got {args.busy_procs}")

    if args.dry_run:
        jobs = plan(args)
        for spec, alloc in jobs:
            print(f"{alloc:8s} {json.dumps(spec)}")
        print(f"{len(jobs)} sections; run mode {run_mode(args)!r}")
        return jobs

    from benchmarks import report
    from benchmarks.contention import is_running

    log = (lambda msg: print(msg, file=sys.stderr, flush=True))
    t0 = time.perf_counter()
    started = _dt.datetime.now(_dt.timezone.utc)
    mach = machine()
    mach["loadavg_before"] = mach.pop("loadavg")
    sections = []
    # --kernel-threads needs the setting in a fresh process; otherwise --tiny stays in-process
    inprocess = args.inprocess or (args.tiny and not args.kernel_threads)
    for spec, alloc in plan(args):
        log(f"section {spec['kind']} {spec.get('config', '')} allocator={alloc}"
            + (f" threads={spec['kernel_threads']}" if "kernel_threads" in spec else "")
            + (" (quiet, then contended)" if "busy" in spec.get("contention", ()) else ""))
        sections.append(_spawn(spec, alloc, inprocess, log))
    mach["loadavg_after"] = list(os.getloadavg())
    busy_pids = {p for s in sections for r in s["records"] for p in r.get("busy_pids", [])}
    mode = run_mode(args)
    run = {
        "started_utc": started.isoformat(timespec="seconds"),
        "wall_s": time.perf_counter() - t0,
        "mode": mode,
        "command": "python -m benchmarks " + " ".join(argv if argv is not None else sys.argv[1:]),
        "versions": versions(),
        "machine": mach,
        "allocators": __import__("benchmarks.configs", fromlist=["ALLOCATORS"]).ALLOCATORS,
        "kernel_threads": args.kernel_threads,
        "busy_pids": sorted(busy_pids),
        # a busy process still alive after its section would have skewed what followed
        "busy_left_running": sorted(p for p in busy_pids if is_running(p)),
        "sections": sections,
    }
    if run["busy_left_running"]:
        log(f"warning: busy processes still running: {run['busy_left_running']}")
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"{started.strftime('%Y%m%dT%H%M%SZ')}-{mode}"
    (args.out / f"{stem}.json").write_text(json.dumps(run, indent=1))
    text = report.markdown(run)
    print(text)
    png = report.chart(run, args.out / f"{stem}.png")
    default_md = not args.smoke and (mode == "full" or mode.startswith("quick")
                                     or mode == "extras")
    md_path = args.markdown or (ROOT / "BENCHMARKS.md" if default_md else None)
    if md_path is not None and not args.no_markdown:
        report.write_benchmarks_md(run, md_path, png, args.out / f"{stem}.json")
        log(f"updated {md_path} (section {report.cpu_key(run)!r}, block {mode!r})")
    log(f"wrote {args.out / (stem + '.json')} and {png}; total {run['wall_s']:.0f} s")
    return run
