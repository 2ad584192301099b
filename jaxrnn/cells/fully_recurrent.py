r"""Fully recurrent network (Williams & Zipser 1989; the 1980s formulation).

A single pool of ``N`` non-input units; every unit receives a connection from every unit (itself
included), from every input unit and from a bias. Input units are clamped to ``x_t``. The state
vector is ``s_t = [x_t ; u_t]`` and

.. math::
   u_t = f(s_{t-1}' W + b), \quad s_{t-1}' = [x_t ; u_{t-1}] \qquad y_t = u_t[\text{output units}]

i.e. ``W`` is ``(F + N, N)``: rows for the clamped inputs and rows for the units themselves. The
first ``output_size`` units are the designated output units (``y_t`` is read from them); the rest
are hidden. The engine's split stores ``W`` as ``w_x = W[:F]`` and ``w_h = W[F:]``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxrnn.cells.base import (
    Array,
    Cell,
    CellOptions,
    check_batch_shape,
    check_dtype,
    check_init_args,
    check_positive_int,
    compose_step,
    glorot_blocks,
    matmul,
    orthogonal_blocks,
    resolve_activation,
)


class FullyRecurrentParams(NamedTuple):
    w_x: Array  # (F, N): input units -> every unit
    w_h: Array  # (N, N): every unit -> every unit
    b: Array  # (N,)


class FullyRecurrentState(NamedTuple):
    h: Array  # (B..., N) activations of all non-input units


def fully_recurrent(
    num_units: int,
    output_size: int,
    *,
    activation="tanh",
    compute_dtype=None,
    param_dtype=jnp.float32,
) -> Cell:
    """A fully recurrent network of ``num_units`` units, of which the first ``output_size`` are
    the output units."""
    N = check_positive_int(num_units, "num_units")
    O = check_positive_int(output_size, "output_size")
    if O > N:
        raise ValueError(f"output_size: must be <= num_units={N}, got {O}")
    act = resolve_activation(activation, "activation")
    compute_dtype = check_dtype(compute_dtype, "compute_dtype")
    param_dtype = check_dtype(param_dtype, "param_dtype", allow_none=False)

    def init(key, input_size: int) -> FullyRecurrentParams:
        check_init_args(key, input_size)
        kx, kh = jax.random.split(key)
        return FullyRecurrentParams(
            w_x=glorot_blocks(kx, input_size, N, 1, param_dtype),
            w_h=orthogonal_blocks(kh, N, 1, param_dtype),
            b=jnp.zeros((N,), param_dtype),
        )

    def initial_carry(params, batch_shape=()) -> FullyRecurrentState:
        shape = (*check_batch_shape(batch_shape), N)
        return FullyRecurrentState(jnp.zeros(shape, params.w_h.dtype))

    def project(params, x):
        return matmul(x, params.w_x, compute_dtype) + params.b

    def recurrent_product(params, h):
        return matmul(h, params.w_h, compute_dtype)

    def update(params, carry, xp, hp):
        with jax.named_scope("fully_recurrent_step"):
            u = act(xp + hp).astype(carry.h.dtype)
            return FullyRecurrentState(u), u[..., :O]

    step, parts = compose_step(recurrent_product, update, additive=True)

    return Cell(
        init=init,
        initial_carry=initial_carry,
        project=project,
        step=step,
        hidden_size=N,
        output_size=O,
        name="fully_recurrent",
        input_size=lambda p: p.w_x.shape[0],
        parts=parts,
        options=CellOptions(activation=activation, compute_dtype=compute_dtype),
    )
