"""Neural history compressor (Schmidhuber 1992) vs a flat recurrent net on a long time lag.

Sequences of ``T`` symbols from an alphabet of ``V``: the first symbol is random, and each next
symbol follows a fixed permutation of the alphabet (``x_{t+1} = pi(x_t)``) except at a few
random "noise" steps where it is drawn at random (at least one, so the end of the sequence
says nothing about its start). The label of a sequence is its first symbol: a dependency over
``T`` steps hidden among long predictable stretches.

The compressor: a small lower net (Elman) is trained to predict the next symbol; the steps it
fails to predict (wrong argmax) -- the first symbol and the noise steps -- are passed up, with
their time stamps, to a higher LSTM that classifies the sequence from that short compressed
history. The flat baseline is an LSTM of the higher net's size reading every step. Both get the
same number of Adam steps in total (the compressor splits them between its two nets), the same
batch and learning rate; accuracy is measured on held-out sequences.
"""

import time

import numpy as np

DESCRIPTION = "history compressor vs flat LSTM on a long time lag (fraction passed up, accuracy)"


def add_arguments(parser):
    parser.add_argument("--length", type=int, default=200, help="T, sequence length")
    parser.add_argument("--vocab", type=int, default=8, help="V, alphabet size")
    parser.add_argument("--noise-steps", type=int, default=3, help="random steps per sequence")
    parser.add_argument("--hidden", type=int, default=32, help="higher / flat LSTM size")
    parser.add_argument("--lower-hidden", type=int, default=16)
    parser.add_argument("--steps", type=int, default=400, help="total Adam steps per model")
    parser.add_argument("--lower-steps", type=int, default=150, help="of which the lower net")
    parser.add_argument("--max-len", type=int, default=16, help="compressed length K")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)


def make_data(rng, n, T, V, noise_steps, perm):
    ids = np.zeros((n, T), np.int32)
    ids[:, 0] = rng.integers(0, V, n)
    noise = np.zeros((n, T), bool)
    for i in range(n):
        noise[i, rng.choice(np.arange(1, T), noise_steps, replace=False)] = True
    rand = rng.integers(0, V, (n, T))
    for t in range(1, T):
        ids[:, t] = np.where(noise[:, t], rand[:, t], perm[ids[:, t - 1]])
    return ids, ids[:, 0].copy()


