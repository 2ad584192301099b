"""Command line of the harness: ``python -m benchmarks [--quick] [--sections ...]``.

The parent process only orchestrates: every section (a configuration, the LSTM sequence-length
sweep, the compile-time check, a peak-RSS probe) runs in a fresh worker process whose
environment carries the allocator setting under test, because glibc reads its ``MALLOC_*``
settings at start-up. Inside a worker all libraries are timed interleaved.
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


# --------------------------------------------------------------------------- worker side

def _cell_entries(names):
    from benchmarks.registry import all_cells

    entries, notes = all_cells()
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


def _measure_group(cfg, mode, family, entries, peers, reps, min_seconds, run_kwargs, log,
                   plain_too=()):
    """All jaxrnn cells compared with one peer family, and the peers, interleaved. Cells named
    in ``plain_too`` are also timed with the fused path switched off (``parts=None``)."""
    from benchmarks import competitors as C
    from benchmarks.measure import interleaved, summarise
    from jaxrnn import kernels
    from jaxrnn.engine.backends import cpu_kernels

    runners, meta, notes = {}, {}, []
    for e in entries:
        kw = run_kwargs(e, cfg, mode) if callable(run_kwargs) else run_kwargs
        key = f"jaxrnn:{e.name}"
        runners[key] = C.jaxrnn_runner(e.make, cfg, mode, run_kwargs=kw, run_fn=e.run)
        meta[key] = {"lib": "jaxrnn", "cell": e.name, "peer_family": family, "note": e.note,
                     "flops": _flops(e, cfg, mode),
                     "run_kwargs": {k: str(v) for k, v in (kw or {}).items()}}
        if e.name in plain_too and e.make(4).parts is not None:
            key = f"jaxrnn-plain-scan:{e.name}"
            runners[key] = C.jaxrnn_runner(lambda H, e=e: e.make(H)._replace(parts=None), cfg,
                                           mode, run_kwargs=kw, run_fn=e.run)
            meta[key] = {"lib": "jaxrnn-plain-scan", "cell": e.name, "peer_family": family,
                         "note": "fused path off", "flops": _flops(e, cfg, mode)}
        if e.name in plain_too and e.make(4).name in cpu_kernels.ADAPTERS:
            # the same cell with the CPU kernels off: the XLA fused scan (jaxrnn/fused.py)
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
    log(f"  {cfg.name} {mode:7s} [{family}] timing {', '.join(runners)}")
    times = interleaved(runners, reps, warmup=1 if cfg.T * cfg.batch > 2**16 else 2,
                        min_seconds=min_seconds)
    out = []
    for key, r in runners.items():
        rec = {"config": cfg._asdict(), "mode": mode, **meta[key],
               **summarise(times[key], cfg.tokens),
               "compile_s": r.compile_s, "mem_bytes": r.mem_bytes}
        out.append(rec)
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
    res = {"spec": spec, "records": [], "notes": []}
    res["ceiling_flops"] = [matmul_ceiling()]

    if kind == "config":
        name = spec["config"]
        cfg = K.CONFIGS[name] if name in K.CONFIGS else K.Config(**spec["config_dims"])
        entries, notes = _cell_entries(spec.get("cells"))
        res["notes"] += notes
        for mode in spec["modes"]:
            for family, group in _group_by_family(entries).items():
                recs, notes = _measure_group(cfg, mode, family, group, spec["peers"], spec["reps"],
                                             spec.get("min_seconds", 0.0), None, log,
                                             plain_too=spec.get("plain_too", ()))
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
    res["ceiling_flops"].append(matmul_ceiling())
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
            _, hs = net.apply(p[0], x)
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

def _spawn(spec: dict, allocator: str, inprocess: bool, log) -> dict:
    from benchmarks.configs import ALLOCATORS

    if inprocess:
        res = worker(spec)
    else:
        env = dict(os.environ)
        for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_"):
            env.pop(k, None)
        env.update(ALLOCATORS[allocator])
        env["KERAS_BACKEND"] = "jax"
        env.setdefault("PYTHONPATH", str(ROOT))
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "benchmarks", "--worker", json.dumps(spec)],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True,
        )
        if proc.returncode != 0:
            log(f"worker failed ({proc.returncode}) for {spec}")
            return {"spec": spec, "records": [], "notes": [f"worker failed: {spec}"],
                    "ceiling_flops": []}
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        res["wall_s"] = time.perf_counter() - t0
    res["allocator"] = allocator
    for r in res["records"]:
        r["allocator"] = allocator
    return res


def plan(args) -> list[tuple[dict, str]]:
    """The sections of a run, each with its allocator setting."""
    from benchmarks import configs as K

    chosen = args.peers if args.peers is not None else (
        ["flax", "torch"] if args.quick else list(PEER_NAMES))
    peers = [p for p in chosen if p not in args.skip_peers]
    reps = args.reps
    jobs = []
    if args.extras:  # only the ConvLSTM and the minimal-cell sweep
        return _extras_jobs(args, reps)
    if args.tiny:
        dims = dict(name="tiny", batch=2, T=8, features=4, hidden=8, out=3)
        spec = {"kind": "config", "config": "tiny", "config_dims": dims,
                "cells": args.cells, "modes": ["forward", "train"], "peers": peers, "reps": reps}
        return [(spec, "default")]
    configs = args.configs or (["A", "B"] if args.quick else ["A", "B", "C"])
    allocs = args.allocators or (["default"] if args.quick else ["default", "tuned"])
    for alloc in allocs:
        for c in configs:
            if alloc != "default" and c == "C" and not args.allocators:
                continue  # both allocators only where the targets are (A, B), to keep it short
            cells = args.cells or (list(K.QUICK_CELLS) if args.quick else None)
            jobs.append(({"kind": "config", "config": c, "cells": cells,
                          "modes": ["forward", "train"], "peers": peers, "reps": reps,
                          "plain_too": [] if args.quick else list(K.PLAIN_TOO)}, alloc))
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


def machine() -> dict:
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = int(line.split()[1]) * 1024
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_bytes": mem,
            "platform": platform.platform()}


def main(argv=None):
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    ap.add_argument("--quick", action="store_true",
                    help="configs A and B against Flax and PyTorch, no sweep (< 2 min)")
    ap.add_argument("--tiny", action="store_true", help="a tiny configuration (harness self-test)")
    ap.add_argument("--configs", nargs="*", help="subset of A B C")
    ap.add_argument("--cells", nargs="*", help="subset of jaxrnn cells")
    ap.add_argument("--allocators", nargs="*", choices=["default", "tuned"])
    ap.add_argument("--skip", nargs="*", default=[],
                    choices=["sweep", "compile", "rss", "convlstm", "minsweep"])
    ap.add_argument("--extras", action="store_true",
                    help="only the ConvLSTM and the minGRU/minLSTM-vs-LSTM/GRU T sweep; the "
                         "report is appended to --markdown (default BENCHMARKS.md)")
    ap.add_argument("--peers", nargs="*", choices=list(PEER_NAMES),
                    help="peers to measure (default: all; --quick: flax torch)")
    ap.add_argument("--skip-peers", nargs="*", default=[], choices=list(PEER_NAMES))
    ap.add_argument("--reps", type=int, default=10, help="timed repetitions (>= 10 for reports)")
    ap.add_argument("--inprocess", action="store_true", help="run sections in this process")
    ap.add_argument("--out", type=Path, default=RESULTS, help="folder for JSON and PNG")
    ap.add_argument("--markdown", type=Path, default=None,
                    help="write the report here (default: BENCHMARKS.md for full runs)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:
        res = worker(json.loads(args.worker))
        print(json.dumps(res))
        return res
    if args.reps < 1:
        ap.error(f"--reps: expected >= 1, got {args.reps}")

    from benchmarks import report

    log = (lambda msg: print(msg, file=sys.stderr, flush=True))
    t0 = time.perf_counter()
    started = _dt.datetime.now(_dt.timezone.utc)
    sections = []
    for spec, alloc in plan(args):
        log(f"section {spec['kind']} {spec.get('config', '')} allocator={alloc}")
        sections.append(_spawn(spec, alloc, args.inprocess or args.tiny, log))
    subset = args.configs or args.cells or args.allocators or args.skip or args.peers is not None
    mode = "tiny" if args.tiny else "quick" if args.quick else "custom" if subset else "full"
    mode = "extras" if args.extras else mode
    run = {
        "started_utc": started.isoformat(timespec="seconds"),
        "wall_s": time.perf_counter() - t0,
        "mode": mode,
        "command": "python -m benchmarks " + " ".join(argv if argv is not None else sys.argv[1:]),
        "versions": versions(),
        "machine": machine(),
        "allocators": __import__("benchmarks.configs", fromlist=["ALLOCATORS"]).ALLOCATORS,
        "sections": sections,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"{started.strftime('%Y%m%dT%H%M%SZ')}-{mode}"
    (args.out / f"{stem}.json").write_text(json.dumps(run, indent=1))
    text = report.markdown(run)
    print(text)
    png = report.chart(run, args.out / f"{stem}.png")
    md_path = args.markdown or (ROOT / "BENCHMARKS.md" if mode == "full" else None)
    if args.extras:
        report.append_extras_md(run, args.markdown or (ROOT / "BENCHMARKS.md"),
                                args.out / f"{stem}.json")
    elif md_path is not None:
        report.write_benchmarks_md(run, md_path, png, args.out / f"{stem}.json")
    log(f"wrote {args.out / (stem + '.json')} and {png}; total {run['wall_s']:.0f} s")
    return run
