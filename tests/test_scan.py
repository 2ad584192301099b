"""The scan engine against a plain Python loop over ``cell.step``, padding invariance, reverse,
remat and finite-difference gradients, for every cell (the backends against each other:
tests/test_engine.py)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _reference import (
    CELL_NAMES,
    CELLS,
    F,
    assert_trees_close,
    jit_o0,
    random_carry,
    random_params,
    ref_run,
    slow_beyond,
    to_jax,
)
from jax.flatten_util import ravel_pytree
from jax.test_util import check_grads, check_vjp

import jaxrnn

T = 7  # not a multiple of the remat chunk 4
JIT = pytest.mark.parametrize("use_jit", [False, True], ids=["eager", "jit"])


def _tree_index(tree, idx):
    return jax.tree_util.tree_map(lambda a: a[idx], tree)


def _tree_reshape(tree, lead):
    return jax.tree_util.tree_map(lambda a: a.reshape(*lead, a.shape[-1]), tree)


@functools.cache
def _loop_reference(name):
    """params, xs (2, 3, T, F), carry0 (2, 3, *) and the result of a plain Python loop over
    ``cell.step(params, carry, cell.project(params, x_t))``."""
    cell = CELLS[name]
    params_np = random_params(cell, seed=21)
    params = to_jax(params_np)
    xs = jnp.asarray(np.random.default_rng(22).standard_normal((2, 3, T, F)), jnp.float32)
    carry0 = to_jax(random_carry(cell, params_np, (2, 3), seed=23))

    # jit only to compile the T unrolled steps once instead of dispatching each op eagerly
    @jax.jit
    def python_loop(p, x, c):
        ys = []
        for t in range(T):
            c, y = cell.step(p, c, cell.project(p, x[..., t, :]))
            ys.append(y)
        return c, jnp.stack(ys, axis=-2)

    final, ys = python_loop(params, xs, carry0)
    return params, xs, carry0, final, ys


# layout, options: every layout and every option value appears at least once, several combined.
CONFIGS = {
    "batch": ("batch", {}),
    "time_hoist": ("time", {"hoist_projection": True}),
    "batch2d_unroll3": ("batch2d", {"unroll": 3}),
    "nobatch_hoist": ("nobatch", {"hoist_projection": True}),
    "nobatch_remat": ("nobatch", {"remat": True}),
    "batch_remat4": ("batch", {"remat": 4}),
}


def _layout(layout, xs, carry, final, ys):
    """The inputs and expected outputs of the (2, 3) reference in the given layout."""
    if layout == "batch2d":
        return xs, carry, final, ys
    if layout == "nobatch":
        pick = lambda tree: _tree_index(tree, (1, 2))
        return pick(xs), pick(carry), pick(final), pick(ys)
    flat = lambda a: a.reshape(6, *a.shape[2:])
    xs, ys = flat(xs), flat(ys)
    carry, final = _tree_reshape(carry, (6,)), _tree_reshape(final, (6,))
    if layout == "time":
        xs, ys = jnp.swapaxes(xs, 0, 1), jnp.swapaxes(ys, 0, 1)
    return xs, carry, final, ys


@pytest.mark.parametrize("name", CELL_NAMES)
def test_run_matches_python_loop(name):
    """Every layout and option of ``run`` against the plain loop (all configs in one program to
    keep compile time down)."""
    cell = CELLS[name]
    params, xs, carry0, final0, ys0 = _loop_reference(name)
    cases = {k: _layout(layout, xs, carry0, final0, ys0) for k, (layout, _) in CONFIGS.items()}

    @jit_o0
    def all_configs(p, inputs):
        return {
            k: jaxrnn.run(cell, p, inputs[k][0], carry=inputs[k][1],
                          time_major=CONFIGS[k][0] == "time", **CONFIGS[k][1])
            for k in CONFIGS
        }

    got = all_configs(params, {k: v[:2] for k, v in cases.items()})
    for k, (_, _, want_final, want_ys) in cases.items():
        final, ys = got[k]
        assert ys.shape == want_ys.shape, k
        assert_trees_close(final, want_final, atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(ys, want_ys, atol=1e-5, rtol=1e-5, err_msg=k)


@JIT
def test_run_default_carry_is_initial_carry(use_jit):
    cell = CELLS["lstm"]
    params, xs, _, _, _ = _loop_reference("lstm")
    run = lambda p, x, c: jaxrnn.run(cell, p, x, carry=c)
    run = jax.jit(run) if use_jit else run
    a = run(params, xs, None)
    b = run(params, xs, cell.initial_carry(params, (2, 3)))
    assert_trees_close(a, b, atol=0, rtol=0)


# --------------------------------------------------------------------------- remat

def _gradients_by_mode(name, modes):
    """value_and_grad of a loss over ``run`` (reverse, lengths with a zero and a partial length,
    T=7, a non-zero initial carry), w.r.t. params, inputs and carry, for each run mode."""
    cell = CELLS[name]
    params, xs, carry0, _, _ = _loop_reference(name)
    xs, carry0 = xs[0], _tree_index(carry0, 0)  # (3, T, F)
    lengths = jnp.array([T, 0, 4])
    w = jnp.asarray(np.random.default_rng(5).standard_normal((3, T, cell.output_size)))

    def loss(p, x, c, mode):
        final, ys = jaxrnn.run(cell, p, x, carry=c, lengths=lengths, reverse=True, **mode)
        return jnp.sum(ys * w) + sum(jnp.sum(jnp.sin(l)) for l in jax.tree_util.tree_leaves(final))

    @jit_o0
    def all_modes(p, x, c):
        return {k: jax.value_and_grad(loss, argnums=(0, 1, 2))(p, x, c, m)
                for k, m in modes.items()}

    res = all_modes(params, xs, carry0)
    for k in modes:
        # padded inputs never influence anything: their gradient is exactly zero
        d_xs = res[k][1][1]
        np.testing.assert_array_equal(d_xs[1], 0.0)
        np.testing.assert_array_equal(d_xs[2, 4:], 0.0)
    return res


# the engine's remat chunks know no cell: three unlike carries by default, every cell in -m slow
UNLIKE = ("lstm_peephole", "jordan", "gru_cho")


@pytest.mark.parametrize("name", slow_beyond(CELL_NAMES, UNLIKE))
def test_remat_chunks_values_and_gradients_equal_default(name):
    """remat=4 with T=7 (a partial last chunk, padded and masked internally) changes memory, not
    results: values and gradients equal the default run's (the fused path where the cell has
    one). Its forward values are also checked against the Python loop above."""
    res = _gradients_by_mode(name, {"default": {}, "remat4": {"remat": 4}})
    assert_trees_close(res["remat4"], res["default"], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["lstm_peephole", "jordan"])
def test_remat_step_and_plain_scan_gradients_equal_default(name):
    """remat=True and the plain scan (fused_gradient=False, or impl="scan") give the default's
    values and gradients. Cell-agnostic engine code: two cells, with different carries (h and c;
    the previous output y)."""
    res = _gradients_by_mode(
        name, {"default": {}, "plain": {"fused_gradient": False}, "remat": {"remat": True},
               "scan": {"impl": "scan"}}
    )
    for k in ("plain", "remat", "scan"):
        assert_trees_close(res[k], res["default"], atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------- padding

LENGTHS = np.array([0, T, 3, 5])  # an empty, a full and two partial sequences


@functools.cache
def _padded_case(name):
    cell = CELLS[name]
    params_np = random_params(cell, seed=31)
    rng = np.random.default_rng(32)
    # garbage (not zeros) in the padding: it must not leak into anything
    xs = rng.standard_normal((4, T, F)) * 3.0
    carry0 = random_carry(cell, params_np, (4,), seed=33)
    return params_np, xs, carry0


@functools.cache
def _alone(name, reverse):
    """Each sequence run alone through ``run``, unpadded and without a batch dimension;
    reverse runs the flipped sequence and flips its outputs back. ``disable_jit`` makes the
    scan a Python loop, so these many differently shaped runs cost no compilation. A length-0
    sequence leaves the carry as it is and has no outputs."""
    cell = CELLS[name]
    params_np, xs, carry0 = _padded_case(name)
    params, xs, carry0 = to_jax(params_np), to_jax(xs), to_jax(carry0)
    out = []
    with jax.disable_jit():
        for b, L in enumerate(LENGTHS):
            c = _tree_index(carry0, b)
            if L == 0:
                out.append((c, jnp.zeros((0, cell.output_size))))
                continue
            seq = xs[b, :L][::-1] if reverse else xs[b, :L]
            final, ys = jaxrnn.run(cell, params, seq, carry=c)
            out.append((final, ys[::-1] if reverse else ys))
    return out


# jit for every cell; eagerly (each op compiled on its own, slow) for three unlike carries
PADDING_CASES = [pytest.param(n, True, id=f"{n}-jit") for n in CELL_NAMES] + [
    pytest.param(n, False, id=f"{n}-eager", marks=pytest.mark.slow if n == "lstm_peephole" else ())
    for n in ("lstm_peephole", "jordan", "gru_cho")
]


@pytest.mark.parametrize("name, use_jit", PADDING_CASES)
def test_padding_invariance(name, use_jit):
    """A padded batch (lengths 0, T, 3, 5; garbage in the padding; a non-zero initial carry)
    gives, forwards and in reverse, each sequence's outputs and final carry as when it runs
    alone and unpadded, zeros past each length, and agrees with the NumPy recurrence."""
    cell = CELLS[name]
    params_np, xs_np, carry_np = _padded_case(name)
    params, xs, carry0 = to_jax(params_np), to_jax(xs_np), to_jax(carry_np)

    def both(p, x, c, n):
        return [jaxrnn.run(cell, p, x, carry=c, lengths=n, reverse=r) for r in (False, True)]

    both = jax.jit(both) if use_jit else both
    results = both(params, xs, carry0, jnp.asarray(LENGTHS))
    for reverse, (final, ys) in zip((False, True), results, strict=True):
        assert ys.shape == (4, T, cell.output_size)
        for b, L in enumerate(LENGTHS):
            want_final, want_ys = _alone(name, reverse)[b]
            assert_trees_close(_tree_index(final, b), want_final, atol=1e-5, rtol=1e-5)
            np.testing.assert_allclose(ys[b, :L], want_ys, atol=1e-5, rtol=1e-5)
            np.testing.assert_array_equal(ys[b, L:], 0.0)
        # length 0: the carry is exactly the initial one
        assert_trees_close(_tree_index(final, 0), _tree_index(carry0, 0), atol=0, rtol=0)
        ref_final, ref_ys = ref_run(name, params_np, xs_np, carry_np, LENGTHS, reverse=reverse)
        assert_trees_close(final, ref_final)
        np.testing.assert_allclose(ys, ref_ys, atol=2e-5, rtol=2e-5)




@pytest.mark.parametrize("name", ["lstm", "jordan"])
def test_zero_length_time_axis(name):
    """T = 0 is a valid (empty) sequence: the carry passes through, the outputs are empty; the
    params get zero gradient and the carry's cotangent passes through unchanged."""
    cell = CELLS[name]
    params = to_jax(random_params(cell))
    carry = to_jax(random_carry(cell, random_params(cell), (2,)))
    final, ys = jaxrnn.run(cell, params, jnp.zeros((2, 0, F)), carry=carry,
                           lengths=jnp.zeros(2, jnp.int32), reverse=True)
    assert ys.shape == (2, 0, cell.output_size)
    assert_trees_close(final, carry, atol=0, rtol=0)

    def f(p, c):
        final, ys = jaxrnn.run(cell, p, jnp.zeros((2, 0, F)), carry=c)
        return jnp.sum(ys) + sum(jnp.sum(3.0 * leaf) for leaf in jax.tree_util.tree_leaves(final))

    g_p, g_c = jax.grad(f, argnums=(0, 1))(params, carry)
    for leaf in jax.tree_util.tree_leaves(g_p):
        np.testing.assert_array_equal(leaf, 0.0)
    for leaf in jax.tree_util.tree_leaves(g_c):
        np.testing.assert_array_equal(leaf, 3.0)


