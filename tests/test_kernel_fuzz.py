"""The CPU kernels against XLA's paths on random problems (hypothesis; issue 15).

Each example draws a cell with a kernel, its sizes, a sequence length (1 and, where the engine
takes the plain scan, 0), a batch shape (none, one or several dimensions, a dimension of 0),
per-sequence lengths (0 and T included) or none, the direction, the layout and the scale of the
values, and compares the public ``jaxrnn.run`` with the kernels (the default on CPU) against the
same call traced inside ``jaxrnn.kernels.disabled()``: outputs, final carry and the gradients
with respect to parameters, inputs and initial carry, to the tolerances of test_kernels.py.
The examples are derandomized (the same ones every run) and few, as each compiles two programs.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jaxrnn
from jaxrnn import kernels
from jaxrnn.cells import registry

pytestmark = pytest.mark.skipif(
    kernels._compiler() is None, reason="no C++ compiler: the kernels cannot be built here"
)

# every registered cell with a CPU kernel; an output of its own a third of the state's width
CELLS = registry.names(kernel=True)


def _cell(name, hidden):
    return registry.make_variant(name, hidden=hidden, output=max(1, hidden // 3))


@st.composite
def problems(draw):
    name = draw(st.sampled_from(sorted(CELLS)))
    hidden = draw(st.sampled_from([1, 5, 16, 37]))  # below, at and past one 16-wide vector
    features = draw(st.integers(1, 6))
    steps = draw(st.sampled_from([0, 1, 2, 7]))
    batch = tuple(draw(st.lists(st.integers(0, 3), max_size=3)))
    if draw(st.booleans()):
        lengths = np.asarray(draw(st.lists(st.integers(0, steps), min_size=int(np.prod(batch)),
                                           max_size=int(np.prod(batch)))), np.int32)
        lengths = lengths.reshape(batch)
    else:
        lengths = None
    return dict(name=name, hidden=hidden, features=features, steps=steps, batch=batch,
                lengths=lengths, reverse=draw(st.booleans()), time_major=draw(st.booleans()),
                scale=draw(st.sampled_from([0.1, 1.0, 3.0])), seed=draw(st.integers(0, 2**16)))


def _assert_close(got, want, what, atol):
    g_leaves, w_leaves = jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)
    assert len(g_leaves) == len(w_leaves), what
    for g, w in zip(g_leaves, w_leaves, strict=True):
        g, w = np.asarray(g), np.asarray(w)
        assert g.shape == w.shape, what
        scale = 1.0 + float(np.abs(w).max(initial=0.0))
        np.testing.assert_allclose(g / scale, w / scale, atol=atol, err_msg=what)


@pytest.mark.slow
@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(problems())
def test_kernels_match_the_xla_paths(problem):
    p = problem
    cell = _cell(p["name"], p["hidden"])
    key = jax.random.key(p["seed"])
    params = cell.init(key, p["features"])
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.fold_in(key, 1), len(leaves) + 3)
    params = jax.tree_util.tree_unflatten(tree, [
        a + 0.2 * jax.random.normal(k, a.shape, a.dtype) if jnp.issubdtype(a.dtype, jnp.floating)
        else a for a, k in zip(leaves, keys, strict=False)])
    shape = ((p["steps"],) + p["batch"] if p["time_major"] else p["batch"] + (p["steps"],))
    xs = p["scale"] * jax.random.normal(keys[-1], shape + (p["features"],))
    carry = jax.tree_util.tree_map(
        lambda a: 0.5 * jax.random.normal(keys[-2], a.shape, a.dtype),
        cell.initial_carry(params, p["batch"]))
    lengths = None if p["lengths"] is None else jnp.asarray(p["lengths"])
    weights = jax.random.normal(keys[-3], shape + (256,))  # sliced to the outputs' width

    def run_and_grad(params, xs, carry):
        def loss(params, xs, carry):
            final, ys = jaxrnn.run(cell, params, xs, carry=carry, lengths=lengths,
                                   reverse=p["reverse"], time_major=p["time_major"])
            w = weights[..., : ys.shape[-1]]
            leaves = jax.tree_util.tree_leaves(final)
            return jnp.sum(jnp.tanh(ys) * w) + sum(jnp.sum(leaf**2) for leaf in leaves), (
                final, ys)

        (_, out), grads = jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True)(
            params, xs, carry)
        return out, grads

    out, grads = jax.jit(run_and_grad)(params, xs, carry)
    with kernels.disabled():
        out_ref, grads_ref = jax.jit(lambda *a: run_and_grad(*a))(params, xs, carry)
    what = f"{p['name']} {p}"
    # values as test_kernels.py compares them with NumPy (minimal cells: relative to their
    # size, as their candidates grow like k_h past 0); gradients as it compares them with the
    # plain scan's (each leaf scaled by its largest entry)
    _assert_close(out, out_ref, f"outputs, {what}", atol=2e-5)
    _assert_close(grads, grads_ref, f"gradients, {what}", atol=2e-5)
