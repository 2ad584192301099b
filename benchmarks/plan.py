"""Which worker processes a harness command runs, in which order.

Config sections are one worker per library and repeat (:mod:`benchmarks.libworker`): jaxrnn
first, then the peers, the order reversed every other repeat so drift of the machine does not
always hit the same library. Peers named in ``--once-peers`` are timed in one repeat only, after
the repeated ones; ``--solo-check`` adds one worker per peer row that times that step alone
(the harness compares it with the row's in-harness time). Jobs past the repeated ones are
optional, and so are the repeats after the first (each repeat as a whole): a run with
``--budget`` skips those that would not end within it, by the times of the jobs done so far
(:func:`predict_s`), and names them in the report.
"""

from __future__ import annotations

import importlib.util

PEER_NAMES = ("flax", "equinox", "keras", "torch")
# which of the harness's peer families each peer library ships (PeerMissing covers the rest)
PEER_FAMILIES = {"flax": ("lstm", "gru", "rnn", "jordan"), "torch": ("lstm", "gru", "rnn"),
                 "equinox": ("lstm", "gru"), "keras": ("lstm", "gru", "rnn")}
PEER_MODULES = {"flax": "flax", "torch": "torch", "equinox": "equinox", "keras": "keras"}
# configurations that get a contended timing in a full run (the report times it everywhere)
CONTENDED_CONFIGS = ("A", "B")
SMOKE_DIMS = dict(batch=2, T=8, features=4, hidden=8, out=3)
# --report: the comparison of issue 26 (see run_report.sh)
REPORT = dict(configs=["A", "B", "C"], repeat=3, peers=["flax", "torch"],
              once_peers=["equinox", "keras"], solo_check=True, contended=True,
              budget_min=14.0, row_seconds=3.0, busy_repeats=2)


def installed(lib: str) -> bool:
    """Whether the peer's package is importable here (found, not imported)."""
    return importlib.util.find_spec(PEER_MODULES[lib]) is not None


def _dims(cfg) -> dict:
    return cfg._asdict()


def jaxrnn_rows(configs, modes, entries, plain_too=(), contended_configs=None) -> list[dict]:
    """One row per (config, mode, cell), and one per variant of the cells in ``plain_too``."""
    from jaxrnn.engine.backends import cpu_kernels

    rows = []
    for cfg in configs:
        for mode in modes:
            for e in entries:
                base = {"config": _dims(cfg), "mode": mode, "cell": e.name, "family": e.peer}
                if contended_configs is not None and cfg.name not in contended_configs:
                    base["contention"] = ["quiet"]
                rows.append(base)
                if e.name in plain_too and e.make(4).parts is not None:
                    rows.append({**base, "variant": "jaxrnn-plain-scan"})
                if e.name in plain_too and e.make(4).name in cpu_kernels.ADAPTERS:
                    rows.append({**base, "variant": "jaxrnn-xla-fused"})
    return rows


def peer_rows(lib, configs, modes, entries, contended_configs=None) -> list[dict]:
    """One row per (config, mode, peer family of the measured cells) that ``lib`` ships."""
    families = [f for f in dict.fromkeys(e.peer for e in entries if e.peer)
                if f in PEER_FAMILIES[lib]]
    rows = []
    for cfg in configs:
        for mode in modes:
            for fam in families:
                row = {"config": _dims(cfg), "mode": mode, "cell": fam, "family": fam}
                if contended_configs is not None and cfg.name not in contended_configs:
                    row["contention"] = ["quiet"]
                rows.append(row)
    return rows


