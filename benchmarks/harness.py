"""Command line of the harness: ``python -m benchmarks [--quick] [--contended] [--report]``.

The parent process only orchestrates (it imports no numerical library's runtime and sleeps
while a worker runs). Each library is timed in its own fresh worker process, one library after
another (:mod:`benchmarks.libworker`): nothing of another library, jaxrnn's kernel team and
XLA's pool included, is awake beside a peer. ``--repeat N`` runs every library's worker N times
(the order of the libraries reversed every other time) and the report takes the median of the
N runs; ``--solo-check`` re-times each peer row alone in a fresh process and prints how far its
in-harness time is from that solo time. Each worker's environment carries the allocator setting
under test (glibc reads ``MALLOC_*`` at start-up) and, for jaxrnn, the kernels' team size
(``--kernel-threads``). With ``--contended`` each row is timed quiet and then again beside a
competing busy process (:mod:`benchmarks.contention`). The sweep, compile, RSS and extras
sections of a full run are fresh workers of their own. Every run records the CPU model, its
family/model, its ISA flags, the core count and the load average before and after.
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

from benchmarks.machine import ISA_FLAGS, cpuinfo, machine  # noqa: F401 (tests read them here)
from benchmarks.sections import cell_entries, worker

ROOT = Path(__file__).resolve().parent.parent
# raw results stay out of git (.gitignore); BENCHMARKS.md and benchmarks/summaries/ keep the
# latest report per CPU model
RESULTS = ROOT / "bench-results"
PEER_NAMES = ("flax", "equinox", "keras", "torch")
KERNEL_THREADS_ENV = "JAXRNN_KERNEL_THREADS"
_clock = time.perf_counter  # the run's clock (its budget is in wall-clock minutes)


def section_label(allocator: str, kernel_threads: str | None) -> str:
    """How a section's setting is named in tables and targets: the allocator, and the kernels'
    team size where the run set one (``--kernel-threads``)."""
    return allocator if kernel_threads is None else f"{allocator}, threads={kernel_threads}"


def worker_env(allocator: str, kernel_threads: str | None, base=None, lib=None,
               compile_cache=None) -> dict:
    """The environment of a fresh worker: the allocator's ``MALLOC_*`` settings (glibc reads
    them at start-up), where given ``JAXRNN_KERNEL_THREADS`` (unset means the kernels' own
    choice), PyTorch's ``OMP_WAIT_POLICY`` when ``BENCH_TORCH_OMP_WAIT_POLICY`` asks for one,
    and JAX's persistent compilation cache (a repeat loads the programs the first compiled;
    the executables are the same, only the compile time shrinks)."""
    from benchmarks.configs import ALLOCATORS

    env = dict(os.environ if base is None else base)
    for k in ALLOCATORS["tuned"]:
        env.pop(k, None)
    env.update(ALLOCATORS[allocator])
    if kernel_threads == "default":  # the kernels' built-in choice: the variable unset
        env.pop(KERNEL_THREADS_ENV, None)
    elif kernel_threads is not None:
        env[KERNEL_THREADS_ENV] = str(kernel_threads)
    if lib == "torch" and env.get("BENCH_TORCH_OMP_WAIT_POLICY"):
        env["OMP_WAIT_POLICY"] = env["BENCH_TORCH_OMP_WAIT_POLICY"]
    if compile_cache is not None:
        env["JAX_COMPILATION_CACHE_DIR"] = str(compile_cache)
        env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
        env["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
    env["KERAS_BACKEND"] = "jax"
    env.setdefault("PYTHONPATH", str(ROOT))
    return env


def _spawn(spec: dict, allocator: str, inprocess: bool, log, compile_cache=None) -> dict:
    """Run one job in a fresh worker process (or here, ``inprocess``); returns its record with
    the allocator, team size and label attached."""
    kt = spec.get("kernel_threads")
    t0 = time.perf_counter()
    if inprocess:
        if kt is not None and os.environ.get(KERNEL_THREADS_ENV) != (
                None if kt == "default" else str(kt)):
            raise ValueError("--kernel-threads needs a fresh worker per setting: drop "
                             "--inprocess (or set JAXRNN_KERNEL_THREADS yourself)")
        res = worker(spec)
    else:
        env = worker_env(allocator, kt, lib=spec.get("lib"), compile_cache=compile_cache)
        fresh = {**spec, "fresh_worker": True}  # it may then check that it runs alone
        proc = subprocess.run([sys.executable, "-m", "benchmarks", "--worker", json.dumps(fresh)],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            log(f"worker failed ({proc.returncode}) for {spec.get('lib') or spec['kind']}")
            res = {"spec": spec, "records": [], "ceiling_flops": [],
                   "notes": [f"worker failed ({proc.returncode}): "
                             f"{spec.get('lib') or spec['kind']} {spec.get('stage', '')}"]}
        else:
            res = json.loads(proc.stdout.strip().splitlines()[-1])
    res["wall_s"] = time.perf_counter() - t0
    res["allocator"] = allocator
    res["kernel_threads"] = kt
    res["label"] = section_label(allocator, kt)
    for r in res["records"]:
        r["allocator"] = allocator
        r["kernel_threads"] = kt
    return res


def plan(args) -> list[tuple[dict, str]]:
    """The jobs of a run, each with its allocator setting; ``--smoke``: the same at tiny
    sizes (:func:`benchmarks.plan.smoke`)."""
    from benchmarks import plan as P

    jobs = _plan(args)
    return P.smoke(jobs) if getattr(args, "smoke", False) else jobs


def _plan(args) -> list[tuple[dict, str]]:
    """``--kernel-threads`` repeats every jaxrnn worker once per setting; ``--contended`` times
    each row quiet and then under contention (a full run does so at A and B)."""
    from benchmarks import configs as K
    from benchmarks import plan as P

    report_run = getattr(args, "report", False)
    chosen = args.peers if args.peers is not None else (
        P.REPORT["peers"] if report_run else ["flax", "torch"] if args.quick
        else list(P.PEER_NAMES))
    once = (args.once_peers if args.once_peers is not None
            else P.REPORT["once_peers"] if report_run and args.peers is None else [])
    skipped = set(args.skip_peers) | {p for p in (*chosen, *once) if not P.installed(p)}
    peers = [p for p in chosen if p not in skipped]
    once = [p for p in once if p not in skipped and p not in peers]
    threads = args.kernel_threads or [None]
    if args.extras:  # only the ConvLSTM and the minimal-cell sweep
        return _extras_jobs(args, args.reps)
    contended = args.contended or report_run
    contention = ["quiet", "busy"] if contended else ["quiet"]
    common = dict(peers=peers, once_peers=once, threads=threads, reps=args.reps,
                  busy_reps=args.busy_reps, busy_procs=args.busy_procs,
                  solo_check=args.solo_check or report_run, solo_reps=args.solo_reps,
                  busy_repeats=(args.busy_repeats if args.busy_repeats is not None
                                else P.REPORT["busy_repeats"] if report_run else None),
                  row_seconds=(args.row_seconds if args.row_seconds is not None
                               else P.REPORT["row_seconds"] if report_run else None),
                  repeat=args.repeat or (P.REPORT["repeat"] if report_run else 1))
    if args.tiny:
        cfg = K.Config("tiny", batch=2, T=8, features=4, hidden=8, out=3)
        entries, _ = cell_entries(args.cells)
        return [(dict(spec, ceiling_n=256), alloc) for spec, alloc in P.config_jobs(
            configs=[cfg], entries=entries, contention=contention, **common)]
    full = not (args.quick or args.configs or args.cells or args.allocators or report_run)
    names = args.configs or (P.REPORT["configs"] if report_run else ["A", "B"] if args.quick
                             else ["A", "B", "C"])
    allocs = args.allocators or (["default", "tuned"] if full else ["default"])
    cells = args.cells or (K.QUICK_CELLS if args.quick or report_run else None)
    entries, _ = cell_entries(cells)
    jobs = P.config_jobs(configs=[K.CONFIGS[n] for n in names], entries=entries,
                         allocators=allocs, plain_too=list(K.PLAIN_TOO) if full else [],
                         contention=["quiet", "busy"] if contended or full else ["quiet"],
                         contended_configs=(None if contended or not full
                                            else P.CONTENDED_CONFIGS), **common)
    if full and "sweep" not in args.skip:
        jobs.append(({"kind": "sweep", "Ts": list(K.SWEEP_T_FULL), "modes": ["forward", "train"],
                      "peers": [p for p in peers if p in ("flax", "torch")], "reps": args.reps,
                      "peer_max_T": 8192, "optional": True}, "default"))
    if full:
        jobs += _extras_jobs(args, args.reps)
    if full and "compile" not in args.skip:
        jobs.append(({"kind": "compile", "Ts": [128, 8192], "optional": True}, "default"))
    if full and "rss" not in args.skip:
        jobs.append(({"kind": "rss", "T": K.SWEEP_T_LONG, "mode": "train", "reps": 2,
                      "run_kwargs": {"remat": K.SWEEP_REMAT_CHUNK}, "optional": True}, "default"))
    return jobs


def _extras_jobs(args, reps) -> list[tuple[dict, str]]:
    from benchmarks import extras as X

    jobs = []
    if "convlstm" not in args.skip:
        jobs.append(({"kind": "convlstm", "modes": ["forward", "train"], "reps": reps,
                      "optional": True}, "default"))
    if "minsweep" not in args.skip:
        jobs.append(({"kind": "minsweep", "Ts": list(X.MIN_SWEEP_T),
                      "modes": ["forward", "train"], "reps": reps, "optional": True}, "default"))
    return jobs


def assemble(results: list[dict]) -> tuple[list[dict], list[dict]]:
    """Config sections from the library workers' results: one section per (repeat, setting,
    config) holding jaxrnn's records of that setting and every peer's records of that repeat
    and allocator (a peer does not depend on the kernels' team size, so it is timed once per
    repeat and shown beside each setting). Returns (sections, solo records)."""
    jax_sections, peer_recs, solo, other = {}, {}, [], []
    for res in results:
        spec = res["spec"]
        if spec["kind"] != "lib":
            other.append(res)
            continue
        if spec.get("stage") == "solo":
            solo += [dict(r, label=res["label"]) for r in res["records"]]
            continue
        for r in res["records"]:
            name = r["config"]["name"]
            if spec["lib"] == "jaxrnn":
                key = (r["repeat"], res["label"], name)
                sec = jax_sections.setdefault(key, {
                    "spec": {"kind": "config", "config": name, "repeat": r["repeat"]},
                    "allocator": res["allocator"], "kernel_threads": res["kernel_threads"],
                    "label": res["label"], "records": [],
                    "ceiling_flops": list(res.get("ceiling_flops") or []),
                    "notes": list(res.get("notes") or [])})
                sec["records"].append(r)
            else:
                peer_recs.setdefault((r["repeat"], res["allocator"], name), []).append(r)
        if spec["lib"] != "jaxrnn":
            for n in res.get("notes") or []:
                for sec in jax_sections.values():
                    if n not in sec["notes"]:
                        sec["notes"].append(n)
    sections = []
    for (rep, _, name), sec in jax_sections.items():
        sec["records"] += peer_recs.get((rep, sec["allocator"], name), [])
        sections.append(sec)
    return sections + other, solo


def versions(kernels_status: str | None = None) -> dict:
    """Package versions (read from their metadata: nothing is imported here) and whether
    jaxrnn's compiled CPU kernels were in use, as a jaxrnn worker reported it."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("jax", "jaxlib", "jaxrnn", "flax", "optax", "equinox", "keras", "torch", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    # they fall back to XLA without a compiler
    out["jaxrnn CPU kernels"] = (kernels_status or "not reported").split(" (")[0]
    return out


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
    """The run's name in file names."""
    if args.extras:
        return "extras"
    if getattr(args, "report", False):
        mode = "report"
    else:
        subset = (args.configs or args.cells or args.allocators or args.skip
                  or args.peers is not None)
        mode = "tiny" if args.tiny else "quick" if args.quick else "custom" if subset else "full"
        if mode != "full" and args.contended:
            mode += "-contended"  # a full run always has its contended section
    if args.kernel_threads:
        mode += "-threads"
    if getattr(args, "smoke", False):
        mode += "-smoke"
    return mode


