"""Run LSTM and GRU layers over a random batch and print shapes, compile and step times."""

import time

import jax

DESCRIPTION = "run LSTM and GRU over a batch; print shapes and timings"


def add_arguments(parser):
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=128)
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=256)


def main(args):
    import jaxrnn

    xs = jax.random.normal(jax.random.key(0), (args.batch, args.steps, args.features))
    out = {}
    for name, cell in [("lstm", jaxrnn.lstm(args.hidden)), ("gru", jaxrnn.gru(args.hidden))]:
        params = cell.init(jax.random.key(1), args.features)
        fn = jax.jit(lambda p, x, cell=cell: jaxrnn.run(cell, p, x))
        t0 = time.perf_counter()
        carry, ys = fn(params, xs)
        jax.block_until_ready(ys)
        compile_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(5):
            jax.block_until_ready(fn(params, xs))
        step_s = (time.perf_counter() - t0) / 5
        tok = args.batch * args.steps / step_s
        print(f"{name}: ys {tuple(ys.shape)}, final h {tuple(carry.h.shape)}; "
              f"first call {compile_s:.2f}s, step {step_s * 1e3:.1f} ms "
              f"({tok / 1e3:.0f}k tokens/s)")
        out[name] = tok
    return out
