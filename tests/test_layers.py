"""Composition against manual composition: stacks, bidirectional runs, dropout, dense, embedding."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _reference import F, assert_trees_close, random_params, to_jax

import jaxrnn

JIT = pytest.mark.parametrize("use_jit", [False, True], ids=["eager", "jit"])
B, T = 3, 5
LENGTHS = jnp.array([T, 0, 3])


def _maybe_jit(f, use_jit, **kw):
    return jax.jit(f, **kw) if use_jit else f


def _xs(seed=0, shape=(B, T, F)):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def _random_layer_params(layer, input_size, seed):
    """A layer's params with every leaf random (biases included)."""
    template = layer.init(jax.random.key(seed), input_size)
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(
        lambda a: jnp.asarray(0.5 * rng.standard_normal(a.shape), jnp.float32), template
    )


# --------------------------------------------------------------------------- stacked

@pytest.mark.slow
def test_stacked_matches_manual_composition():
    """Layer 2 runs on layer 1's outputs, both from given carries, with lengths. The sequence
    output runs eagerly, the return_sequences=False stack under jit."""
    l1, l2 = jaxrnn.lstm(4, peephole=True), jaxrnn.gru(3, reset_after=False)
    seq_stack = jaxrnn.stacked([l1, l2])
    last_stack = jaxrnn.stacked([l1, l2], return_sequences=False)
    params = _random_layer_params(seq_stack, F, 1)
    assert seq_stack.output_size == 3
    xs = _xs(2)
    carry0 = (l1.initial_carry(params[0], (B,)), l2.initial_carry(params[1], (B,)))
    carry0 = jax.tree_util.tree_map(lambda a: a + 0.3, carry0)  # a non-zero initial carry

    finals, ys = seq_stack.apply_with_carry(params, xs, lengths=LENGTHS, carry=carry0)
    finals_last, y_last = jax.jit(
        lambda p, x, n, c: last_stack.apply_with_carry(p, x, lengths=n, carry=c)
    )(params, xs, LENGTHS, carry0)

    c1, h1 = jaxrnn.run(l1, params[0], xs, lengths=LENGTHS, carry=carry0[0])
    c2, h2 = jaxrnn.run(l2, params[1], h1, lengths=LENGTHS, carry=carry0[1])
    assert_trees_close(finals, (c1, c2), atol=1e-6, rtol=1e-6)
    np.testing.assert_allclose(ys, h2, atol=1e-6, rtol=1e-6)
    # return_sequences=False: each sequence's last valid output, zeros for an empty sequence
    assert y_last.shape == (B, 3)
    np.testing.assert_allclose(y_last, jaxrnn.last_valid(h2, LENGTHS), atol=1e-6, rtol=1e-6)
    np.testing.assert_allclose(y_last[0], h2[0, T - 1], atol=1e-6)
    np.testing.assert_allclose(y_last[2], h2[2, 2], atol=1e-6)
    np.testing.assert_array_equal(y_last[1], 0.0)
    # for a Jordan-free stack the last valid output is the final hidden state of the top layer
    np.testing.assert_allclose(np.asarray(y_last)[[0, 2]], np.asarray(c2.h)[[0, 2]], atol=1e-6)
    assert_trees_close(finals_last, finals, atol=1e-6, rtol=1e-6)


def test_stacked_of_bidirectional_matches_manual():
    bi = jaxrnn.bidirectional(jaxrnn.elman(3), merge="concat")
    top = jaxrnn.jordan(4, 2)
    stack = jaxrnn.stacked([bi, top])
    params = _random_layer_params(stack, F, 3)
    xs = _xs(4)
    finals, ys = jax.jit(lambda p, x: stack.apply_with_carry(p, x, lengths=LENGTHS))(params, xs)

    elman = jaxrnn.elman(3)
    cf, yf = jaxrnn.run(elman, params[0].forward, xs, lengths=LENGTHS)
    cb, yb = jaxrnn.run(elman, params[0].backward, xs, lengths=LENGTHS, reverse=True)
    h1 = jnp.concatenate([yf, yb], axis=-1)
    c2, h2 = jaxrnn.run(top, params[1], h1, lengths=LENGTHS)
    assert_trees_close(finals, ((cf, cb), c2), atol=1e-6, rtol=1e-6)
    np.testing.assert_allclose(ys, h2, atol=1e-6, rtol=1e-6)


# --------------------------------------------------------------------------- bidirectional