def _parser():
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    ap.add_argument("--report", action="store_true",
                    help="issue 26's comparison: configs A B C, every kernel cell, quiet and "
                         "contended, median of 3 runs of jaxrnn, Flax and PyTorch, Equinox and "
                         "Keras once, the peers' solo check; rewrites this CPU's section of "
                         "BENCHMARKS.md and benchmarks/summaries/ (benchmarks/run_report.sh)")
    ap.add_argument("--quick", action="store_true",
                    help="configs A and B, every kernel cell, against Flax and PyTorch, no "
                         "sweep (a few minutes; twice that with --contended)")
    ap.add_argument("--tiny", action="store_true", help="a tiny configuration (harness self-test)")
    ap.add_argument("--smoke", action="store_true",
                    help="run this command's jobs at tiny sizes and 2 reps (an end-to-end "
                         "check of e.g. --report; measures nothing)")
    ap.add_argument("--contended", action="store_true",
                    help="time every row quiet and then again beside competing busy "
                         "processes (--busy-procs) that the harness starts and kills")
    ap.add_argument("--busy-procs", type=int, default=1,
                    help="competing busy processes in the contended timings (default 1)")
    ap.add_argument("--repeat", type=int, default=None,
                    help="run every library's worker this many times; the report takes the "
                         "median (default 1; --report: 3)")
    ap.add_argument("--busy-repeats", type=int, default=None,
                    help="time the contended rows in this many of the --repeat runs only (the "
                         "rest quiet; default all; --report: 2)")
    ap.add_argument("--solo-check", action="store_true",
                    help="time each peer row once more alone in a fresh process and report "
                         "its in-harness time over that solo time (flagged beyond 10%%)")
    ap.add_argument("--solo-reps", type=int, default=10, help="timed calls of a solo check")
    ap.add_argument("--once-peers", nargs="*", choices=list(PEER_NAMES),
                    help="peers timed in one repeat only, after the others (--report: "
                         "equinox keras)")
    ap.add_argument("--budget", type=float, default=None,
                    help="minutes the run may take: optional jobs (repeats after the first, "
                         "solo checks, --once-peers, a full run's extra sections) that would "
                         "not end within it, by the times of the jobs done so far, are skipped "
                         "and named in the report (--report: 14)")
    ap.add_argument("--kernel-threads", type=_kernel_threads, default=None,
                    help="e.g. 1,auto: repeat every jaxrnn worker once per setting of "
                         "JAXRNN_KERNEL_THREADS (a fresh worker each; 'default' = unset)")
    ap.add_argument("--configs", nargs="*", help="subset of A B C")
    ap.add_argument("--cells", nargs="*", help="subset of jaxrnn cells")
    ap.add_argument("--allocators", nargs="*", choices=["default", "tuned"])
    ap.add_argument("--skip", nargs="*", default=[],
                    choices=["sweep", "compile", "rss", "convlstm", "minsweep"])
    ap.add_argument("--extras", action="store_true",
                    help="only the ConvLSTM and the minGRU/minLSTM-vs-LSTM/GRU T sweep")
    ap.add_argument("--peers", nargs="*", choices=list(PEER_NAMES),
                    help="peers to measure in every repeat (default: all; --quick: flax torch)")
    ap.add_argument("--skip-peers", nargs="*", default=[], choices=list(PEER_NAMES))
    ap.add_argument("--reps", type=int, default=20,
                    help="timed calls per row, quiet (default 20: the spread is the "
                         "interquartile range over the median of these)")
    ap.add_argument("--busy-reps", type=int, default=10, help="timed calls per contended row")
    ap.add_argument("--row-seconds", type=float, default=None,
                    help="a row whose timed calls reach this many seconds stops there, once "
                         "it has half its calls (contended: half the seconds; --report: 3)")
    ap.add_argument("--inprocess", action="store_true", help="run every job in this process")
    ap.add_argument("--out", type=Path, default=RESULTS,
                    help="folder for the raw JSON, the summary and the chart (default "
                         "bench-results/ at the repository root, outside git)")
    ap.add_argument("--no-compile-cache", action="store_true",
                    help="compile every program afresh in every worker (default: JAX's "
                         "persistent cache under --out, so repeats skip XLA compilation)")
    ap.add_argument("--markdown", type=Path, default=None,
                    help="write this run's section for its CPU model into this file (default: "
                         "BENCHMARKS.md for --report runs, none otherwise)")
    ap.add_argument("--summaries", type=Path, default=None,
                    help="folder for the per-CPU summary kept in git (default: "
                         "benchmarks/summaries for --report runs)")
    ap.add_argument("--no-markdown", action="store_true", help="write no Markdown file")
    ap.add_argument("--dry-run", action="store_true",
                    help="print the jobs this command would run, and run none")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    return ap


