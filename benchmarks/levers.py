"""Measure one lever at a time: jaxrnn variants against Flax (and PyTorch), interleaved.

    python -m benchmarks.levers --config A --cell lstm --variants plain fused --peers flax

Each variant is a way of running the same cell (see ``VARIANTS``); results are printed as
tokens/s and as ratios to the first peer, for the notes in ``benchmarks/NOTES.md``.
"""

from __future__ import annotations

import argparse
import os
import time

from benchmarks import competitors as C
from benchmarks.configs import CONFIGS
from benchmarks.measure import interleaved, summarise
from benchmarks.registry import all_cells

# PERF-NOTES: dots compiled without YNNPACK fusions (a per-program compiler option).
NO_YNN = {"xla_cpu_experimental_ynn_fusion_type": ""}


def _tanh_sigmoid(H):
    """LSTM whose gates use sigmoid(x) = (1 + tanh(x / 2)) / 2 (one tanh, no exp or divide)."""
    import jax.numpy as jnp

    import jaxrnn

    return jaxrnn.lstm(H, recurrent_activation=lambda x: 0.5 * jnp.tanh(0.5 * x) + 0.5)


def _plain(make):
    return lambda H: make(H)._replace(parts=None)


VARIANTS = {
    "plain": lambda make: (_plain(make), {}),
    "fused": lambda make: (make, {}),
    "plain_unroll2": lambda make: (_plain(make), {"unroll": 2}),
    "fused_unroll2": lambda make: (make, {"unroll": 2}),
    "fused_hoist": lambda make: (make, {"hoist_projection": True}),
    "plain_tanhsig": lambda make: (_plain(_tanh_sigmoid), {}),
    "fused_tanhsig": lambda make: (_tanh_sigmoid, {}),
    "plain_noynn": lambda make: (_plain(make), {}, NO_YNN),
    "fused_noynn": lambda make: (make, {}, NO_YNN),
}


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="A")
    ap.add_argument("--cell", default="lstm")
    ap.add_argument("--modes", nargs="*", default=["forward", "train"])
    ap.add_argument("--variants", nargs="*", default=["plain", "fused"])
    ap.add_argument("--peers", nargs="*", default=["flax"])
    ap.add_argument("--reps", type=int, default=20)
    args = ap.parse_args(argv)
    cfg = CONFIGS[args.config]
    entry = {e.name: e for e in all_cells()[0]}[args.cell]
    print(f"config {cfg}, cell {entry.name}, load {os.getloadavg()[0]:.1f}")
    for mode in args.modes:
        runners = {}
        for v in args.variants:
            make, kw, *rest = VARIANTS[v](entry.make)
            runners[v] = C.jaxrnn_runner(make, cfg, mode, run_kwargs=kw,
                                         compiler_options=rest[0] if rest else None)
        for p in args.peers:
            runners[p] = C.PEERS[p](entry.peer, cfg, mode)
        cpu = {k: [] for k in runners}
        for k, r in runners.items():  # CPU time per call: less sensitive to the machine's load
            call = r.call

            def timed(call=call, k=k, cpu=cpu):
                t0 = time.process_time()
                call()
                cpu[k].append(time.process_time() - t0)

            r.call = timed
        times = interleaved(runners, args.reps)
        ref = summarise(times[args.peers[0]], cfg.tokens)["tokens_per_s"] if args.peers else None
        for k, r in runners.items():
            s = summarise(times[k], cfg.tokens)
            ratio = f"{s['tokens_per_s'] / ref:.2f}x" if ref else ""
            comp = f"{r.compile_s:.2f}s" if r.compile_s is not None else "-"
            c = summarise(cpu[k], cfg.tokens)
            cref = summarise(cpu[args.peers[0]], cfg.tokens)["median_s"] if args.peers else None
            cratio = f"{cref / c['median_s']:.2f}x" if cref else ""
            print(f"  {mode:7s} {k:16s} {s['tokens_per_s'] / 1e3:8.1f}k tok/s "
                  f"±{50 * s['spread']:.0f}%  {ratio:>6s}  | cpu {1e3 * c['median_s']:7.1f} ms "
                  f"{cratio:>6s} | min {1e3 * s['min_s']:7.1f} ms | compile {comp}")
    print(f"load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
