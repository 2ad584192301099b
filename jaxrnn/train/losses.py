r"""Losses with an optional mask, for per-sequence and per-step targets over padded batches.

Every loss returns the **mean over valid elements**: with per-element losses :math:`\ell_i` and
mask weights :math:`m_i \in \{0, 1\}` (or any non-negative weights),

.. math::  L = \frac{\sum_i m_i \ell_i}{\sum_i m_i}

so appending padded steps (``m = 0``) never changes the loss (padding invariance).
The losses are jit-compiled functions (shapes and dtypes are checked while tracing, so bad
input raises before anything runs); inside a jitted train step they are simply inlined. With no mask
it is the plain mean. A mask of shape ``(B..., T)`` broadcasts over any trailing feature axes of
the per-element loss (e.g. the output axis ``O`` of an MSE), which then count ``O`` times each.
An all-zero mask gives a loss of 0 (not NaN).

Shapes: ``B...`` batch, ``T`` time, ``O`` outputs, ``C`` classes.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def compiled(fn=None, *, check=None):
    """``jax.jit(fn)`` that first turns array-likes (lists, NumPy arrays) into arrays, so the
    functions take what ``jnp`` functions take; inside another ``jit`` it simply inlines.

    ``check(*args, **kwargs)``, if given, runs before the jitted call on the (array) arguments;
    it can test *values* when they are concrete (outside any ``jit``)."""
    if fn is None:
        return functools.partial(compiled, check=check)
    jitted = jax.jit(fn)

    def as_array(a):
        return a if a is None else jnp.asarray(a)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        args = tuple(map(as_array, args))
        kwargs = {k: as_array(v) for k, v in kwargs.items()}
        if check is not None:
            check(*args, **kwargs)
        return jitted(*args, **kwargs)

    return wrapper


def _concrete(*arrays) -> bool:
    return not any(isinstance(a, jax.core.Tracer) for a in arrays if a is not None)


def check_label_range(labels, num_classes: int, mask=None, *, argname: str = "labels") -> None:
    """Integer ``labels`` must lie in ``[0, num_classes)`` wherever ``mask`` (a prefix of the
    labels' shape, or None) counts them; raises ValueError naming ``argname`` otherwise.
    Needs concrete values (NumPy arrays, or JAX arrays outside ``jit``)."""
    labels = np.asarray(labels)
    if not np.issubdtype(labels.dtype, np.integer) or labels.size == 0:
        return
    counted = np.ones(labels.shape, bool)
    if mask is not None:
        m = np.asarray(mask) != 0
        counted = np.broadcast_to(m.reshape(m.shape + (1,) * (labels.ndim - m.ndim)),
                                  labels.shape)
    bad = counted & ((labels < 0) | (labels >= num_classes))
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(
            f"{argname}: integer class ids must be in [0, {num_classes}) for {num_classes} "
            f"classes, got {labels[where]} at index {where} "
            f"({int(bad.sum())} out of range)"
        )


def _check_softmax_labels(logits, labels, mask=None) -> None:
    if _concrete(logits, labels, mask) and jnp.ndim(logits) >= 1 and \
            jnp.issubdtype(jnp.asarray(labels).dtype, jnp.integer):
        check_label_range(labels, jnp.shape(logits)[-1], mask)


def _shape(x) -> tuple[int, ...]:
    return tuple(jnp.shape(x))


def _check_same_shape(a, b, a_name: str, b_name: str) -> None:
    if _shape(a) != _shape(b):
        raise ValueError(
            f"{b_name}: expected the shape of {a_name} {_shape(a)}, got {_shape(b)}"
        )


def _check_mask(mask, elem_shape: tuple[int, ...]) -> None:
    """A mask must equal the leading dims of the per-element loss (trailing dims broadcast)."""
    ms = _shape(mask)
    if len(ms) > len(elem_shape) or tuple(elem_shape[: len(ms)]) != ms:
        raise ValueError(
            f"mask: expected a shape that is a prefix of the per-element loss shape {elem_shape} "
            f"(e.g. (B..., T)), got {ms}"
        )


@compiled
def masked_mean(values: Array, mask: Array | None = None) -> Array:
    r"""``sum(mask * values) / sum(mask)`` with the mask broadcast over trailing axes of
    ``values``; the plain mean when ``mask`` is None; 0 when the mask is all zero.

    Args:
      values: per-element values, any shape ``S``.
      mask: None, or bool/float weights of a shape that is a prefix of ``S``.
    Returns:
      A float32 scalar.
    """
    values = jnp.asarray(values)
    if mask is None:
        return jnp.mean(values.astype(jnp.float32))
    _check_mask(mask, _shape(values))
    m = jnp.asarray(mask).astype(jnp.float32)
    m = m.reshape(m.shape + (1,) * (values.ndim - m.ndim))
    m = jnp.broadcast_to(m, values.shape)
    total = jnp.sum(values.astype(jnp.float32) * m)
    count = jnp.sum(m)
    return jnp.where(count > 0, total / jnp.maximum(count, 1e-30), 0.0)


@compiled
def mse(predictions: Array, targets: Array, mask: Array | None = None) -> Array:
    r"""Mean squared error :math:`\ell = (\hat y - y)^2`, averaged over valid elements.

    Args:
      predictions: ``(B..., [T,] O)`` or any shape.
      targets: same shape as ``predictions``.
      mask: optional, a prefix of the shape (e.g. ``(B..., T)``).
    """
    _check_same_shape(predictions, targets, "predictions", "targets")
    diff = jnp.asarray(predictions, jnp.float32) - jnp.asarray(targets, jnp.float32)
    return masked_mean(diff * diff, mask)


@compiled
def binary_cross_entropy_with_logits(
    logits: Array, labels: Array, mask: Array | None = None
) -> Array:
    r"""Sigmoid cross-entropy from logits :math:`z` and labels :math:`y \in [0, 1]`,

    .. math:: \ell = -y \log\sigma(z) - (1 - y)\log(1 - \sigma(z))
                   = \max(z, 0) - z y + \log(1 + e^{-|z|})

    (the right-hand form is the numerically stable one used here).

    Args:
      logits: any shape, e.g. ``(B,)`` or ``(B, 1)`` for one binary label per sequence.
      labels: same shape as ``logits``; 0/1 or soft targets.
      mask: optional, a prefix of the shape.
    """
    _check_same_shape(logits, labels, "logits", "labels")
    z = jnp.asarray(logits, jnp.float32)
    y = jnp.asarray(labels, jnp.float32)
    per = jnp.maximum(z, 0.0) - z * y + jnp.log1p(jnp.exp(-jnp.abs(z)))
    return masked_mean(per, mask)


@compiled(check=_check_softmax_labels)
def softmax_cross_entropy(logits: Array, labels: Array, mask: Array | None = None) -> Array:
    r"""Softmax cross-entropy :math:`\ell = -\log \mathrm{softmax}(z)_y` in nats.

    Args:
      logits: ``(B..., [T,] C)``.
      labels: integer class ids ``(B..., [T])`` (the shape of ``logits`` without ``C``), or a
        float one-hot / probability array of the same shape as ``logits``
        (:math:`\ell = -\sum_c y_c \log\mathrm{softmax}(z)_c`).
      mask: optional, a prefix of ``logits.shape[:-1]``.

    Integer labels outside ``[0, C)`` (where the mask counts them): a ValueError naming
    ``labels`` when the values are concrete (a call outside ``jit``); inside ``jit`` values are
    unknown while tracing, so such a label gives a NaN loss (never a silently wrapped class:
    ``-1`` would otherwise index the last class). :func:`jaxrnn.train.fit` and ``evaluate``
    check their data on the host before the first step.
    """
    logits = jnp.asarray(logits)
    if logits.ndim < 1:
        raise ValueError(f"logits: expected rank >= 1 (..., C), got shape {_shape(logits)}")
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    labels = jnp.asarray(labels)
    if jnp.issubdtype(labels.dtype, jnp.integer):
        if _shape(labels) != _shape(logits)[:-1]:
            raise ValueError(
                f"labels: integer labels must have shape logits.shape[:-1] = "
                f"{_shape(logits)[:-1]}, got {_shape(labels)}"
            )
        ids = labels.astype(jnp.int32)
        per = -jnp.take_along_axis(logp, jnp.clip(ids, 0, logp.shape[-1] - 1)[..., None],
                                   axis=-1)[..., 0]
        bad = (ids < 0) | (ids >= logp.shape[-1])
        if mask is not None:
            _check_mask(mask, _shape(per))
            m = jnp.asarray(mask)
            bad = bad & (m.reshape(m.shape + (1,) * (per.ndim - m.ndim)) != 0)
        per = jnp.where(bad, jnp.nan, per)
    elif jnp.issubdtype(labels.dtype, jnp.floating):
        _check_same_shape(logits, labels, "logits", "labels (one-hot)")
        per = -jnp.sum(labels.astype(jnp.float32) * logp, axis=-1)
    else:
        raise TypeError(
            f"labels: expected integer class ids or float one-hot labels, got dtype {labels.dtype}"
        )
    return masked_mean(per, mask)


@compiled
def mae(predictions: Array, targets: Array, mask: Array | None = None) -> Array:
    r"""Mean absolute error :math:`\ell = |\hat y - y|`, averaged over valid elements (shapes
    as :func:`mse`)."""
    _check_same_shape(predictions, targets, "predictions", "targets")
    diff = jnp.asarray(predictions, jnp.float32) - jnp.asarray(targets, jnp.float32)
    return masked_mean(jnp.abs(diff), mask)


def sparse_categorical_crossentropy(logits, labels, mask=None) -> Array:
    """Keras' ``sparse_categorical_crossentropy(from_logits=True)``: :func:`softmax_cross_entropy`
    with integer class ids only (models here output logits)."""
    if not jnp.issubdtype(jnp.asarray(labels).dtype, jnp.integer):
        raise TypeError(f"labels: sparse_categorical_crossentropy expects integer class ids, got "
                        f"dtype {jnp.asarray(labels).dtype} (one-hot labels: "
                        f"'categorical_crossentropy')")
    return softmax_cross_entropy(logits, labels, mask)


def categorical_crossentropy(logits, labels, mask=None) -> Array:
    """Keras' ``categorical_crossentropy(from_logits=True)``: :func:`softmax_cross_entropy`
    with float one-hot (or probability) labels of the logits' shape only."""
    if not jnp.issubdtype(jnp.asarray(labels).dtype, jnp.floating):
        raise TypeError(f"labels: categorical_crossentropy expects float one-hot labels, got "
                        f"dtype {jnp.asarray(labels).dtype} (class ids: "
                        f"'sparse_categorical_crossentropy')")
    return softmax_cross_entropy(logits, labels, mask)


LOSSES = {
    "mse": mse,
    "mae": mae,
    "binary_cross_entropy_with_logits": binary_cross_entropy_with_logits,
    "softmax_cross_entropy": softmax_cross_entropy,
    "sparse_categorical_crossentropy": sparse_categorical_crossentropy,
    "categorical_crossentropy": categorical_crossentropy,
}

# Keras' names (all from logits: the models of jaxrnn output logits, never probabilities).
ALIASES = {
    "mean_squared_error": "mse",
    "mean_absolute_error": "mae",
    "binary_crossentropy": "binary_cross_entropy_with_logits",
}

# Losses that take integer class ids over the last axis of the outputs (fit checks their range).
CLASS_ID_LOSSES = (softmax_cross_entropy, sparse_categorical_crossentropy)


def get_loss(loss):
    """A loss given as a callable ``loss(outputs, targets, mask=None)`` or by name: a key of
    :data:`LOSSES` or a Keras name of :data:`ALIASES` (case-insensitive)."""
    if callable(loss):
        return loss
    if isinstance(loss, str):
        name = loss.strip().lower()
        name = ALIASES.get(name, name)
        if name in LOSSES:
            return LOSSES[name]
    raise ValueError(
        f"loss: expected a callable or one of {sorted({*LOSSES, *ALIASES})}, got {loss!r}"
    )


__all__ = [
    "masked_mean",
    "mse",
    "binary_cross_entropy_with_logits",
    "softmax_cross_entropy",
    "mae",
    "sparse_categorical_crossentropy",
    "categorical_crossentropy",
    "check_label_range",
    "LOSSES",
    "ALIASES",
    "CLASS_ID_LOSSES",
    "get_loss",
]
