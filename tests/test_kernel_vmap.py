"""The kernels' batching rule (issue 18): under ``jax.vmap`` the LSTM, GRU, Elman, Jordan and
minGRU/minLSTM kernels (and the weight-gradient product) run every member in one custom call
(``vmap_method="broadcast_all"``, the handler looping over the members, threads taking whole
members). Each member must get what its own kernel call gives, and what the plain ``lax.scan``
gives; a NaN in one member stays in that member."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn
from jaxrnn import kernels
from jaxrnn.cells import registry
from jaxrnn.kernels import ops

pytestmark = pytest.mark.skipif(not kernels.available(), reason="the CPU kernels are not built")

# every registered cell with a CPU kernel, built from a width (output as wide as the state)
CELLS = registry.names(kernel=True)
B, T, F, H = 16, 6, 4, 16  # K = 8 members of this size pass the threshold of the member split


def _members(cell, K, seed=0):
    """K members' parameters (the initialiser's draw plus each member's own noise), stacked."""
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map(
        lambda a: jnp.asarray(np.asarray(a) + 0.2 * rng.normal(size=(K, *a.shape)), jnp.float32),
        cell.init(jax.random.key(seed), F))


def _loss(cell, lengths, impl="auto"):
    def f(p, xs, h0):
        carry = jax.tree_util.tree_map(lambda c: jnp.broadcast_to(h0, c.shape),
                                       cell.initial_carry(p, (B,)))
        final, ys = jaxrnn.run(cell, p, xs, carry=carry, lengths=lengths, impl=impl)
        w = jnp.cos(jnp.arange(ys.size, dtype=ys.dtype)).reshape(ys.shape)
        return jnp.sum(jnp.tanh(ys) * w) + sum(jnp.sum(c ** 2)
                                               for c in jax.tree_util.tree_leaves(final))

    return jax.value_and_grad(f, argnums=(0, 1, 2))


def _inputs(K, shared_x):
    rng = np.random.default_rng(K)
    xs = rng.normal(size=(B, T, F) if shared_x else (K, B, T, F)).astype(np.float32)
    h0 = (0.3 * rng.normal(size=(K, H))).astype(np.float32)
    lengths = jnp.asarray(rng.integers(0, T + 1, size=B), jnp.int32)
    return jnp.asarray(xs), jnp.asarray(h0), lengths


def _member(tree, k):
    return jax.tree_util.tree_map(lambda a: a[k], tree)


def _leaves(tree):
    return [np.asarray(a) for a in jax.tree_util.tree_leaves(tree)]


@functools.cache
def _compiled(name, K, shared_x, with_scan):
    """(inputs, the vmapped kernel path, the vmapped plain scan's results (or None), one
    member's kernel path), compiled once per configuration (the member team is read at every
    call)."""
    cell = registry.get(name).make(H)
    params = _members(cell, K)
    xs, h0, lengths = _inputs(K, shared_x)
    x_axis = None if shared_x else 0
    many = jax.jit(jax.vmap(_loss(cell, lengths), in_axes=(0, x_axis, 0)))
    scan = (jax.jit(jax.vmap(_loss(cell, lengths, "scan"), in_axes=(0, x_axis, 0)))(
        params, xs, h0) if with_scan else None)
    return (params, xs, h0), many, scan, jax.jit(_loss(cell, lengths))


def _check(name, K, shared_x, with_scan=True):
    (params, xs, h0), many, scan, one = _compiled(name, K, shared_x, with_scan)
    many = many(params, xs, h0)
    for k in range(K):
        alone = one(_member(params, k), xs if shared_x else xs[k], h0[k])
        got = _member(many, k)
        if shared_x:  # the input's cotangent sums over the members
            got = (got[0], (got[1][0], None, got[1][2]))
            alone = (alone[0], (alone[1][0], None, alone[1][2]))
        for a, b in zip(_leaves(got), _leaves(alone), strict=True):
            # the same kernel on the same numbers; only XLA's products around it are batched
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    if not with_scan:
        return
    for a, b in zip(_leaves(many), _leaves(scan), strict=True):
        scale = float(np.abs(b).max()) + 1e-6
        np.testing.assert_allclose(a / scale, b / scale, atol=2e-5)


