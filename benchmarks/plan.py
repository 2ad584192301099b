"""Which worker processes a harness command runs, in which order.

Config sections are one worker per library and repeat (:mod:`benchmarks.libworker`): jaxrnn
first, then the peers, the order reversed every other repeat so drift of the machine does not
always hit the same library. Peers named in ``--once-peers`` are timed in one repeat only, after
the repeated ones; ``--solo-check`` adds one worker per peer row that times that step alone
(the harness compares it with the row's in-harness time). Jobs past the repeated ones are
optional: a run with ``--deadline`` skips those that would start after it.
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
              deadline_min=12.5)


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
                busy_procs=1, solo_check=False, solo_reps=10, plain_too=(),
                contended_configs=None, modes=("forward", "train")) -> list[tuple[dict, str]]:
    """The config sections as (worker spec, allocator) jobs, in the order they run."""
    common = {"kind": "lib", "contention": list(contention), "reps": reps,
              "busy_reps": busy_reps, "busy_procs": busy_procs}
    jobs, solo = [], []
    for alloc in allocators:
        cfgs = [c for c in configs if alloc == "default" or c.name != "C"] if len(
            allocators) > 1 else configs  # both allocators only where A and B are, to keep it short
        for r in range(repeat):
            order = ["jaxrnn", *peers]
            if r % 2:
                order.reverse()
            for lib in order:
                if lib == "jaxrnn":
                    rows = jaxrnn_rows(cfgs, modes, entries, plain_too, contended_configs)
                    for kt in threads:
                        spec = {**common, "lib": lib, "rows": rows, "repeat": r, "stage": "main"}
                        if kt is not None:
                            spec["kernel_threads"] = kt
                        jobs.append((spec, alloc))
                    continue
                rows = peer_rows(lib, cfgs, modes, entries, contended_configs)
                if rows:
                    jobs.append(({**common, "lib": lib, "rows": rows, "repeat": r,
                                  "stage": "main"}, alloc))
                    if r == 0 and solo_check:
                        solo += _solo(lib, rows, alloc, solo_reps)
        # row by row across the peers, so a deadline that cuts the solo checks short leaves
        # a sample of every peer and configuration
        jobs += [j for group in _round_robin(solo) for j in group]
        solo = []
        for lib in once_peers:
            rows = peer_rows(lib, cfgs, modes, entries, contended_configs)
            if rows:
                jobs.append(({**common, "lib": lib, "rows": rows, "repeat": 0, "stage": "once",
                              "optional": True}, alloc))
                if solo_check:
                    solo += _solo(lib, rows, alloc, solo_reps)
        jobs += [j for group in _round_robin(solo) for j in group]
        solo = []
    return jobs


def _round_robin(jobs):
    """Solo jobs grouped by row position: the first row of every peer, then the second, ..."""
    by_lib = {}
    for j in jobs:
        by_lib.setdefault(j[0]["lib"], []).append(j)
    n = max((len(v) for v in by_lib.values()), default=0)
    return [[v[i] for v in by_lib.values() if i < len(v)] for i in range(n)]


def _solo(lib, rows, alloc, reps) -> list[tuple[dict, str]]:
    """One fresh worker per row: the step alone, quiet (its in-harness time is compared)."""
    fams = list(PEER_FAMILIES[lib])
    rows = sorted(rows, key=lambda r: (fams.index(r["family"]), r["mode"], r["config"]["name"]))
    return [({"kind": "lib", "lib": lib, "rows": [{**row, "contention": ["quiet"]}],
              "contention": ["quiet"], "reps": reps, "repeat": 0, "stage": "solo",
              "optional": True}, alloc) for row in rows]


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
