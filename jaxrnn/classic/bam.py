r"""Bidirectional associative memory (Kosko 1988).

Pairs of bipolar patterns :math:`(x_k, y_k)`, :math:`x \in \{-1,1\}^n`, :math:`y \in \{-1,1\}^m`
are stored in one correlation matrix, and recall bounces between the two layers until the pair
stops changing:

.. math::
   W = \sum_k y_k x_k^\top \ (m \times n) \qquad
   y \leftarrow \operatorname{sgn}(W x) \qquad x \leftarrow \operatorname{sgn}(W^\top y) \qquad
   E(x, y) = -y^\top W x

(a zero field keeps the unit's value). Each half-step never increases :math:`E`, which is
bounded below, so recall ends in a stable pair -- a fixed point of both directions. The loop is
a :func:`jax.lax.while_loop` with a maximum number of round trips.

Shapes: ``B...`` batch (possibly empty), ``P`` pairs, ``n`` and ``m`` the two layers.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxrnn.cells.base import Array
from jaxrnn.classic.hopfield import _check_array, _check_bipolar, _check_steps, _sign_keep


class BAMResult(NamedTuple):
    x: Array  # (B..., n)
    y: Array  # (B..., m)
    steps: Array  # (B...,) int32 round trips that changed something
    converged: Array  # (B...,) bool: (x, y) is a stable pair


def store(xs: Array, ys: Array) -> Array:
    """``W = sum_k y_k x_k^T``: ``xs (P, n)``, ``ys (P, m)`` bipolar -> ``W (m, n)``."""
    for a, name in ((xs, "xs"), (ys, "ys")):
        _check_array(a, name, min_ndim=2)
        if a.ndim != 2:
            raise ValueError(f"{name}: expected shape (P, size), got {tuple(a.shape)}")
        _check_bipolar(a, name)
    if xs.shape[0] != ys.shape[0]:
        raise ValueError(
            f"ys: expected {xs.shape[0]} patterns (one per row of xs), got shape {tuple(ys.shape)}"
        )
    return ys.T @ xs


def energy(w: Array, x: Array, y: Array) -> Array:
    """``E(x, y) = -y^T W x`` for ``x (B..., n)``, ``y (B..., m)``; returns ``(B...)``."""
    _check_pair(w, x, y)
    return -jnp.einsum("...i,ij,...j->...", y, w, x)


def _check_pair(w, x, y):
    _check_array(w, "w", min_ndim=2)
    if w.ndim != 2:
        raise ValueError(f"w: expected a matrix (m, n), got shape {tuple(w.shape)}")
    m, n = w.shape
    if x is not None:
        _check_array(x, "x")
        if x.shape[-1] != n:
            raise ValueError(
                f"x: last dimension must be n={n} (from w), got shape {tuple(x.shape)}"
            )
    if y is not None:
        _check_array(y, "y")
        if y.shape[-1] != m:
            raise ValueError(
                f"y: last dimension must be m={m} (from w), got shape {tuple(y.shape)}"
            )
    return m, n


def forward(w: Array, x: Array, y: Array) -> Array:
    """``y <- sgn(W x)``, keeping ``y`` where the field is zero."""
    return _sign_keep(x @ w.T, y)


def backward(w: Array, x: Array, y: Array) -> Array:
    """``x <- sgn(W^T y)``, keeping ``x`` where the field is zero."""
    return _sign_keep(y @ w, x)


def recall(
    w: Array,
    *,
    x: Array | None = None,
    y: Array | None = None,
    max_steps: int = 50,
) -> BAMResult:
    """Recall a stable pair from a cue on one side (or both).

    Give ``x`` to start with ``y = sgn(W x)``; give only ``y`` to start with ``x = sgn(W^T y)``.
    Each round trip is ``y <- sgn(W x)`` then ``x <- sgn(W^T y)``; the loop stops when a round
    trip changes nothing for every pair in the batch, or after ``max_steps`` round trips.
    """
    if x is None and y is None:
        raise ValueError("x, y: give a cue on at least one side, got x=None and y=None")
    m, n = _check_pair(w, x, y)
    max_steps = _check_steps(max_steps, "max_steps")
    for a, name in ((x, "x"), (y, "y")):
        if a is not None:
            _check_bipolar(a, name)
    if x is not None and y is not None and x.shape[:-1] != y.shape[:-1]:
        raise ValueError(
            f"y: batch shape must match x's {tuple(x.shape[:-1])}, got {tuple(y.shape[:-1])}"
        )
    if x is None:  # cue on the y side: first complete x from it
        x = _sign_keep(y @ w, jnp.ones((*y.shape[:-1], n), y.dtype))
    if y is None:
        y = _sign_keep(x @ w.T, jnp.ones((*x.shape[:-1], m), x.dtype))
    batch = x.shape[:-1]

    def cond(c):
        i, _, _, _, done = c
        return (i < max_steps) & ~jnp.all(done)

    def body(c):
        i, x, y, steps, _ = c
        y_new = forward(w, x, y)
        x_new = backward(w, x, y_new)
        fixed = jnp.all(x_new == x, axis=-1) & jnp.all(y_new == y, axis=-1)
        return i + 1, x_new, y_new, steps + (~fixed).astype(jnp.int32), fixed

    init = (jnp.int32(0), x, y, jnp.zeros(batch, jnp.int32), jnp.zeros(batch, bool))
    _, x, y, steps, _ = jax.lax.while_loop(cond, body, init)
    stable = jnp.all(forward(w, x, y) == y, axis=-1) & jnp.all(backward(w, x, y) == x, axis=-1)
    return BAMResult(x, y, steps, stable)


__all__ = ["BAMResult", "store", "energy", "forward", "backward", "recall"]
