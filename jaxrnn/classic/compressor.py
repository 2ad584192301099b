r"""The neural history compressor (Schmidhuber 1992, "Learning complex, extended sequences
using the principle of history compression").

A lower recurrent net learns to predict its next input. Whatever it predicts correctly carries
no new information, so only the inputs it failed to predict -- with their time stamps -- are
passed up to a higher recurrent net, which therefore runs on a much shorter sequence and can
bridge long time lags in few of its own steps.

With ``x_t`` the input at step ``t`` (token ids ``(B..., T)``) and ``q_t`` the lower net's
predictive distribution for ``x_t`` computed from ``x_{<t}``:

.. math::
   u_t = [t = 0] \ \lor\ \big(\arg\max q_t \ne x_t\big)
   \quad\text{or, with a threshold } \theta,\quad u_t = [t=0] \lor \big(q_t(x_t) < \theta\big)

The higher net sees the subsequence ``(x_t, t)`` for the steps with ``u_t`` true. Under ``jit``
shapes are fixed, so this is done with masks, two ways that give the same result:

* :func:`compress` moves the unpredicted steps to the front (a stable sort, order kept) and
  returns their count as ``lengths``; :func:`jaxrnn.run` with ``lengths`` then freezes the higher
  net's carry after the last one. With ``max_len`` the compressed sequence is also *shorter*,
  which is where the saving in computation comes from.
* :func:`masked` wraps any cell so that its carry updates only at steps whose flag is set (the
  flag is an extra last input feature); the higher net then runs over all ``T`` steps.

Shapes: ``B...`` batch, ``T`` time, ``F`` features, ``K`` compressed length.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxrnn.cells.base import Array, Cell


class Compressed(NamedTuple):
    xs: Array  # (B..., K, F [+1]) the unpredicted inputs, in order, zero-padded
    times: Array  # (B..., K) int32 their time steps (-1 at padding)
    lengths: Array  # (B...,) int32 number of unpredicted steps kept (<= K)


def _check(x, argname, *, floating=None, min_ndim=1):
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"{argname}: expected an array, got {type(x).__name__}")
    if floating is True and not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{argname}: expected a floating-point array, got dtype {x.dtype}")
    if floating is False and not jnp.issubdtype(x.dtype, jnp.integer):
        raise TypeError(f"{argname}: expected integer ids, got dtype {x.dtype}")
    if x.ndim < min_ndim:
        raise ValueError(f"{argname}: expected rank >= {min_ndim}, got shape {tuple(x.shape)}")


def surprise_mask(next_logits: Array, ids: Array, *, threshold: float | None = None) -> Array:
    """Which inputs the lower net failed to predict.

    Args:
      next_logits: ``(B..., T, V)``; ``next_logits[..., t, :]`` is the lower net's prediction of
        ``ids[..., t + 1]`` (the output after reading ``x_t``). The last step's is unused.
      ids: ``(B..., T)`` integer inputs.
      threshold: ``None`` marks a wrong argmax; a float marks a probability of the true input
        below ``threshold``.

    Returns:
      bool ``(B..., T)``; step 0 is always marked (nothing predicts it).
    """
    _check(next_logits, "next_logits", floating=True, min_ndim=2)
    _check(ids, "ids", floating=False)
    if next_logits.shape[:-1] != ids.shape:
        raise ValueError(
            f"ids: expected shape {tuple(next_logits.shape[:-1])} (next_logits without the class "
            f"axis), got {tuple(ids.shape)}"
        )
    if threshold is not None and not 0.0 < float(threshold) < 1.0:
        raise ValueError(f"threshold: expected a probability in (0, 1) or None, got {threshold!r}")
    prev = next_logits[..., :-1, :]  # predictions of steps 1..T-1
    target = ids[..., 1:]
    if threshold is None:
        miss = jnp.argmax(prev, axis=-1) != target
    else:
        logp = jax.nn.log_softmax(prev, axis=-1)
        p_true = jnp.exp(jnp.take_along_axis(logp, target[..., None], axis=-1)[..., 0])
        miss = p_true < threshold
    first = jnp.ones((*ids.shape[:-1], 1), bool)
    return jnp.concatenate([first, miss], axis=-1)


def compress(
    xs: Array,
    mask: Array,
    *,
    lengths: Array | None = None,
    max_len: int | None = None,
    time_stamps: bool = True,
) -> Compressed:
    """Keep only the masked steps, moved to the front in their original order.

    Args:
      xs: ``(B..., T, F)`` inputs.
      mask: bool ``(B..., T)``, true at the steps to pass up.
      lengths: optional ``(B...)`` valid lengths of ``xs``; steps past them are never kept.
      max_len: ``K``, the compressed length (default ``T``); later unpredicted steps beyond
        ``K`` are dropped (``lengths`` is capped at ``K``).
      time_stamps: append ``t / T`` as an extra feature, so the higher net knows when each
        input happened (the time stamps of the original scheme).

    Returns:
      :class:`Compressed`.
    """
    _check(xs, "xs", floating=True, min_ndim=2)
    _check(mask, "mask")
    if mask.dtype != jnp.bool_:
        raise TypeError(f"mask: expected a bool array, got dtype {mask.dtype}")
    if mask.shape != xs.shape[:-1]:
        raise ValueError(
            f"mask: expected shape {tuple(xs.shape[:-1])} (xs without features), "
            f"got {tuple(mask.shape)}"
        )
    T = xs.shape[-2]
    K = T if max_len is None else max_len
    if isinstance(K, bool) or not isinstance(K, int) or not 1 <= K <= T:
        raise ValueError(f"max_len: expected an int in [1, T={T}], got {max_len!r}")
    t = jnp.arange(T)
    if lengths is not None:
        lengths = jnp.asarray(lengths)
        if lengths.shape != mask.shape[:-1]:
            raise ValueError(
                f"lengths: expected shape {tuple(mask.shape[:-1])}, got {tuple(lengths.shape)}"
            )
        mask = mask & (t < lengths[..., None])
    if time_stamps:
        stamp = jnp.broadcast_to((t / T).astype(xs.dtype)[:, None], (*xs.shape[:-1], 1))
        xs = jnp.concatenate([xs, stamp], axis=-1)
    # Stable sort on "not kept": kept steps first, each group in time order.
    order = jnp.argsort(~mask, axis=-1, stable=True)[..., :K]
    count = jnp.minimum(jnp.sum(mask, axis=-1), K).astype(jnp.int32)
    valid = jnp.arange(K) < count[..., None]
    picked = jnp.take_along_axis(xs, order[..., None], axis=-2)
    picked = jnp.where(valid[..., None], picked, 0).astype(xs.dtype)
    times = jnp.where(valid, order, -1).astype(jnp.int32)
    return Compressed(picked, times, count)


class MaskedState(NamedTuple):
    inner: object  # the wrapped cell's carry


def masked(cell: Cell) -> Cell:
    """``cell`` updating its carry only where the flag (the last input feature, 1 or 0) is set.

    Inputs are ``[x_t, flag_t]`` (``F + 1`` features); at flag 0 the carry is kept and the output
    is zero. Running it over all ``T`` steps gives the same final carry as running ``cell`` over
    the flagged steps alone.
    """
    if not isinstance(cell, Cell):
        raise TypeError(f"cell: expected a jaxrnn Cell, got {type(cell)}")

    def init(key, input_size):
        return cell.init(key, input_size - 1)

    def project(params, z):
        return (cell.project(params, z[..., :-1]), z[..., -1])

    def step(params, carry, xp):
        inner_xp, flag = xp
        new, y = cell.step(params, carry, inner_xp)
        on = flag > 0.5
        keep = jax.tree_util.tree_map(
            lambda n, o: jnp.where(on.reshape(on.shape + (1,) * (n.ndim - on.ndim)), n, o),
            new,
            carry,
        )
        return keep, jnp.where(on[..., None], y, 0).astype(y.dtype)

    return cell._replace(
        init=init,
        project=project,
        step=step,
        name=f"masked_{cell.name}",
        input_size=lambda params: cell.input_size(params) + 1,
    )


def passed_fraction(mask: Array, lengths: Array | None = None) -> Array:
    """Fraction of (valid) steps passed up."""
    if lengths is None:
        return jnp.mean(mask)
    valid = jnp.arange(mask.shape[-1]) < jnp.asarray(lengths)[..., None]
    return jnp.sum(mask & valid) / jnp.maximum(jnp.sum(valid), 1)


__all__ = ["Compressed", "surprise_mask", "compress", "masked", "passed_fraction"]
