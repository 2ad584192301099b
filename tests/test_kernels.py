"""The compiled CPU sequence kernels (jaxrnn/kernels) against independent references.

Values: the cell equations written out step by step in NumPy float64, including padding.
Gradients: JAX's own autodiff of the plain scan (itself checked against NumPy and finite
differences in test_scan.py / test_fast_path.py) and finite differences on the kernel path.
Sizes are chosen to reach every code path of the kernels: hidden sizes that are and are not a
multiple of the 16-wide vectors, batches that are and are not a multiple of the 8-row blocks,
and problems split across threads (the team size fixed by JAXRNN_KERNEL_THREADS).
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _reference import minimal_ref_run, ref_step
from jax.test_util import check_grads

import jaxrnn
from jaxrnn import kernels
from jaxrnn.cells import registry
from jaxrnn.engine.backends import fused
from jaxrnn.kernels import ops

# Without a C++ compiler the library falls back to pure JAX by design; with one, a kernel that
# fails to build is a defect, so the tests then fail (test_status...) instead of skipping.
pytestmark = pytest.mark.skipif(
    kernels._compiler() is None, reason="no C++ compiler: the kernels cannot be built here"
)


def _np_run(name, p, xs, lengths):
    """The cells' equations in float64 (``_reference``'s NumPy steps), one step at a time, with
    each row frozen from its length on; xs (B, T, F). Returns (ys, h, c), c zero for GRU/Elman."""
    xs = np.asarray(xs, np.float64)
    B, T, _ = xs.shape
    H = p.w_h.shape[0]
    carry = MAKE[name](H).initial_carry(p, (B,))
    carry = type(carry)(*(np.zeros((B, H)) for _ in carry))
    ys = np.zeros((B, T, H))
    for t in range(T):
        new, y = ref_step(name, p, carry, xs[:, t])
        valid = (t < lengths)[:, None] if lengths is not None else np.ones((B, 1), bool)
        carry = type(carry)(*(np.where(valid, n, c) for n, c in zip(new, carry, strict=True)))
        ys[:, t] = np.where(valid, y, 0.0)
    return ys, carry.h, getattr(carry, "c", np.zeros((B, H)))


MAKE = {"lstm": jaxrnn.lstm, "gru": jaxrnn.gru, "elman": jaxrnn.elman}
SIZES = [(3, 5, 4, 7), (11, 9, 6, 37), (32, 12, 16, 64), (9, 6, 5, 160)]  # B, T, F, H


def _params(cell, F, seed=0):
    p = cell.init(jax.random.key(seed), F)
    leaves, tree = jax.tree_util.tree_flatten(p)
    keys = jax.random.split(jax.random.key(seed + 1), len(leaves))
    return jax.tree_util.tree_unflatten(
        tree, [a + 0.2 * jax.random.normal(k, a.shape) for a, k in zip(leaves, keys, strict=True)]
    )


@pytest.mark.parametrize("name", sorted(MAKE))
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("padded", [False, True])
@pytest.mark.slow_when(lambda name, size, padded: name == "elman" and not padded)
def test_kernel_matches_numpy_equations(name, size, padded):
    B, T, F, H = size
    cell = MAKE[name](H)
    p = _params(cell, F)
    xs = jax.random.normal(jax.random.key(5), (B, T, F))
    lengths = np.random.default_rng(0).integers(0, T + 1, size=B) if padded else None
    final, ys = jax.jit(lambda p, xs: jaxrnn.run(cell, p, xs, lengths=lengths))(p, xs)
    ys_ref, h_ref, c_ref = _np_run(name, p, xs, lengths)
    np.testing.assert_allclose(ys, ys_ref, atol=2e-5, rtol=1e-4)
    np.testing.assert_allclose(final.h, h_ref, atol=2e-5, rtol=1e-4)
    if name == "lstm":
        np.testing.assert_allclose(final.c, c_ref, atol=2e-5, rtol=1e-4)


def _loss(cell, lengths, **kw):
    def f(p, xs, carry):
        final, ys = jaxrnn.run(cell, p, xs, carry=carry, lengths=lengths, **kw)
        w = jnp.cos(jnp.arange(ys.size, dtype=ys.dtype)).reshape(ys.shape)
        leaves = jax.tree_util.tree_leaves(final)
        return jnp.sum(jnp.tanh(ys) * w) + sum(jnp.sum(leaf**2) for leaf in leaves)

    return f


def _assert_gradients_match_the_plain_scan(cell, B, T, F):
    """Gradients (parameters, inputs, initial carry) through the kernel path against JAX's
    autodiff of the plain scan (``parts=None``), with padding."""
    p = _params(cell, F)
    xs = jax.random.normal(jax.random.key(5), (B, T, F))
    carry = jax.tree_util.tree_map(lambda a: 0.3 * jnp.ones_like(a), cell.initial_carry(p, (B,)))
    lengths = jnp.asarray(np.random.default_rng(1).integers(0, T + 1, size=B))
    args = (p, xs, carry)
    g_kernel = jax.jit(jax.grad(_loss(cell, lengths), argnums=(0, 1, 2)))(*args)
    plain = cell._replace(parts=None)
    g_plain = jax.jit(jax.grad(_loss(plain, lengths), argnums=(0, 1, 2)))(*args)
    for a, b in zip(jax.tree_util.tree_leaves(g_kernel), jax.tree_util.tree_leaves(g_plain),
                    strict=True):
        scale = float(jnp.abs(b).max()) + 1e-6
        np.testing.assert_allclose(a / scale, b / scale, atol=2e-5)


@pytest.mark.parametrize("name", sorted(MAKE))
@pytest.mark.parametrize("size", SIZES[1:])
def test_kernel_gradients_match_autodiff_of_the_plain_scan(name, size):
    B, T, F, H = size
    _assert_gradients_match_the_plain_scan(MAKE[name](H), B, T, F)


@pytest.mark.parametrize("name", sorted(MAKE))
@pytest.mark.slow_when(lambda name: name == "elman")
def test_kernel_gradient_matches_finite_differences(name):
    cell = MAKE[name](6)
    p = _params(cell, 3)
    xs = jax.random.normal(jax.random.key(2), (2, 5, 3))
    lengths = jnp.array([5, 3])

    def f(p, xs):
        return _loss(cell, lengths)(p, xs, None)

    check_grads(f, (p, xs), order=1, modes=["rev"], atol=2e-2, rtol=2e-2, eps=1e-2)


def test_leaky_recurrence_matches_numpy_and_autodiff():
    T, B, F, H, a = 7, 5, 4, 24, 0.3
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(T, B, F)), jnp.float32)
    w_x = jnp.asarray(rng.normal(size=(F, H)), jnp.float32)
    bias = jnp.asarray(rng.normal(size=(H,)), jnp.float32)
    w = jnp.asarray(0.3 * rng.normal(size=(H, H)), jnp.float32)
    h0 = jnp.asarray(rng.normal(size=(B, H)), jnp.float32)
    lengths = jnp.array([7, 0, 3, 6, 1])

    def reference(x, w_x, bias, w, h0):
        def body(h, inp):
            t, x_t = inp
            new = (1 - a) * h + a * jnp.tanh(x_t @ w_x + bias + h @ w)
            kept = jnp.where((t < lengths)[:, None], new, h)
            return kept, kept
        return jax.lax.scan(body, h0, (jnp.arange(T), x))[1]

    h_np, out = np.asarray(h0, np.float64), []
    for t in range(T):
        f64 = [np.asarray(v, np.float64) for v in (x[t], w_x, bias, w)]
        z = f64[0] @ f64[1] + f64[2] + h_np @ f64[3]
        new = (1 - a) * h_np + a * np.tanh(z)
        h_np = np.where((t < np.asarray(lengths))[:, None], new, h_np)
        out.append(h_np)
    args = (x, w_x, bias, w, h0)
    hs = jax.jit(lambda *z: ops.elman_sequence(*z, lengths, leak=a))(*args)
    np.testing.assert_allclose(hs, np.stack(out), atol=2e-5)
    ct = jnp.asarray(rng.normal(size=(T, B, H)), jnp.float32)
    def kernel_loss(*z):
        return jnp.sum(ops.elman_sequence(*z, lengths, leak=a) * ct)

    g_k = jax.grad(kernel_loss, (0, 1, 2, 3, 4))(*args)
    g_r = jax.grad(lambda *z: jnp.sum(reference(*z) * ct), (0, 1, 2, 3, 4))(*args)
    for x, y in zip(g_k, g_r, strict=True):
        np.testing.assert_allclose(x, y, atol=5e-5, rtol=1e-4)


@pytest.mark.parametrize("feedback", [0, 2])
def test_reservoir_kernel_matches_its_plain_scan(feedback):
    cell = jaxrnn.classic.reservoir(40, leak_rate=0.4, bias_scaling=0.3, feedback_size=feedback,
                                    density=0.3)
    p = cell.init(jax.random.key(0), 3)
    xs = jax.random.normal(jax.random.key(1), (4, 9, 3 + feedback))
    lengths = jnp.array([9, 4, 0, 7])
    out = jax.jit(lambda p, xs: jaxrnn.run(cell, p, xs, lengths=lengths))(p, xs)
    ref = jax.jit(lambda p, xs: jaxrnn.run(cell._replace(parts=None), p, xs, lengths=lengths))(
        p, xs)
    for a, b in zip(jax.tree_util.tree_leaves(out), jax.tree_util.tree_leaves(ref), strict=True):
        np.testing.assert_allclose(a, b, atol=2e-5)


@pytest.mark.parametrize(
    "T,B,H,N", [(1, 3, 5, 7), (5, 3, 13, 40), (7, 9, 24, 96), (300, 2, 17, 33), (40, 16, 72, 200)]
)
def test_weight_gradient_products_match_numpy(T, B, H, N):
    # The kernel reads h_{t-1} in place ([h0; hs[:-1]]) and slabs the step rows; odd sizes hit
    # the row, column and slab tails (300 * 2 rows > one slab of 128); the last size is split
    # between threads.
    rng = np.random.default_rng(T * 1000 + H)
    h0, hs, dz = (rng.standard_normal(s).astype(np.float32) for s in ((B, H), (T, B, H), (T, B, N)))
    prev = np.concatenate([h0[None], hs[:-1]]).astype(np.float64).reshape(-1, H)
    want_prev = prev.T @ dz.astype(np.float64).reshape(-1, N)
    want_same = hs.astype(np.float64).reshape(-1, H).T @ dz.astype(np.float64).reshape(-1, N)
    got_prev = jax.jit(ops._prev_outer)(h0, hs, dz)
    got_same = jax.jit(ops._steps_outer)(hs, dz)
    assert got_prev.shape == (H, N) and got_same.shape == (H, N)
    np.testing.assert_allclose(got_prev, want_prev, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got_same, want_same, rtol=1e-4, atol=1e-4)


MINIMAL = {"min_gru": jaxrnn.min_gru, "min_lstm": jaxrnn.min_lstm}


@pytest.mark.parametrize("name", sorted(MINIMAL))
@pytest.mark.parametrize("size", [(3, 5, 4, 7), (11, 9, 6, 37), (32, 64, 5, 160)])  # B, T, F, H
@pytest.mark.parametrize("scale", [1.0, 40.0])
@pytest.mark.slow_when(lambda name, size, scale: (name, scale) == ("min_gru", 1.0)
                       and size == (32, 64, 5, 160))
def test_minimal_kernel_matches_numpy_equations(name, size, scale):
    # The last size has T * B * H > 2^17: the kernel splits the rows between threads.
    # scale 40 drives gate pre-activations far past +-30, where the kernel's exps are clamped:
    # minLSTM's gate ratio must still be right when both gates are nearly shut.
    B, T, F, H = size
    cell = MINIMAL[name](H)
    p = _params(cell, F)
    xs = scale * jax.random.normal(jax.random.key(5), (B, T, F))
    h0 = cell.initial_carry(p, (B,))._replace(h=jax.random.normal(jax.random.key(6), (B, H)))
    lengths = np.random.default_rng(0).integers(0, T + 1, size=B)
    final, ys = jax.jit(lambda p, xs, c: jaxrnn.run(cell, p, xs, carry=c, lengths=lengths))(
        p, xs, h0)
    h_ref, ys_ref = minimal_ref_run(name, p, xs, np.asarray(h0.h), lengths)
    tol = 2e-5 * max(1.0, float(np.abs(ys_ref).max()))  # candidates grow like k_h past 0
    np.testing.assert_allclose(ys, ys_ref, atol=tol, rtol=1e-4)
    np.testing.assert_allclose(final.h, h_ref, atol=tol, rtol=1e-4)


@pytest.mark.parametrize("name", sorted(MINIMAL))
@pytest.mark.parametrize("size", [(11, 9, 6, 37), (32, 64, 5, 160)])
@pytest.mark.slow_when(lambda name, size: (name, size) == ("min_gru", (11, 9, 6, 37)))
def test_minimal_kernel_gradients_match_autodiff_and_finite_differences(name, size):
    B, T, F, H = size
    _assert_gradients_match_the_plain_scan(MINIMAL[name](H), B, T, F)
    small = MINIMAL[name](6)
    ps = _params(small, 3)
    xs_s = jax.random.normal(jax.random.key(3), (2, 5, 3))
    # g(v) has a kink at v = 0 (slope 1/4 below, 1 above): keep every pre-activation farther
    # from it than the finite-difference step, or the difference quotient straddles the kink.
    assert float(jnp.abs(small.project(ps, xs_s)).min()) > 10 * 1e-3
    c_s = small.initial_carry(ps, (2,))._replace(h=jnp.array([[0.5] * 6, [-0.4] * 6]))
    check_grads(_loss(small, jnp.array([5, 3])), (ps, xs_s, c_s), order=1, modes=["rev"],
                atol=2e-2, rtol=2e-2, eps=1e-3)


def _np_jordan(p, xs, y0, lengths):
    """The Jordan net step by step (the shared NumPy step of ``_reference``) with padding;
    xs (B, T, F)."""
    xs = np.asarray(xs, np.float64)
    carry = jaxrnn.cells.JordanState(np.asarray(y0, np.float64))
    ys = np.zeros(xs.shape[:2] + (carry.y.shape[-1],))
    for t in range(xs.shape[1]):
        new, y_new = ref_step("jordan", p, carry, xs[:, t])
        valid = (t < lengths)[:, None]
        carry = type(carry)(np.where(valid, new.y, carry.y))
        ys[:, t] = np.where(valid, y_new, 0.0)
    return ys, carry.y


# B, T, F, H, O: one thread; O not a multiple of 16; units split between threads (two phases
# per step); rows split between threads (B >= 16).
JORDAN_SIZES = [(3, 5, 4, 7, 3), (5, 9, 6, 37, 21), (12, 7, 5, 160, 48), (32, 6, 8, 96, 64)]


@pytest.mark.parametrize("size", JORDAN_SIZES)
@pytest.mark.slow_when(lambda size: size != JORDAN_SIZES[0])
def test_jordan_kernel_matches_numpy_equations(size):
    B, T, F, H, O = size
    cell = jaxrnn.jordan(H, O)
    p = _params(cell, F)
    xs = jax.random.normal(jax.random.key(5), (B, T, F))
    y0 = 0.5 * jax.random.normal(jax.random.key(6), (B, O))
    lengths = np.random.default_rng(0).integers(0, T + 1, size=B)
    final, ys = jax.jit(lambda p, xs, y0: jaxrnn.run(
        cell, p, xs, carry=cell.initial_carry(p, (B,))._replace(y=y0), lengths=lengths))(p, xs, y0)
    ys_ref, y_ref = _np_jordan(p, xs, y0, lengths)
    np.testing.assert_allclose(ys, ys_ref, atol=2e-5, rtol=1e-4)
    np.testing.assert_allclose(final.y, y_ref, atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("size", JORDAN_SIZES[1:])
def test_jordan_kernel_gradients_match_autodiff_of_the_plain_scan(size):
    B, T, F, H, O = size
    _assert_gradients_match_the_plain_scan(jaxrnn.jordan(H, O), B, T, F)


@pytest.mark.slow
def test_jordan_kernel_gradient_matches_finite_differences():
    cell = jaxrnn.jordan(6, 4)
    p = _params(cell, 3)
    xs = jax.random.normal(jax.random.key(2), (2, 5, 3))
    carry = cell.initial_carry(p, (2,))._replace(y=jnp.array([[0.3] * 4, [-0.2] * 4]))
    check_grads(_loss(cell, jnp.array([5, 3])), (p, xs, carry), order=1, modes=["rev"],
                atol=2e-2, rtol=2e-2, eps=1e-2)


@pytest.mark.slow
def test_kernel_under_vmap_and_two_batch_dims():
    cell = jaxrnn.lstm(20)
    p = _params(cell, 4)
    xs = jax.random.normal(jax.random.key(1), (3, 2, 6, 4))  # (vmap, B, T, F)
    out = jax.jit(jax.vmap(lambda x: jaxrnn.run(cell, p, x)[1]))(xs)
    with kernels.disabled():
        ref = jax.jit(jax.vmap(lambda x: jaxrnn.run(cell, p, x)[1]))(xs)
    np.testing.assert_allclose(out, ref, atol=2e-5)
    both = jax.jit(lambda x: jaxrnn.run(cell, p, x)[1])(xs)  # batch shape (3, 2)
    np.testing.assert_allclose(both, ref, atol=2e-5)


@pytest.mark.slow
def test_which_cells_take_the_kernel(monkeypatch):
    taken = []
    for fn in ("lstm_sequence", "gru_sequence", "elman_sequence", "minimal_sequence",
               "jordan_sequence"):
        real = getattr(ops, fn)

        def spy(*a, _real=real, _fn=fn, **k):
            taken.append(_fn)
            return _real(*a, **k)

        monkeypatch.setattr(ops, fn, spy)
    xs = jnp.ones((2, 3, 4))

    def runs(cell):
        taken.clear()
        jaxrnn.run(cell, cell.init(jax.random.key(0), 4), xs)
        return list(taken)

    assert runs(jaxrnn.lstm(8)) == ["lstm_sequence"]
    assert runs(jaxrnn.gru(8)) == ["gru_sequence"]
    assert runs(jaxrnn.elman(8)) == ["elman_sequence"]
    assert runs(jaxrnn.fully_recurrent(8, 2)) == ["elman_sequence"]
    assert runs(jaxrnn.classic.reservoir(8, leak_rate=0.5)) == ["elman_sequence"]
    assert runs(jaxrnn.jordan(8, 3)) == ["jordan_sequence"]
    assert runs(jaxrnn.jordan(8, 3, output_activation="sigmoid")) == []
    assert runs(jaxrnn.min_gru(8)) == ["minimal_sequence"]
    assert runs(jaxrnn.min_lstm(8)) == ["minimal_sequence"]
    assert runs(jaxrnn.min_lstm(8, compute_dtype=jnp.bfloat16)) == []
    # configurations the kernels do not compute take the XLA paths
    assert runs(jaxrnn.lstm(8, peephole=True)) == []
    assert runs(jaxrnn.lstm(8, compute_dtype=jnp.bfloat16)) == []
    assert runs(jaxrnn.lstm(8, activation="relu")) == []
    assert runs(jaxrnn.elman(8, output_size=3)) == []
    assert runs(jaxrnn.gru(8, reset_after=False)) == []
    taken.clear()
    lstm = jaxrnn.lstm(8)
    jaxrnn.run(lstm, lstm.init(jax.random.key(0), 4), xs, hoist_projection=True)
    assert taken == []
    with kernels.disabled():
        assert runs(jaxrnn.lstm(8)) == []
    cell = jaxrnn.lstm(8)
    taken.clear()
    jaxrnn.run(cell, cell.init(jax.random.key(0), 4), xs, fused_gradient=False)
    jaxrnn.run(cell, cell.init(jax.random.key(0), 4), xs, remat=2)
    assert taken == []
    assert fused.supported(cell)


def test_status_names_the_library():
    assert kernels.status().startswith("on (")


def test_hot_helpers_are_inlined_into_the_kernels():
    # A build in which GCC's file-wide inlining budget ran out called the exp out of line (one
    # `exp_bounded` symbol in the library) and ran the LSTM kernel 2x slower (benchmarks/NOTES.md
    # lever 19). The helpers are now forced inline, and each family is its own translation unit
    # with its own budget: no translation unit linked into the library may hold an out-of-line
    # copy (the header's helpers have internal linkage, so each copy would show as a local
    # symbol), and every family's handlers must be there.
    import shutil
    import subprocess

    if shutil.which("nm") is None:
        pytest.skip("nm not installed")
    assert kernels.load()
    symbols = subprocess.run(["nm", "-C", kernels._state["path"]], capture_output=True,
                             text=True, check=True).stdout
    for helper in ("exp_bounded", "sigmoidf", "tanhf_", "clamp_exp", "micro<", "micro_tn<",
                   "micro_rows<", "min_lstm_ratio"):
        assert helper not in symbols, helper
    for target in kernels.TARGETS:
        assert f" T {target}\n" in symbols and f" T {target}_operands\n" in symbols, target


def _ones(*shape):
    return jnp.ones(shape, jnp.float32)


# Each call gives one operand a shape that does not fit the others (T = 5, B = 2, F = 3): the
# kernel must refuse it with an error naming the target and that operand, before touching any
# buffer (a (2, 64) carry with (8, 24) weights once made the GRU kernel read past its buffers
# and return values that changed from call to call).
MISMATCHED = {
    "gru carry wider than its weights": (
        lambda: ops.gru_sequence(_ones(5, 2, 3), _ones(3, 24), _ones(24), _ones(8, 24),
                                 _ones(24), _ones(2, 64)),
        r"jaxrnn_gru_forward: w_x must be \(F, 3 \* H\) = \(3, 192\), got \(3, 24\)"),
    "gru recurrent bias": (
        lambda: ops.gru_sequence(_ones(5, 2, 3), _ones(3, 24), _ones(24), _ones(8, 24),
                                 _ones(25), _ones(2, 8)),
        r"jaxrnn_gru_forward: b_h must be \(3 \* H\) = \(24,\), got \(25,\)"),
    "lstm cell state": (
        lambda: ops.lstm_sequence(_ones(5, 2, 3), _ones(3, 32), _ones(32), _ones(8, 32),
                                  _ones(2, 8), _ones(2, 7)),
        r"jaxrnn_lstm_forward: c0 must be \(B, H\) = \(2, 8\), got \(2, 7\)"),
    "lstm lengths": (
        lambda: ops.lstm_sequence(_ones(5, 2, 3), _ones(3, 32), _ones(32), _ones(8, 32),
                                  _ones(2, 8), _ones(2, 8), jnp.array([5, 3, 1])),
        r"jaxrnn_lstm_forward: lengths must be \(B\) = \(2,\), got \(3,\)"),
    "elman recurrent weights": (
        lambda: ops.elman_sequence(_ones(5, 2, 3), _ones(3, 8), _ones(8), _ones(8, 9),
                                   _ones(2, 8)),
        r"jaxrnn_elman_forward: w_h must be \(H, H\) = \(8, 8\), got \(8, 9\)"),
    "jordan feedback weights": (
        lambda: ops.jordan_sequence(_ones(5, 2, 3), _ones(3, 8), _ones(8), _ones(4, 8),
                                    _ones(8, 4), _ones(4), _ones(2, 6)),
        r"jaxrnn_jordan_forward: w_yh must be \(O, H\) = \(6, 8\), got \(4, 8\)"),
    "minimal carry": (
        lambda: ops.minimal_sequence("min_gru", _ones(5, 2, 3), _ones(3, 16), _ones(16),
                                     _ones(2, 64)),
        r"jaxrnn_min_forward: xp must be \(T, B, k \* H\) = \(5, 2, 128\), got \(5, 2, 16\)"),
    "weight-gradient product": (
        lambda: ops._call("jaxrnn_steps_outer", {"out": (4, 6)}, h0=_ones(2, 3),
                          hs=_ones(5, 2, 3), dz=_ones(5, 2, 6), shifted=True)["out"],
        r"jaxrnn_steps_outer: out must be \(H, N\) = \(3, 6\), got \(4, 6\)"),
    "lstm backward cotangent": (
        lambda: ops._call("jaxrnn_lstm_backward", {"dz": (5, 2, 32), "dh0": (2, 8),
                                                   "dc0": (2, 8)},
                          w_h=_ones(8, 32), gates=_ones(5, 2, 32), cs=_ones(5, 2, 8),
                          c0=_ones(2, 8), d_hs=_ones(5, 2, 9), d_c_last=_ones(2, 8),
                          lengths=jnp.zeros((1,), jnp.int32), masked=False)["dz"],
        r"jaxrnn_lstm_backward: d_hs must be \(T, B, H\) = \(5, 2, 8\), got \(5, 2, 9\)"),
    "rank": (
        lambda: ops._call("jaxrnn_elman_forward", {"hs": (5, 2, 8), "ss": (1,)}, x=_ones(5, 3),
                          w_x=_ones(3, 8), bias=_ones(8), w_h=_ones(8, 8), h0=_ones(2, 8),
                          lengths=jnp.zeros((1,), jnp.int32), masked=False, save_s=False,
                          leak=1.0)["hs"],
        r"jaxrnn_elman_forward: x must have rank 3, got shape \(5, 3\)"),
}


@pytest.mark.parametrize("case", sorted(MISMATCHED))
def test_mismatched_shapes_are_refused_by_name(case):
    call, message = MISMATCHED[case]
    with pytest.raises(jax.errors.JaxRuntimeError, match=message):
        jax.block_until_ready(call())


def test_operands_are_passed_by_name():
    # The order is read from the library; a wrong or missing name is refused in Python.
    assert kernels.operands("jaxrnn_gru_forward")["args"] == [
        "x", "w_x", "bias", "w_h", "b_h", "h0", "lengths"]
    with pytest.raises(TypeError, match="jaxrnn_steps_outer takes"):
        ops._call("jaxrnn_steps_outer", {"out": (3, 6)}, h0=_ones(2, 3), hs=_ones(5, 2, 3),
                  dz=_ones(5, 2, 6))


# Problems whose steps are split between threads when the team has 2 or more: by units when
# the batch is below 2 x the row-split minimum (6 rows per thread with AVX-512, 4 with AVX2:
# LSTM and GRU at B = 5, Jordan at B = 12 on AVX-512), by rows above it (LSTM and GRU at B = 9
# on AVX2, Elman and Jordan at B = 32 everywhere; the 3-thread runs of B = 9 by units). LSTM
# and GRU at B = 32 with weights past the L2 bound (~650 KB) split by rows with 2 threads (two
# register tiles per thread) and by units with 3. T = 6 and 9 leave a last block of fewer than
# the row split's 4 phases. Below the one-thread bound the kernels choose their team themselves,
# so these fix its size. The sizes are each kernel cell's ``kernel_test_sizes`` in the registry.
SPLIT = [(name, size) for name in registry.names(kernel=True)
         for size in registry.get(name).kernel_test_sizes]


@pytest.mark.parametrize("threads", ["1", "2", "3"])
@pytest.mark.parametrize("case", range(len(SPLIT)),
                         ids=[f"{n}-{'x'.join(map(str, s))}" for n, s in SPLIT])
def test_any_team_size_gives_the_equations(monkeypatch, threads, case):
    # JAXRNN_KERNEL_THREADS is read at every call: a number fixes the team size (3 is more than
    # XLA's pool has threads on a 2-core machine: the caller then does the missing helpers'
    # chunks). Forward against NumPy, and with 2 threads the gradients against the plain scan.
    monkeypatch.setenv("JAXRNN_KERNEL_THREADS", threads)
    name, size = SPLIT[case]
    B, T, F, H = size[:4]
    cell = registry.make_variant(name, hidden=H, output=size[4] if len(size) > 4 else None)
    p = _params(cell, F)
    xs = jax.random.normal(jax.random.key(5), (B, T, F))
    lengths = np.random.default_rng(0).integers(0, T + 1, size=B)
    final, ys = jax.jit(lambda p, xs: jaxrnn.run(cell, p, xs, lengths=lengths))(p, xs)
    if name == "jordan":
        ys_ref, y_ref = _np_jordan(p, xs, cell.initial_carry(p, (B,)).y, lengths)
        np.testing.assert_allclose(final.y, y_ref, atol=2e-5, rtol=1e-4)
    else:
        ys_ref, h_ref, _ = _np_run(name, p, xs, lengths)
        np.testing.assert_allclose(final.h, h_ref, atol=2e-5, rtol=1e-4)
    np.testing.assert_allclose(ys, ys_ref, atol=2e-5, rtol=1e-4)
    if threads == "2":
        _assert_gradients_match_the_plain_scan(cell, B, T, F)


# a spinning process beside the other xdist worker: slow (the team's values equal one
# thread's in the default run: test_a_team_confined_to_one_cpu_finishes_with_one_threads_values)
@pytest.mark.slow
def test_row_split_on_a_busy_machine_gives_one_threads_values_bit_for_bit(monkeypatch):
    # With another process busy on the machine, the row split hands a group of rows from a
    # thread that lost its core to one that has nothing left (common.h, run_row_groups). A
    # phase's arithmetic does not depend on the thread that runs it, so every call must equal
    # the one-thread run exactly, forward and gradients: a handover that let a thread read a
    # row's state before the previous owner wrote it would show here as a difference.
    import subprocess
    import sys

    # 12 rows: split by rows with AVX-512 too (its 8-row tile needs 6 rows per thread; at 8
    # rows the kernels split the units instead, and this test would not test the row split).
    B, T, F, H = 12, 400, 16, 128
    rounds = 8
    if kernels.sanitizer() == "thread":
        rounds = 4  # under ThreadSanitizer (tests/test_kernel_threads.py): half the rounds
    cells = {"lstm": jaxrnn.lstm(H), "gru": jaxrnn.gru(H), "jordan": jaxrnn.jordan(H, 32)}
    calls = {}
    for name, cell in cells.items():
        p = _params(cell, F)
        xs = jax.random.normal(jax.random.key(2), (B, T, F))
        fwd = jax.jit(lambda p, xs, cell=cell: jaxrnn.run(cell, p, xs)[1])
        grad = jax.jit(jax.grad(lambda p, xs, cell=cell: jnp.sum(jaxrnn.run(cell, p, xs)[1] ** 2)))
        calls[name] = (fwd, grad, p, xs)

    def values(name):
        fwd, grad, p, xs = calls[name]
        return [np.asarray(a) for a in [fwd(p, xs), *jax.tree_util.tree_leaves(grad(p, xs))]]

    monkeypatch.setenv("JAXRNN_KERNEL_THREADS", "1")
    want = {name: values(name) for name in cells}
    monkeypatch.setenv("JAXRNN_KERNEL_THREADS", "2")
    # the spinner stops by itself once this worker is gone (a killed pytest runs no finally)
    spin = "import os\nparent = os.getppid()\nwhile os.getppid() == parent: pass"
    busy = subprocess.Popen([sys.executable, "-c", spin])
    row_calls = kernels.team_counters()["row_calls"]
    try:
        for _ in range(rounds):
            for name in cells:
                for got, ref in zip(values(name), want[name], strict=True):
                    np.testing.assert_array_equal(got, ref, err_msg=name)
    finally:
        busy.kill()
        busy.wait()
    # every LSTM/GRU/Jordan call above ran on the row team (one per forward, backward)
    assert kernels.team_counters()["row_calls"] - row_calls >= 2 * rounds * len(cells)


_ONE_CPU_SCRIPT = r"""
import os, sys
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # before JAX starts its threads
import jax, numpy as np
import jaxrnn
B, T, F, H = 8, 300, 16, 128
out = {}
for threads in ("1", "2"):
    os.environ["JAXRNN_KERNEL_THREADS"] = threads
    for name, cell in {"elman": jaxrnn.elman(H), "lstm": jaxrnn.lstm(H)}.items():
        p = cell.init(jax.random.key(0), F)
        xs = jax.random.normal(jax.random.key(1), (B, T, F))
        f = jax.jit(lambda p, xs, cell=cell: jaxrnn.run(cell, p, xs)[1])
        out[threads, name] = [np.asarray(f(p, xs)) for _ in range(4)]
        ref = jax.jit(lambda p, xs, cell=cell: jaxrnn.run(cell, p, xs, impl="scan")[1])
        np.testing.assert_allclose(out[threads, name][0], ref(p, xs), atol=2e-5, rtol=2e-5)
for name in ("elman", "lstm"):
    for got in out["2", name]:
        np.testing.assert_array_equal(got, out["1", name][0])
print("ok", sorted(os.sched_getaffinity(0)))
"""


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="needs sched_setaffinity")
def test_a_team_confined_to_one_cpu_finishes_with_one_threads_values():
    # A team member that starts on a CPU of its team moves off it (common.h,
    # move_away_from_team), and a member with nothing left sleeps (IdleWait). A process that
    # may use one CPU only (taskset, a cpuset) leaves nowhere to move: the call must then
    # neither fail nor hang, and give the one-thread values bit for bit, with the process's
    # affinity as it was.
    import subprocess
    import sys

    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    run = subprocess.run([sys.executable, "-c", _ONE_CPU_SCRIPT], capture_output=True,
                         text=True, timeout=300, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.startswith("ok"), run.stdout