@JIT
def test_bidirectional_matches_forward_and_reverse_runs(use_jit):
    """concat / sum / mean of a forward run and a length-aware reverse run (eagerly: concat;
    under jit: all three merges in one program)."""
    cell = jaxrnn.lstm(4)
    layers = {m: jaxrnn.bidirectional(cell, merge=m) for m in ("concat", "sum", "mean")}
    params = _random_layer_params(layers["concat"], F, 5)
    assert isinstance(params, jaxrnn.BidirectionalParams)
    xs = _xs(6)
    merges = list(layers) if use_jit else ["concat"]
    apply = _maybe_jit(
        lambda p, x, n: {m: layers[m].apply_with_carry(p, x, lengths=n) for m in merges}, use_jit
    )
    got = apply(params, xs, LENGTHS)

    want_cf, yf = jaxrnn.run(cell, params.forward, xs, lengths=LENGTHS)
    want_cb, yb = jaxrnn.run(cell, params.backward, xs, lengths=LENGTHS, reverse=True)
    want = {"concat": np.concatenate([yf, yb], -1), "sum": yf + yb, "mean": (yf + yb) / 2}
    for m in merges:
        (cf, cb), ys = got[m]
        assert layers[m].output_size == (8 if m == "concat" else 4)
        assert ys.shape == (B, T, layers[m].output_size)
        np.testing.assert_allclose(ys, want[m], atol=1e-6, rtol=1e-6, err_msg=m)
        assert_trees_close((cf, cb), (want_cf, want_cb), atol=1e-6, rtol=1e-6)
        np.testing.assert_array_equal(ys[1], 0.0)  # the empty sequence
    # the backward direction's final carry has read the whole valid sequence, ending at t = 0
    np.testing.assert_allclose(got["concat"][0][1].h[2], yb[2, 0], atol=1e-6)


def test_bidirectional_with_a_different_backward_cell():
    fw, bw = jaxrnn.gru(3), jaxrnn.elman(2, output_size=4)
    layer = jaxrnn.bidirectional(fw, bw)
    params = _random_layer_params(layer, F, 7)
    xs = _xs(8)
    _, ys = layer.apply_with_carry(params, xs, lengths=LENGTHS)
    _, yf = jaxrnn.run(fw, params.forward, xs, lengths=LENGTHS)
    _, yb = jaxrnn.run(bw, params.backward, xs, lengths=LENGTHS, reverse=True)
    assert layer.output_size == 7
    np.testing.assert_allclose(ys, np.concatenate([yf, yb], -1), atol=1e-6, rtol=1e-6)


# --------------------------------------------------------------------------- dropout

@JIT
def test_dropout_function(use_jit):
    x = jnp.asarray(np.random.default_rng(0).uniform(1.0, 2.0, (40, 50)), jnp.float32)
    rate = 0.3
    drop = _maybe_jit(
        lambda x, k: jaxrnn.dropout(x, rate, k, deterministic=False), use_jit
    )
    a, b = drop(x, jax.random.key(1)), drop(x, jax.random.key(2))
    # off: identity, whatever the key
    np.testing.assert_array_equal(jaxrnn.dropout(x, rate, jax.random.key(1), deterministic=True), x)
    np.testing.assert_array_equal(jaxrnn.dropout(x, 0.0, None, deterministic=False), x)
    # on: each element is dropped or scaled by 1 / (1 - rate) (inverted dropout)
    kept = np.asarray(a) != 0
    np.testing.assert_allclose(np.asarray(a)[kept], np.asarray(x)[kept] / (1 - rate), rtol=1e-6)
    # the drop fraction is rate within 5 binomial standard deviations
    n = x.size
    assert abs((~kept).sum() - rate * n) < 5 * np.sqrt(n * rate * (1 - rate))
    # keys change the mask; the same key repeats it
    assert np.any((np.asarray(a) != 0) != (np.asarray(b) != 0))
    np.testing.assert_array_equal(drop(x, jax.random.key(1)), a)
    # broadcast_dims: one mask shared along axis 0
    shared = jaxrnn.dropout(x, rate, jax.random.key(3), deterministic=False, broadcast_dims=(0,))
    m = np.asarray(shared) != 0
    assert np.all(m == m[:1]) and 0 < m[0].sum() < x.shape[1]


def _identity_probe(size):
    """An Elman cell whose output is exactly its (dropped) input: W_x = I, U_h = 0, b = 0,
    identity activation. Its outputs show the input-dropout mask at every step."""
    cell = jaxrnn.elman(size, activation="identity")
    params = jaxrnn.ElmanParams(
        w_x=jnp.eye(size), w_h=jnp.zeros((size, size)), b=jnp.zeros(size)
    )
    return cell, params


