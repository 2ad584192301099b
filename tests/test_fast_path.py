"""The fused backend's own contract: the parts rebuild the step, the engine takes it only where
it applies, batch shapes, and its gradient against finite differences.

Every cell on every backend that claims it (the fused custom-VJP scan, the kernels) against the
plain scan, padded, reversed, time-major, with gradients w.r.t. params, inputs and the initial
carry, is tests/test_engine.py::test_backend_equals_plain_scan; the plain scan against NumPy is
tests/test_scan.py. Here, the same cell with ``parts=None`` (which always takes the scan) is
the reference.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _reference import CELLS as REF_CELLS
from _reference import random_carry, random_params, to_jax
from jax.test_util import check_grads

import jaxrnn
from jaxrnn import kernels
from jaxrnn.engine.backends import fused

F = 3

# every registered cell and test variant with a recurrent product in its StepParts (the fused
# backend's cells)
CELLS = {name: cell for name, cell in REF_CELLS.items()
         if cell.parts is not None and cell.parts.recurrent_product is not None}


def _randomise(params, key):
    """Non-trivial values in every parameter (peepholes and biases start at zero)."""
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(key, len(leaves))
    new = [
        l + 0.3 * jax.random.normal(k, l.shape, l.dtype)
        for l, k in zip(leaves, keys, strict=True)
    ]
    return jax.tree_util.tree_unflatten(tree, new)


def _loss(cell, **kw):
    """A scalar that depends on every output and on the final carry, non-linearly; the outputs
    come back as auxiliary data so one compiled program checks values and gradients."""

    def f(params, xs, carry):
        final, ys = jaxrnn.run(cell, params, xs, carry=carry, **kw)
        w = jnp.cos(jnp.arange(ys.size, dtype=ys.dtype)).reshape(ys.shape)
        loss = jnp.sum(jnp.sin(ys) * w) + sum(
            jnp.sum(l**2) for l in jax.tree_util.tree_leaves(final)
        )
        return loss, (final, ys)

    return f


def _compare(cell, batch_shape, T, **kw):
    # NumPy draws: no eager XLA op (each one compiled on its own) in the set-up
    params = to_jax(random_params(cell, scale=0.3))
    time_major = kw.get("time_major", False)
    shape = (T, *batch_shape, F) if time_major else (*batch_shape, T, F)
    xs = jnp.asarray(np.random.default_rng(2).standard_normal(shape), jnp.float32)
    carry = to_jax(random_carry(cell, params, batch_shape, seed=3))
    plain = cell._replace(parts=None)
    assert fused.supported(cell) and not fused.supported(plain)

    def both(c):
        return jax.jit(jax.grad(_loss(c, **kw), argnums=(0, 1, 2), has_aux=True))(
            params, xs, carry
        )

    (g_f, out_f), (g_p, out_p) = both(cell), both(plain)
    leaves = jax.tree_util.tree_leaves
    for a, b in zip(leaves(out_f), leaves(out_p), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert jax.tree_util.tree_structure(g_f) == jax.tree_util.tree_structure(g_p)
    for a, b in zip(jax.tree_util.tree_leaves(g_f), jax.tree_util.tree_leaves(g_p), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)


@pytest.mark.slow
def test_fused_equals_plain_without_lengths_two_batch_dims_hoisted():
    _compare(jaxrnn.lstm(4), (2, 3), 4, hoist_projection=True)
    _compare(jaxrnn.gru(4), (2, 3), 4)


def test_fused_equals_plain_no_batch_dims():
    _compare(jaxrnn.lstm(4), (), 5)


@pytest.mark.slow
def test_fused_gradient_matches_finite_differences():
    cell = jaxrnn.lstm(3, peephole=True)
    params = _randomise(cell.init(jax.random.key(0), 2), jax.random.key(1))
    xs = jax.random.normal(jax.random.key(2), (2, 4, 2))
    lengths = jnp.array([4, 2])

    def f(params, xs):
        return _loss(cell, lengths=lengths)(params, xs, None)[0]

    check_grads(f, (params, xs), order=1, modes=["rev"], atol=2e-2, rtol=2e-2, eps=1e-2)


def _count_fused_calls(monkeypatch):
    calls = []
    real = fused.fused_scan

    def spy(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(fused, "fused_scan", spy)
    return calls


@kernels.disabled()
def test_engine_takes_the_fused_path_only_where_supported(monkeypatch):
    calls = _count_fused_calls(monkeypatch)
    cell = jaxrnn.lstm(4)
    params = cell.init(jax.random.key(0), F)
    xs = jnp.ones((2, 3, F))
    jaxrnn.run(cell, params, xs)
    assert len(calls) == 1
    # rematerialisation keeps the plain scan (checkpointed chunks)
    jaxrnn.run(cell, params, xs, remat=True)
    jaxrnn.run(cell, params, xs, remat=2)
    assert len(calls) == 1
    # a cell whose step was replaced (recurrent dropout) no longer matches its parts
    masked = jaxrnn.with_recurrent_mask(cell, jnp.ones((2, 4)))
    assert not fused.supported(masked)
    jaxrnn.run(masked, params, xs)
    assert len(calls) == 1
    # GRU in Cho's form has a second, reset-dependent product: no parts
    assert jaxrnn.gru(4, reset_after=False).parts is None
    # impl="fused" runs it, impl="scan" does not, the replaced step refuses it by name
    jaxrnn.run(cell, params, xs, impl="fused")
    jaxrnn.run(cell, params, xs, impl="scan")
    assert len(calls) == 2
    with pytest.raises(ValueError, match="^impl='fused': .*replaced step"):
        jaxrnn.run(masked, params, xs, impl="fused")


def test_parts_rebuild_the_step():
    for name, cell in CELLS.items():
        params = to_jax(random_params(cell))
        carry = to_jax(random_carry(cell, params, (2,)))

        @jax.jit
        def both(params, carry, cell=cell):
            xp = cell.project(params, jnp.ones((2, F)))
            r = getattr(carry, cell.recurrent_key)
            hp = cell.parts.recurrent_product(params, r)
            return cell.parts.update(params, carry, xp, hp), cell.step(params, carry, xp)

        by_parts, by_step = both(params, carry)
        leaves = zip(
            jax.tree_util.tree_leaves(by_parts), jax.tree_util.tree_leaves(by_step), strict=True
        )
        for a, b in leaves:
            np.testing.assert_allclose(a, b, rtol=1e-6, err_msg=name)
