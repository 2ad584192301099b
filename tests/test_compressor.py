"""Neural history compressor: the surprise mask, compression, and that the higher level sees
exactly the unpredicted steps (equal to running it on the compressed sequence alone)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn
from jaxrnn.classic import compressor as hc


def test_surprise_mask_matches_numpy(rng):
    B, T, V = 3, 9, 5
    logits = rng.normal(size=(B, T, V)).astype(np.float32)
    ids = rng.integers(0, V, (B, T)).astype(np.int32)
    ids[0, 1:] = logits[0, :-1].argmax(-1)  # sequence 0: everything predicted after step 0
    got = hc.surprise_mask(jnp.asarray(logits), jnp.asarray(ids))
    ref = np.ones((B, T), bool)
    for b in range(B):
        for t in range(1, T):
            ref[b, t] = logits[b, t - 1].argmax() != ids[b, t]
    np.testing.assert_array_equal(got, ref)
    assert np.asarray(got[0]).tolist() == [True] + [False] * (T - 1)
    z = logits.astype(np.float64)
    p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    ref_t = np.ones((B, T), bool)
    for b in range(B):
        for t in range(1, T):
            ref_t[b, t] = p[b, t - 1, ids[b, t]] < 0.3
    np.testing.assert_array_equal(
        hc.surprise_mask(jnp.asarray(logits), jnp.asarray(ids), threshold=0.3), ref_t
    )


def test_compress_keeps_exactly_the_unpredicted_steps_in_order(rng):
    B, T, F = 4, 12, 3
    xs = rng.normal(size=(B, T, F)).astype(np.float32)
    mask = rng.random((B, T)) < 0.3
    mask[:, 0] = True
    mask[3] = False  # a sequence with nothing passed up
    c = jax.tree_util.tree_map(np.asarray, hc.compress(jnp.asarray(xs), jnp.asarray(mask)))
    for b in range(B):
        steps = np.flatnonzero(mask[b])
        n = len(steps)
        assert int(c.lengths[b]) == n
        np.testing.assert_array_equal(c.times[b, :n], steps)
        np.testing.assert_array_equal(c.times[b, n:], -1)
        np.testing.assert_array_equal(c.xs[b, :n, :F], xs[b, steps])
        np.testing.assert_allclose(c.xs[b, :n, F], steps / T, rtol=1e-6)
        np.testing.assert_array_equal(c.xs[b, n:], 0)
    # truncation to K and respect of valid lengths
    ck = hc.compress(
        jnp.asarray(xs),
        jnp.asarray(mask),
        max_len=2,
        lengths=jnp.array([12, 12, 1, 12]),
        time_stamps=False,
    )
    ck = jax.tree_util.tree_map(np.asarray, ck)
    assert ck.xs.shape == (B, 2, F)
    for b in range(B):
        steps = np.flatnonzero(mask[b] & (np.arange(T) < [12, 12, 1, 12][b]))[:2]
        assert int(ck.lengths[b]) == len(steps)
        np.testing.assert_array_equal(ck.xs[b, : len(steps)], xs[b, steps])


def test_higher_level_equals_running_on_the_compressed_sequence_alone(rng):
    B, T, F, H = 2, 10, 4, 5
    xs = rng.normal(size=(B, T, F)).astype(np.float32)
    mask = rng.random((B, T)) < 0.4
    mask[:, 0] = True
    cell = jaxrnn.lstm(H)
    params = cell.init(jax.random.key(0), F + 1)

    c = hc.compress(jnp.asarray(xs), jnp.asarray(mask))
    carry, ys = jax.tree_util.tree_map(
        np.asarray, jaxrnn.run(cell, params, c.xs, lengths=c.lengths)
    )

    # the same cell, masked, over every step
    stamp = np.broadcast_to((np.arange(T) / T)[:, None], (B, T, 1)).astype(np.float32)
    flagged = np.concatenate([xs, stamp, mask[..., None].astype(np.float32)], -1)
    mcell = hc.masked(cell)
    mcarry, mys = jax.tree_util.tree_map(
        np.asarray, jaxrnn.run(mcell, params, jnp.asarray(flagged))
    )

    for b in range(B):
        steps = np.flatnonzero(mask[b])
        alone = np.concatenate([xs[b, steps], (steps / T)[:, None].astype(np.float32)], -1)
        ref_carry, ref_ys = jaxrnn.run(cell, params, jnp.asarray(alone))
        for got in (carry, mcarry):  # compressed + lengths, and the masked cell over all steps
            for g, r in zip(
                jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(ref_carry), strict=True
            ):
                np.testing.assert_allclose(g[b], r, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ys[b, : len(steps)], ref_ys, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(mys[b, steps], ref_ys, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(mys[b, ~mask[b]], 0)


def test_passed_fraction():
    mask = jnp.array([[True, False, False, True], [True, True, False, False]])
    assert float(hc.passed_fraction(mask)) == pytest.approx(0.5)
    assert float(hc.passed_fraction(mask, jnp.array([2, 4]))) == pytest.approx(3 / 6)


def test_bad_inputs_raise_clear_errors():
    xs = jnp.zeros((2, 5, 3))
    with pytest.raises(TypeError, match="mask: expected a bool"):
        hc.compress(xs, jnp.zeros((2, 5), jnp.int32))
    with pytest.raises(ValueError, match="mask: expected shape"):
        hc.compress(xs, jnp.zeros((2, 4), bool))
    with pytest.raises(ValueError, match="max_len"):
        hc.compress(xs, jnp.zeros((2, 5), bool), max_len=6)
    with pytest.raises(ValueError, match="lengths: expected shape"):
        hc.compress(xs, jnp.zeros((2, 5), bool), lengths=jnp.array([1, 2, 3]))
    with pytest.raises(TypeError, match="xs: expected a floating"):
        hc.compress(jnp.zeros((2, 5, 3), jnp.int32), jnp.zeros((2, 5), bool))
    with pytest.raises(ValueError, match="ids: expected shape"):
        hc.surprise_mask(jnp.zeros((2, 5, 4)), jnp.zeros((2, 4), jnp.int32))
    with pytest.raises(TypeError, match="ids: expected integer"):
        hc.surprise_mask(jnp.zeros((2, 5, 4)), jnp.zeros((2, 5)))
    with pytest.raises(ValueError, match="threshold"):
        hc.surprise_mask(jnp.zeros((2, 5, 4)), jnp.zeros((2, 5), jnp.int32), threshold=1.5)
    with pytest.raises(TypeError, match="cell: expected a jaxrnn Cell"):
        hc.masked(object())