@pytest.mark.parametrize("name", ["lstm", "jordan"])
def test_padding_invariance_two_batch_dims_time_major(name):
    """Masking with a 2-D batch shape and time-major layout, against the NumPy reference:
    forwards with the projection hoisted (the fused path's projected variant where the cell has
    one), backwards rematerialised in chunks of 2."""
    cell = CELLS[name]
    params = random_params(cell, seed=41)
    carry = random_carry(cell, params, (2, 3), seed=42)
    xs = np.random.default_rng(43).standard_normal((2, 3, 5, F))
    lengths = np.array([[5, 0, 2], [1, 4, 3]])
    for reverse in (False, True):
        opts = {"remat": 2} if reverse else {"hoist_projection": True}
        final, ys = jax.jit(
            lambda p, x, c, n, reverse=reverse, opts=opts: jaxrnn.run(
                cell, p, x, carry=c, lengths=n, reverse=reverse, time_major=True, **opts
            )
        )(to_jax(params), jnp.moveaxis(to_jax(xs), 2, 0), to_jax(carry), jnp.asarray(lengths))
        want_final, want_ys = ref_run(name, params, xs, carry, lengths, reverse=reverse)
        assert_trees_close(final, want_final)
        np.testing.assert_allclose(jnp.moveaxis(ys, 0, 2), want_ys, atol=2e-5, rtol=2e-5)


