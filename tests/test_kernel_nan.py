"""NaN and inf go through the CPU kernels exactly as through XLA's paths (issue 15.1).

A diverged run must look diverged on every backend: the kernels once clamped NaN to a finite
number (sigmoid(NaN) ~ 1e-13, tanh(NaN) = -1) and were compiled with -ffast-math, so a NaN in
the inputs, the carry or a weight gave finite outputs on CPU. The reference here is the same
public ``jaxrnn.run`` traced with the kernels turned off (``jaxrnn.kernels.disabled()``, a
fresh jit): the positions of NaN and of +-inf in the outputs, the final carry and the gradients
must be identical, and the finite values close.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn
from jaxrnn import kernels
from jaxrnn.cells import registry
from jaxrnn.kernels import ops

pytestmark = pytest.mark.skipif(
    kernels._compiler() is None, reason="no C++ compiler: the kernels cannot be built here"
)

B, T, F, H = 3, 6, 4, 20  # H not a multiple of 16: the vector loops and their scalar tails

# every registered cell with a CPU kernel, at H units (an output narrower than the state where
# the cell has one of its own)
CELLS = registry.names(kernel=True)


def _setup(name):
    cell = registry.make_variant(name, hidden=H, output=5)
    params = cell.init(jax.random.key(0), F)
    xs = jax.random.normal(jax.random.key(1), (B, T, F))
    carry = jax.tree_util.tree_map(lambda a: 0.3 + 0.0 * a, cell.initial_carry(params, (B,)))
    return cell, params, xs, carry


VALUES = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf}


def _cases(params, xs, carry):
    """Every place a bad value goes (the inputs, each carry leaf, each float weight leaf; the
    middle element, neither first nor last in any loop) with each of NaN, inf and -inf: names
    and one-hot masks over ``(params, xs, carry)``, stacked along a leading axis so that one
    compiled, vmapped function runs them all."""
    trees = (params, xs, carry)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(trees)
    names, masks, values = [], [], []
    for i, (path, leaf) in enumerate(leaves):
        if not jnp.issubdtype(jnp.asarray(leaf).dtype, jnp.floating):
            continue
        for vname, v in VALUES.items():
            one_hot = [np.zeros(jnp.shape(x), bool) for _, x in leaves]
            one_hot[i].reshape(-1)[one_hot[i].size // 2] = True
            names.append((("params", "xs", "carry")[path[0].idx] + jax.tree_util.keystr(path[1:]),
                          vname))
            masks.append(one_hot)
            values.append(v)
    stacked = [np.stack(m) for m in zip(*masks, strict=True)]
    return names, jax.tree_util.tree_unflatten(treedef, stacked), jnp.asarray(values, jnp.float32)


def _pattern(a):
    a = np.asarray(a)
    return np.isnan(a), np.isposinf(a), np.isneginf(a)


def _assert_same(got, want, what):
    g_leaves, w_leaves = jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)
    assert len(g_leaves) == len(w_leaves)
    for g, w in zip(g_leaves, w_leaves, strict=True):
        for kind, gp, wp in zip(("NaN", "+inf", "-inf"), _pattern(g), _pattern(w), strict=True):
            assert np.array_equal(gp, wp), (
                f"{what}: {kind} at {int(gp.sum())} places on the kernel path, "
                f"{int(wp.sum())} on XLA's (differing at {np.argwhere(gp != wp)[:5].tolist()})")
        finite = np.isfinite(np.asarray(w))
        scale = 1.0 + float(np.abs(np.asarray(w)[finite]).max(initial=0.0))
        np.testing.assert_allclose(np.asarray(g)[finite] / scale, np.asarray(w)[finite] / scale,
                                   atol=5e-5, err_msg=what)


def _both(fn, *args):
    """``fn(*args)`` jitted with the kernels, and again (a fresh trace) without them."""
    with_kernels = jax.jit(fn)(*args)
    with kernels.disabled():
        without = jax.jit(lambda *a: fn(*a))(*args)
    return with_kernels, without


def _loss(cell):
    def f(params, xs, carry):
        final, ys = jaxrnn.run(cell, params, xs, carry=carry)
        return jnp.sum(ys) + sum(jnp.sum(leaf) for leaf in jax.tree_util.tree_leaves(final))

    return f


@pytest.mark.slow
def test_the_kernels_are_taken(monkeypatch):
    # The comparison below means something only if the first path really runs a kernel.
    taken = []
    for fn in ("lstm_sequence", "gru_sequence", "elman_sequence", "jordan_sequence",
               "minimal_sequence"):
        real = getattr(ops, fn)
        monkeypatch.setattr(ops, fn, lambda *a, _r=real, _n=fn, **k: taken.append(_n) or _r(*a,
                                                                                           **k))
    for name in CELLS:
        taken.clear()
        cell, params, xs, carry = _setup(name)
        jax.jit(lambda p, x, c, cell=cell: jaxrnn.run(cell, p, x, carry=c))(params, xs, carry)
        assert taken, name


# The minimal cells' XLA form works in log space (h = exp(log a) h + exp(log b), with
# log g(k) = log(k + 1/2)): where a pre-activation is infinite its derivative there is inf / inf
# = NaN, while the kernel's is the derivative of the cell's equation itself (d h / d k = c,
# finite). There, and only there, a NaN of XLA's gradient may be finite on the kernel path; every
# NaN of the kernel's must still be one of XLA's, and every other value must agree.
LOG_SPACE_ARTEFACT = {("min_gru", "inf"), ("min_gru", "-inf"), ("min_lstm", "inf"),
                      ("min_lstm", "-inf")}


@pytest.mark.parametrize("name", sorted(CELLS))
def test_nonfinite_values_propagate_as_on_xla(name):
    cell, params, xs, carry = _setup(name)
    names, masks, values = _cases(params, xs, carry)
    loss = _loss(cell)

    def one(mask, value):
        p, x, c = jax.tree_util.tree_map(lambda m, a: jnp.where(m, value, a), mask,
                                         (params, xs, carry))
        return jaxrnn.run(cell, p, x, carry=c), jax.grad(loss, argnums=(0, 1, 2))(p, x, c)

    got, want = _both(jax.vmap(one), masks, values)
    for i, (place, vname) in enumerate(names):
        what = f"{name}, {vname} in {place}"
        g_i, w_i = jax.tree_util.tree_map(lambda a, i=i: np.asarray(a[i]), (got, want))
        _assert_same(g_i[0], w_i[0], f"outputs and final carry, {what}")
        if (name, vname) not in LOG_SPACE_ARTEFACT:
            _assert_same(g_i[1], w_i[1], f"gradients, {what}")
            continue
        for g, w in zip(jax.tree_util.tree_leaves(g_i[1]), jax.tree_util.tree_leaves(w_i[1]),
                        strict=True):
            assert not (np.isnan(g) & ~np.isnan(w)).any(), f"gradients, {what}"
            both = ~np.isnan(w)
            _assert_same(g[both], w[both], f"gradients, {what}")


@pytest.mark.parametrize("name", sorted(CELLS))
def test_nan_in_padding_is_ignored_on_both_paths(name):
    # Past a sequence's length its carry is frozen: a NaN in those inputs reaches neither the
    # outputs nor the final carry, on either path.
    cell, params, xs, carry = _setup(name)
    lengths = jnp.array([T, 2, 0])
    xs = xs.at[1, 4].set(jnp.nan).at[2, 0].set(jnp.nan)
    got, want = _both(lambda p, x, c: jaxrnn.run(cell, p, x, carry=c, lengths=lengths),
                      params, xs, carry)
    _assert_same(got, want, f"{name} with NaN in the padding")
    assert all(np.isfinite(np.asarray(leaf)).all() for leaf in jax.tree_util.tree_leaves(got))
