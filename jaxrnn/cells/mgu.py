r"""Minimal gated unit (Zhou, Wu, Zhang & Zhou 2016, "Minimal Gated Unit for Recurrent Neural
Networks"): a GRU with one gate, the forget gate, doing the work of both.

Block order in the fused matrices is **(f, h~)**:

.. math::
   f_t &= \sigma(x_t W_f + h_{t-1} U_f + b_f) \\
   \tilde h_t &= \tanh(x_t W_h + (f_t \odot h_{t-1}) U_h + b_h) \\
   h_t &= (1 - f_t) \odot h_{t-1} + f_t \odot \tilde h_t

As in Cho's GRU, the gate scales ``h_{t-1}`` before the candidate's recurrent product, so a step
has two dependent products and the cell runs on the plain scan. ``y_t = h_t``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxrnn.cells.base import (
    Array,
    Cell,
    check_batch_shape,
    check_dtype,
    check_init_args,
    check_positive_int,
    glorot_blocks,
    matmul,
    orthogonal_blocks,
    resolve_activation,
)


class MGUParams(NamedTuple):
    w_x: Array  # (F, 2H), block order (f, h~): W_f, W_h
    w_h: Array  # (H, 2H): U_f, U_h
    b: Array  # (2H,): b_f, b_h


class MGUState(NamedTuple):
    h: Array  # (B..., H)


def mgu(
    hidden_size: int,
    *,
    activation="tanh",
    recurrent_activation="sigmoid",
    compute_dtype=None,
    param_dtype=jnp.float32,
) -> Cell:
    """A minimal gated unit with ``H = hidden_size`` units (see the module docstring).

    Args:
      hidden_size: ``H``.
      activation: the candidate's squashing (``tanh``).
      recurrent_activation: the forget gate's nonlinearity (``sigmoid``).
      compute_dtype: e.g. ``jnp.bfloat16`` for the products (float32 accumulation).
      param_dtype: dtype of the parameters and the carry.
    """
    H = check_positive_int(hidden_size, "hidden_size")
    act = resolve_activation(activation, "activation")
    gate = resolve_activation(recurrent_activation, "recurrent_activation")
    compute_dtype = check_dtype(compute_dtype, "compute_dtype")
    param_dtype = check_dtype(param_dtype, "param_dtype", allow_none=False)

    def init(key, input_size: int) -> MGUParams:
        check_init_args(key, input_size)
        kx, kh = jax.random.split(key)
        return MGUParams(
            w_x=glorot_blocks(kx, input_size, H, 2, param_dtype),
            w_h=orthogonal_blocks(kh, H, 2, param_dtype),
            b=jnp.zeros((2 * H,), param_dtype),
        )

    def initial_carry(params: MGUParams, batch_shape=()) -> MGUState:
        return MGUState(jnp.zeros((*check_batch_shape(batch_shape), H), params.w_h.dtype))

    def project(params: MGUParams, x: Array) -> Array:
        return matmul(x, params.w_x, compute_dtype) + params.b

    def step(params: MGUParams, carry: MGUState, xp: Array):
        with jax.named_scope("mgu_step"):
            xf, xh = jnp.split(xp, 2, axis=-1)
            f = gate(xf + matmul(carry.h, params.w_h[:, :H], compute_dtype))
            h_tilde = act(xh + matmul(f * carry.h, params.w_h[:, H:], compute_dtype))
            h = ((1.0 - f) * carry.h + f * h_tilde).astype(carry.h.dtype)
            return MGUState(h), h

    return Cell(
        init=init,
        initial_carry=initial_carry,
        project=project,
        step=step,
        hidden_size=H,
        output_size=H,
        name="mgu",
        input_size=lambda p: p.w_x.shape[0],
    )


__all__ = ["mgu", "MGUParams", "MGUState"]