@JIT
def test_input_dropout_one_mask_per_sequence_shared_across_time(use_jit):
    size, batch, rate = 16, 4, 0.5
    cell, params = _identity_probe(size)
    layer = jaxrnn.recurrent(cell, input_dropout=rate)
    xs = jnp.ones((batch, T, size))
    apply = _maybe_jit(
        lambda p, x, k: layer.apply_with_carry(p, x, key=k, deterministic=False)[1], use_jit
    )
    masks = apply(params, xs, jax.random.key(0))
    m = np.asarray(masks)
    assert set(np.unique(m)) <= {0.0, np.float32(1.0 / (1 - rate))}
    assert np.all(m == m[:, :1]), "the input mask must be the same at every time step"
    assert not np.all(m[0] == m[1]), "each sequence draws its own mask"
    assert 0 < (m == 0).mean() < 1
    assert not np.array_equal(apply(params, xs, jax.random.key(1)), m), "keys change masks"
    # deterministic: identity
    _, ys = layer.apply_with_carry(params, xs, key=jax.random.key(0), deterministic=True)
    np.testing.assert_array_equal(ys, xs)


def _recurrent_probe(size):
    """A cell whose step emits the recurrent state it receives (after any recurrent-dropout
    mask) and whose stored state is always ones: ``y_t`` is the mask applied at step ``t``."""
    base = jaxrnn.elman(size)

    def step(params, carry, xp):
        return jaxrnn.ElmanState(jnp.ones_like(carry.h)), carry.h

    return base._replace(step=step, parts=None)


@JIT
def test_recurrent_dropout_mask_is_constant_over_time(use_jit):
    size, batch, rate = 16, 4, 0.4
    probe = _recurrent_probe(size)
    params = probe.init(jax.random.key(0), F)
    layer = jaxrnn.recurrent(probe, recurrent_dropout=rate)
    carry = jaxrnn.ElmanState(jnp.ones((batch, size)))
    apply = _maybe_jit(
        lambda p, x, k: layer.apply_with_carry(p, x, carry=carry, key=k, deterministic=False),
        use_jit,
    )
    final, masks = apply(params, _xs(0, (batch, T, F)), jax.random.key(0))
    m = np.asarray(masks)
    assert set(np.unique(m)) <= {0.0, np.float32(1.0 / (1 - rate))}
    assert np.all(m == m[:, :1]), "the recurrent mask must be the same at every step"
    assert not np.all(m[0] == m[1]), "each sequence draws its own mask"
    assert 0 < (m == 0).mean() < 1
    np.testing.assert_array_equal(final.h, 1.0)  # the stored carry is never masked
    _, other = apply(params, _xs(0, (batch, T, F)), jax.random.key(1))
    assert not np.array_equal(other, m), "keys change masks"


@pytest.mark.parametrize("cell", [pytest.param(jaxrnn.lstm(16), id="lstm", marks=pytest.mark.slow),
                                  pytest.param(jaxrnn.jordan(5, 16), id="jordan")])
