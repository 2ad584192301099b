"""ConvLSTM: equals the dense LSTM on 1x1 frames with 1x1 kernels, matches a NumPy float64
convolution reference, runs on the common engine (masking, stacking), gradients, errors; the
moving-digits generator."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import jaxrnn
from jaxrnn.cells.convlstm import ConvLSTMParams, conv2d, convlstm


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def _np_conv_same(x, w):
    """float64 'SAME' cross-correlation, x (N, H, W, I), w (kh, kw, I, O)."""
    kh, kw = w.shape[:2]
    ph, pw = kh // 2, kw // 2
    xp = np.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
    N, H, W, _ = x.shape
    out = np.zeros((N, H, W, w.shape[3]))
    for i in range(kh):
        for j in range(kw):
            out += np.einsum("nhwi,io->nhwo", xp[:, i : i + H, j : j + W], w[i, j])
    return out


def _np_convlstm(params, xs):
    """xs (T, N, H, W, I) -> ys (T, N, H, W, C), float64, equations of Shi et al. 2015."""
    wx, wh, b = (np.asarray(a, np.float64) for a in params[:3])
    pp = None if params.peephole is None else np.asarray(params.peephole, np.float64)
    C = wh.shape[2]
    h = np.zeros(xs.shape[1:4] + (C,))
    c = np.zeros_like(h)
    ys = []
    for x in xs.astype(np.float64):
        z = _np_conv_same(x, wx) + _np_conv_same(h, wh) + b
        zi, zf, zg, zo = np.split(z, 4, axis=-1)
        if pp is not None:
            zi, zf = zi + pp[0] * c, zf + pp[1] * c
        c = _sigmoid(zf) * c + _sigmoid(zi) * np.tanh(zg)
        if pp is not None:
            zo = zo + pp[2] * c
        h = _sigmoid(zo) * np.tanh(c)
        ys.append(h)
    return np.stack(ys)


def _random_params(cell, cin, seed, peephole=False):
    p = cell.init(jax.random.key(seed), cin)
    rng = np.random.default_rng(seed)
    b = jnp.asarray(rng.normal(size=p.b.shape), jnp.float32)
    pp = None if not peephole else jnp.asarray(rng.normal(size=p.peephole.shape), jnp.float32)
    return p._replace(b=b, peephole=pp)


@pytest.mark.parametrize("peephole", [pytest.param(False, marks=pytest.mark.slow), True])
def test_1x1_kernel_on_1x1_frame_equals_dense_lstm(peephole):
    C, Cin, T, B = 5, 3, 6, 2
    cell = convlstm(C, kernel_size=1, peephole=peephole)
    p = _random_params(cell, Cin, 0, peephole)
    dense = jaxrnn.lstm(C, peephole=peephole)
    dp = jaxrnn.LSTMParams(w_x=p.w_x[0, 0], w_h=p.w_h[0, 0], b=p.b, peephole=p.peephole)
    xs = jax.random.normal(jax.random.key(1), (B, T, Cin))
    lengths = jnp.array([6, 3])
    dc, dy = jaxrnn.run(dense, dp, xs, lengths=lengths)
    # The frame's 1 x 1 spatial axes are batch axes for the engine: layout (B, 1, 1, T, Cin).
    cc, cy = jaxrnn.run(cell, p, xs[:, None, None], lengths=lengths[:, None, None])
    np.testing.assert_allclose(np.asarray(cy[:, 0, 0]), np.asarray(dy), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(cc.c[:, 0, 0]), np.asarray(dc.c), rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_matches_numpy_reference_with_3x3_kernels():
    cell = convlstm(4, kernel_size=3, input_kernel_size=(3, 5), peephole=True)
    p = _random_params(cell, 2, 3, peephole=True)
    xs = jax.random.normal(jax.random.key(4), (5, 2, 6, 7, 2))  # (T, B, H, W, Cin)
    carry, ys = jaxrnn.run(cell, p, xs, time_major=True)
    want = _np_convlstm(p, np.asarray(xs))
    np.testing.assert_allclose(np.asarray(ys), want, rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(np.asarray(carry.h), want[-1], rtol=2e-4, atol=2e-5)


@pytest.mark.slow
def test_stacked_on_the_common_layers_equals_layer_by_layer():
    a, b = convlstm(3, kernel_size=3), convlstm(2, kernel_size=1)
    layer = jaxrnn.stacked([a, b])
    ps = layer.init(jax.random.key(5), 1)
    xs = jax.random.normal(jax.random.key(6), (2, 5, 5, 4, 1))  # (B, H, W, T, Cin)
    ys = layer.apply(ps, xs)
    _, h = jaxrnn.run(a, ps[0], xs)
    _, h = jaxrnn.run(b, ps[1], h)
    np.testing.assert_allclose(np.asarray(ys), np.asarray(h), rtol=1e-6)
    assert ys.shape == (2, 5, 5, 4, 2)


def test_gradients_match_finite_differences():
    cell = convlstm(2, kernel_size=3)
    p = _random_params(cell, 1, 7)
    xs = jax.random.normal(jax.random.key(8), (3, 1, 4, 4, 1))

    @jax.jit
    def f(p, xs):
        _, ys = jaxrnn.run(cell, p, xs, time_major=True)
        return jnp.sum(ys * jnp.linspace(-1.0, 1.0, ys.size).reshape(ys.shape))

    check_grads(f, (p, xs), order=1, modes=["rev"], atol=2e-2, rtol=2e-2, eps=1e-2)


@pytest.mark.slow
def test_conv2d_matches_numpy():
    x = jax.random.normal(jax.random.key(0), (2, 3, 5, 6, 2))
    w = jax.random.normal(jax.random.key(1), (3, 3, 2, 4))
    got = np.asarray(conv2d(x, w))
    want = _np_conv_same(np.asarray(x, np.float64).reshape(6, 5, 6, 2), np.asarray(w, np.float64))
    np.testing.assert_allclose(got, want.reshape(2, 3, 5, 6, 4), rtol=1e-4, atol=1e-4)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="kernel_size: expected an odd positive int"):
        convlstm(4, kernel_size=2)
    with pytest.raises(ValueError, match="input_kernel_size"):
        convlstm(4, input_kernel_size=(3, 0))
    with pytest.raises(ValueError, match="channels"):
        convlstm(0)
    cell = convlstm(2)
    p = cell.init(jax.random.key(0), 3)
    assert isinstance(p, ConvLSTMParams)
    with pytest.raises(ValueError, match="batch_shape: a ConvLSTM carry needs"):
        cell.initial_carry(p, (4,))
    with pytest.raises(ValueError, match="xs: last dimension must equal the cell's input size 3"):
        jaxrnn.run(cell, p, jnp.zeros((2, 2, 4, 4, 1)), time_major=True)
    with pytest.raises(ValueError, match="x: expected frames"):
        cell.project(p, jnp.zeros((4, 3)))


def test_moving_digits_generator_is_seeded_bounded_and_moves():
    from jaxrnn.tasks.moving_digits import moving_digits

    imgs = np.random.default_rng(0).uniform(size=(10, 8, 8)).astype(np.float32)
    a = moving_digits(imgs, 4, frames=6, size=16, seed=3)
    b = moving_digits(imgs, 4, frames=6, size=16, seed=3)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (4, 6, 16, 16) and a.min() >= 0 and a.max() <= 1
    assert np.all(a.reshape(4, 6, -1).max(-1) > 0)  # digits stay inside the frame
    assert np.any(a[:, 1:] != a[:, :-1])  # and move
    with pytest.raises(ValueError, match="size: the frame must be at least 8"):
        moving_digits(imgs, 1, size=6)
