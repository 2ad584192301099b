"""The plain backend: :func:`jax.lax.scan` over the cell's ``step``, with optional
rematerialisation. It runs every cell and every option, and it is the reference the other
backends are tested against (gradients by autodiff through the scan, forward mode included)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxrnn.cells.base import Array, PyTree
from jaxrnn.engine import masking
from jaxrnn.engine.plan import Backend, Plan


def refuse(plan: Plan) -> str | None:
    return None  # every cell, every option


def run(plan: Plan) -> tuple[PyTree, Array]:
    cell, params, carry, lengths = plan.cell, plan.params, plan.carry, plan.lengths
    T, chunk, unroll = plan.T, plan.chunk, plan.unroll
    if plan.hoist_projection:
        seq = cell.project(params, plan.xs)

        def cell_step(c, xp):
            return cell.step(params, c, xp)
    else:
        seq = plan.xs

        def cell_step(c, x):
            return cell.step(params, c, cell.project(params, x))

    masked = lengths is not None
    if chunk > 1 and T % chunk:
        # Pad time to a whole number of chunks; the padded steps are masked out below.
        pad = chunk - T % chunk
        seq = jnp.concatenate([seq, jnp.zeros((pad, *seq.shape[1:]), seq.dtype)], axis=0)
        if lengths is None:
            lengths = jnp.full(plan.batch_shape, T, jnp.int32)
        masked = True
    T_run = seq.shape[0]

    if masked:

        def body(c, inp):
            t, x = inp
            new_c, y = cell_step(c, x)
            valid = masking.step_valid(t, lengths)
            return masking.freeze(valid, new_c, c), masking.zero_invalid(valid, y)

        xs_in = (jnp.arange(T_run), seq)
    else:
        body, xs_in = cell_step, seq

    if chunk == 1:
        return jax.lax.scan(jax.checkpoint(body), carry, xs_in, unroll=unroll)
    if chunk > 1:
        n_chunks = T_run // chunk
        chunked_in = jax.tree_util.tree_map(
            lambda a: a.reshape((n_chunks, chunk, *a.shape[1:])), xs_in
        )

        @jax.checkpoint
        def chunk_body(c, inp):
            return jax.lax.scan(body, c, inp, unroll=unroll)

        final, ys = jax.lax.scan(chunk_body, carry, chunked_in)
        return final, ys.reshape((T_run, *ys.shape[2:]))[:T]
    return jax.lax.scan(body, carry, xs_in, unroll=unroll)


BACKEND = Backend(
    name="scan",
    refuse=refuse,
    run=run,
    summary="plain jax.lax.scan over the cell's step (autodiff, forward mode, remat)",
)

__all__ = ["BACKEND", "run"]
