"""The scan engine: one function, :func:`run`, that runs any :class:`~jaxrnn.Cell` over time.

It owns everything about time and nothing about any particular cell: layout (batch- or
time-major), any leading batch shape, masking of padded steps (the carry freezes after a
sequence's last valid step and outputs past it are zero), a reverse direction that respects each
sequence's own length, unrolling and rematerialisation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn import fused
from jaxrnn.cells.base import Array, Cell, PyTree


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def _shape_str(tree) -> str:
    return str(jax.tree_util.tree_map(lambda a: tuple(np.shape(a)), tree))


def validate_inputs(cell: Cell, params: PyTree, xs, carry, lengths, time_major: bool):
    """Check every argument of :func:`run` before anything is traced; return the batch shape
    and sequence length. Errors name the argument and the expected and received value."""
    if not isinstance(cell, Cell):
        raise TypeError(f"cell: expected a jaxrnn Cell (e.g. jaxrnn.lstm(64)), got {type(cell)}")
    if not hasattr(xs, "shape") or not hasattr(xs, "dtype"):
        raise TypeError(f"xs: expected an array, got {type(xs).__name__}")
    if not jnp.issubdtype(xs.dtype, jnp.floating):
        raise TypeError(
            f"xs: expected a floating-point array (cast token ids through an embedding first), "
            f"got dtype {xs.dtype}"
        )
    if xs.ndim < 2:
        raise ValueError(
            f"xs: expected rank >= 2 ({'(T, B..., F)' if time_major else '(B..., T, F)'}), "
            f"got shape {tuple(xs.shape)}"
        )
    feat = cell.input_size(params)
    if xs.shape[-1] != feat:
        raise ValueError(
            f"xs: last dimension must equal the cell's input size {feat} (from params), "
            f"got shape {tuple(xs.shape)}"
        )
    if time_major:
        T, batch_shape = xs.shape[0], tuple(xs.shape[1:-1])
    else:
        T, batch_shape = xs.shape[-2], tuple(xs.shape[:-2])

    if lengths is not None:
        if not hasattr(lengths, "shape"):
            lengths = np.asarray(lengths)
        if not jnp.issubdtype(lengths.dtype, jnp.integer):
            raise TypeError(f"lengths: expected an integer array, got dtype {lengths.dtype}")
        if tuple(lengths.shape) != batch_shape:
            raise ValueError(
                f"lengths: expected shape {batch_shape} (the batch shape of xs), "
                f"got {tuple(lengths.shape)}"
            )
        if _is_concrete(lengths):
            lv = np.asarray(lengths)
            if lv.size and (lv.min() < 0 or lv.max() > T):
                raise ValueError(
                    f"lengths: values must lie in [0, T={T}], got min {lv.min()} max {lv.max()}"
                )

    if carry is not None:
        expected = jax.eval_shape(lambda p: cell.initial_carry(p, batch_shape), params)
        exp_def = jax.tree_util.tree_structure(expected)
        got_def = jax.tree_util.tree_structure(carry)
        if exp_def != got_def:
            raise ValueError(
                f"carry: expected structure {exp_def} for cell {cell.name!r}, got {got_def}"
            )
        leaves = jax.tree_util.tree_leaves(expected), jax.tree_util.tree_leaves(carry)
        for e, g in zip(*leaves, strict=True):
            if tuple(np.shape(g)) != tuple(e.shape):
                raise ValueError(
                    f"carry: expected shapes {_shape_str(expected)}, got {_shape_str(carry)}"
                )
            # an integer carry would silently truncate every step's state (the steps cast to it)
            g_dtype = jnp.result_type(g)
            if jnp.issubdtype(e.dtype, jnp.floating) and not jnp.issubdtype(g_dtype, jnp.floating):
                raise TypeError(
                    f"carry: expected floating-point leaves ({e.dtype}), got dtype {g_dtype}"
                )
    return batch_shape, T


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


def _where_tree(mask, new, old):
    def pick(n, o):
        m = mask.reshape(mask.shape + (1,) * (n.ndim - mask.ndim))
        return jnp.where(m, n, o)

    return jax.tree_util.tree_map(pick, new, old)


def run(
    cell: Cell,
    params: PyTree,
    xs: Array,
    *,
    carry: PyTree | None = None,
    lengths: Array | None = None,
    reverse: bool = False,
    time_major: bool = False,
    unroll: int = 1,
    remat: bool | int = False,
    hoist_projection: bool = False,
    fused_gradient: bool = True,
) -> tuple[PyTree, Array]:
    """Run ``cell`` over a sequence.

    Args:
      cell: any :class:`~jaxrnn.Cell`.
      params: the cell's parameters.
      xs: inputs ``(B..., T, F)``, or ``(T, B..., F)`` with ``time_major=True``. ``B...`` is any
        batch shape, possibly empty.
      carry: initial carry (default: ``cell.initial_carry``, zeros).
      lengths: integer ``(B...)`` valid lengths; steps at or past a sequence's length leave its
        carry unchanged and emit zeros. ``None`` means every sequence is ``T`` long.
      reverse: run each sequence backwards over its own valid length. Outputs are returned in the
        original time order (``ys[t]`` belongs to input ``t``); padding stays at the end.
      time_major: layout of ``xs`` and ``ys``.
      unroll: passed to :func:`jax.lax.scan`.
      remat: ``True`` rematerialises each step in the backward pass; an int ``k > 1``
        checkpoints only every ``k``-th carry (chunks of ``k`` steps, recomputed in the backward
        pass), bounding memory on long sequences to ``O(T/k + k)`` carries.
      hoist_projection: compute ``cell.project`` for all steps before the loop (one large product)
        instead of per step inside it. Which is faster is machine-dependent; see BENCHMARKS.md.
      fused_gradient: take the fused sequence path when the cell supports it: on CPU the cell's
        compiled kernel (:mod:`jaxrnn.kernels`), elsewhere :mod:`jaxrnn.fused`; both are custom
        VJPs. ``False`` forces the plain scan: forward-mode autodiff (``jax.jvp``,
        ``jax.jacfwd``, ``jax.linearize``) needs it, as a custom VJP has no forward mode.

    Returns:
      ``(final_carry, ys)`` with ``ys`` of shape ``(B..., T, O)`` (or ``(T, B..., O)``). The final
      carry of a masked sequence is the carry after its last valid step.
    """
    batch_shape, T = validate_inputs(cell, params, xs, carry, lengths, time_major)
    if not isinstance(unroll, (int, bool)) or int(unroll) < 1:
        raise ValueError(f"unroll: expected an int >= 1, got {unroll!r}")
    if isinstance(remat, bool):
        chunk = 1 if remat else 0
    elif isinstance(remat, int) and remat >= 1:
        chunk = remat
    else:
        raise ValueError(f"remat: expected a bool or an int >= 1 (chunk size), got {remat!r}")
    for name, flag in (("reverse", reverse), ("time_major", time_major),
                       ("hoist_projection", hoist_projection), ("fused_gradient", fused_gradient)):
        if not isinstance(flag, (bool, np.bool_)):
            raise TypeError(f"{name}: expected a bool, got {flag!r}")
    if lengths is not None:
        lengths = jnp.asarray(lengths)
    if carry is None:
        carry = cell.initial_carry(params, batch_shape)

    nb = len(batch_shape)
    # Time-major inside the engine: the scan slices along axis 0.
    xs_t = xs if time_major else jnp.moveaxis(xs, -2, 0)
    if reverse:
        xs_t = reverse_padded(xs_t, lengths)

    if hoist_projection:
        seq = cell.project(params, xs_t)

        def cell_step(c, xp):
            return cell.step(params, c, xp)
    else:
        seq = xs_t

        def cell_step(c, x):
            return cell.step(params, c, cell.project(params, x))

    masked = lengths is not None
    if chunk > 1 and T % chunk:
        # Pad time to a whole number of chunks; the padded steps are masked out below.
        pad = chunk - T % chunk
        seq = jnp.concatenate([seq, jnp.zeros((pad, *seq.shape[1:]), seq.dtype)], axis=0)
        if lengths is None:
            lengths = jnp.full(batch_shape, T, jnp.int32)
        masked = True
    T_run = seq.shape[0]

    if masked:

        def body(c, inp):
            t, x = inp
            new_c, y = cell_step(c, x)
            valid = t < lengths  # (B...)
            new_c = _where_tree(valid, new_c, c)
            y = jnp.where(valid.reshape(valid.shape + (1,) * (y.ndim - nb)), y, 0).astype(y.dtype)
            return new_c, y

        xs_in = (jnp.arange(T_run), seq)
    else:

        def body(c, x):
            return cell_step(c, x)

        xs_in = seq

    if chunk == 1:
        body = jax.checkpoint(body)
        final, ys = jax.lax.scan(body, carry, xs_in, unroll=unroll)
    elif chunk > 1:
        n_chunks = T_run // chunk
        chunked_in = jax.tree_util.tree_map(
            lambda a: a.reshape((n_chunks, chunk, *a.shape[1:])), xs_in
        )

        @jax.checkpoint
        def chunk_body(c, inp):
            return jax.lax.scan(body, c, inp, unroll=unroll)

        final, ys = jax.lax.scan(chunk_body, carry, chunked_in)
        ys = ys.reshape((T_run, *ys.shape[2:]))[:T]
    elif fused_gradient and T_run > 0 and fused.owns_step(cell):
        # (an empty sequence takes the plain scan: nothing to fuse, and the fused scan's
        # backward pass reads its first step)
        # The cell exposes parts of its step. First choice: the cell's own whole-sequence
        # kernel (jaxrnn/kernels, CPU), fed the inputs of all steps; then, for a step split into
        # recurrent product + update, the fused scan (same values, a hand-written backward
        # pass, jaxrnn/fused.py); else the plain scan.
        sequence = cell.parts.sequence
        out = None
        if sequence is not None and not hoist_projection:
            out = sequence(params, carry, seq, lengths if masked else None)
        if out is None and fused.supported(cell):
            out = fused.fused_scan(
                cell, params, carry, seq, lengths if masked else None,
                projected=hoist_projection, unroll=unroll,
            )
        if out is None:
            out = jax.lax.scan(body, carry, xs_in, unroll=unroll)
        final, ys = out
    else:
        final, ys = jax.lax.scan(body, carry, xs_in, unroll=unroll)

    if reverse:
        ys = reverse_padded(ys, None if lengths is None else jnp.minimum(lengths, T))
    if not time_major:
        ys = jnp.moveaxis(ys, 0, -2)
    return final, ys


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


__all__ = ["run", "last_valid", "sequence_mask", "reverse_padded", "validate_inputs"]