# --------------------------------------------------------------------------- helpers

def _np_reverse_padded(xs, lengths):
    """(B, T, ...) reference: flip each row's first L steps, keep the rest."""
    out = np.array(xs, copy=True)
    for b, L in enumerate(lengths):
        out[b, :L] = xs[b, :L][::-1]
    return out


@JIT
def test_reverse_padded(use_jit):
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((4, T, 2)).astype(np.float32)
    rp = jax.jit(jaxrnn.reverse_padded, static_argnames="time_axis") if use_jit else (
        jaxrnn.reverse_padded
    )
    want = _np_reverse_padded(xs, LENGTHS)
    # batch-major with an explicit time axis, and time-major
    np.testing.assert_array_equal(rp(jnp.asarray(xs), jnp.asarray(LENGTHS), time_axis=1), want)
    got_tm = rp(jnp.asarray(np.swapaxes(xs, 0, 1)), jnp.asarray(LENGTHS), time_axis=0)
    np.testing.assert_array_equal(np.swapaxes(got_tm, 0, 1), want)
    # twice is the identity, for every layout
    twice = rp(rp(jnp.asarray(xs), jnp.asarray(LENGTHS), time_axis=1), jnp.asarray(LENGTHS),
               time_axis=1)
    np.testing.assert_array_equal(twice, xs)
    # no lengths: a plain flip
    np.testing.assert_array_equal(rp(jnp.asarray(xs), None, time_axis=1), xs[:, ::-1])
    # a 2-D batch shape, time in the middle
    xs2 = rng.standard_normal((2, 2, T, 1)).astype(np.float32)
    L2 = np.array([[0, 3], [T, 1]])
    got2 = rp(jnp.asarray(xs2), jnp.asarray(L2), time_axis=2)
    want2 = _np_reverse_padded(xs2.reshape(4, T, 1), L2.reshape(4)).reshape(xs2.shape)
    np.testing.assert_array_equal(got2, want2)


