"""Recursive (tree) network vs a flat LSTM on evaluating boolean expressions.

Each example is a random fully parenthesised boolean expression over the constants T and F with
the operators AND, OR and XOR, e.g. ``((T XOR F) AND (F OR (T XOR T)))``; the label is its
truth value. XOR makes the value depend on every leaf, so no shortcut beats chance by much and
the structure must be followed. The tree network sees the binarised parse tree, in which an
operation ``(a op b)`` is the node ``((a, op), b)``, with operators as leaf tokens (Bowman et al.
2015); the flat model is a jaxrnn LSTM reading the same expression as a string of tokens,
parentheses included. Both have the same hidden size, optimiser, batch size and number of steps,
and are scored on held-out expressions that never occur in the training set, with the same number
of leaves as in training and with more (deeper than anything seen in training).
"""

import time

import numpy as np

DESCRIPTION = "recursive net vs flat LSTM on boolean expression trees (held-out accuracy)"

# token ids shared by the tree leaves and the flat strings
T_, F_, AND, OR, XOR, LP, RP = range(7)
NAMES = ["T", "F", "AND", "OR", "XOR", "(", ")"]
OPS = {AND: lambda a, b: a and b, OR: lambda a, b: a or b, XOR: lambda a, b: a != b}


def add_arguments(parser):
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--max-leaves", type=int, default=6, help="leaves in training expressions")
    parser.add_argument("--test-leaves", type=int, default=14, help="leaves in the deeper test set")
    parser.add_argument("--train-size", type=int, default=20000)
    parser.add_argument("--test-size", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)


def random_expression(rng, leaves):
    """A random expression with ``leaves`` constants: (nested tree, string tokens, value)."""
    if leaves == 1:
        v = bool(rng.random() < 0.5)
        tok = T_ if v else F_
        return tok, [tok], v
    k = int(rng.integers(1, leaves))
    lt, ls, lv = random_expression(rng, k)
    rt, rs, rv = random_expression(rng, leaves - k)
    op = int(rng.choice([AND, OR, XOR]))
    return ((lt, op), rt), [LP, *ls, op, *rs, RP], OPS[op](lv, rv)


def make_set(rng, n, lo, hi, exclude=frozenset()):
    trees, strings, labels, seen = [], [], [], set()
    while len(trees) < n:
        t, s, v = random_expression(rng, int(rng.integers(lo, hi + 1)))
        key = tuple(s)
        if key in exclude or key in seen:
            continue
        seen.add(key)
        trees.append(t)
        strings.append(s)
        labels.append(int(v))
    return trees, strings, np.asarray(labels, np.int32), seen


def pad_strings(strings, length):
    ids = np.zeros((len(strings), length), np.int32)
    lengths = np.zeros(len(strings), np.int32)
    for i, s in enumerate(strings):
        ids[i, : len(s)] = s
        lengths[i] = len(s)
    return ids, lengths


def main(args):
    import jax
    import jax.numpy as jnp
    import optax

    import jaxrnn
    from jaxrnn.classic import recursive as rn

    t0 = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    L, LT = args.max_leaves, args.test_leaves
    tr_trees, tr_str, tr_y, seen = make_set(rng, args.train_size, 2, L)
    te_trees, te_str, te_y, _ = make_set(rng, args.test_size, 2, L, exclude=seen)
    deep_trees, deep_str, deep_y, _ = make_set(rng, args.test_size, L + 1, LT)
    M_train, M_deep = 4 * L - 3, 4 * LT - 3  # nodes (= string length) of the largest tree
    packs = {
        "train": (rn.pack_trees(tr_trees, M_train), *pad_strings(tr_str, M_train), tr_y),
        "test": (rn.pack_trees(te_trees, M_train), *pad_strings(te_str, M_train), te_y),
        "deeper": (rn.pack_trees(deep_trees, M_deep), *pad_strings(deep_str, M_deep), deep_y),
    }
    H = args.hidden
    opt = optax.adam(args.lr)

    # ---- tree model: recursive net + linear readout of the root
    net = rn.recursive_net(H, vocab_size=5)
    readout = jaxrnn.dense(2)
    k1, k2, k3, k4, k5 = jax.random.split(jax.random.key(args.seed), 5)
    tree_params = (net.init(k1), readout.init(k2, H))

    def tree_logits(p, trees):
        roots, _ = net.apply(p[0], trees)
        return readout.apply(p[1], roots)

    # ---- flat model: embedding + jaxrnn LSTM + linear readout of the last valid output
    cell = jaxrnn.lstm(H)
    embed = jaxrnn.embedding(len(NAMES), H)
    flat_params = (embed.init(k3), cell.init(k4, H), readout.init(k5, H))

    def flat_logits(p, ids, lengths):
        _, ys = jaxrnn.run(cell, p[1], embed.apply(p[0], ids), lengths=lengths)
        return readout.apply(p[2], jaxrnn.last_valid(ys, lengths))

    def make_step(logits_fn):
        def loss(p, batch):
            logits = logits_fn(p, *batch[:-1])
            return optax.softmax_cross_entropy_with_integer_labels(logits, batch[-1]).mean()

        @jax.jit
        def step(p, s, batch):
            l, g = jax.value_and_grad(loss)(p, batch)
            u, s = opt.update(g, s, p)
            return optax.apply_updates(p, u), s, l

        return step

    def take(tree_or_arr, idx):
        return jax.tree_util.tree_map(lambda a: jnp.asarray(a)[idx], tree_or_arr)

    results = {}
    for name, params, logits_fn, inputs_of in (
        ("recursive net (tree)", tree_params, tree_logits, lambda d: (d[0],)),
        ("LSTM (flat string)", flat_params, flat_logits, lambda d: (d[1], d[2])),
    ):
        ts = time.perf_counter()
        step = make_step(logits_fn)
        state = opt.init(params)
        order = np.random.default_rng(args.seed + 1)
        n_train = len(tr_y)
        for _ in range(args.steps):
            idx = order.integers(0, n_train, args.batch)
            batch = (*take(inputs_of(packs["train"]), idx), jnp.asarray(tr_y[idx]))
            params, state, loss = step(params, state, batch)
        predict = jax.jit(lambda p, *x, f=logits_fn: jnp.argmax(f(p, *x), -1))
        accs = {}
        for split in ("test", "deeper"):
            d = packs[split]
            accs[split] = float(np.mean(np.asarray(predict(params, *inputs_of(d))) == d[-1]))
        n_params = sum(a.size for a in jax.tree_util.tree_leaves(params))
        results[name] = (accs, time.perf_counter() - ts, float(loss), n_params)

    elapsed = time.perf_counter() - t0
    base = max(np.mean(te_y), 1 - np.mean(te_y))
    print(
        f"boolean expressions over T/F with AND/OR/XOR; train: {args.train_size} expressions "
        f"with 2-{L} leaves; {args.steps} Adam steps of batch {args.batch}, hidden {H}"
    )
    print(
        f"held-out: {args.test_size} unseen expressions with 2-{L} leaves (majority class "
        f"{base:.1%}) and {args.test_size} deeper ones with {L + 1}-{LT} leaves"
    )
    for name, (accs, secs, loss, n_params) in results.items():
        print(
            f"  {name:22s} test acc {accs['test']:.1%}   deeper acc {accs['deeper']:.1%}   "
            f"(final loss {loss:.3f}, {n_params} params, {secs:.1f} s)"
        )
    print(f"time {elapsed:.1f} s")
    return {name: r[0] for name, r in results.items()} | {"seconds": elapsed}
