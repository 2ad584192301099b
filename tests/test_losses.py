"""Losses against float64 NumPy hand computations; masking and padding invariance; bad input."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrnn.train import losses as L


def np_logsumexp(z, axis=-1):
    m = z.max(axis=axis, keepdims=True)
    return (m + np.log(np.exp(z - m).sum(axis=axis, keepdims=True))).squeeze(axis)


def test_mse_matches_numpy(rng):
    p, y = rng.normal(size=(4, 5, 3)), rng.normal(size=(4, 5, 3))
    got = L.mse(jnp.asarray(p, jnp.float32), jnp.asarray(y, jnp.float32))
    np.testing.assert_allclose(got, np.mean((p - y) ** 2), rtol=1e-5)


def test_mse_mask_broadcasts_over_outputs(rng):
    p, y = rng.normal(size=(4, 5, 3)), rng.normal(size=(4, 5, 3))
    mask = rng.random((4, 5)) < 0.6
    expected = ((p - y) ** 2)[mask].mean()  # every output of every valid step, equally
    got = L.mse(p.astype(np.float32), y.astype(np.float32), mask)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_bce_with_logits_matches_definition(rng):
    z = rng.normal(scale=3.0, size=(6, 7))
    y = (rng.random((6, 7)) < 0.5).astype(np.float64)
    sig = 1.0 / (1.0 + np.exp(-z))
    expected = np.mean(-y * np.log(sig) - (1 - y) * np.log(1 - sig))
    np.testing.assert_allclose(L.binary_cross_entropy_with_logits(z, y), expected, rtol=1e-5)


def test_bce_with_logits_is_stable_for_large_logits():
    z = np.array([80.0, -80.0, 80.0, -80.0], np.float32)
    y = np.array([1.0, 0.0, 0.0, 1.0], np.float32)
    # Per-element losses: log(1+e^-80) ~ 0, ~ 0, 80, 80 (a naive log(sigmoid) gives inf).
    got = float(L.binary_cross_entropy_with_logits(z, y))
    np.testing.assert_allclose(got, 40.0, rtol=1e-6)


def test_softmax_cross_entropy_integer_labels(rng):
    z = rng.normal(size=(3, 4, 6))
    y = rng.integers(0, 6, size=(3, 4))
    nll = np_logsumexp(z) - np.take_along_axis(z, y[..., None], -1)[..., 0]
    got = L.softmax_cross_entropy(z.astype(np.float32), y.astype(np.int32))
    np.testing.assert_allclose(got, nll.mean(), rtol=1e-5)


def test_softmax_cross_entropy_one_hot_equals_integer(rng):
    z = rng.normal(size=(5, 4)).astype(np.float32)
    y = rng.integers(0, 4, size=(5,))
    one_hot = np.eye(4, dtype=np.float32)[y]
    np.testing.assert_allclose(
        L.softmax_cross_entropy(z, one_hot), L.softmax_cross_entropy(z, y.astype(np.int32)),
        rtol=1e-6,
    )


def test_softmax_cross_entropy_gradient_is_softmax_minus_onehot(rng):
    z = rng.normal(size=(5, 4)).astype(np.float32)
    y = rng.integers(0, 4, size=(5,)).astype(np.int32)
    g = jax.grad(lambda z: L.softmax_cross_entropy(z, y))(z)
    p = np.exp(z - np_logsumexp(z)[:, None])
    np.testing.assert_allclose(g, (p - np.eye(4)[y]) / 5, atol=1e-6)


@pytest.mark.parametrize("which", ["mse", "bce", "ce"])
def test_masked_losses_are_padding_invariant(rng, which):
    """Appending padded steps (any values, mask 0) leaves the loss unchanged."""
    B, T, P, C = 3, 5, 4, 3
    lengths = np.array([5, 2, 3])
    mask = np.arange(T) < lengths[:, None]
    garbage = lambda *s: rng.normal(scale=100.0, size=s).astype(np.float32)  # noqa: E731
    if which == "ce":
        out = rng.normal(size=(B, T, C)).astype(np.float32)
        tgt = rng.integers(0, C, size=(B, T)).astype(np.int32)
        out_pad = np.concatenate([out, garbage(B, P, C)], 1)
        tgt_pad = np.concatenate([tgt, rng.integers(0, C, (B, P)).astype(np.int32)], 1)
        fn = L.softmax_cross_entropy
    else:
        out = rng.normal(size=(B, T, 2)).astype(np.float32)
        tgt = (rng.random((B, T, 2)) < 0.5).astype(np.float32)
        out_pad = np.concatenate([out, garbage(B, P, 2)], 1)
        tgt_pad = np.concatenate([tgt, garbage(B, P, 2)], 1)
        fn = L.mse if which == "mse" else L.binary_cross_entropy_with_logits
    mask_pad = np.concatenate([mask, np.zeros((B, P), bool)], 1)
    np.testing.assert_allclose(fn(out_pad, tgt_pad, mask_pad), fn(out, tgt, mask), rtol=1e-6)
    # ... and the mask really excludes steps: the loss over valid steps only, by hand.
    if which == "mse":
        np.testing.assert_allclose(fn(out, tgt, mask), ((out - tgt) ** 2)[mask].mean(), rtol=1e-5)


def test_all_zero_mask_gives_zero_not_nan():
    z = jnp.ones((2, 3, 4))
    assert float(L.mse(z, z * 2, jnp.zeros((2, 3), bool))) == 0.0


def test_float_mask_weights(rng):
    v = rng.normal(size=(4, 3))
    w = rng.random((4,))
    expected = (v * w[:, None]).sum() / (3 * w.sum())
    np.testing.assert_allclose(L.masked_mean(v.astype(np.float32), w), expected, rtol=1e-5)


def test_losses_under_jit_match_eager(rng):
    z = rng.normal(size=(3, 4, 5)).astype(np.float32)
    y = rng.integers(0, 5, (3, 4)).astype(np.int32)
    m = rng.random((3, 4)) < 0.5
    np.testing.assert_allclose(jax.jit(L.softmax_cross_entropy)(z, y, m),
                               L.softmax_cross_entropy(z, y, m), rtol=1e-6)


# ----------------------------------------------------------------------------- bad input

def test_shape_mismatch_names_targets():
    with pytest.raises(ValueError, match=r"targets: expected the shape of predictions \(2, 3\)"):
        L.mse(jnp.ones((2, 3)), jnp.ones((2, 4)))


def test_bce_shape_mismatch_names_labels():
    with pytest.raises(ValueError, match="labels"):
        L.binary_cross_entropy_with_logits(jnp.ones((2, 1)), jnp.ones((2,)))


def test_mask_of_wrong_shape():
    with pytest.raises(ValueError, match=r"mask: .*\(2, 5\)"):
        L.mse(jnp.ones((2, 3, 1)), jnp.ones((2, 3, 1)), jnp.ones((2, 5)))


def test_integer_labels_of_wrong_shape():
    with pytest.raises(ValueError, match=r"labels: integer labels must have shape .*\(4,\)"):
        L.softmax_cross_entropy(jnp.ones((4, 3)), jnp.zeros((4, 3), jnp.int32))


def test_labels_of_wrong_dtype():
    with pytest.raises(TypeError, match="labels: expected integer class ids"):
        L.softmax_cross_entropy(jnp.ones((4, 3)), jnp.zeros((4,), bool))


def test_unknown_loss_name():
    with pytest.raises(ValueError, match="loss: expected a callable or one of"):
        L.get_loss("hinge")


def test_scalar_logits_are_rejected():
    with pytest.raises(ValueError, match=r"logits: expected rank >= 1 \(..., C\), got shape \(\)"):
        L.softmax_cross_entropy(jnp.float32(1.0), jnp.int32(0))


def test_array_likes_are_accepted():
    """Lists work as they do for jnp functions (the losses are compiled, not list-hostile)."""
    np.testing.assert_allclose(L.mse([1.0, 2.0], [1.0, 4.0]), 2.0)
    np.testing.assert_allclose(L.mse([1.0, 2.0], [1.0, 4.0], mask=[1, 0]), 0.0)


# --------------------------------------------------------------------------- label range

@pytest.mark.parametrize("bad", [-1, 5, 99])
def test_out_of_range_labels_raise_naming_labels_when_concrete(rng, bad):
    logits = rng.normal(size=(4, 5)).astype(np.float32)
    labels = np.array([0, 1, bad, 2])
    with pytest.raises(ValueError, match=rf"labels: integer class ids must be in \[0, 5\).*"
                                         rf"got {bad} at index \(2,\)"):
        L.softmax_cross_entropy(logits, labels)
    with pytest.raises(ValueError, match="labels:"):
        L.get_loss("sparse_categorical_crossentropy")(logits, labels)


def test_out_of_range_labels_under_jit_give_nan_never_a_wrapped_class(rng):
    """Inside jit the values are unknown while tracing: the loss is NaN (before, -1 indexed the
    last class and gave a finite, wrong loss)."""
    logits = rng.normal(size=(4, 5)).astype(np.float32)
    f = jax.jit(L.softmax_cross_entropy)
    assert np.isnan(float(f(logits, np.array([0, 1, -1, 2]))))
    assert np.isnan(float(f(logits, np.array([0, 1, 5, 2]))))
    ok = np.array([0, 1, 4, 2])
    logp = logits - np_logsumexp(logits)[:, None]
    np.testing.assert_allclose(f(logits, ok), -logp[np.arange(4), ok].mean(), rtol=1e-5)


def test_padding_labels_under_a_zero_mask_are_not_checked(rng):
    """Padded steps often hold -1: where the mask is 0 they neither raise nor give NaN."""
    logits = rng.normal(size=(2, 3, 4)).astype(np.float32)
    labels = np.array([[1, 2, -1], [3, -1, -1]])
    mask = labels >= 0
    logp = logits - np_logsumexp(logits)[..., None]
    expected = -np.mean([logp[0, 0, 1], logp[0, 1, 2], logp[1, 0, 3]])
    np.testing.assert_allclose(L.softmax_cross_entropy(logits, labels, mask), expected,
                               rtol=1e-5)
    np.testing.assert_allclose(jax.jit(L.softmax_cross_entropy)(logits, labels, mask),
                               expected, rtol=1e-5)


# --------------------------------------------------------------------------- Keras names

@pytest.mark.parametrize("name, ours", [
    ("sparse_categorical_crossentropy", "softmax_cross_entropy"),
    ("categorical_crossentropy", "softmax_cross_entropy"),
    ("mse", "mse"),
    ("mean_squared_error", "mse"),
    ("MSE", "mse"),
    ("mae", "mae"),
    ("mean_absolute_error", "mae"),
    ("binary_crossentropy", "binary_cross_entropy_with_logits"),
])
def test_keras_loss_names(rng, name, ours):
    fn = L.get_loss(name)
    if ours == "softmax_cross_entropy":
        z = rng.normal(size=(6, 4)).astype(np.float32)
        ids = rng.integers(0, 4, 6)
        y = ids if name.startswith("sparse") else np.eye(4, dtype=np.float32)[ids]
        logp = z - np_logsumexp(z)[:, None]
        expected = -logp[np.arange(6), ids].mean()
    elif ours == "binary_cross_entropy_with_logits":
        z = rng.normal(size=(6,)).astype(np.float32)
        y = (rng.random(6) < 0.5).astype(np.float32)
        p = 1 / (1 + np.exp(-z.astype(np.float64)))
        expected = np.mean(-y * np.log(p) - (1 - y) * np.log(1 - p))
    else:
        z = rng.normal(size=(6, 2)).astype(np.float32)
        y = rng.normal(size=(6, 2)).astype(np.float32)
        d = z.astype(np.float64) - y
        expected = np.mean(d * d) if ours == "mse" else np.mean(np.abs(d))
    np.testing.assert_allclose(fn(z, y), expected, rtol=1e-5)


def test_keras_crossentropies_check_the_label_kind(rng):
    z = rng.normal(size=(3, 4)).astype(np.float32)
    with pytest.raises(TypeError, match="labels: sparse_categorical_crossentropy expects integer"):
        L.get_loss("sparse_categorical_crossentropy")(z, np.eye(4, dtype=np.float32)[:3])
    with pytest.raises(TypeError, match="labels: categorical_crossentropy expects float one-hot"):
        L.get_loss("categorical_crossentropy")(z, np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="loss: expected a callable or one of"):
        L.get_loss("hinge")


def _keras():
    os.environ.setdefault("KERAS_BACKEND", "jax")
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "jax":
        pytest.skip("keras runs on another backend here")
    return keras


# Every Keras loss name of the table, against Keras' own function on the same numbers (from
# logits: jaxrnn's models output logits, Keras' from_logits=True).
KERAS_NAMES = ["sparse_categorical_crossentropy", "categorical_crossentropy",
               "binary_crossentropy", "mse", "mean_squared_error", "mae",
               "mean_absolute_error"]


@pytest.mark.parametrize("name", KERAS_NAMES)
@pytest.mark.parametrize("per_step", [False, True])
def test_each_keras_name_equals_keras_own_definition(rng, name, per_step):
    keras = _keras()
    theirs = keras.losses.get(name)
    shape = (6, 5, 4) if per_step else (6, 4)
    z = rng.normal(size=shape).astype(np.float32) * 3
    kwargs = {}
    if name == "sparse_categorical_crossentropy":
        y = rng.integers(0, 4, shape[:-1])
        kwargs["from_logits"] = True
    elif name == "categorical_crossentropy":
        y = np.eye(4, dtype=np.float32)[rng.integers(0, 4, shape[:-1])]
        kwargs["from_logits"] = True
    elif name == "binary_crossentropy":
        y = (rng.random(shape) < 0.5).astype(np.float32)
        kwargs["from_logits"] = True
    else:
        y = rng.normal(size=shape).astype(np.float32)
    expected = float(np.mean(np.asarray(theirs(y, z, **kwargs))))
    np.testing.assert_allclose(float(L.get_loss(name)(z, y)), expected, rtol=2e-6)