def config_jobs(*, configs, entries, peers, once_peers=(), repeat=1, threads=(None,),
                allocators=("default",), contention=("quiet",), reps=20, busy_reps=10,
                busy_procs=1, solo_check=False, solo_reps=10, plain_too=(), row_seconds=None,
                busy_repeats=None,
                contended_configs=None, modes=("forward", "train")) -> list[tuple[dict, str]]:
    """The config sections as (worker spec, allocator) jobs, in the order they run."""
    common = {"kind": "lib", "contention": list(contention), "reps": reps,
              "busy_reps": busy_reps, "busy_procs": busy_procs}
    if row_seconds is not None:
        common["row_seconds"] = row_seconds
    jobs, solo = [], []
    for alloc in allocators:
        cfgs = [c for c in configs if alloc == "default" or c.name != "C"] if len(
            allocators) > 1 else configs  # both allocators only where A and B are, to keep it short
        for r in range(repeat):
            order = ["jaxrnn", *peers]
            if r % 2:
                order.reverse()
            quiet_only = busy_repeats is not None and r >= busy_repeats
            cond = {"contention": ["quiet"]} if quiet_only else {}
            for lib in order:
                if lib == "jaxrnn":
                    rows = jaxrnn_rows(cfgs, modes, entries, plain_too, contended_configs)
                    for kt in threads:
                        spec = {**common, "lib": lib, "rows": rows, "repeat": r, "stage": "main",
                                **cond, **_repeat_group(r, alloc)}
                        if kt is not None:
                            spec["kernel_threads"] = kt
                        jobs.append((spec, alloc))
                    continue
                rows = peer_rows(lib, cfgs, modes, entries, contended_configs)
                if rows:
                    jobs.append(({**common, "lib": lib, "rows": rows, "repeat": r,
                                  "stage": "main", **cond, **_repeat_group(r, alloc)}, alloc))
                    if r == 0 and solo_check:
                        solo += _solo(lib, rows, alloc, solo_reps, row_seconds)
        # row by row across the peers, so a budget that cuts the solo checks short leaves
        # a sample of every peer and configuration
        jobs += [j for group in _round_robin(solo) for j in group]
        solo = []
        for lib in once_peers:
            rows = peer_rows(lib, cfgs, modes, entries, contended_configs)
            if rows:
                jobs.append(({**common, "lib": lib, "rows": rows, "repeat": 0, "stage": "once",
                              "optional": True}, alloc))
                if solo_check:
                    solo += _solo(lib, rows, alloc, solo_reps, row_seconds)
        jobs += [j for group in _round_robin(solo) for j in group]
        solo = []
    return jobs


def _repeat_group(r, alloc) -> dict:
    """Repeats after the first are optional, each as a whole (a repeat without jaxrnn or
    without its peers gives no ratio)."""
    return {} if r == 0 else {"optional": True, "group": f"{alloc} repeat {r}"}


def predict_s(spec: dict, done: list[dict]) -> float:
    """Expected wall time of a job from the jobs done so far: the last job of the same library
    and stage, per row; for a peer's first job, the median per-row time of the JAX peers' jobs
    done; 0 (unknown: run it, and learn) otherwise."""
    import statistics

    def rows(s):  # in units of a quiet row; a contended timing: half the calls, each slower
        rs = s.get("rows") or [{}]
        return sum(1.0 + 0.75 * ("busy" in r.get("contention", s.get("contention", ())))
                   for r in rs)

    same = [r for r in done if r["spec"]["kind"] == spec["kind"]
            and r["spec"].get("lib") == spec.get("lib")
            and r["spec"].get("stage", "main") in (spec.get("stage", "main"),
                                                   "once" if spec.get("stage") == "main" else "")]
    if same:
        last = same[-1]
        return last.get("wall_s", 0.0) * rows(spec) / rows(last["spec"])
    if spec.get("stage") in ("main", "once") and spec.get("lib") not in (None, "jaxrnn", "torch"):
        like = [r.get("wall_s", 0.0) / rows(r["spec"]) for r in done
                if r["spec"].get("stage") in ("main", "once")
                and r["spec"].get("lib") in ("flax", "equinox", "keras")]
        if like:
            return statistics.median(like) * rows(spec)
    return 0.0


def _round_robin(jobs):
    """Solo jobs grouped by row position: the first row of every peer, then the second, ..."""
    by_lib = {}
    for j in jobs:
        by_lib.setdefault(j[0]["lib"], []).append(j)
    n = max((len(v) for v in by_lib.values()), default=0)
    return [[v[i] for v in by_lib.values() if i < len(v)] for i in range(n)]


def _solo(lib, rows, alloc, reps, row_seconds=None) -> list[tuple[dict, str]]:
    """One fresh worker per row: the step alone, quiet (its in-harness time is compared)."""
    fams = list(PEER_FAMILIES[lib])
    rows = sorted(rows, key=lambda r: (fams.index(r["family"]), r["mode"], r["config"]["name"]))
    return [({"kind": "lib", "lib": lib, "rows": [{**row, "contention": ["quiet"]}],
              "contention": ["quiet"], "reps": reps, "repeat": 0, "stage": "solo",
              "optional": True, **({"row_seconds": row_seconds} if row_seconds else {})}, alloc)
            for row in rows]


def smoke(jobs: list[tuple[dict, str]]) -> list[tuple[dict, str]]:
    """The same jobs (same cells, peers, conditions, workers) at tiny sizes and 2 reps:
    ``--smoke`` checks that a command runs end to end, measuring nothing."""
    out = []
    for spec, alloc in jobs:
        spec = dict(spec, reps=min(spec.get("reps", 2), 2), ceiling_n=128)
        kind = spec["kind"]
        if kind == "lib":
            spec["busy_reps"] = 2
            spec["rows"] = [
                {**row, "config": {**row["config"], **SMOKE_DIMS,
                                   "name": f"smoke-{row['config']['name']}"}}
                for row in spec["rows"]]
        elif kind == "config" and "config_dims" not in spec:
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