def main(argv=None):
    ap = _parser()
    args = ap.parse_args(argv)
    if args.worker:
        res = worker(json.loads(args.worker))
        print(json.dumps(res))
        return res
    for name in ("reps", "busy_reps", "busy_procs", "solo_reps"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')}: expected >= 1, got {getattr(args, name)}")
    if args.repeat is not None and args.repeat < 1:
        ap.error(f"--repeat: expected >= 1, got {args.repeat}")
    if args.budget is None and args.report:
        from benchmarks.plan import REPORT

        args.budget = REPORT["budget_min"]

    if args.dry_run:
        jobs = plan(args)
        for spec, alloc in jobs:
            rows = f" {len(spec['rows'])} rows" if "rows" in spec else ""
            print(f"{alloc:8s} {spec['kind']:8s} {spec.get('lib', ''):8s} "
                  f"{spec.get('stage', ''):5s} repeat={spec.get('repeat', 0)}{rows} "
                  f"{'+'.join(spec.get('contention', []))}"
                  f"{' (optional)' if spec.get('optional') else ''}")
        print(f"{len(jobs)} jobs; run mode {run_mode(args)!r}")
        return jobs
    return _run(args, argv)


def _run(args, argv):
    from benchmarks import report, summary
    from benchmarks.contention import is_running
    from benchmarks.plan import predict_s

    log = (lambda msg: print(msg, file=sys.stderr, flush=True))
    t0 = _clock()
    started = _dt.datetime.now(_dt.timezone.utc)
    mach = machine()
    mach["loadavg_before"] = mach.pop("loadavg")
    args.out.mkdir(parents=True, exist_ok=True)
    cache = None if args.no_compile_cache else args.out / "jax-cache"
    jobs = plan(args)
    inprocess = args.inprocess or (args.tiny and not args.kernel_threads)
    results, skipped = [], []
    groups = {}  # a group of optional jobs (one repeat) runs whole or not at all
    for i, (spec, alloc) in enumerate(jobs):
        what = f"{spec['kind']} {spec.get('lib', '')} {spec.get('stage', '')}".strip()
        elapsed = _clock() - t0
        group = spec.get("group")
        skip = False
        if spec.get("optional") and args.budget is not None:
            if group is not None and group in groups:
                skip = not groups[group]
            else:
                members = [s for s, _ in jobs[i:] if group is not None and s.get("group") == group]
                need = sum(predict_s(s, results) for s in members or [spec])
                skip = elapsed + need > 60 * args.budget
                if group is not None:
                    groups[group] = not skip
                if skip:
                    log(f"budget {args.budget} min: skipping {group or what} (needs ~{need:.0f} "
                        f"s, {60 * args.budget - elapsed:.0f} s left)")
        if skip:
            skipped.append(f"{what} repeat {spec.get('repeat', 0)}"
                           + (f" {spec['rows'][0]['config']['name']} {spec['rows'][0]['mode']} "
                              f"{spec['rows'][0]['cell']}" if spec.get("stage") == "solo" else ""))
            continue
        log(f"[{i + 1}/{len(jobs)} {elapsed / 60:5.1f} min] {what} repeat={spec.get('repeat', 0)}"
            f" allocator={alloc}"
            + (f" threads={spec['kernel_threads']}" if "kernel_threads" in spec else ""))
        results.append(_spawn(spec, alloc, inprocess, log, cache))
    if skipped:
        log(f"budget {args.budget} min: skipped {len(skipped)} optional jobs")
    mach["loadavg_after"] = list(os.getloadavg())
    sections, solo = assemble(results)
    busy_pids = {p for s in sections for r in s["records"] for p in r.get("busy_pids", [])}
    status = next((r.get("kernels_status") for r in results if r.get("kernels_status")), None)
    mode = run_mode(args)
    run = {
        "started_utc": started.isoformat(timespec="seconds"),
        "wall_s": _clock() - t0,
        "mode": mode,
        "command": "python -m benchmarks " + " ".join(argv if argv is not None else sys.argv[1:]),
        "versions": versions(status),
        "machine": mach,
        "allocators": __import__("benchmarks.configs", fromlist=["ALLOCATORS"]).ALLOCATORS,
        "kernel_threads": args.kernel_threads,
        # the most untimed calls a jaxrnn row made before timing to settle the kernels' plans
        "tune_calls": max((rec.get("tune_calls") or 0 for r in results
                           for rec in r.get("records", [])), default=0),
        "busy_pids": sorted(busy_pids),
        # a busy process still alive after its row would have skewed what followed
        "busy_left_running": sorted(p for p in busy_pids if is_running(p)),
        "skipped": skipped,
        "workers": [{k: r.get(k) for k in ("label", "wall_s", "env", "load_start", "load_end",
                                           "pid", "siblings_start", "siblings_end")}
                    | {"lib": r["spec"].get("lib"), "kind": r["spec"]["kind"],
                       "stage": r["spec"].get("stage"), "repeat": r["spec"].get("repeat", 0)}
                    for r in results],
        "sections": sections,
        "solo": solo,
    }
    if run["busy_left_running"]:
        log(f"warning: busy processes still running: {run['busy_left_running']}")
    stem = f"{started.strftime('%Y%m%dT%H%M%SZ')}-{mode}"
    (args.out / f"{stem}.json").write_text(json.dumps(run, indent=1))
    summ = summary.summarise_run(run)
    (args.out / f"{stem}-summary.json").write_text(json.dumps(summ, indent=1))
    others = [s for s in sections if s["spec"]["kind"] != "config"]
    parts = [summary.markdown(summ)] if summ["rows"] else []
    if others or not parts:  # a full run's sweep, compile, memory and extras sections
        parts.append(report.markdown({**run, "sections": others}))
    print("\n\n".join(parts))
    png = report.chart(run, args.out / f"{stem}.png")
    md_path = args.markdown or (ROOT / "BENCHMARKS.md" if args.report and not args.smoke
                                else None)
    if md_path is not None and not args.no_markdown:
        key = summary.write_benchmarks_md(summ, md_path)
        log(f"updated {md_path} (block {key!r})")
    sum_dir = args.summaries or (ROOT / "benchmarks" / "summaries" if args.report
                                 and not args.smoke else None)
    if sum_dir is not None:
        log(f"wrote {summary.write_summary(summ, sum_dir)}")
    log(f"wrote {args.out / (stem + '.json')}, {stem}-summary.json and {png}; "
        f"total {run['wall_s']:.0f} s")
    return run