@pytest.mark.parametrize(("name", "K"), [("lstm", 1), ("lstm", 3), *((n, 8) for n in CELLS)])
@pytest.mark.slow_when(lambda name, K: name == "lstm" or (name, K) == ("gru", 8))
def test_vmapped_kernel_equals_member_calls_and_the_scan(name, K):
    _check(name, K, shared_x=False)


@pytest.mark.parametrize("name", CELLS)
@pytest.mark.slow_when(lambda name: name == "lstm")
def test_vmapped_kernel_with_a_shared_batch(name):
    """The ensemble's case: the weights mapped, the batch not (broadcast to every member)."""
    _check(name, 3, shared_x=True, with_scan=name == "lstm")


@pytest.mark.slow
def test_members_split_over_threads(monkeypatch):
    """JAXRNN_KERNEL_THREADS fixes the member team (read at every call): one thread, two, and a
    team that does not divide the members all give each member its own call's values."""
    for threads in ("1", "2", "3"):
        monkeypatch.setenv("JAXRNN_KERNEL_THREADS", threads)
        _check("lstm", 8, shared_x=False)


@pytest.mark.parametrize("name", CELLS)
def test_nan_in_one_member_stays_in_that_member(name):
    K = 3
    cell = registry.get(name).make(H)
    params = _members(cell, K)
    xs, h0, lengths = _inputs(K, shared_x=False)
    lengths = jnp.full((B,), T, jnp.int32)
    xs = xs.at[1, 2, 3, 0].set(jnp.nan)  # member 1, row 2, step 3
    loss = _loss(cell, lengths)
    many = jax.jit(jax.vmap(loss))(params, xs, h0)
    one = jax.jit(loss)
    for k in (0, 2):
        got, alone = _member(many, k), one(_member(params, k), xs[k], h0[k])
        for a, b in zip(_leaves(got), _leaves(alone), strict=True):
            assert np.isfinite(a).all()
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert np.isnan(float(many[0][1]))  # the loss of member 1
    ys = np.asarray(jax.jit(jax.vmap(lambda p, x: jaxrnn.run(cell, p, x)[1]))(params, xs))
    assert np.isnan(ys[1, 2, 3:]).all()  # from its step on, in its row only
    assert np.isfinite(ys[1, :, :3]).all()
    assert np.isfinite(ys[1, [0, 1, 3]]).all()
    assert np.isfinite(ys[[0, 2]]).all()


@pytest.mark.parametrize("name", CELLS)
def test_vmapped_gradient_is_one_call_per_kernel(name):
    """The compiled program of a vmapped training gradient calls each kernel once for all 8
    members, with no loop around it (vmap_method="sequential" made a while loop of 8 calls)."""
    K = 8
    cell = registry.get(name).make(H)
    params = _members(cell, K)
    xs, h0, lengths = _inputs(K, shared_x=True)
    text = jax.jit(jax.vmap(_loss(cell, lengths), in_axes=(0, None, 0))).lower(
        params, xs, h0).as_text()
    family = registry.get(name).kernel
    for target in (f"jaxrnn_{family}_forward", f"jaxrnn_{family}_backward"):
        assert ops.vmap_method(target) == "broadcast_all"
        assert text.count(f"custom_call @{target}(") == 1
    if family in ("lstm", "gru", "elman"):  # the kernel families with products of their own
        assert text.count("custom_call @jaxrnn_steps_outer(") == 2  # d W_x and d W_h
    assert "stablehlo.while" not in text


def test_members_that_disagree_on_their_axes_are_refused():
    """Called directly with operands whose member axes differ, the handler names the operand
    and the axes it expected, and reads no buffer."""
    K, H_ = 2, 4
    call = jax.ffi.ffi_call("jaxrnn_elman_backward",
                            [jax.ShapeDtypeStruct((K, T, B, H_), jnp.float32),
                             jax.ShapeDtypeStruct((K, B, H_), jnp.float32)],
                            vmap_method="sequential")
    with pytest.raises(Exception, match=r"d_hs must lead with the member axes \(2,\) of "
                                        r"lengths, got shape \(3, 6, 16, 4\)"):
        jax.block_until_ready(call(jnp.zeros((K, H_, H_)), jnp.zeros((K, T, B, H_)),
                                   jnp.zeros((3, T, B, H_)), jnp.zeros((K, 1), jnp.int32),
                                   masked=False, leak=np.float32(1.0)))