def test_recurrent_dropout_equals_manually_masked_steps(cell):
    """Variational recurrent dropout (Gal & Ghahramani 2016): one mask per sequence multiplies
    the recurrent input (h for LSTM, the previous output y for Jordan) at every step; the LSTM
    cell state and the stored carry are not masked; padding still freezes the carry."""
    rate, key = 0.5, jax.random.key(7)
    params = to_jax(random_params(cell, seed=9))
    xs = _xs(10, (B, T, F))
    got_final, got_ys = jaxrnn.recurrent(cell, recurrent_dropout=rate).apply_with_carry(
        params, xs, lengths=LENGTHS, key=key, deterministic=False
    )
    # the mask the layer drew, read off the probe with the same key and carry shape
    probe = _recurrent_probe(16)
    _, masks = jaxrnn.recurrent(probe, recurrent_dropout=rate).apply_with_carry(
        probe.init(jax.random.key(0), F), xs, carry=jaxrnn.ElmanState(jnp.ones((B, 16))),
        key=key, deterministic=False,
    )
    mask = masks[:, 0]
    field = cell.recurrent_key
    c = cell.initial_carry(params, (B,))
    ys = []
    for t in range(T):
        dropped = c._replace(**{field: getattr(c, field) * mask})
        new_c, y = cell.step(params, dropped, cell.project(params, xs[:, t]))
        valid = (t < LENGTHS)[:, None]
        c = jax.tree_util.tree_map(lambda n, o, valid=valid: jnp.where(valid, n, o), new_c, c)
        ys.append(jnp.where(valid, y, 0.0))
    assert_trees_close(got_final, c, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(got_ys, jnp.stack(ys, 1), atol=1e-5, rtol=1e-5)
    # and dropout really changed something
    _, plain = jaxrnn.run(cell, params, xs, lengths=LENGTHS)
    assert not np.allclose(plain, got_ys)


def test_deterministic_layers_are_identity_to_plain_runs():
    """With deterministic=True every dropout is off: the layers equal the plain engine runs."""
    cell = jaxrnn.gru(4)
    layer = jaxrnn.recurrent(cell, input_dropout=0.5, recurrent_dropout=0.5)
    stack = jaxrnn.stacked(
        [jaxrnn.recurrent(cell, input_dropout=0.5, recurrent_dropout=0.5), cell],
        between_dropout=0.5,
    )
    params = _random_layer_params(stack, F, 11)
    xs = _xs(12)
    key = jax.random.key(0)
    want = jaxrnn.run(cell, params[0], xs, lengths=LENGTHS)
    assert_trees_close(
        layer.apply_with_carry(params[0], xs, lengths=LENGTHS, key=key, deterministic=True),
        want,
        atol=0, rtol=0,
    )
    _, h2 = jaxrnn.run(cell, params[1], want[1], lengths=LENGTHS)
    _, ys = stack.apply_with_carry(params, xs, lengths=LENGTHS, key=key, deterministic=True)
    np.testing.assert_allclose(ys, h2, atol=1e-6, rtol=1e-6)
    # in training the same stack differs, and between-layer dropout alone changes the output
    ys_train = stack.apply(params, xs, lengths=LENGTHS, key=key, deterministic=False)
    assert not np.allclose(ys_train, ys)


# --------------------------------------------------------------------------- dense, embedding

@JIT
def test_dense_matches_numpy(use_jit):
    layer = jaxrnn.dense(4, activation=jnp.tanh)
    p = layer.init(jax.random.key(0), 3)
    bound = np.sqrt(6 / (3 + 4))
    assert np.abs(p.w).max() <= bound and np.all(p.b == 0)
    p = jaxrnn.DenseParams(p.w, jnp.arange(4.0))
    x = np.random.default_rng(0).standard_normal((2, 5, 3))
    got = _maybe_jit(layer.apply, use_jit)(p, jnp.asarray(x, jnp.float32))
    want = np.tanh(x @ np.asarray(p.w, np.float64) + np.arange(4.0))
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


@JIT
def test_embedding_is_a_table_lookup(use_jit):
    emb = jaxrnn.embedding(7, 3)
    table = emb.init(jax.random.key(0))
    assert table.shape == (7, 3)
    ids = np.array([[0, 6, 2], [3, 3, 1]])
    got = _maybe_jit(emb.apply, use_jit)(table, jnp.asarray(ids))
    np.testing.assert_array_equal(got, np.asarray(table)[ids])


# --------------------------------------------------------------------------- one protocol

@pytest.mark.slow
def test_embedding_recurrent_bidirectional_dropout_dense_compose_in_one_stack():
    """Every layer kind in one ``stacked``: equal to applying each by hand, ``apply`` gives the
    outputs and ``apply_with_carry`` the same outputs with one carry per layer (None where a
    layer has none)."""
    V = 9
    emb, rec = jaxrnn.embedding(V, 4), jaxrnn.recurrent(jaxrnn.gru(5))
    bi, drop, head = jaxrnn.bidirectional(jaxrnn.elman(3)), jaxrnn.dropout_layer(0.5), \
        jaxrnn.dense(2)
    stack = jaxrnn.stacked([emb, rec, bi, drop, head])
    assert stack.output_size == 2
    assert [l.output_size_for(11) for l in (emb, rec, bi, drop, head)] == [4, 5, 6, 11, 2]
    params = stack.init(jax.random.key(0), None)
    ids = jnp.asarray(np.random.default_rng(0).integers(0, V, (B, T)))
    finals, ys = stack.apply_with_carry(params, ids, lengths=LENGTHS)
    np.testing.assert_array_equal(stack.apply(params, ids, lengths=LENGTHS), ys)

    x = jnp.take(params[0], ids, axis=0)
    c1, h1 = jaxrnn.run(jaxrnn.gru(5), params[1], x, lengths=LENGTHS)
    cf, yf = jaxrnn.run(jaxrnn.elman(3), params[2].forward, h1, lengths=LENGTHS)
    cb, yb = jaxrnn.run(jaxrnn.elman(3), params[2].backward, h1, lengths=LENGTHS, reverse=True)
    h2 = np.concatenate([yf, yb], -1)
    want = h2 @ np.asarray(params[4].w) + np.asarray(params[4].b)  # dropout off by default
    np.testing.assert_allclose(ys, want, atol=1e-5, rtol=1e-5)
    assert finals[0] is None and finals[3] is None and finals[4] is None
    assert_trees_close(finals[1:3], (c1, (cf, cb)), atol=1e-6, rtol=1e-6)
    # dropout as a layer: on only in training, and then each element is 0 or scaled
    ys_train = stack.apply(params, ids, lengths=LENGTHS, key=jax.random.key(1),
                           deterministic=False)
    assert not np.allclose(ys_train, ys)


@pytest.mark.parametrize("name", ["lstm", "gru_cho", "min_gru"])
def test_bidirectional_backward_half_is_the_reversed_run(name):
    """Invariant: whatever is given as the backward member (a cell, or a layer built reversed),
    the backward half of the output is ``run(cell, reverse=True)``, never a forward run."""
    from jaxrnn.cells import registry

    cell = registry.REGISTRY[name].make_for_tests()
    xs = _xs(21)
    for backward in (cell, jaxrnn.recurrent(cell, reverse=True)):
        layer = jaxrnn.bidirectional(cell, backward)
        params = _random_layer_params(layer, F, 22)
        ys = layer.apply(params, xs, lengths=LENGTHS)
        _, want = jaxrnn.run(cell, params.backward, xs, lengths=LENGTHS, reverse=True)
        _, forwards = jaxrnn.run(cell, params.backward, xs, lengths=LENGTHS)
        H = cell.output_size
        np.testing.assert_allclose(ys[..., H:], want, atol=1e-6, rtol=1e-6)
        assert not np.allclose(ys[..., H:], forwards)


def test_bidirectional_rejects_members_running_the_wrong_way():
    cell = jaxrnn.gru(3)
    with pytest.raises(ValueError, match=r"^backward: the layer runs forwards; .*reverse=True"):
        jaxrnn.bidirectional(jaxrnn.recurrent(cell), jaxrnn.recurrent(cell))
    with pytest.raises(ValueError, match=r"^forward: the layer runs reversed"):
        jaxrnn.bidirectional(jaxrnn.recurrent(cell, reverse=True), cell)
    with pytest.raises(ValueError, match=r"^backward: the layer drops the time axis"):
        jaxrnn.bidirectional(cell, jaxrnn.recurrent(cell, reverse=True, return_sequences=False))


def test_summaries_of_one_direction_and_of_bidirectional_layers():
    """return_sequences=False: the forward run's last valid output; a reversed run's output at
    step 0; a bidirectional layer merges the two (Keras' Bidirectional)."""
    cell = jaxrnn.lstm(3)
    params = _random_layer_params(jaxrnn.bidirectional(cell), F, 30)
    xs = _xs(31)
    _, yf = jaxrnn.run(cell, params.forward, xs, lengths=LENGTHS)
    _, yb = jaxrnn.run(cell, params.backward, xs, lengths=LENGTHS, reverse=True)
    fw = jaxrnn.recurrent(cell, return_sequences=False)
    bw = jaxrnn.recurrent(cell, reverse=True, return_sequences=False)
    np.testing.assert_allclose(fw.apply(params.forward, xs, lengths=LENGTHS),
                               jaxrnn.last_valid(yf, LENGTHS), atol=1e-6)
    np.testing.assert_allclose(fw.apply(params.forward, xs, lengths=LENGTHS)[0], yf[0, T - 1],
                               atol=1e-6)
    np.testing.assert_allclose(bw.apply(params.backward, xs, lengths=LENGTHS), yb[:, 0],
                               atol=1e-6)
    summary = jaxrnn.bidirectional(cell, return_sequences=False).apply(params, xs,
                                                                       lengths=LENGTHS)
    np.testing.assert_allclose(summary[2], np.concatenate([yf[2, 2], yb[2, 0]]), atol=1e-6)
    np.testing.assert_array_equal(summary[1], 0.0)  # the empty sequence
    # a dense head after a summary runs on (B, O), with no lengths passed to it
    stack = jaxrnn.stacked([jaxrnn.bidirectional(cell, return_sequences=False),
                            jaxrnn.dense(2)])
    assert stack.summarises
    p = stack.init(jax.random.key(0), F)
    assert stack.apply(p, xs, lengths=LENGTHS).shape == (B, 2)
