"""Padding, written once for every Python backend of the engine.

A batch of sequences of different lengths is padded to a common ``T``; ``lengths`` ``(B...)``
says how many steps of each are real. The engine's contract over padded steps: the carry freezes
after a sequence's last valid step, outputs there are zero, and a reverse run reverses each
sequence over its own length with the padding left at the end. Every function here takes arrays
time-major (time on axis 0) unless it says otherwise; ``valid`` masks have the batch shape
(one step) or ``(T, B...)`` (all steps) and are broadcast over the trailing feature axes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxrnn.cells.base import Array, PyTree


def broadcast_mask(valid: Array, x: Array) -> Array:
    """``valid`` reshaped with trailing unit axes to broadcast against ``x``."""
    return valid.reshape(valid.shape + (1,) * (x.ndim - valid.ndim))


def step_valid(t: Array, lengths: Array) -> Array:
    """Whether step ``t`` is real for each sequence: ``(B...)`` bool."""
    return t < lengths


def length_mask(T: int, lengths: Array) -> Array:
    """``(T, B...)`` bool, true on valid steps (time-major :func:`sequence_mask`)."""
    lengths = jnp.asarray(lengths)
    return jnp.arange(T).reshape((T,) + (1,) * lengths.ndim) < lengths


def freeze(valid: Array, new: PyTree, old: PyTree) -> PyTree:
    """The carry pytree ``new`` where ``valid``, else ``old`` (a frozen carry past the end)."""
    return jax.tree_util.tree_map(lambda n, o: jnp.where(broadcast_mask(valid, n), n, o), new, old)


def fill_invalid(valid: Array, x: Array, value) -> Array:
    """``x`` where ``valid``, else ``value`` (in ``x``'s dtype)."""
    return jnp.where(broadcast_mask(valid, x), x, jnp.asarray(value, x.dtype))


def zero_invalid(valid: Array, tree: PyTree) -> PyTree:
    """Every leaf of ``tree`` zeroed where not ``valid`` (padded outputs, their cotangents)."""
    return jax.tree_util.tree_map(lambda a: fill_invalid(valid, a, 0), tree)


def zero_padded(ys: Array, lengths: Array | None) -> Array:
    """Time-major outputs ``(T, B..., O)`` zeroed at and past each sequence's length."""
    if lengths is None:
        return ys
    return fill_invalid(length_mask(ys.shape[0], lengths), ys, 0)


def reverse_padded(xs: Array, lengths: Array | None, time_axis: int = 0) -> Array:
    """Reverse each sequence over its own valid length, leaving padding where it is.

    ``xs`` has time on ``time_axis``; with that axis removed, its leading dims are the batch
    dims of ``lengths`` (so ``(T, B..., F)`` with ``time_axis=0`` and ``(B..., T, F)`` with
    ``time_axis=-2`` both work). Reversing twice is the identity.
    """
    T = xs.shape[time_axis]
    if lengths is None:
        return jnp.flip(xs, axis=time_axis)
    lengths = jnp.asarray(lengths)
    xs_t = jnp.moveaxis(xs, time_axis, 0)
    t = jnp.arange(T).reshape((T,) + (1,) * lengths.ndim)
    src = jnp.where(t < lengths, lengths - 1 - t, t)  # (T, B...)
    src = src.reshape(src.shape + (1,) * (xs_t.ndim - src.ndim))
    return jnp.moveaxis(jnp.take_along_axis(xs_t, src, axis=0), 0, time_axis)


def last_valid(ys: Array, lengths: Array | None, *, time_major: bool = False) -> Array:
    """The output at each sequence's last valid step, ``(B..., O)``; zeros for length 0."""
    if time_major:
        ys = jnp.moveaxis(ys, 0, -2)
    if lengths is None:
        return ys[..., -1, :]
    lengths = jnp.asarray(lengths)
    idx = jnp.clip(lengths - 1, 0, ys.shape[-2] - 1)[..., None, None]
    out = jnp.take_along_axis(ys, idx, axis=-2)[..., 0, :]
    return jnp.where((lengths > 0)[..., None], out, 0)


def sequence_mask(lengths: Array, max_len: int) -> Array:
    """Boolean ``(B..., T)`` mask, true on valid steps."""
    return jnp.arange(max_len) < jnp.asarray(lengths)[..., None]


__all__ = [
    "broadcast_mask",
    "fill_invalid",
    "freeze",
    "last_valid",
    "length_mask",
    "reverse_padded",
    "sequence_mask",
    "step_valid",
    "zero_invalid",
    "zero_padded",
]
