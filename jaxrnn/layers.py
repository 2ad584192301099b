"""Composition: recurrent layers, bidirectional runs, stacks, dropout, embeddings and readouts.

A :class:`Layer` is a pair of pure functions in the manner of ``stax``: ``init(key, input_size)``
and ``apply(params, xs, *, lengths=None, carry=None, key=None, deterministic=True)`` returning
``(final_carry, ys)``. Combinators return layers, so they nest (a stack of bidirectional layers).
Every layer is batch-major: ``xs`` is ``(B..., T, F)``.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxrnn.cells.base import Array, Cell, check_positive_int
from jaxrnn.scan import last_valid, run


class Layer(NamedTuple):
    """A sequence layer: ``init(key, input_size) -> params``;
    ``apply(params, xs, *, lengths=None, carry=None, key=None, deterministic=True)
    -> (final_carry, ys)``; ``output_size`` is the feature size of ``ys``."""

    init: Callable[..., Any]
    apply: Callable[..., tuple[Any, Array]]
    output_size: int


def _check_rate(rate, argname):
    # numbers.Real also admits NumPy scalars; bool is an int but never a meaningful rate
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not 0.0 <= rate < 1.0:
        raise ValueError(f"{argname}: expected a float in [0, 1), got {rate!r}")
    return float(rate)


def dropout(x: Array, rate: float, key, *, deterministic: bool, broadcast_dims=()) -> Array:
    """Inverted dropout; identity when ``deterministic`` or ``rate == 0``. ``broadcast_dims``
    share one mask along those axes (e.g. the time axis for a per-sequence mask)."""
    if not isinstance(rate, jax.core.Tracer):
        rate = _check_rate(rate, "rate")
    if deterministic or rate == 0.0:
        return x
    if key is None:
        raise ValueError("key: dropout with deterministic=False needs a PRNG key, got None")
    shape = list(x.shape)
    for d in broadcast_dims:
        shape[d] = 1
    keep = jax.random.bernoulli(key, 1.0 - rate, tuple(shape))
    return jnp.where(keep, x / (1.0 - rate), 0).astype(x.dtype)


def with_recurrent_mask(cell: Cell, mask: Array) -> Cell:
    """The same cell, with ``mask`` multiplied into the recurrent part of the carry (the field
    ``cell.recurrent_key``) where it enters the step. The stored carry is not masked, so an
    LSTM's cell state and the carry frozen over padding are untouched (Gal & Ghahramani 2016)."""
    field = cell.recurrent_key

    def step(params, carry, xp):
        dropped = carry._replace(**{field: getattr(carry, field) * mask})
        return cell.step(params, dropped, xp)

    return cell._replace(step=step)


def recurrent(
    cell: Cell,
    *,
    reverse: bool = False,
    input_dropout: float = 0.0,
    recurrent_dropout: float = 0.0,
    unroll: int = 1,
    remat: bool | int = False,
    hoist_projection: bool = False,
) -> Layer:
    """One recurrent layer over ``cell``.

    ``input_dropout`` and ``recurrent_dropout`` are variational (Gal & Ghahramani 2016, as Keras):
    one mask per sequence, drawn from ``key`` and reused at every time step.
    """
    if not isinstance(cell, Cell):
        raise TypeError(f"cell: expected a jaxrnn Cell, got {type(cell)}")
    p_in = _check_rate(input_dropout, "input_dropout")
    p_rec = _check_rate(recurrent_dropout, "recurrent_dropout")

    def init(key, input_size):
        return cell.init(key, input_size)

    def apply(params, xs, *, lengths=None, carry=None, key=None, deterministic=True):
        run_cell = cell
        if not deterministic and (p_in > 0 or p_rec > 0):
            if key is None:
                raise ValueError(
                    "key: dropout with deterministic=False needs a PRNG key, got None"
                )
            k_in, k_rec = jax.random.split(key)
            xs = dropout(xs, p_in, k_in, deterministic=False, broadcast_dims=(xs.ndim - 2,))
            if p_rec > 0:
                shape = jax.eval_shape(
                    lambda p: getattr(cell.initial_carry(p, xs.shape[:-2]), cell.recurrent_key),
                    params,
                ).shape
                keep = jax.random.bernoulli(k_rec, 1.0 - p_rec, shape)
                mask = keep.astype(xs.dtype) / (1.0 - p_rec)
                run_cell = with_recurrent_mask(cell, mask)
        return run(
            run_cell,
            params,
            xs,
            carry=carry,
            lengths=lengths,
            reverse=reverse,
            unroll=unroll,
            remat=remat,
            hoist_projection=hoist_projection,
        )

    return Layer(init, apply, cell.output_size)


_MERGES = {
    "concat": lambda a, b: jnp.concatenate([a, b], axis=-1),
    "sum": lambda a, b: a + b,
    "mean": lambda a, b: 0.5 * (a + b),
}


class BidirectionalParams(NamedTuple):
    forward: Any
    backward: Any


