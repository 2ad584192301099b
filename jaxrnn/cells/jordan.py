r"""Jordan network (Jordan 1986): the context fed back is the previous *output*.

.. math::
   h_t = \sigma_h(x_t W_h + y_{t-1} U_h + b_h) \qquad y_t = \sigma_y(h_t W_y + b_y)

Because the recurrence runs through ``y``, the readout is part of the cell and the carry is
``y_{t-1}`` (shape ``(B..., O)``).
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


class JordanParams(NamedTuple):
    w_x: Array  # (F, H)  W_h
    w_y_h: Array  # (O, H) U_h: previous output -> hidden
    b: Array  # (H,)
    w_y: Array  # (H, O)  readout W_y
    b_y: Array  # (O,)


class JordanState(NamedTuple):
    y: Array  # (B..., O): the previous output, the Jordan context


def jordan(
    hidden_size: int,
    output_size: int,
    *,
    activation="tanh",
    output_activation="tanh",
    compute_dtype=None,
    param_dtype=jnp.float32,
) -> Cell:
    """A Jordan cell with hidden size ``H`` and output (context) size ``O``."""
    H = check_positive_int(hidden_size, "hidden_size")
    O = check_positive_int(output_size, "output_size")
    act_h = resolve_activation(activation, "activation")
    act_y = resolve_activation(output_activation, "output_activation")
    compute_dtype = check_dtype(compute_dtype, "compute_dtype")
    param_dtype = check_dtype(param_dtype, "param_dtype", allow_none=False)

    def init(key, input_size: int) -> JordanParams:
        check_init_args(key, input_size)
        kx, kc, ky = jax.random.split(key, 3)
        return JordanParams(
            w_x=glorot_blocks(kx, input_size, H, 1, param_dtype),
            # the context->hidden matrix is not square in general: orthogonal rows/cols as it can
            w_y_h=orthogonal_blocks(kc, H, 1, param_dtype, rows=O),
            b=jnp.zeros((H,), param_dtype),
            w_y=glorot_blocks(ky, H, O, 1, param_dtype),
            b_y=jnp.zeros((O,), param_dtype),
        )

    def initial_carry(params: JordanParams, batch_shape=()) -> JordanState:
        return JordanState(jnp.zeros((*check_batch_shape(batch_shape), O), params.w_y.dtype))

    def project(params: JordanParams, x: Array) -> Array:
        return matmul(x, params.w_x, compute_dtype) + params.b

    def recurrent_product(params: JordanParams, y_prev: Array) -> Array:
        return matmul(y_prev, params.w_y_h, compute_dtype)

    def update(params: JordanParams, carry: JordanState, xp: Array, hp: Array):
        with jax.named_scope("jordan_step"):
            h = act_h(xp + hp)
            y = act_y(matmul(h, params.w_y, compute_dtype) + params.b_y).astype(carry.y.dtype)
            return JordanState(y), y

    step, parts = compose_step(recurrent_product, update, recurrent_key="y", additive=True)

    return Cell(
        init=init,
        initial_carry=initial_carry,
        project=project,
        step=step,
        hidden_size=H,
        output_size=O,
        name="jordan",
        input_size=lambda p: p.w_x.shape[0],
        recurrent_key="y",
        parts=parts,
        options=CellOptions(activation=activation, output_activation=output_activation,
                            compute_dtype=compute_dtype),
    )
