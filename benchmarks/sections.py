"""The worker side of the harness: what one fresh worker process runs for a job.

A ``lib`` job (one library's rows: the config sections) goes to :mod:`benchmarks.libworker`;
the other kinds are a full run's extra sections: the LSTM sequence-length sweep (its libraries
interleaved in one worker, PyTorch in a child process stepped in lock-step: the way of timing
before issue 26, kept for this jaxrnn-centred sweep), the compile-time check, the long-sequence
peak-RSS probe and the extras (:mod:`benchmarks.extras`).
"""

from __future__ import annotations

import os
import sys
import time

# the environment a worker reports it ran under (set per job by the parent)
WORKER_ENV_KEYS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_",
                   "JAXRNN_KERNEL_THREADS", "JAXRNN_KERNELS", "XLA_FLAGS", "OMP_WAIT_POLICY",
                   "BENCH_TORCH_OMP_WAIT_POLICY", "JAX_COMPILATION_CACHE_DIR",
                   "JAXRNN_KERNEL_TUNE", "JAXRNN_KERNEL_SPREAD")


def cell_entries(names):
    """The registry's cells named in ``names`` (all if empty; ``"kernel"``: those with a
    whole-sequence kernel path and a peer)."""
    from benchmarks.registry import all_cells

    entries, notes = all_cells()
    if names == "kernel":
        return [e for e in entries if e.peer and has_kernel(e)], notes
    if names:
        unknown = set(names) - {e.name for e in entries}
        if unknown:
            raise ValueError(
                f"--cells: unknown {sorted(unknown)}; available {[e.name for e in entries]}"
            )
        entries = [e for e in entries if e.name in names]
    return entries, notes


def step_flops(entry, cfg, mode) -> float:
    """Useful FLOPs of one call: the cell's step cost (XLA's count) times T; a training step
    counts 3x the forward (forward, input- and weight-gradients) plus the readout."""
    from benchmarks.competitors import jaxrnn_step_flops

    fwd = jaxrnn_step_flops(entry.make, cfg) * cfg.T
    if mode == "forward":
        return fwd
    return 3.0 * (fwd + 2.0 * cfg.tokens * entry.make(cfg.hidden).output_size * cfg.out)


def _peer_flops(family, cfg, mode) -> float:
    """A peer's FLOPs: those of the registered cell computing its family's equations."""
    from benchmarks.registry import Entry
    from jaxrnn.cells import registry

    return step_flops(Entry(family, registry.peer_references()[family].make, family), cfg, mode)


def has_kernel(entry) -> bool:
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
                     "flops": step_flops(e, cfg, mode), "kernel": has_kernel(e),
                     "run_kwargs": {k: str(v) for k, v in (kw or {}).items()}}
        if e.name in plain_too and e.make(4).parts is not None:
            key = f"jaxrnn-plain-scan:{e.name}"
            runners[key] = C.jaxrnn_runner(lambda H, e=e: e.make(H)._replace(parts=None), cfg,
                                           mode, run_kwargs=kw, run_fn=e.run)
            meta[key] = {"lib": "jaxrnn-plain-scan", "cell": e.name, "peer_family": family,
                         "note": "fused path off", "flops": step_flops(e, cfg, mode)}
        if e.name in plain_too and e.make(4).name in cpu_kernels.ADAPTERS:
            # the same cell with the CPU kernels off: the XLA fused scan (engine/backends/fused.py)
            key = f"jaxrnn-xla-fused:{e.name}"
            with kernels.disabled():
                runners[key] = C.jaxrnn_runner(e.make, cfg, mode, run_kwargs=kw, run_fn=e.run)
            meta[key] = {"lib": "jaxrnn-xla-fused", "cell": e.name, "peer_family": family,
                         "note": "kernels off", "flops": step_flops(e, cfg, mode)}
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


def worker(spec: dict) -> dict:
    """Run one section in this process; return its JSON record."""
    from benchmarks import configs as K
    from benchmarks.measure import matmul_ceiling, max_rss_bytes

    log = (lambda msg: print(msg, file=sys.stderr, flush=True))
    kind = spec["kind"]
    env = {k: os.environ[k] for k in sorted(os.environ) if k in WORKER_ENV_KEYS}
    if kind == "lib":  # one library alone (the config sections): benchmarks.libworker
        from benchmarks.libworker import run_lib

        return {"spec": spec, "env": env, **run_lib(spec, log)}
    res = {"spec": spec, "records": [], "notes": [], "load_start": os.getloadavg(), "env": env}
    # the ceiling's product size: 1024 for reports; the harness's self-tests ask for less
    ceiling_n = spec.get("ceiling_n", 1024)
    res["ceiling_flops"] = [matmul_ceiling(ceiling_n)]

    if kind == "sweep":
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
