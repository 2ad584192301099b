r"""Convolutional LSTM (Shi et al. 2015, "Convolutional LSTM Network: A Machine Learning Approach
for Precipitation Nowcasting").

The LSTM of :mod:`jaxrnn.cells.lstm` with every matrix product replaced by a 2-D convolution
(``*``) over ``(height, width, channels)`` inputs and states, so the state keeps its spatial
layout. Gate order is **(i, f, g, o)** as in the dense LSTM; the four gates are one fused
convolution with ``4C`` output channels for the input and one for the state:

.. math::
   [\tilde i, \tilde f, \tilde g, \tilde o] &= W_x * X_t + W_h * H_{t-1} + b \\
   i &= \sigma(\tilde i + p_i \odot C_{t-1}) \quad
   f  = \sigma(\tilde f + p_f \odot C_{t-1}) \quad
   g  = \tanh(\tilde g) \\
   C_t &= f \odot C_{t-1} + i \odot g \qquad
   o = \sigma(\tilde o + p_o \odot C_t) \qquad H_t = o \odot \tanh(C_t)

Convolutions use ``"SAME"`` zero padding and stride 1 (odd kernels), so ``H_t`` has the frame's
height and width. Peepholes (``peephole=True``) are per channel, shape ``(3, C)``, shared over
space; Shi et al. give each pixel its own peephole weight, which would tie the cell to one frame
size.

Shapes: inputs ``x_t`` are ``(B..., Hgt, Wd, Cin)``, the carry ``h, c`` are
``(B..., Hgt, Wd, C)``. To the scan engine the frame's height and width are batch axes (the cell
mixes them by convolution), so a sequence of frames runs with
``jaxrnn.run(cell, params, frames, time_major=True)`` on ``frames`` of shape
``(T, B, Hgt, Wd, Cin)``; batch-major code uses the layout ``(B, Hgt, Wd, T, Cin)``. ``lengths``,
if given, has shape ``(B, Hgt, Wd)`` (broadcast a per-sequence length over the frame).

With a ``1 x 1`` kernel on a ``1 x 1`` frame the cell is exactly the dense LSTM with
``w_x = W_x[0, 0]``, ``w_h = W_h[0, 0]``.
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
    resolve_activation,
)


class ConvLSTMParams(NamedTuple):
    w_x: Array  # (kh, kw, Cin, 4C) input kernel (HWIO), gate order (i, f, g, o)
    w_h: Array  # (kh, kw, C, 4C) state kernel
    b: Array  # (4C,)
    peephole: Array | None = None  # (3, C): p_i, p_f, p_o per channel; None without peepholes


class ConvLSTMState(NamedTuple):
    h: Array  # (B..., Hgt, Wd, C) hidden output
    c: Array  # (B..., Hgt, Wd, C) cell state


def _kernel_size(kernel_size, argname="kernel_size") -> tuple[int, int]:
    # a bare number or None is one size, not a pair (tuple() of it would raise a TypeError)
    one = isinstance(kernel_size, int) or not isinstance(kernel_size, (tuple, list))
    ks = (kernel_size, kernel_size) if one else tuple(kernel_size)
    if (
        len(ks) != 2
        or any(isinstance(k, bool) or not isinstance(k, int) or k <= 0 or k % 2 == 0 for k in ks)
    ):
        raise ValueError(
            f"{argname}: expected an odd positive int or a pair of them (so 'SAME' padding is "
            f"symmetric), got {kernel_size!r}"
        )
    return ks


def conv2d(x: Array, w: Array, compute_dtype=None) -> Array:
    """``x * w`` with ``"SAME"`` padding, stride 1: ``x (B..., Hgt, Wd, I)``, ``w (kh, kw, I, O)``
    -> ``(B..., Hgt, Wd, O)``. Leading batch axes are folded into one for the convolution.
    With ``compute_dtype`` the operands are cast down and the sums accumulate in float32, as
    :func:`jaxrnn.cells.base.matmul`."""
    if x.ndim < 3:
        raise ValueError(
            f"x: expected a frame (B..., height, width, channels) of rank >= 3, got shape "
            f"{tuple(x.shape)}"
        )
    lead = x.shape[:-3]
    flat = x.reshape((-1, *x.shape[-3:]))
    if compute_dtype is not None:
        flat, w = flat.astype(compute_dtype), w.astype(compute_dtype)
    y = jax.lax.conv_general_dilated(
        flat, w, window_strides=(1, 1), padding="SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        preferred_element_type=None if compute_dtype is None else jnp.float32,
    )
    return y.reshape((*lead, *y.shape[1:]))


def convlstm(
    channels: int,
    *,
    kernel_size: int | tuple[int, int] = 3,
    input_kernel_size: int | tuple[int, int] | None = None,
    forget_bias: float = 1.0,
    peephole: bool = False,
    activation="tanh",
    recurrent_activation="sigmoid",
    compute_dtype=None,
    param_dtype=jnp.float32,
) -> Cell:
    """A convolutional LSTM cell.

    Args:
      channels: ``C``, the number of state channels.
      kernel_size: the state-to-state kernel ``(kh, kw)`` (odd sizes).
      input_kernel_size: the input-to-state kernel; defaults to ``kernel_size``.
      forget_bias: initial forget-gate bias.
      peephole: per-channel peephole connections from the cell state to the gates.
      activation, recurrent_activation: as :func:`jaxrnn.lstm`.
      compute_dtype: e.g. ``jnp.bfloat16`` for the convolutions (float32 accumulation);
        parameters and carry stay in ``param_dtype``.

    Returns:
      A :class:`~jaxrnn.Cell` with ``y_t = H_t`` of shape ``(B..., Hgt, Wd, C)``;
      ``hidden_size == output_size == C`` (channels).
    """
    C = check_positive_int(channels, "channels")
    kh, kw = _kernel_size(kernel_size)
    ikh, ikw = _kernel_size(
        kernel_size if input_kernel_size is None else input_kernel_size, "input_kernel_size"
    )
    forget_bias = check_float(forget_bias, "forget_bias")
    use_peephole = check_bool(peephole, "peephole")
    act = resolve_activation(activation, "activation")
    gate = resolve_activation(recurrent_activation, "recurrent_activation")
    compute_dtype = check_dtype(compute_dtype, "compute_dtype")
    param_dtype = check_dtype(param_dtype, "param_dtype", allow_none=False)

    def init(key, input_size: int) -> ConvLSTMParams:
        check_init_args(key, input_size)
        kx, kh_ = jax.random.split(key)
        # Glorot over each gate's own fan (receptive field x channels), as the dense cells do.
        init_fn = jax.nn.initializers.glorot_uniform(in_axis=(0, 1, 2), out_axis=3)
        wx = jnp.concatenate(
            [init_fn(k, (ikh, ikw, input_size, C), param_dtype) for k in jax.random.split(kx, 4)],
            axis=-1,
        )
        wh = jnp.concatenate(
            [init_fn(k, (kh, kw, C, C), param_dtype) for k in jax.random.split(kh_, 4)], axis=-1
        )
        b = jnp.zeros((4 * C,), param_dtype).at[C : 2 * C].set(forget_bias)
        p = jnp.zeros((3, C), param_dtype) if use_peephole else None
        return ConvLSTMParams(wx, wh, b, p)

    def initial_carry(params: ConvLSTMParams, batch_shape=()) -> ConvLSTMState:
        """``batch_shape`` ends with the frame's ``(height, width)``."""
        shape = check_batch_shape(batch_shape)
        if len(shape) < 2:
            raise ValueError(
                f"batch_shape: a ConvLSTM carry needs (B..., height, width), got {shape}"
            )
        z = jnp.zeros((*shape, C), params.w_h.dtype)
        return ConvLSTMState(z, z)

    def project(params: ConvLSTMParams, x: Array) -> Array:
        if x.ndim < 3:
            raise ValueError(
                f"x: expected frames (..., height, width, channels), got shape {tuple(x.shape)}"
            )
        # One step (B..., Hgt, Wd, Cin) or a whole sequence: conv2d folds the leading axes.
        return conv2d(x, params.w_x, compute_dtype) + params.b

    def step(params: ConvLSTMParams, carry: ConvLSTMState, xp: Array):
        with jax.named_scope("convlstm_step"):
            z = xp + conv2d(carry.h, params.w_h, compute_dtype)
            zi, zf, zg, zo = jnp.split(z, 4, axis=-1)
            if params.peephole is not None:
                zi = zi + params.peephole[0] * carry.c
                zf = zf + params.peephole[1] * carry.c
            c = gate(zf) * carry.c + gate(zi) * act(zg)
            if params.peephole is not None:
                zo = zo + params.peephole[2] * c
            h = gate(zo) * act(c)
            return ConvLSTMState(h.astype(carry.h.dtype), c.astype(carry.c.dtype)), h

    return Cell(
        init=init,
        initial_carry=initial_carry,
        project=project,
        step=step,
        hidden_size=C,
        output_size=C,
        name="convlstm",
        input_size=lambda p: p.w_x.shape[2],
        options=CellOptions(activation=activation, recurrent_activation=recurrent_activation,
                            peephole=use_peephole, kernel_size=(kh, kw),
                            input_kernel_size=(ikh, ikw), compute_dtype=compute_dtype),
    )


__all__ = ["convlstm", "ConvLSTMParams", "ConvLSTMState", "conv2d"]
