"""Metrics against NumPy hand computations, invariants, and exact accumulation over batches."""

import math

import numpy as np
import pytest

from jaxrnn.train import metrics as M


def np_nll(z, y):
    m = z.max(-1, keepdims=True)
    lse = (m + np.log(np.exp(z - m).sum(-1, keepdims=True)))[..., 0]
    return lse - np.take_along_axis(z, y[..., None], -1)[..., 0]


def test_accuracy_class_ids_with_mask(rng):
    z = rng.normal(size=(4, 6, 5))
    y = rng.integers(0, 5, (4, 6))
    mask = rng.random((4, 6)) < 0.7
    expected = (z.argmax(-1) == y)[mask].mean()
    np.testing.assert_allclose(M.accuracy(z.astype(np.float32), y.astype(np.int32), mask),
                               expected, rtol=1e-6)


def test_accuracy_one_hot_and_binary(rng):
    z = rng.normal(size=(8, 3)).astype(np.float32)
    y = rng.integers(0, 3, 8)
    np.testing.assert_allclose(M.accuracy(z, np.eye(3, dtype=np.float32)[y]),
                               (z.argmax(-1) == y).mean())
    zb = rng.normal(size=(10,)).astype(np.float32)
    yb = (rng.random(10) < 0.5).astype(np.float32)
    np.testing.assert_allclose(M.accuracy(zb, yb), ((zb > 0) == (yb > 0.5)).mean())


def test_bits_per_character_and_perplexity(rng):
    z = rng.normal(size=(3, 7, 11))
    y = rng.integers(0, 11, (3, 7))
    nats = np_nll(z, y).mean()
    zf, yi = z.astype(np.float32), y.astype(np.int32)
    np.testing.assert_allclose(M.bits_per_character(zf, yi), nats / math.log(2), rtol=1e-5)
    np.testing.assert_allclose(M.perplexity(zf, yi), math.exp(nats), rtol=1e-5)


def test_uniform_prediction_invariants():
    """A uniform model over C symbols has perplexity C and log2(C) bits per symbol."""
    C = 27
    z = np.zeros((2, 5, C), np.float32)
    y = np.arange(10).reshape(2, 5).astype(np.int32)
    np.testing.assert_allclose(M.perplexity(z, y), C, rtol=1e-5)
    np.testing.assert_allclose(M.bits_per_character(z, y), math.log2(C), rtol=1e-5)


def test_rmse_mae_nrmse(rng):
    p, y = rng.normal(size=(5, 9, 2)), rng.normal(size=(5, 9, 2)) * 3 + 1
    mask = rng.random((5, 9)) < 0.6
    d, yv = (p - y)[mask], y[mask]
    pf, yf = p.astype(np.float32), y.astype(np.float32)
    np.testing.assert_allclose(M.rmse(pf, yf, mask), np.sqrt((d ** 2).mean()), rtol=1e-5)
    np.testing.assert_allclose(M.mae(pf, yf, mask), np.abs(d).mean(), rtol=1e-5)
    np.testing.assert_allclose(M.nrmse(pf, yf, mask), np.sqrt((d ** 2).mean()) / yv.std(),
                               rtol=1e-4)


def test_nrmse_of_predicting_the_mean_is_one(rng):
    y = rng.normal(size=(100,)).astype(np.float32)
    np.testing.assert_allclose(M.nrmse(np.full_like(y, y.mean()), y), 1.0, rtol=1e-4)


@pytest.mark.parametrize("name", ["rmse", "mae", "nrmse", "accuracy", "bpc", "perplexity"])
def test_streaming_metric_over_unequal_batches_equals_whole_set(rng, name):
    """Sums accumulated over batches of sizes 3, 5, 2 give the whole-set value exactly."""
    metric = M.get_metric(name)
    if name in ("rmse", "mae", "nrmse"):
        out = rng.normal(size=(10, 4)).astype(np.float32)
        tgt = rng.normal(size=(10, 4)).astype(np.float32)
        direct = {"rmse": M.rmse, "mae": M.mae, "nrmse": M.nrmse}[name]
    else:
        out = rng.normal(size=(10, 6)).astype(np.float32)
        tgt = rng.integers(0, 6, 10).astype(np.int32)
        direct = {"accuracy": M.accuracy, "bpc": M.bits_per_character,
                  "perplexity": M.perplexity}[name]
    sums = None
    for a, b in [(0, 3), (3, 8), (8, 10)]:
        s = metric.stats(out[a:b], tgt[a:b], None)
        sums = s if sums is None else tuple(x + y for x, y in zip(sums, s, strict=True))
    got = M.finalize((metric,), {name: sums})[name]
    np.testing.assert_allclose(got, float(direct(out, tgt)), rtol=2e-5)


def test_get_metric_errors():
    with pytest.raises(ValueError, match="metrics: expected a Metric or one of"):
        M.get_metric("f1")
    with pytest.raises(ValueError, match="names must be unique"):
        M.get_metrics(["rmse", "rmse"])


def test_accuracy_bad_label_shape():
    with pytest.raises(ValueError, match=r"labels: expected class ids of shape"):
        M.accuracy(np.zeros((4, 3), np.float32), np.zeros((5,), np.int32))


def test_error_metric_shape_mismatch():
    with pytest.raises(ValueError, match="targets: expected the shape of predictions"):
        M.rmse(np.zeros((4, 3), np.float32), np.zeros((4,), np.float32))


def test_binary_accuracy_per_step(rng):
    z = rng.normal(size=(4, 6)).astype(np.float32)
    y = (rng.random((4, 6)) < 0.5).astype(np.float32)
    mask = rng.random((4, 6)) < 0.5
    np.testing.assert_allclose(M.binary_accuracy(z, y, mask),
                               ((z > 0) == (y > 0.5))[mask].mean(), rtol=1e-6)