def bidirectional(
    forward: Cell | Layer,
    backward: Cell | Layer | None = None,
    *,
    merge: str = "concat",
) -> Layer:
    """Run one layer forwards and one backwards (each over its own valid length) and merge the
    outputs by ``concat``, ``sum`` or ``mean``. Cells are wrapped with :func:`recurrent`;
    ``backward`` defaults to a copy of ``forward`` with its own parameters."""
    if merge not in _MERGES:
        raise ValueError(f"merge: expected one of {sorted(_MERGES)}, got {merge!r}")
    fw = recurrent(forward) if isinstance(forward, Cell) else forward
    if backward is None:
        if not isinstance(forward, Cell):
            raise ValueError("backward: required when forward is a Layer, got None")
        backward = forward
    bw = recurrent(backward, reverse=True) if isinstance(backward, Cell) else backward
    if merge != "concat" and fw.output_size != bw.output_size:
        raise ValueError(
            f"merge: {merge!r} needs equal output sizes, got {fw.output_size} and "
            f"{bw.output_size}"
        )
    out = fw.output_size + bw.output_size if merge == "concat" else fw.output_size
    combine = _MERGES[merge]

    def init(key, input_size):
        kf, kb = jax.random.split(key)
        return BidirectionalParams(fw.init(kf, input_size), bw.init(kb, input_size))

    def apply(params, xs, *, lengths=None, carry=None, key=None, deterministic=True):
        kf = kb = None
        if key is not None:
            kf, kb = jax.random.split(key)
        if carry is not None and len(carry) != 2:
            raise ValueError(f"carry: expected a (forward, backward) pair, got {len(carry)} items")
        cf, cb = (None, None) if carry is None else carry
        carry_f, yf = fw.apply(
            params.forward, xs, lengths=lengths, carry=cf, key=kf, deterministic=deterministic
        )
        carry_b, yb = bw.apply(
            params.backward, xs, lengths=lengths, carry=cb, key=kb, deterministic=deterministic
        )
        return (carry_f, carry_b), combine(yf, yb)

    return Layer(init, apply, out)


def stacked(
    layers: Sequence[Cell | Layer],
    *,
    between_dropout: float = 0.0,
    return_sequences: bool = True,
) -> Layer:
    """Stack layers: the outputs of layer ``k`` feed layer ``k + 1``.

    ``between_dropout`` drops (per element) the outputs passed between layers in training.
    With ``return_sequences=False`` the output is each sequence's last valid output ``(B..., O)``.
    The final carry is a tuple with one entry per layer.
    """
    if len(layers) == 0:
        raise ValueError("layers: expected at least one layer, got an empty sequence")
    layers = [recurrent(l) if isinstance(l, Cell) else l for l in layers]
    for i, l in enumerate(layers):
        if not isinstance(l, Layer):
            raise TypeError(f"layers[{i}]: expected a Cell or Layer, got {type(l)}")
    p_between = _check_rate(between_dropout, "between_dropout")

    def init(key, input_size):
        keys = jax.random.split(key, len(layers))
        params, size = [], input_size
        for k, l in zip(keys, layers, strict=True):
            params.append(l.init(k, size))
            size = l.output_size
        return tuple(params)

    def apply(params, xs, *, lengths=None, carry=None, key=None, deterministic=True):
        if len(params) != len(layers):
            raise ValueError(f"params: expected {len(layers)} layer params, got {len(params)}")
        keys = [None] * (2 * len(layers))
        if key is not None:
            keys = list(jax.random.split(key, 2 * len(layers)))
        if carry is not None and len(carry) != len(layers):
            raise ValueError(f"carry: expected {len(layers)} layer carries, got {len(carry)}")
        carries = [None] * len(layers) if carry is None else list(carry)
        finals, h = [], xs
        for i, (l, p) in enumerate(zip(layers, params, strict=True)):
            if i > 0:
                h = dropout(h, p_between, keys[2 * i + 1], deterministic=deterministic)
            c, h = l.apply(
                p, h, lengths=lengths, carry=carries[i], key=keys[2 * i],
                deterministic=deterministic,
            )
            finals.append(c)
        if not return_sequences:
            h = last_valid(h, lengths)
        return tuple(finals), h

    return Layer(init, apply, layers[-1].output_size)


# --------------------------------------------------------------------------- embed and readout

class Dense(NamedTuple):
    init: Callable[..., Any]
    apply: Callable[..., Array]
    output_size: int


class DenseParams(NamedTuple):
    w: Array
    b: Array


def dense(output_size: int, *, activation: Callable[[Array], Array] | None = None) -> Dense:
    """A readout ``y = activation(x W + b)`` over the last axis, any leading shape."""
    O = check_positive_int(output_size, "output_size")

    def init(key, input_size):
        check_positive_int(input_size, "input_size")
        w = jax.nn.initializers.glorot_uniform()(key, (input_size, O), jnp.float32)
        return DenseParams(w, jnp.zeros((O,), jnp.float32))

    def apply(params, x):
        if x.shape[-1] != params.w.shape[0]:
            raise ValueError(
                f"x: last dimension must be {params.w.shape[0]}, got shape {tuple(x.shape)}"
            )
        y = x @ params.w + params.b
        return y if activation is None else activation(y)

    return Dense(init, apply, O)


def embedding(vocab_size: int, features: int) -> Dense:
    """A lookup table ``(vocab_size, features)``; ``apply(params, ids)`` maps integer ids of any
    shape to ``(..., features)``. Ids outside ``[0, vocab_size)`` raise before tracing when the
    ids are concrete."""
    V = check_positive_int(vocab_size, "vocab_size")
    D = check_positive_int(features, "features")

    def init(key, input_size=None):
        del input_size
        return jax.random.normal(key, (V, D), jnp.float32) * (1.0 / jnp.sqrt(D))

    def apply(table, ids):
        if not jnp.issubdtype(jnp.asarray(ids).dtype, jnp.integer):
            raise TypeError(f"ids: expected integer token ids, got dtype {jnp.asarray(ids).dtype}")
        if not isinstance(ids, jax.core.Tracer):
            import numpy as np

            a = np.asarray(ids)
            if a.size and (a.min() < 0 or a.max() >= V):
                raise ValueError(
                    f"ids: values must lie in [0, vocab_size={V}), got min {a.min()} max {a.max()}"
                )
        return jnp.take(table, ids, axis=0)

    return Dense(init, apply, D)
