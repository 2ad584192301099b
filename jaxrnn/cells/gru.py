r"""Gated recurrent unit (Cho et al. 2014), in both published forms.

Gate order in every fused matrix is **(r, z, n)**: reset, update, candidate (PyTorch's order).

``reset_after=True`` (the default; the form of cuDNN, PyTorch ``nn.GRU`` and Keras
``reset_after=True``): the reset gate multiplies the *result* of the recurrent product, so all
three recurrent blocks are one fused ``(H, 3H)`` product and a second bias ``b_h`` is kept:

.. math::
   r &= \sigma(x W_{xr} + b_r + h_{t-1} W_{hr} + b_{hr}) \qquad
   z  = \sigma(x W_{xz} + b_z + h_{t-1} W_{hz} + b_{hz}) \\
   n &= \tanh(x W_{xn} + b_n + r \odot (h_{t-1} W_{hn} + b_{hn})) \\
   h_t &= (1 - z) \odot n + z \odot h_{t-1}

``reset_after=False`` (Cho et al. 2014 as published): the reset gate is applied *before* the
recurrent product, ``n = tanh(x W_xn + (r * h_{t-1}) W_hn + b_n)``; this needs a second,
sequential product per step, and there is no ``b_h``.

The default is ``reset_after=True`` because it matches the peers people import weights from and
because its single fused recurrent product is faster.
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
    check_init_args,
    check_positive_int,
    compose_step,
    glorot_blocks,
    matmul,
    orthogonal_blocks,
    resolve_activation,
)


class GRUParams(NamedTuple):
    w_x: Array  # (F, 3H), gate order (r, z, n)
    w_h: Array  # (H, 3H)
    b: Array  # (3H,) input-side bias
    b_h: Array | None = None  # (3H,) recurrent-side bias (reset_after=True only)


class GRUState(NamedTuple):
    h: Array  # (B..., H)


def gru(
    hidden_size: int,
    *,
    reset_after: bool = True,
    activation="tanh",
    recurrent_activation="sigmoid",
    compute_dtype=None,
    param_dtype=jnp.float32,
) -> Cell:
    """A GRU cell; see the module docstring for the two forms. ``y_t = h_t``."""
    H = check_positive_int(hidden_size, "hidden_size")
    check_bool(reset_after, "reset_after")
    act = resolve_activation(activation, "activation")
    gate = resolve_activation(recurrent_activation, "recurrent_activation")
    compute_dtype = check_dtype(compute_dtype, "compute_dtype")
    param_dtype = check_dtype(param_dtype, "param_dtype", allow_none=False)

    def init(key, input_size: int) -> GRUParams:
        check_init_args(key, input_size)
        kx, kh = jax.random.split(key)
        return GRUParams(
            w_x=glorot_blocks(kx, input_size, H, 3, param_dtype),
            w_h=orthogonal_blocks(kh, H, 3, param_dtype),
            b=jnp.zeros((3 * H,), param_dtype),
            b_h=jnp.zeros((3 * H,), param_dtype) if reset_after else None,
        )

    def initial_carry(params: GRUParams, batch_shape=()) -> GRUState:
        return GRUState(jnp.zeros((*check_batch_shape(batch_shape), H), params.w_h.dtype))

    def project(params: GRUParams, x: Array) -> Array:
        return matmul(x, params.w_x, compute_dtype) + params.b

    def recurrent_product(params: GRUParams, h: Array) -> Array:
        hp = matmul(h, params.w_h, compute_dtype)
        return hp if params.b_h is None else hp + params.b_h

    def update_reset_after(params: GRUParams, carry: GRUState, xp: Array, hp: Array):
        with jax.named_scope("gru_step"):
            xr, xz, xn = jnp.split(xp, 3, axis=-1)
            hr, hz, hn = jnp.split(hp, 3, axis=-1)
            r = gate(xr + hr)
            z = gate(xz + hz)
            n = act(xn + r * hn)
            h = ((1.0 - z) * n + z * carry.h).astype(carry.h.dtype)
            return GRUState(h), h

    # reset_after=True is one recurrent product plus elementwise work (the fused engine applies);
    # reset_after=False has a second product that depends on r, so it keeps the plain step.
    step_reset_after, parts = compose_step(recurrent_product, update_reset_after)

    def step_reset_before(params: GRUParams, carry: GRUState, xp: Array):
        with jax.named_scope("gru_step"):
            xr, xz, xn = jnp.split(xp, 3, axis=-1)
            rz = matmul(carry.h, params.w_h[:, : 2 * H], compute_dtype)
            r = gate(xr + rz[..., :H])
            z = gate(xz + rz[..., H:])
            n = act(xn + matmul(r * carry.h, params.w_h[:, 2 * H :], compute_dtype))
            h = ((1.0 - z) * n + z * carry.h).astype(carry.h.dtype)
            return GRUState(h), h

    return Cell(
        init=init,
        initial_carry=initial_carry,
        project=project,
        step=step_reset_after if reset_after else step_reset_before,
        hidden_size=H,
        output_size=H,
        name="gru" if reset_after else "gru_cho",
        input_size=lambda p: p.w_x.shape[0],
        parts=parts if reset_after else None,
        options=CellOptions(activation=activation, recurrent_activation=recurrent_activation,
                            reset_after=reset_after, compute_dtype=compute_dtype),
    )
