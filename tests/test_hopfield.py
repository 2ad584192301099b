"""Hopfield networks against NumPy float64 loops, energy descent and fixed points."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrnn.classic import hopfield as hf


def bipolar(rng, shape):
    return np.where(rng.random(shape) < 0.5, -1.0, 1.0).astype(np.float32)


def np_sign_keep(h, s):
    return np.where(h > 0, 1.0, np.where(h < 0, -1.0, s))


def test_hebbian_weights_and_energy_match_numpy(rng):
    xi = bipolar(rng, (5, 40))
    w = hf.hebbian(jnp.asarray(xi))
    ref = sum(np.outer(x, x) for x in xi.astype(np.float64)) / 40
    np.fill_diagonal(ref, 0)
    np.testing.assert_allclose(w, ref, atol=1e-6)
    s = bipolar(rng, (3, 40))
    theta = rng.normal(size=40).astype(np.float32)
    e_ref = [
        -0.5 * sum(ref[i, j] * v[i] * v[j] for i in range(40) for j in range(40))
        + float(theta.astype(np.float64) @ v)
        for v in s.astype(np.float64)
    ]
    np.testing.assert_allclose(hf.energy(w, jnp.asarray(s), jnp.asarray(theta)), e_ref, rtol=1e-5)


def test_stored_patterns_are_fixed_points_at_low_load(rng):
    N, P = 200, 6  # P/N = 0.03, far below 0.138
    xi = jnp.asarray(bipolar(rng, (P, N)))
    w = hf.hebbian(xi)
    np.testing.assert_array_equal(hf.sync_step(w, xi), xi)
    r = hf.recall_async(w, xi, jax.random.key(0))
    np.testing.assert_array_equal(r.state, xi)
    assert np.all(np.asarray(r.steps) == 0) and np.all(np.asarray(r.converged))


def test_sync_recall_matches_numpy_loop(rng):
    N = 60
    # moderate load: several updates, some states may cycle. P odd and N even make every local
    # field an odd multiple of 1/N, so float32 round-off cannot turn an exact tie into a sign.
    xi = bipolar(rng, (9, N))
    w = hf.hebbian(jnp.asarray(xi))
    s0 = bipolar(rng, (10, N))
    r = jax.tree_util.tree_map(np.asarray, hf.recall_sync(w, jnp.asarray(s0), max_steps=7))
    wn = np.asarray(w, np.float64)
    for b in range(10):
        s, steps = s0[b].astype(np.float64), 0
        for _ in range(7):
            new = np_sign_keep(wn @ s, s)
            if np.array_equal(new, s):
                break
            s, steps = new, steps + 1
        np.testing.assert_array_equal(r.state[b], s)
        assert int(r.steps[b]) == steps
        assert bool(r.converged[b]) == np.array_equal(np_sign_keep(wn @ s, s), s)


def test_async_sweep_matches_numpy_loop_and_energy_never_increases(rng):
    N = 50
    xi = bipolar(rng, (7, N))
    w = hf.hebbian(jnp.asarray(xi))
    s0 = bipolar(rng, (4, N))
    order = np.concatenate([rng.permutation(N) for _ in range(3)])
    final, energies = map(np.asarray, hf.async_energy_trace(w, jnp.asarray(s0), jnp.asarray(order)))
    wn = np.asarray(w, np.float64)
    for b in range(4):
        s = s0[b].astype(np.float64)
        es = [-0.5 * s @ wn @ s]
        for i in order:
            s[i] = np_sign_keep(wn[i] @ s, s[i])
            es.append(-0.5 * s @ wn @ s)
        np.testing.assert_array_equal(final[b], s)
        np.testing.assert_allclose(energies[:, b], es[1:], rtol=1e-5, atol=1e-5)
        assert np.all(np.diff(es) <= 1e-12)  # the NumPy float64 energy never rises
        assert es[-1] < es[0]
    assert np.all(np.diff(np.asarray(energies), axis=0) <= 1e-4)
    # async_sweep is the same update
    np.testing.assert_array_equal(
        hf.async_sweep(w, jnp.asarray(s0), jnp.asarray(order[:N])),
        hf.async_energy_trace(w, jnp.asarray(s0), jnp.asarray(order[:N]))[0],
    )


def test_async_recall_reaches_fixed_point_and_repairs_corruption(rng):
    N, P = 120, 4
    xi = bipolar(rng, (P, N))
    w = hf.hebbian(jnp.asarray(xi))
    flips = rng.random(xi.shape) < 0.15
    cue = np.where(flips, -xi, xi)
    r = jax.jit(hf.recall_async)(w, jnp.asarray(cue), jax.random.key(1))
    assert np.all(np.asarray(r.converged))
    np.testing.assert_array_equal(hf.sync_step(w, r.state), r.state)
    np.testing.assert_array_equal(r.state, xi)


def test_modern_update_and_energy_match_numpy(rng):
    P, d, beta = 9, 16, 0.7
    X = rng.normal(size=(P, d)).astype(np.float32)
    q = rng.normal(size=(3, d)).astype(np.float32)
    Xd, qd = X.astype(np.float64), q.astype(np.float64)
    z = beta * qd @ Xd.T
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    np.testing.assert_allclose(
        hf.modern_update(jnp.asarray(X), jnp.asarray(q), beta), p @ Xd, rtol=1e-5, atol=1e-5
    )
    lse = np.log(np.exp(z).sum(-1)) / beta
    e_ref = -lse + 0.5 * (qd**2).sum(-1) + np.log(P) / beta + 0.5 * (Xd**2).sum(-1).max()
    np.testing.assert_allclose(
        hf.modern_energy(jnp.asarray(X), jnp.asarray(q), beta), e_ref, rtol=1e-5
    )
    # the update never increases the energy (Ramsauer et al. 2020, Theorem 1)
    x = jnp.asarray(q)
    for _ in range(3):
        new = hf.modern_update(jnp.asarray(X), x, beta)
        assert np.all(
            np.asarray(
                hf.modern_energy(jnp.asarray(X), new, beta)
                - hf.modern_energy(jnp.asarray(X), x, beta)
            )
            <= 1e-5
        )
        x = new


def test_modern_recall_retrieves_beyond_classical_capacity(rng):
    d, P = 64, 256  # P/d = 4, about 30x the classical Hopfield limit
    X = bipolar(rng, (P, d))
    cue = np.where(rng.random((20, d)) < 0.2, -X[:20], X[:20])
    r = hf.modern_recall(jnp.asarray(X), jnp.asarray(cue), 1.0)
    np.testing.assert_allclose(r.state, X[:20], atol=1e-3)


def test_bad_inputs_raise_clear_errors(rng):
    xi = bipolar(rng, (3, 10))
    with pytest.raises(ValueError, match="patterns: expected bipolar"):
        hf.hebbian(jnp.asarray(xi * 0.5))
    with pytest.raises(TypeError, match="patterns: expected a floating"):
        hf.hebbian(jnp.asarray(xi, jnp.int32))
    with pytest.raises(ValueError, match=r"patterns: expected shape \(P, N\)"):
        hf.hebbian(jnp.zeros((2, 3, 4)))
    w = hf.hebbian(jnp.asarray(xi))
    with pytest.raises(ValueError, match="w: expected a square"):
        hf.energy(w[:, :5], jnp.asarray(xi))
    with pytest.raises(ValueError, match="s: last dimension must be N=10"):
        hf.recall_sync(w, jnp.ones((2, 9)))
    with pytest.raises(ValueError, match="max_steps"):
        hf.recall_sync(w, jnp.asarray(xi), max_steps=0)
    with pytest.raises(ValueError, match="max_sweeps"):
        hf.recall_async(w, jnp.asarray(xi), jax.random.key(0), max_sweeps=-2)
    with pytest.raises(TypeError, match="s: expected an array"):
        hf.recall_sync(w, [1.0] * 10)
    with pytest.raises(ValueError, match="xi: last dimension must be d=10"):
        hf.modern_update(jnp.asarray(xi), jnp.ones((4,)), 1.0)
    with pytest.raises(ValueError, match="beta"):
        hf.modern_update(jnp.asarray(xi), jnp.ones((10,)), 0.0)
