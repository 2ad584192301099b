"""Composition: recurrent layers, bidirectional runs, stacks, dropout, embeddings and readouts.

Every layer is a :class:`Layer`, one protocol in the manner of ``stax``:

* ``init(key, input_size) -> params`` (``input_size`` is ignored by an embedding);
* ``apply(params, xs, *, lengths=None, key=None, deterministic=True) -> outputs``;
* ``apply_with_carry(params, xs, *, lengths=None, carry=None, key=None, deterministic=True)
  -> (final_carry, outputs)`` for callers that need the final carry (``None`` for layers
  without one) or start from a given one;
* ``output_size``: the feature size of ``outputs`` (``None``: as wide as the input, see
  :meth:`Layer.output_size_for`).

So an embedding, recurrent layers, bidirectional pairs, dropout and a dense head compose in one
:func:`stacked`. Every layer is batch-major: ``xs`` is ``(B..., T, F)``.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxrnn.cells.base import Array, Cell, check_positive_int
from jaxrnn.engine import last_valid, run


class Layer(NamedTuple):
    """A layer (see the module docstring for the protocol).

    Attributes:
      init, apply, output_size, apply_with_carry: the protocol.
      reverse: the layer runs each sequence backwards over its valid length (a recurrent layer
        built with ``reverse=True``); :func:`bidirectional` requires it of its backward member.
      summarises: the layer drops the time axis (``return_sequences=False``): its outputs are
        ``(B..., O)`` and later layers get no ``lengths``.
    """

    init: Callable[..., Any]
    apply: Callable[..., Array]
    output_size: int | None
    apply_with_carry: Callable[..., tuple[Any, Array]] | None = None
    reverse: bool = False
    summarises: bool = False

    def output_size_for(self, input_size: int) -> int:
        """The feature size of the outputs for inputs of ``input_size`` features."""
        return input_size if self.output_size is None else self.output_size


def _from_carry_fn(apply_with_carry):
    """``apply`` of a layer with a carry: the same call, outputs only."""

    def apply(params, xs, *, lengths=None, carry=None, key=None, deterministic=True):
        return apply_with_carry(params, xs, lengths=lengths, carry=carry, key=key,
                                deterministic=deterministic)[1]

    return apply


def _stateless(init, fn, output_size) -> Layer:
    """A layer without a carry from ``fn(params, xs, lengths, key, deterministic)``."""

    def apply(params, xs, *, lengths=None, key=None, deterministic=True):
        return fn(params, xs, lengths, key, deterministic)

    def apply_with_carry(params, xs, *, lengths=None, carry=None, key=None, deterministic=True):
        if carry is not None:
            raise ValueError(f"carry: this layer has no carry, got {type(carry).__name__}")
        return None, fn(params, xs, lengths, key, deterministic)

    return Layer(init, apply, output_size, apply_with_carry)


def _carry_fn(layer: Layer):
    """``apply_with_carry`` of any layer (a Layer built with three fields has none: its apply
    is taken to return outputs only)."""
    if layer.apply_with_carry is not None:
        return layer.apply_with_carry

    def apply_with_carry(params, xs, *, lengths=None, carry=None, key=None, deterministic=True):
        kw = {} if carry is None else {"carry": carry}
        return None, layer.apply(params, xs, lengths=lengths, key=key,
                                 deterministic=deterministic, **kw)

    return apply_with_carry


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
    return_sequences: bool = True,
) -> Layer:
    """One recurrent layer over ``cell``.

    ``input_dropout`` and ``recurrent_dropout`` are variational (Gal & Ghahramani 2016, as Keras):
    one mask per sequence, drawn from ``key`` and reused at every time step.
    With ``return_sequences=False`` the outputs are each sequence's summary ``(B..., O)``: the
    output of its last valid step (of step 0 with ``reverse``, where a backward run ends).
    """
    if not isinstance(cell, Cell):
        raise TypeError(f"cell: expected a jaxrnn Cell, got {type(cell)}")
    p_in = _check_rate(input_dropout, "input_dropout")
    p_rec = _check_rate(recurrent_dropout, "recurrent_dropout")
    _check_bool(reverse, "reverse")
    _check_bool(return_sequences, "return_sequences")

    def init(key, input_size):
        return cell.init(key, input_size)

    def apply_with_carry(params, xs, *, lengths=None, carry=None, key=None, deterministic=True):
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
        final, ys = run(
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
        if not return_sequences:
            ys = ys[..., 0, :] if reverse else last_valid(ys, lengths)
        return final, ys

    return Layer(init, _from_carry_fn(apply_with_carry), cell.output_size, apply_with_carry,
                 reverse=reverse, summarises=not return_sequences)


def _check_bool(value, argname):
    if not isinstance(value, bool):
        raise TypeError(f"{argname}: expected a bool, got {type(value).__name__} {value!r}")
    return value


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
    return_sequences: bool = True,
) -> Layer:
    """Run one layer forwards and one backwards (each over its own valid length) and merge the
    outputs by ``concat``, ``sum`` or ``mean``.

    Cells are wrapped with :func:`recurrent` (``backward`` with ``reverse=True``); ``backward``
    defaults to a copy of ``forward`` with its own parameters. A ``backward`` given as a
    :class:`Layer` must run reversed (``jaxrnn.recurrent(cell, reverse=True)``) and a
    ``forward`` layer must not: a mismatch raises rather than running both the same way.
    With ``return_sequences=False`` the output is the forward direction's last valid output
    merged with the backward direction's output at step 0 (where it has read the whole
    sequence), as Keras' ``Bidirectional`` does.
    """
    if merge not in _MERGES:
        raise ValueError(f"merge: expected one of {sorted(_MERGES)}, got {merge!r}")
    _check_bool(return_sequences, "return_sequences")
    if backward is None:
        if not isinstance(forward, Cell):
            raise ValueError("backward: required when forward is a Layer, got None")
        backward = forward
    fw = recurrent(forward) if isinstance(forward, Cell) else forward
    bw = recurrent(backward, reverse=True) if isinstance(backward, Cell) else backward
    for argname, layer, want in (("forward", fw, False), ("backward", bw, True)):
        if not isinstance(layer, Layer):
            raise TypeError(f"{argname}: expected a jaxrnn Cell or Layer, got {type(layer)}")
        if layer.reverse != want:
            how = "reversed" if layer.reverse else "forwards"
            fix = "jaxrnn.recurrent(cell, reverse=True)" if want else "jaxrnn.recurrent(cell)"
            raise ValueError(
                f"{argname}: the layer runs {how}; the {argname} member of a bidirectional "
                f"layer must run {'reversed' if want else 'forwards'} (build it with {fix} or "
                f"pass the cell)"
            )
        if layer.summarises:
            raise ValueError(
                f"{argname}: the layer drops the time axis (return_sequences=False); give the "
                f"members sequence outputs and pass return_sequences to bidirectional"
            )
    if merge != "concat" and fw.output_size != bw.output_size:
        raise ValueError(
            f"merge: {merge!r} needs equal output sizes, got {fw.output_size} and "
            f"{bw.output_size}"
        )
    out = fw.output_size + bw.output_size if merge == "concat" else fw.output_size
    combine = _MERGES[merge]
    fw_carry, bw_carry = _carry_fn(fw), _carry_fn(bw)

    def init(key, input_size):
        kf, kb = jax.random.split(key)
        return BidirectionalParams(fw.init(kf, input_size), bw.init(kb, input_size))

    def apply_with_carry(params, xs, *, lengths=None, carry=None, key=None, deterministic=True):
        kf = kb = None
        if key is not None:
            kf, kb = jax.random.split(key)
        if carry is not None and len(carry) != 2:
            raise ValueError(f"carry: expected a (forward, backward) pair, got {len(carry)} items")
        cf, cb = (None, None) if carry is None else carry
        carry_f, yf = fw_carry(
            params.forward, xs, lengths=lengths, carry=cf, key=kf, deterministic=deterministic
        )
        carry_b, yb = bw_carry(
            params.backward, xs, lengths=lengths, carry=cb, key=kb, deterministic=deterministic
        )
        if not return_sequences:
            yf, yb = last_valid(yf, lengths), yb[..., 0, :]
        return (carry_f, carry_b), combine(yf, yb)

    return Layer(init, _from_carry_fn(apply_with_carry), out, apply_with_carry,
                 summarises=not return_sequences)


def stacked(
    layers: Sequence[Cell | Layer],
    *,
    between_dropout: float = 0.0,
    return_sequences: bool = True,
) -> Layer:
    """Stack layers: the outputs of layer ``k`` feed layer ``k + 1``. Any :class:`Layer` may be
    an entry (an embedding first, recurrent and bidirectional layers, dropout, a dense head);
    a cell is wrapped with :func:`recurrent`.

    ``between_dropout`` drops (per element) the outputs passed between layers in training.
    With ``return_sequences=False`` the output is each sequence's last valid output ``(B..., O)``.
    After a layer that drops the time axis, later layers get no ``lengths``.
    The final carry is a tuple with one entry per layer (``None`` for layers without one).
    """
    if len(layers) == 0:
        raise ValueError("layers: expected at least one layer, got an empty sequence")
    layers = [recurrent(l) if isinstance(l, Cell) else l for l in layers]
    for i, l in enumerate(layers):
        if not isinstance(l, Layer):
            raise TypeError(f"layers[{i}]: expected a Cell or Layer, got {type(l)}")
    p_between = _check_rate(between_dropout, "between_dropout")
    _check_bool(return_sequences, "return_sequences")
    carry_fns = [_carry_fn(l) for l in layers]
    summarised = any(l.summarises for l in layers)

    def init(key, input_size):
        keys = jax.random.split(key, len(layers))
        params, size = [], input_size
        for k, l in zip(keys, layers, strict=True):
            params.append(l.init(k, size))
            size = l.output_size_for(size)
        return tuple(params)

    def apply_with_carry(params, xs, *, lengths=None, carry=None, key=None, deterministic=True):
        if len(params) != len(layers):
            raise ValueError(f"params: expected {len(layers)} layer params, got {len(params)}")
        keys = [None] * (2 * len(layers))
        if key is not None:
            keys = list(jax.random.split(key, 2 * len(layers)))
        if carry is not None and len(carry) != len(layers):
            raise ValueError(f"carry: expected {len(layers)} layer carries, got {len(carry)}")
        carries = [None] * len(layers) if carry is None else list(carry)
        finals, h, n = [], xs, lengths
        for i, (l, f, p) in enumerate(zip(layers, carry_fns, params, strict=True)):
            if i > 0:
                h = dropout(h, p_between, keys[2 * i + 1], deterministic=deterministic)
            c, h = f(p, h, lengths=n, carry=carries[i], key=keys[2 * i],
                     deterministic=deterministic)
            finals.append(c)
            if l.summarises:
                n = None
        if not return_sequences and not summarised:
            h = last_valid(h, lengths)
        return tuple(finals), h

    out = None
    for l in layers:
        out = out if l.output_size is None else l.output_size
    return Layer(init, _from_carry_fn(apply_with_carry), out, apply_with_carry,
                 summarises=summarised or not return_sequences)


# --------------------------------------------------------------------------- embed and readout

Dense = Layer  # the type of dense and embedding layers (one protocol since 0.2)


class DenseParams(NamedTuple):
    w: Array
    b: Array


def dense(output_size: int, *, activation: Callable[[Array], Array] | None = None) -> Layer:
    """A readout ``y = activation(x W + b)`` over the last axis, any leading shape (a
    sequence or a summary)."""
    O = check_positive_int(output_size, "output_size")

    def init(key, input_size):
        check_positive_int(input_size, "input_size")
        w = jax.nn.initializers.glorot_uniform()(key, (input_size, O), jnp.float32)
        return DenseParams(w, jnp.zeros((O,), jnp.float32))

    def fn(params, x, lengths, key, deterministic):
        if x.shape[-1] != params.w.shape[0]:
            raise ValueError(
                f"x: last dimension must be {params.w.shape[0]}, got shape {tuple(x.shape)}"
            )
        y = x @ params.w + params.b
        return y if activation is None else activation(y)

    return _stateless(init, fn, O)


def dropout_layer(rate: float, *, broadcast_time: bool = False) -> Layer:
    """Inverted dropout as a layer (no parameters): active only with ``deterministic=False``,
    which needs ``key``. ``broadcast_time`` shares one mask over the time axis of ``(B..., T,
    F)`` inputs (variational dropout)."""
    p = _check_rate(rate, "rate")
    _check_bool(broadcast_time, "broadcast_time")

    def init(key, input_size=None):
        del key, input_size
        return ()

    def fn(params, x, lengths, key, deterministic):
        dims = (x.ndim - 2,) if broadcast_time else ()
        return dropout(x, p, key, deterministic=deterministic, broadcast_dims=dims)

    return _stateless(init, fn, None)


def embedding(vocab_size: int, features: int) -> Layer:
    """A lookup table ``(vocab_size, features)``; ``apply(params, ids)`` maps integer ids of any
    shape to ``(..., features)``. Ids outside ``[0, vocab_size)`` raise before tracing when the
    ids are concrete. ``init(key, input_size)`` ignores ``input_size`` (ids have no features)."""
    V = check_positive_int(vocab_size, "vocab_size")
    D = check_positive_int(features, "features")

    def init(key, input_size=None):
        del input_size
        return jax.random.normal(key, (V, D), jnp.float32) * (1.0 / jnp.sqrt(D))

    def fn(table, ids, lengths, key, deterministic):
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

    return _stateless(init, fn, D)