def test_last_valid_and_sequence_mask():
    rng = np.random.default_rng(1)
    ys = rng.standard_normal((4, T, 3)).astype(np.float32)
    got = jaxrnn.last_valid(jnp.asarray(ys), jnp.asarray(LENGTHS))
    want = np.stack([ys[b, L - 1] if L > 0 else np.zeros(3) for b, L in enumerate(LENGTHS)])
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(
        jaxrnn.last_valid(jnp.swapaxes(jnp.asarray(ys), 0, 1), jnp.asarray(LENGTHS),
                          time_major=True), want)
    np.testing.assert_array_equal(jaxrnn.last_valid(jnp.asarray(ys), None), ys[:, -1])
    mask = jaxrnn.sequence_mask(jnp.asarray(LENGTHS), T)
    np.testing.assert_array_equal(mask, np.arange(T)[None, :] < LENGTHS[:, None])


# --------------------------------------------------------------------------- gradients

# on float64 the kernels refuse: the fused custom VJP where the cell has parts, else the scan;
# every backend's gradients equal the scan's for every cell in test_engine
@pytest.mark.parametrize("name", slow_beyond(CELL_NAMES, (*UNLIKE, "min_lstm")))
def test_gradients_match_finite_differences(name):
    """Reverse-mode gradients w.r.t. params, inputs and the initial carry, through lengths
    masking (a full, a zero and a partial length), against central finite differences in
    float64. The arguments are flattened into one vector so check_grads' own bookkeeping stays
    cheap; the reverse/remat paths are checked equal to this one in the remat test."""
    cell = CELLS[name]
    params_np = random_params(cell, seed=51)
    with jax.enable_x64(True):
        args = to_jax((params_np, np.random.default_rng(53).standard_normal((3, 4, F)),
                       random_carry(cell, params_np, (3,), seed=52)), jnp.float64)
        flat, unravel = ravel_pytree(args)
        lengths = jnp.array([4, 0, 2])

        def g(theta):
            p, x, c = unravel(theta)
            final, ys = jaxrnn.run(cell, p, x, carry=c, lengths=lengths)
            return ravel_pytree((final, ys))[0]

        # check_vjp is check_grads' reverse-mode check; handing it the VJP as one program
        # compiled at level 0 (jit_o0 cannot sit under jax.vjp) halves its compile time
        f = jit_o0(g)
        vjp_of = jit_o0(lambda theta, ct: jax.vjp(g, theta)[1](ct)[0])
        assert f(flat).dtype == jnp.float64
        check_vjp(f, lambda theta: (f(theta), lambda ct: (vjp_of(theta, ct),)), (flat,),
                  eps=1e-6, atol=1e-6, rtol=1e-6)


def test_forward_mode_autodiff_with_plain_scan():
    """jax.jvp through ``run(..., fused_gradient=False)`` against finite differences (the fused
    path is a custom VJP and has no forward mode)."""
    cell = CELLS["lstm_peephole"]
    params_np = random_params(cell, seed=61)
    with jax.enable_x64(True):
        args = to_jax((params_np, np.random.default_rng(62).standard_normal((2, 3, F))),
                      jnp.float64)
        flat, unravel = ravel_pytree(args)

        @jax.jit
        def f(theta):
            p, x = unravel(theta)
            out = jaxrnn.run(cell, p, x, lengths=jnp.array([3, 1]), fused_gradient=False)
            return ravel_pytree(out)[0]

        check_grads(f, (flat,), order=1, modes=["fwd"], eps=1e-6, atol=1e-6, rtol=1e-6)
