r"""Elman network (simple RNN; Elman 1990).

.. math::
   h_t = \sigma_h(x_t W_h + h_{t-1} U_h + b_h) \qquad
   y_t = \sigma_y(h_t W_y + b_y) \ \text{(optional readout)}

Without ``output_size`` the cell emits ``y_t = h_t`` (as Keras ``SimpleRNN``, PyTorch ``nn.RNN``).
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


class ElmanParams(NamedTuple):
    w_x: Array  # (F, H)   W_h in the equations
    w_h: Array  # (H, H)   U_h
    b: Array  # (H,)
    w_y: Array | None = None  # (H, O) readout
    b_y: Array | None = None  # (O,)


class ElmanState(NamedTuple):
    h: Array  # (B..., H)


def elman(
    hidden_size: int,
    *,
    output_size: int | None = None,
    activation="tanh",
    output_activation="identity",
    compute_dtype=None,
    param_dtype=jnp.float32,
) -> Cell:
    """An Elman (simple recurrent) cell.

    Args:
      hidden_size: ``H``.
      output_size: if given, a readout ``y_t = output_activation(h_t W_y + b_y)`` of size ``O``
        is part of the cell; otherwise ``y_t = h_t``.
      activation: ``sigma_h``.
      output_activation: ``sigma_y``.
    """
    H = check_positive_int(hidden_size, "hidden_size")
    O = None if output_size is None else check_positive_int(output_size, "output_size")
    act_h = resolve_activation(activation, "activation")
    act_y = resolve_activation(output_activation, "output_activation")
    compute_dtype = check_dtype(compute_dtype, "compute_dtype")
    param_dtype = check_dtype(param_dtype, "param_dtype", allow_none=False)

    def init(key, input_size: int) -> ElmanParams:
        check_init_args(key, input_size)
        kx, kh, ky = jax.random.split(key, 3)
        params = ElmanParams(
            w_x=glorot_blocks(kx, input_size, H, 1, param_dtype),
            w_h=orthogonal_blocks(kh, H, 1, param_dtype),
            b=jnp.zeros((H,), param_dtype),
        )
        if O is not None:
            params = params._replace(
                w_y=glorot_blocks(ky, H, O, 1, param_dtype), b_y=jnp.zeros((O,), param_dtype)
            )
        return params

    def initial_carry(params: ElmanParams, batch_shape=()) -> ElmanState:
        return ElmanState(jnp.zeros((*check_batch_shape(batch_shape), H), params.w_h.dtype))

    def project(params: ElmanParams, x: Array) -> Array:
        return matmul(x, params.w_x, compute_dtype) + params.b

    def recurrent_product(params: ElmanParams, h: Array) -> Array:
        return matmul(h, params.w_h, compute_dtype)

    def update(params: ElmanParams, carry: ElmanState, xp: Array, hp: Array):
        with jax.named_scope("elman_step"):
            h = act_h(xp + hp).astype(carry.h.dtype)
            if params.w_y is None:
                return ElmanState(h), h
            y = act_y(matmul(h, params.w_y, compute_dtype) + params.b_y)
            return ElmanState(h), y

    step, parts = compose_step(recurrent_product, update, additive=True)

    return Cell(
        init=init,
        initial_carry=initial_carry,
        project=project,
        step=step,
        hidden_size=H,
        output_size=H if O is None else O,
        name="elman",
        input_size=lambda p: p.w_x.shape[0],
        parts=parts,
        options=CellOptions(activation=activation, output_activation=output_activation,
                            readout=O is not None, compute_dtype=compute_dtype),
    )
