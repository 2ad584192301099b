"""Two sections beyond the peer comparison: the ConvLSTM on a small video configuration, and the
minimal cells (minGRU, minLSTM; sequential and parallel prefix scan) against LSTM/GRU over a
sequence-length sweep. No peer ships a ConvLSTM or a minGRU/minLSTM, so both are jaxrnn-only."""

from __future__ import annotations

from typing import NamedTuple


class VideoConfig(NamedTuple):
    name: str
    batch: int
    T: int
    height: int
    width: int
    in_channels: int
    channels: int
    kernel_size: int = 3
    out: int = 1

    @property
    def tokens(self) -> int:  # frames per step
        return self.batch * self.T


CONVLSTM_CONFIG = VideoConfig("video", batch=8, T=10, height=16, width=16, in_channels=1,
                              channels=16)
# minGRU/minLSTM vs LSTM/GRU: batch 8, hidden 128, input 32
MIN_SWEEP_T = (128, 1024, 4096, 16384)
MIN_SWEEP_DIMS = dict(batch=8, features=32, hidden=128)


def _min_sweep_cells() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(the sweep's cells, its baselines), from the registry: the cells
    :func:`jaxrnn.parallel_run` computes, their peer families' own cells (the baselines, LSTM
    and GRU), and the parallel cells once more by prefix scan (``*_parallel``)."""
    from jaxrnn.cells import registry

    parallel = [e for e in registry.REGISTRY.values() if e.parallel]
    families = {e.peer for e in parallel}
    baselines = tuple(e.name for f, e in registry.peer_references().items() if f in families)
    return (*baselines, *(e.name for e in parallel),
            *(f"{e.name}_parallel" for e in parallel)), baselines


MIN_SWEEP_CELLS, MIN_SWEEP_BASELINES = _min_sweep_cells()


def convlstm_section(spec, log) -> list[dict]:
    import jax
    import jax.numpy as jnp
    import numpy as np

    import jaxrnn
    from benchmarks import competitors as C
    from benchmarks.measure import interleaved, summarise

    cfg = VideoConfig(**spec["config_dims"]) if "config_dims" in spec else CONVLSTM_CONFIG
    cell = jaxrnn.convlstm(cfg.channels, kernel_size=cfg.kernel_size)
    readout = jaxrnn.dense(cfg.out)
    k1, k2 = jax.random.split(jax.random.key(1))
    params = (cell.init(k1, cfg.in_channels), readout.init(k2, cfg.channels))
    rng = np.random.default_rng(0)
    shape = (cfg.T, cfg.batch, cfg.height, cfg.width)
    x = jnp.asarray(rng.standard_normal(shape + (cfg.in_channels,)).astype(np.float32))
    y = jnp.asarray(rng.standard_normal(shape + (cfg.out,)).astype(np.float32))

    def forward(p, x):
        return jaxrnn.run(cell, p[0], x, time_major=True)[1]

    def loss(p, x, y):  # MSE readout loss over every step and pixel
        return jnp.mean((readout.apply(p[1], forward(p, x)) - y) ** 2)

    out = []
    for mode in spec["modes"]:
        if mode == "forward":
            r = C.aot_runner("jaxrnn", forward, params, x, train=False)
        else:
            step, opt = C.adam_step(loss)
            r = C.aot_runner("jaxrnn", step, (params, opt.init(params)), x, y, train=True)
        log(f"  convlstm {mode} timing")
        times = interleaved({"jaxrnn": r}, spec["reps"])["jaxrnn"]
        out.append({"config": cfg._asdict(), "mode": mode, "lib": "jaxrnn", "cell": "convlstm",
                    "peer_family": None, "note": "no peer ships a ConvLSTM",
                    **summarise(times, cfg.tokens), "compile_s": r.compile_s,
                    "mem_bytes": r.mem_bytes})
    return out


def min_sweep_section(spec, log) -> list[dict]:
    from benchmarks import competitors as C
    from benchmarks.configs import Config
    from benchmarks.measure import interleaved, summarise
    from benchmarks.registry import registry

    entries = {e.name: e for e in registry() if e.name in spec.get("cells", MIN_SWEEP_CELLS)}
    dims = spec.get("dims", MIN_SWEEP_DIMS)
    out = []
    for T in spec["Ts"]:
        cfg = Config(f"T{T}", T=T, **dims)
        for mode in spec["modes"]:
            runners = {name: C.jaxrnn_runner(e.make, cfg, mode, run_fn=e.run)
                       for name, e in entries.items()}
            reps = spec["reps"] if T <= 1024 else max(3, spec["reps"] // 3)
            log(f"  min-sweep T={T} {mode} timing {', '.join(runners)} ({reps} reps)")
            times = interleaved(runners, reps, warmup=1)
            for name, r in runners.items():
                out.append({"config": cfg._asdict(), "mode": mode, "lib": "jaxrnn", "cell": name,
                            "peer_family": None, "note": entries[name].note,
                            **summarise(times[name], cfg.tokens), "compile_s": r.compile_s,
                            "mem_bytes": r.mem_bytes})
    return out


# --------------------------------------------------------------------------- report

def _k(tps):
    return f"{tps / 1e3:,.0f}k" if tps >= 1e4 else f"{tps / 1e3:,.1f}k"


def convlstm_table(run) -> str | None:
    recs = [r for s in run["sections"] if s["spec"]["kind"] == "convlstm" for r in s["records"]]
    if not recs:
        return None
    lines = ["| config | mode | frames/s (spread) | median step ms | compile s | XLA MiB |",
             "|---|---|---|---|---|---|"]
    for r in recs:
        c = r["config"]
        desc = (f"B{c['batch']} T{c['T']} {c['height']}x{c['width']}x{c['in_channels']} "
                f"-> {c['channels']} ch, k{c['kernel_size']}")
        mem = f"{r['mem_bytes'] / 2**20:,.1f}" if r.get("mem_bytes") else "-"
        lines.append(f"| {desc} | {r['mode']} | {r['tokens_per_s']:,.0f} "
                     f"(±{100 * r['spread'] / 2:.0f}%) | {1e3 * r['median_s']:.1f} | "
                     f"{r['compile_s']:.2f} | {mem} |")
    return "\n".join(lines)


def min_sweep_winners(run) -> dict:
    """``{(T, mode): (winning cell, {cell: tokens/s})}``."""
    rows = {}
    for s in run["sections"]:
        if s["spec"]["kind"] != "minsweep":
            continue
        for r in s["records"]:
            rows.setdefault((r["config"]["T"], r["mode"]), {})[r["cell"]] = r["tokens_per_s"]
    return {k: (max(v, key=v.get), v) for k, v in sorted(rows.items())}


def min_sweep_table(run) -> str | None:
    W = min_sweep_winners(run)
    if not W:
        return None
    cells = [c for c in MIN_SWEEP_CELLS if any(c in v for _, v in W.values())]
    lines = ["| T | mode | " + " | ".join(cells) + " | fastest | fastest / best of LSTM, GRU |",
             "|" + "---|" * (len(cells) + 4)]
    for (T, mode), (win, v) in W.items():
        base = max([v[c] for c in MIN_SWEEP_BASELINES if c in v] or [float("nan")])
        lines.append(f"| {T} | {mode} | " + " | ".join(_k(v[c]) if c in v else "-" for c in cells)
                     + f" | {win} | {v[win] / base:.2f}x |")
    return "\n".join(lines)


def markdown_parts(run) -> list[str]:
    parts = []
    t = convlstm_table(run)
    if t:
        parts += ["", "### ConvLSTM (jaxrnn.convlstm, kernel 3; `jaxrnn.run(..., time_major=True)` "
                      "on (T, B, H, W, C) frames)", "",
                  "frames/s = batch x T / median step time; training = forward + backward + Adam "
                  "on an MSE readout (1x1 dense to 1 channel) over every step and pixel. No peer "
                  "(Flax, Equinox, Keras, PyTorch) ships a ConvLSTM, so none is compared.", "", t]
    t = min_sweep_table(run)
    if t:
        d = MIN_SWEEP_DIMS
        parts += ["", f"### minGRU / minLSTM vs LSTM / GRU over T (batch {d['batch']}, hidden "
                      f"{d['hidden']}, input {d['features']})", "",
                  "tokens/s; `*_parallel` = `jaxrnn.parallel_run` (log-space prefix scan), the "
                  "others `jaxrnn.run` (sequential scan); training = forward + backward + Adam on "
                  "an MSE readout over all steps. All six timed interleaved per (T, mode).", "", t]
    return parts
