"""Bidirectional associative memory against NumPy float64 loops, stability and energy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrnn.classic import bam


def bipolar(rng, shape):
    return np.where(rng.random(shape) < 0.5, -1.0, 1.0).astype(np.float32)


def np_sign_keep(h, s):
    return np.where(h > 0, 1.0, np.where(h < 0, -1.0, s))


def test_store_and_energy_match_numpy(rng):
    xs, ys = bipolar(rng, (4, 12)), bipolar(rng, (4, 7))
    w = bam.store(jnp.asarray(xs), jnp.asarray(ys))
    ref = sum(
        np.outer(y, x) for x, y in zip(xs.astype(np.float64), ys.astype(np.float64), strict=True)
    )
    np.testing.assert_array_equal(w, ref)
    x, y = bipolar(rng, (3, 12)), bipolar(rng, (3, 7))
    e_ref = [
        -sum(ref[i, j] * y[b, i] * x[b, j] for i in range(7) for j in range(12)) for b in range(3)
    ]
    np.testing.assert_allclose(bam.energy(w, jnp.asarray(x), jnp.asarray(y)), e_ref, rtol=1e-6)


def test_stored_pairs_are_stable_at_low_load(rng):
    xs, ys = bipolar(rng, (3, 100)), bipolar(rng, (3, 80))
    w = bam.store(jnp.asarray(xs), jnp.asarray(ys))
    np.testing.assert_array_equal(bam.forward(w, jnp.asarray(xs), jnp.asarray(ys)), ys)
    np.testing.assert_array_equal(bam.backward(w, jnp.asarray(xs), jnp.asarray(ys)), xs)
    r = bam.recall(w, x=jnp.asarray(xs))
    np.testing.assert_array_equal(r.x, xs)
    np.testing.assert_array_equal(r.y, ys)
    # noisy cues on either side come back to the stored pair
    cx = np.where(rng.random(xs.shape) < 0.1, -xs, xs)
    cy = np.where(rng.random(ys.shape) < 0.1, -ys, ys)
    rx, ry = bam.recall(w, x=jnp.asarray(cx)), bam.recall(w, y=jnp.asarray(cy))
    for r in (rx, ry):
        np.testing.assert_array_equal(r.x, xs)
        np.testing.assert_array_equal(r.y, ys)
        assert np.all(np.asarray(r.converged))


def test_recall_matches_numpy_loop_and_energy_never_increases(rng):
    n, m, P = 30, 20, 7  # crowded: recall takes several round trips and may fail
    xs, ys = bipolar(rng, (P, n)), bipolar(rng, (P, m))
    w = bam.store(jnp.asarray(xs), jnp.asarray(ys))
    cues = bipolar(rng, (6, n))
    r = jax.tree_util.tree_map(np.asarray, bam.recall(w, x=jnp.asarray(cues), max_steps=10))
    wn = np.asarray(w, np.float64)
    for b in range(6):
        x = cues[b].astype(np.float64)
        y = np_sign_keep(wn @ x, np.ones(m))
        energies, steps = [-y @ wn @ x], 0
        for _ in range(10):
            y_new = np_sign_keep(wn @ x, y)
            energies.append(-y_new @ wn @ x)
            x_new = np_sign_keep(wn.T @ y_new, x)
            energies.append(-y_new @ wn @ x_new)
            if np.array_equal(x_new, x) and np.array_equal(y_new, y):
                break
            x, y, steps = x_new, y_new, steps + 1
        np.testing.assert_array_equal(r.x[b], x)
        np.testing.assert_array_equal(r.y[b], y)
        assert int(r.steps[b]) == steps
        assert np.all(np.diff(energies) <= 1e-9)
        assert bool(r.converged[b])


def test_bad_inputs_raise_clear_errors(rng):
    xs, ys = bipolar(rng, (3, 10)), bipolar(rng, (3, 6))
    with pytest.raises(ValueError, match="ys: expected 3 patterns"):
        bam.store(jnp.asarray(xs), jnp.asarray(ys[:2]))
    with pytest.raises(ValueError, match="xs: expected bipolar"):
        bam.store(jnp.asarray(xs * 2), jnp.asarray(ys))
    w = bam.store(jnp.asarray(xs), jnp.asarray(ys))
    with pytest.raises(ValueError, match="give a cue"):
        bam.recall(w)
    with pytest.raises(ValueError, match="x: last dimension must be n=10"):
        bam.recall(w, x=jnp.ones((2, 6)))
    with pytest.raises(ValueError, match="y: last dimension must be m=6"):
        bam.energy(w, jnp.ones((10,)), jnp.ones((5,)))
    with pytest.raises(ValueError, match="y: batch shape"):
        bam.recall(w, x=jnp.ones((2, 10)), y=jnp.ones((3, 6)))
    with pytest.raises(ValueError, match="max_steps"):
        bam.recall(w, x=jnp.ones((10,)), max_steps=0)
    with pytest.raises(TypeError, match="x: expected a floating"):
        bam.recall(w, x=jnp.ones((10,), jnp.int32))
