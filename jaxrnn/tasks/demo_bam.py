"""Bidirectional associative memory (Kosko 1988): recall of stored pairs from noisy cues in both
directions, as the number of stored pairs grows."""

import time

import numpy as np

DESCRIPTION = "BAM: recall rate of stored bipolar pairs from noisy cues vs number of pairs"


def add_arguments(parser):
    parser.add_argument("--n", type=int, default=120, help="size of the x layer")
    parser.add_argument("--m", type=int, default=80, help="size of the y layer")
    parser.add_argument("--noise", type=float, default=0.1, help="fraction of cue bits flipped")
    parser.add_argument("--trials", type=int, default=20, help="random pair sets per load")
    parser.add_argument("--max-pairs", type=int, default=24)
    parser.add_argument("--seed", type=int, default=0)


def main(args):
    import jax
    import jax.numpy as jnp

    from jaxrnn.classic import bam

    t0 = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    n, m = args.n, args.m

    def bipolar(shape):
        return np.where(rng.random(shape) < 0.5, -1.0, 1.0).astype(np.float32)

    def noisy(a):
        return np.where(rng.random(a.shape) < args.noise, -a, a).astype(np.float32)

    @jax.jit
    def trial(xs, ys, cx, cy):
        w = bam.store(xs, ys)
        from_x = bam.recall(w, x=cx)
        from_y = bam.recall(w, y=cy)
        ok_x = jnp.all(from_x.x == xs, -1) & jnp.all(from_x.y == ys, -1)
        ok_y = jnp.all(from_y.x == xs, -1) & jnp.all(from_y.y == ys, -1)
        stored_stable = jnp.all(bam.forward(w, xs, ys) == ys, -1) & jnp.all(
            bam.backward(w, xs, ys) == xs, -1
        )
        e_cue = bam.energy(w, cx, bam.forward(w, cx, jnp.ones_like(ys)))
        e_end = bam.energy(w, from_x.x, from_x.y)
        return ok_x, ok_y, stored_stable, from_x.converged & from_y.converged, e_end <= e_cue

    counts = list(range(1, args.max_pairs + 1, 1 if args.max_pairs <= 12 else 2))
    rows = []
    for P in counts:
        rx, ry, st, conv, down = [], [], [], [], []
        for _ in range(args.trials):
            xs, ys = bipolar((P, n)), bipolar((P, m))
            out = [
                np.asarray(v)
                for v in trial(
                    jnp.asarray(xs), jnp.asarray(ys), jnp.asarray(noisy(xs)), jnp.asarray(noisy(ys))
                )
            ]
            for acc, v in zip((rx, ry, st, conv, down), out, strict=True):
                acc.append(v)
        rows.append([np.mean(np.concatenate(a)) for a in (rx, ry, st, conv, down)])
    rows = np.asarray(rows)
    elapsed = time.perf_counter() - t0

    print(
        f"BAM n={n}, m={m}; cues with {args.noise:.0%} of bits flipped; {args.trials} random "
        f"pair sets per row; recall = both patterns of the pair recovered exactly"
    )
    print(" pairs  recall x->y  recall y->x  stored pairs stable  converged  energy fell")
    for P, r in zip(counts, rows, strict=True):
        print(f" {P:5d}  {r[0]:11.1%}  {r[1]:11.1%}  {r[2]:19.1%}  {r[3]:9.1%}  {r[4]:10.1%}")
    half = [P for P, r in zip(counts, rows, strict=True) if min(r[0], r[1]) < 0.5]
    print(
        f"recall falls below 50% at {half[0] if half else '>' + str(counts[-1])} pairs "
        f"(min(n, m) = {min(n, m)})"
    )
    print(f"time {elapsed:.1f} s")
    return {
        "pairs": counts,
        "recall_x": rows[:, 0].tolist(),
        "recall_y": rows[:, 1].tolist(),
        "seconds": elapsed,
    }
