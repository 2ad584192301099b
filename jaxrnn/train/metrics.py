r"""Metrics as pure functions, plus streaming forms that accumulate over batches.

Direct forms (one batch, arrays in, scalar out), each with an optional mask that is a prefix of
the per-element shape (padded steps excluded):

* :func:`accuracy` -- fraction of valid positions where ``argmax(logits) == label``; for a single
  logit per position (binary), the prediction is ``logit > 0``.
* :func:`binary_accuracy` -- ``(logit > 0) == (label > 0.5)`` at every position, any shape.
* :func:`bits_per_character` -- mean softmax cross-entropy in bits, :math:`\bar\ell / \ln 2`.
* :func:`perplexity` -- :math:`\exp(\bar\ell)` with :math:`\bar\ell` in nats.
* :func:`rmse` -- :math:`\sqrt{\overline{(\hat y - y)^2}}`;
  :func:`mae` -- :math:`\overline{|\hat y - y|}`.
* :func:`nrmse` -- RMSE divided by the standard deviation of the (valid) targets, so predicting the
  targets' mean scores 1.

Streaming forms (:class:`Metric`) are what :func:`jaxrnn.train.fit` and
:func:`jaxrnn.train.evaluate` use: ``stats(outputs, targets, mask)`` returns a tuple of *sums*
(jit-friendly), the sums add across batches, and ``result(sums)`` turns them into the value. So a
metric over a data set is exact (an RMSE of the whole set, not a mean of per-batch RMSEs) whatever
the batch sizes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn.train.losses import (
    _check_mask,
    _check_same_shape,
    _shape,
    compiled,
    softmax_cross_entropy,
)

Array = jax.Array
LN2 = math.log(2.0)


def _weights(mask, shape) -> Array:
    if mask is None:
        return jnp.ones(shape, jnp.float32)
    _check_mask(mask, tuple(shape))
    m = jnp.asarray(mask).astype(jnp.float32)
    return jnp.broadcast_to(m.reshape(m.shape + (1,) * (len(shape) - m.ndim)), shape)


def _binary_correct(logits: Array, labels: Array) -> Array:
    _check_same_shape(logits, labels, "logits", "labels")
    return ((jnp.asarray(logits) > 0) == (jnp.asarray(labels) > 0.5)).astype(jnp.float32)


def _correct(logits: Array, labels: Array) -> Array:
    """Per-position 0/1 correctness.

    * integer ``labels`` of shape ``logits.shape[:-1]``: class ids, prediction ``argmax``;
    * float ``labels`` of the shape of ``logits`` ``(..., C)`` with ``C > 1`` and rank >= 2:
      one-hot (or probabilities), compared by ``argmax``;
    * ``labels`` of the shape of ``logits`` otherwise (rank 1, or last axis 1): binary, the
      prediction is ``logit > 0``. For per-step binary outputs use ``(B, T, 1)`` or
      ``binary_accuracy``.
    """
    logits = jnp.asarray(logits)
    labels = jnp.asarray(labels)
    if jnp.issubdtype(labels.dtype, jnp.integer) and _shape(labels) == _shape(logits)[:-1]:
        return (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
    if _shape(labels) == _shape(logits):
        if logits.ndim >= 2 and logits.shape[-1] > 1 and jnp.issubdtype(labels.dtype, jnp.floating):
            return (jnp.argmax(logits, -1) == jnp.argmax(labels, -1)).astype(jnp.float32)
        return _binary_correct(logits, labels)
    raise ValueError(
        f"labels: expected class ids of shape logits.shape[:-1] = {_shape(logits)[:-1]}, one-hot "
        f"labels of shape {_shape(logits)}, or binary labels of shape {_shape(logits)}; got "
        f"{_shape(labels)} ({labels.dtype})"
    )


# --------------------------------------------------------------------------- sums (jit-friendly)

@compiled
def accuracy_stats(logits, labels, mask=None):
    c = _correct(logits, labels)
    w = _weights(mask, c.shape)
    return jnp.sum(c * w), jnp.sum(w)


@compiled
def binary_accuracy_stats(logits, labels, mask=None):
    """Accuracy of one logit per position (``logit > 0`` vs ``label > 0.5``), any shape."""
    c = _binary_correct(logits, labels)
    w = _weights(mask, c.shape)
    return jnp.sum(c * w), jnp.sum(w)


@compiled
def cross_entropy_stats(logits, labels, mask=None):
    """``(sum of NLL in nats, count)``."""
    logits = jnp.asarray(logits)
    w = _weights(mask, _shape(logits)[:-1])
    count = jnp.sum(w)
    mean = softmax_cross_entropy(logits, labels, mask)
    return mean * count, count


@compiled
def error_stats(predictions, targets, mask=None):
    """``(sum of squared errors, sum of absolute errors, count, sum y, sum y^2)``."""
    _check_same_shape(predictions, targets, "predictions", "targets")
    d = jnp.asarray(predictions, jnp.float32) - jnp.asarray(targets, jnp.float32)
    y = jnp.asarray(targets, jnp.float32)
    w = _weights(mask, d.shape)
    return (
        jnp.sum(w * d * d),
        jnp.sum(w * jnp.abs(d)),
        jnp.sum(w),
        jnp.sum(w * y),
        jnp.sum(w * y * y),
    )


def _safe_div(a, b):
    return float(a) / float(b) if float(b) > 0 else float("nan")


def _nrmse_from(sse, count, sy, syy):
    n = float(count)
    if n <= 0:
        return float("nan")
    var = float(syy) / n - (float(sy) / n) ** 2
    return math.sqrt(float(sse) / n) / math.sqrt(var) if var > 0 else float("nan")


# --------------------------------------------------------------------------- streaming metrics

class Metric(NamedTuple):
    """A metric that accumulates over batches.

    Attributes:
      name: key used in logs and history.
      stats: ``stats(outputs, targets, mask) -> tuple of scalar sums``; traceable.
      result: ``result(sums) -> float`` on the host, from the element-wise totals of ``stats``.
    """

    name: str
    stats: Callable[..., tuple]
    result: Callable[[tuple], float]


def accuracy_metric(name: str = "accuracy") -> Metric:
    return Metric(name, accuracy_stats, lambda s: _safe_div(s[0], s[1]))


def binary_accuracy_metric(name: str = "binary_accuracy") -> Metric:
    return Metric(name, binary_accuracy_stats, lambda s: _safe_div(s[0], s[1]))


def bits_per_character_metric(name: str = "bpc") -> Metric:
    return Metric(name, cross_entropy_stats, lambda s: _safe_div(s[0], s[1]) / LN2)


def perplexity_metric(name: str = "perplexity") -> Metric:
    return Metric(name, cross_entropy_stats, lambda s: math.exp(_safe_div(s[0], s[1])))


def rmse_metric(name: str = "rmse") -> Metric:
    return Metric(name, error_stats, lambda s: math.sqrt(_safe_div(s[0], s[2])))


def mae_metric(name: str = "mae") -> Metric:
    return Metric(name, error_stats, lambda s: _safe_div(s[1], s[2]))


def nrmse_metric(name: str = "nrmse") -> Metric:
    return Metric(name, error_stats, lambda s: _nrmse_from(s[0], s[2], s[3], s[4]))


METRICS: dict[str, Callable[[], Metric]] = {
    "accuracy": accuracy_metric,
    "binary_accuracy": binary_accuracy_metric,
    "bpc": bits_per_character_metric,
    "perplexity": perplexity_metric,
    "rmse": rmse_metric,
    "mae": mae_metric,
    "nrmse": nrmse_metric,
}


def get_metric(metric) -> Metric:
    """A :class:`Metric` from itself or its name (a key of :data:`METRICS`)."""
    if isinstance(metric, Metric):
        return metric
    if isinstance(metric, str) and metric in METRICS:
        return METRICS[metric]()
    raise ValueError(
        f"metrics: expected a Metric or one of {sorted(METRICS)}, got {metric!r}"
    )


def get_metrics(metrics) -> tuple[Metric, ...]:
    if metrics is None:
        return ()
    if isinstance(metrics, (str, Metric)):
        metrics = (metrics,)
    out = tuple(get_metric(m) for m in metrics)
    names = [m.name for m in out]
    if len(set(names)) != len(names) or "loss" in names:
        raise ValueError(f"metrics: names must be unique and not 'loss', got {names}")
    return out


def finalize(metrics: tuple[Metric, ...], sums: dict) -> dict[str, float]:
    """Host-side values from accumulated sums ``{name: tuple}``."""
    return {m.name: float(m.result(tuple(np.asarray(x) for x in sums[m.name]))) for m in metrics}


# --------------------------------------------------------------------------- direct forms

@compiled
def accuracy(logits: Array, labels: Array, mask: Array | None = None) -> Array:
    """Fraction of valid positions predicted correctly (see module docstring); 0-d array."""
    c, n = accuracy_stats(logits, labels, mask)
    return c / jnp.maximum(n, 1e-30)


@compiled
def binary_accuracy(logits: Array, labels: Array, mask: Array | None = None) -> Array:
    """Fraction of valid positions where ``(logit > 0) == (label > 0.5)``."""
    c, n = binary_accuracy_stats(logits, labels, mask)
    return c / jnp.maximum(n, 1e-30)


@compiled
def bits_per_character(logits: Array, labels: Array, mask: Array | None = None) -> Array:
    """Mean cross-entropy in bits per position: ``softmax_cross_entropy / ln 2``."""
    return softmax_cross_entropy(logits, labels, mask) / LN2


@compiled
def perplexity(logits: Array, labels: Array, mask: Array | None = None) -> Array:
    """``exp`` of the mean cross-entropy in nats."""
    return jnp.exp(softmax_cross_entropy(logits, labels, mask))


@compiled
def rmse(predictions: Array, targets: Array, mask: Array | None = None) -> Array:
    sse, _, n, _, _ = error_stats(predictions, targets, mask)
    return jnp.sqrt(sse / jnp.maximum(n, 1e-30))


@compiled
def mae(predictions: Array, targets: Array, mask: Array | None = None) -> Array:
    _, sae, n, _, _ = error_stats(predictions, targets, mask)
    return sae / jnp.maximum(n, 1e-30)


@compiled
def nrmse(predictions: Array, targets: Array, mask: Array | None = None) -> Array:
    """RMSE over the (population) standard deviation of the valid targets."""
    sse, _, n, sy, syy = error_stats(predictions, targets, mask)
    n = jnp.maximum(n, 1e-30)
    var = syy / n - (sy / n) ** 2
    return jnp.sqrt(sse / n) / jnp.sqrt(var)


__all__ = [
    "Metric",
    "METRICS",
    "get_metric",
    "get_metrics",
    "finalize",
    "accuracy",
    "binary_accuracy",
    "bits_per_character",
    "perplexity",
    "rmse",
    "mae",
    "nrmse",
    "accuracy_metric",
    "binary_accuracy_metric",
    "bits_per_character_metric",
    "perplexity_metric",
    "rmse_metric",
    "mae_metric",
    "nrmse_metric",
    "accuracy_stats",
    "cross_entropy_stats",
    "error_stats",
]