def main(args):
    import jax
    import jax.numpy as jnp
    import optax

    import jaxrnn
    from jaxrnn.classic import compressor as hc

    t0 = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    T, V = args.length, args.vocab
    perm = rng.permutation(V)
    n_train = args.batch * args.steps
    tr_ids, tr_y = make_data(rng, n_train, T, V, args.noise_steps, perm)
    te_ids, te_y = make_data(rng, args.test, T, V, args.noise_steps, perm)
    stamp = (np.arange(T) / T).astype(np.float32)[:, None]

    def features(ids):  # one-hot symbol plus the time stamp t / T
        oh = jax.nn.one_hot(ids, V, dtype=jnp.float32)
        return jnp.concatenate([oh, jnp.broadcast_to(stamp, (*ids.shape, 1))], -1)

    opt = optax.adam(args.lr)
    keys = jax.random.split(jax.random.key(args.seed), 6)
    readout = jaxrnn.dense(V)

    def train(loss_fn, params, steps, offset):
        state = opt.init(params)

        @jax.jit
        def step(p, s, ids, y):
            l, g = jax.value_and_grad(loss_fn)(p, ids, y)
            u, s = opt.update(g, s, p)
            return optax.apply_updates(p, u), s, l

        for i in range(steps):
            sl = slice((offset + i) * args.batch, (offset + i + 1) * args.batch)
            params, state, loss = step(
                params, state, jnp.asarray(tr_ids[sl]), jnp.asarray(tr_y[sl])
            )
        return params, float(loss)

    def ce(logits, y):
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    # ---------------- flat LSTM
    ts = time.perf_counter()
    flat_cell = jaxrnn.lstm(args.hidden)
    flat_p = (flat_cell.init(keys[0], V + 1), readout.init(keys[1], args.hidden))

    def flat_logits(p, ids):
        carry, _ = jaxrnn.run(flat_cell, p[0], features(ids))
        return readout.apply(p[1], carry.h)

    flat_p, flat_loss = train(lambda p, ids, y: ce(flat_logits(p, ids), y), flat_p, args.steps, 0)
    flat_acc = float(
        np.mean(np.asarray(jax.jit(flat_logits)(flat_p, jnp.asarray(te_ids))).argmax(-1) == te_y)
    )
    flat_s = time.perf_counter() - ts

    # ---------------- history compressor: lower predictor, then higher classifier
    ts = time.perf_counter()
    low_cell = jaxrnn.elman(args.lower_hidden)
    low_p = (low_cell.init(keys[2], V + 1), readout.init(keys[3], args.lower_hidden))

    def next_logits(p, ids):  # next_logits[t] predicts ids[t + 1]
        _, hs = jaxrnn.run(low_cell, p[0], features(ids))
        return readout.apply(p[1], hs)

    def low_loss(p, ids, y):
        del y
        return ce(next_logits(p, ids)[:, :-1], ids[:, 1:])

    low_steps = args.lower_steps
    low_p, low_loss_final = train(low_loss, low_p, low_steps, 0)

    high_cell = jaxrnn.lstm(args.hidden)
    high_p = (high_cell.init(keys[4], V + 1), readout.init(keys[5], args.hidden))

    def compressed(ids):
        mask = hc.surprise_mask(next_logits(low_p, ids), ids)
        oh = jax.nn.one_hot(ids, V, dtype=jnp.float32)
        return hc.compress(oh, mask, max_len=args.max_len), mask

    def high_logits(p, ids):
        c, _ = compressed(ids)
        carry, _ = jaxrnn.run(high_cell, p[0], c.xs, lengths=c.lengths)
        return readout.apply(p[1], carry.h)

    high_p, high_loss = train(
        lambda p, ids, y: ce(high_logits(p, ids), y), high_p, args.steps - low_steps, low_steps
    )
    te = jnp.asarray(te_ids)
    comp_acc = float(np.mean(np.asarray(jax.jit(high_logits)(high_p, te)).argmax(-1) == te_y))
    c, mask = jax.jit(compressed)(te)
    frac = float(hc.passed_fraction(mask))
    low_acc = float(np.mean(np.asarray(next_logits(low_p, te)[:, :-1].argmax(-1)) == te_ids[:, 1:]))
    overflow = float(np.mean(np.asarray(mask.sum(-1)) > args.max_len))
    comp_s = time.perf_counter() - ts
    elapsed = time.perf_counter() - t0

    n_flat = sum(a.size for a in jax.tree_util.tree_leaves(flat_p))
    n_comp = sum(a.size for a in jax.tree_util.tree_leaves((low_p, high_p)))
    print(
        f"task: T={T}, V={V} symbols, {args.noise_steps} noise steps per sequence, label = first "
        f"symbol (chance {1 / V:.1%}); {args.steps} Adam steps of batch {args.batch} per model; "
        f"{args.test} held-out sequences"
    )
    print(
        f"lower net: next-symbol accuracy {low_acc:.1%}; inputs passed up {frac:.2%} "
        f"(ideal {(1 + args.noise_steps * (1 - 1 / V)) / T:.2%}), "
        f"mean {float(np.mean(np.asarray(c.lengths))):.1f} "
        f"of {T} steps; sequences with more than K={args.max_len}: {overflow:.1%}"
    )
    print(
        f"  history compressor (Elman {args.lower_hidden} -> LSTM {args.hidden}, "
        f"{low_steps}+{args.steps - low_steps} steps): test acc {comp_acc:.1%}  "
        f"({n_comp} params, {comp_s:.1f} s)"
    )
    print(
        f"  flat LSTM {args.hidden} ({args.steps} steps over all {T} inputs):"
        f"{' ' * 14}test acc {flat_acc:.1%}  ({n_flat} params, {flat_s:.1f} s)"
    )
    print(f"time {elapsed:.1f} s")
    return {
        "passed_fraction": frac,
        "compressor_acc": comp_acc,
        "flat_acc": flat_acc,
        "seconds": elapsed,
    }
