r"""Long short-term memory (Hochreiter & Schmidhuber 1997; forget gate Gers et al. 2000;
peepholes Gers & Schmidhuber 2000).

Gate order in every fused matrix is **(i, f, g, o)**: input gate, forget gate, cell candidate,
output gate -- the order PyTorch uses, so its weights import without reshuffling.

.. math::
   [\tilde i, \tilde f, \tilde g, \tilde o] &= x_t W_x + h_{t-1} W_h + b \\
   i &= \sigma(\tilde i + p_i \odot c_{t-1}) \quad
   f  = \sigma(\tilde f + p_f \odot c_{t-1}) \quad
   g  = \tanh(\tilde g) \\
   c_t &= f \odot c_{t-1} + i \odot g \\
   o &= \sigma(\tilde o + p_o \odot c_t) \qquad h_t = o \odot \tanh(c_t)

The peephole terms ``p_*`` (diagonal, shape ``(H,)``) are present only with ``peephole=True``.
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
    check_bool,
    check_dtype,
    check_float,
    check_init_args,
    check_positive_int,
    compose_step,
    glorot_blocks,
    matmul,
    orthogonal_blocks,
    resolve_activation,
)


class LSTMParams(NamedTuple):
    w_x: Array  # (F, 4H) input weights, gate order (i, f, g, o)
    w_h: Array  # (H, 4H) recurrent weights
    b: Array  # (4H,)
    peephole: Array | None = None  # (3, H): p_i, p_f, p_o; None without peepholes


class LSTMState(NamedTuple):
    h: Array  # (B..., H) hidden output
    c: Array  # (B..., H) cell state


def lstm(
    hidden_size: int,
    *,
    forget_bias: float = 1.0,
    peephole: bool = False,
    activation="tanh",
    recurrent_activation="sigmoid",
    compute_dtype=None,
    param_dtype=jnp.float32,
) -> Cell:
    """An LSTM cell.

    Args:
      hidden_size: ``H``.
      forget_bias: initial value of the forget-gate bias (1.0, Jozefowicz et al. 2015).
      peephole: add diagonal peephole connections from the cell state to the gates.
      activation: the cell candidate and output squashing (``tanh``).
      recurrent_activation: the gate nonlinearity (``sigmoid``).
      compute_dtype: e.g. ``jnp.bfloat16`` to compute products in low precision with float32
        accumulation; parameters and carry stay in ``param_dtype``.

    Returns:
      A :class:`~jaxrnn.Cell`; ``y_t = h_t`` with ``output_size == hidden_size``.
    """
    H = check_positive_int(hidden_size, "hidden_size")
    forget_bias = check_float(forget_bias, "forget_bias")
    use_peephole = check_bool(peephole, "peephole")
    act = resolve_activation(activation, "activation")
    gate = resolve_activation(recurrent_activation, "recurrent_activation")
    compute_dtype = check_dtype(compute_dtype, "compute_dtype")
    param_dtype = check_dtype(param_dtype, "param_dtype", allow_none=False)

    def init(key, input_size: int) -> LSTMParams:
        check_init_args(key, input_size)
        kx, kh = jax.random.split(key)
        b = jnp.zeros((4 * H,), param_dtype).at[H : 2 * H].set(forget_bias)
        p = jnp.zeros((3, H), param_dtype) if use_peephole else None
        return LSTMParams(
            w_x=glorot_blocks(kx, input_size, H, 4, param_dtype),
            w_h=orthogonal_blocks(kh, H, 4, param_dtype),
            b=b,
            peephole=p,
        )

    def initial_carry(params: LSTMParams, batch_shape=()) -> LSTMState:
        shape = (*check_batch_shape(batch_shape), H)
        return LSTMState(jnp.zeros(shape, params.w_h.dtype), jnp.zeros(shape, params.w_h.dtype))

    def project(params: LSTMParams, x: Array) -> Array:
        return matmul(x, params.w_x, compute_dtype) + params.b

    def recurrent_product(params: LSTMParams, h: Array) -> Array:
        return matmul(h, params.w_h, compute_dtype)

    def update(params: LSTMParams, carry: LSTMState, xp: Array, hp: Array):
        with jax.named_scope("lstm_step"):
            z = xp + hp
            zi, zf, zg, zo = jnp.split(z, 4, axis=-1)
            if params.peephole is not None:
                zi = zi + params.peephole[0] * carry.c
                zf = zf + params.peephole[1] * carry.c
            c = gate(zf) * carry.c + gate(zi) * act(zg)
            if params.peephole is not None:
                zo = zo + params.peephole[2] * c
            h = gate(zo) * act(c)
            c = c.astype(carry.c.dtype)
            h = h.astype(carry.h.dtype)
            return LSTMState(h, c), h

    step, parts = compose_step(recurrent_product, update, additive=True)

    return Cell(
        init=init,
        initial_carry=initial_carry,
        project=project,
        step=step,
        hidden_size=H,
        output_size=H,
        name="lstm",
        input_size=lambda p: p.w_x.shape[0],
        parts=parts,
        options=CellOptions(activation=activation, recurrent_activation=recurrent_activation,
                            peephole=use_peephole, compute_dtype=compute_dtype),
    )
