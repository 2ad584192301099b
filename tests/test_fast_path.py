"""The fused backends against the plain scan: same values, same gradients.

``path="xla"`` is the custom-VJP scan (jaxrnn/engine/backends/fused.py), ``path="kernel"`` the
compiled CPU kernel where the cell has one (jaxrnn/engine/backends/cpu_kernels.py).

The plain scan is the reference (it is tested against NumPy float64 equations in
tests/test_cells.py and tests/test_scan.py); the same cell with ``parts=None`` always takes it.
Finite differences check the fused gradient independently for one cell.
"""

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jaxrnn
from jaxrnn import kernels
from jaxrnn.engine.backends import fused

F = 3

CELLS = {
    "lstm": lambda: jaxrnn.lstm(5),
    "lstm_peephole": lambda: jaxrnn.lstm(5, peephole=True),
    "gru": lambda: jaxrnn.gru(5),
    "elman": lambda: jaxrnn.elman(5),
    "elman_readout": lambda: jaxrnn.elman(5, output_size=2),
    "jordan": lambda: jaxrnn.jordan(5, 3),
    "fully_recurrent": lambda: jaxrnn.fully_recurrent(5, 2),
}


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
    params = _randomise(cell.init(jax.random.key(0), F), jax.random.key(1))
    time_major = kw.get("time_major", False)
    shape = (T, *batch_shape, F) if time_major else (*batch_shape, T, F)
    xs = jax.random.normal(jax.random.key(2), shape)
    carry = jax.tree_util.tree_map(
        lambda a: 0.5 * jax.random.normal(jax.random.key(3), a.shape, a.dtype),
        cell.initial_carry(params, batch_shape),
    )
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


@pytest.mark.parametrize("path", ["kernel", "xla"])
@pytest.mark.parametrize("name", sorted(CELLS))
def test_fused_equals_plain_with_padding(name, path):
    # "kernel": the compiled CPU kernel where the cell has one (jaxrnn/kernels), else the XLA
    # fused scan; "xla": the XLA fused scan for every cell.
    lengths = jnp.array([6, 3, 0, 1])
    ctx = kernels.disabled() if path == "xla" else contextlib.nullcontext()
    with ctx:
        _compare(CELLS[name](), (4,), 6, lengths=lengths)


# the engine's handling of direction and layout is cell-independent: three cells suffice (one
# with parameters inside the update, one with a recurrent field other than "h")
@pytest.mark.parametrize("name", ["lstm_peephole", "gru", "jordan"])
def test_fused_equals_plain_reverse_time_major_unrolled(name):
    lengths = jnp.array([5, 2, 5])
    _compare(CELLS[name](), (3,), 5, lengths=lengths, reverse=True, time_major=True, unroll=2)


def test_fused_equals_plain_without_lengths_two_batch_dims_hoisted():
    _compare(jaxrnn.lstm(4), (2, 3), 4, hoist_projection=True)
    _compare(jaxrnn.gru(4), (2, 3), 4)


def test_fused_equals_plain_no_batch_dims():
    _compare(jaxrnn.lstm(4), (), 5)


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
    for name, make in CELLS.items():
        cell = make()
        params = _randomise(cell.init(jax.random.key(0), F), jax.random.key(1))
        carry = jax.tree_util.tree_map(
            lambda a: jnp.full(a.shape, 0.3, a.dtype), cell.initial_carry(params, (2,))
        )
        xp = cell.project(params, jnp.ones((2, F)))
        r = getattr(carry, cell.recurrent_key)
        by_parts = cell.parts.update(params, carry, xp, cell.parts.recurrent_product(params, r))
        by_step = cell.step(params, carry, xp)
        leaves = zip(
            jax.tree_util.tree_leaves(by_parts), jax.tree_util.tree_leaves(by_step), strict=True
        )
        for a, b in leaves:
            np.testing.assert_allclose(a, b, rtol=1e-6, err_msg=name)


@pytest.mark.parametrize("name", sorted(CELLS))
def test_gradient_over_an_empty_sequence(name):
    # T = 0: the outputs are empty and the final carry is the initial one, so the parameters
    # get zero gradient and the carry's cotangent passes through unchanged.
    cell = CELLS[name]()
    p = _randomise(cell.init(jax.random.key(0), F), jax.random.key(1))
    xs = jnp.zeros((2, 0, F))
    carry = jax.tree_util.tree_map(lambda a: a + 0.5, cell.initial_carry(p, (2,)))

    def f(p, carry):
        final, ys = jaxrnn.run(cell, p, xs, carry=carry)
        return jnp.sum(ys) + sum(jnp.sum(3.0 * leaf) for leaf in jax.tree_util.tree_leaves(final))

    g_p, g_c = jax.grad(f, argnums=(0, 1))(p, carry)
    for leaf in jax.tree_util.tree_leaves(g_p):
        np.testing.assert_array_equal(leaf, 0.0)
    for leaf in jax.tree_util.tree_leaves(g_c):
        np.testing.assert_array_equal(leaf, 3.0)
