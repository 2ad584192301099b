r"""minGRU and minLSTM (Feng et al. 2024, "Were RNNs All We Needed?"): recurrences linear in h.

Both cells drop the hidden state from their gates, so every step is an affine map of the previous
state with coefficients that depend only on the input,

.. math::  h_t = a_t \odot h_{t-1} + b_t, \qquad a_t, b_t = \text{function of } x_t \text{ only},

which can be evaluated for all ``t`` at once by a parallel prefix scan in ``O(log T)`` depth
(:func:`jaxrnn.parallel_run`, the engine's associative backend), or step by step on the common
engine (:func:`jaxrnn.run`) like any other :class:`~jaxrnn.Cell`. The two forms share the
parameters, the input projection and the coefficient functions below; only the way the affine
maps are composed differs.

Both cells use the paper's log-space form: the candidate state goes through

.. math::  g(v) = \begin{cases} v + \tfrac12 & v \ge 0 \\ \sigma(v) & v < 0 \end{cases}

so that it is positive, and the coefficients are computed as logarithms,
:math:`\log a_t` and :math:`\log b_t`, which the parallel form composes with ``logaddexp``
(no products of many small numbers, no underflow).

**minGRU** (fused projection ``(F, 2H)``, block order ``(z, h~)``):

.. math::
   z_t = \sigma(x_t W_z + b_z), \quad \tilde h_t = g(x_t W_h + b_h), \quad
   h_t = (1 - z_t) \odot h_{t-1} + z_t \odot \tilde h_t

   \log a_t = -\mathrm{softplus}(k_z), \quad
   \log b_t = -\mathrm{softplus}(-k_z) + \log g(k_h)

**minLSTM** (fused projection ``(F, 3H)``, block order ``(f, i, h~)``), with the forget and input
gates normalised to sum to one (the paper's time-independent form):

.. math::
   f_t = \sigma(k_f), \ i_t = \sigma(k_i), \quad
   f'_t = \frac{f_t}{f_t + i_t}, \ i'_t = \frac{i_t}{f_t + i_t}, \quad
   h_t = f'_t \odot h_{t-1} + i'_t \odot g(k_h)

   d = \mathrm{softplus}(-k_f) - \mathrm{softplus}(-k_i), \quad
   \log a_t = -\mathrm{softplus}(d), \quad \log b_t = -\mathrm{softplus}(-d) + \log g(k_h)

Composition of two steps (earlier ``1``, later ``2``) is
:math:`(a_1, b_1) \circ (a_2, b_2) = (a_1 a_2,\ a_2 b_1 + b_2)`, i.e. in log space
:math:`(\log a_1 + \log a_2,\ \mathrm{logaddexp}(\log b_1 + \log a_2, \log b_2))`; after the
scan, :math:`h_t = A_t h_0 + B_t` with the prefix products ``A`` and sums ``B``. The initial
state ``h_0`` enters only in that last linear step, so it may have any sign.

Output ``y_t = h_t`` (``output_size == hidden_size``); the carry is ``MinGRUState(h)`` /
``MinLSTMState(h)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxrnn.cells.base import (
    Array,
    Cell,
    CellOptions,
    StepParts,
    check_batch_shape,
    check_dtype,
    check_init_args,
    check_positive_int,
    glorot_blocks,
    matmul,
)


class MinGRUParams(NamedTuple):
    w_x: Array  # (F, 2H), block order (z, h~)
    b: Array  # (2H,)


class MinGRUState(NamedTuple):
    h: Array  # (B..., H)


class MinLSTMParams(NamedTuple):
    w_x: Array  # (F, 3H), block order (f, i, h~)
    b: Array  # (3H,)


class MinLSTMState(NamedTuple):
    h: Array  # (B..., H)


def g(v: Array) -> Array:
    r"""The positive candidate activation :math:`g(v) = v + 1/2` for ``v >= 0``, else
    :math:`\sigma(v)` (continuous at 0, always > 0)."""
    return jnp.where(v >= 0, v + 0.5, jax.nn.sigmoid(v))


def log_g(v: Array) -> Array:
    r""":math:`\log g(v)` computed without forming ``g`` (``-softplus(-v)`` for ``v < 0``)."""
    return jnp.where(v >= 0, jnp.log(jax.nn.relu(v) + 0.5), -jax.nn.softplus(-v))


def min_gru_log_coefficients(xp: Array) -> tuple[Array, Array]:
    """``(log a, log b)`` of one minGRU step from its projected input ``xp: (..., 2H)``;
    each ``(..., H)``."""
    k_z, k_h = jnp.split(xp, 2, axis=-1)
    return -jax.nn.softplus(k_z), -jax.nn.softplus(-k_z) + log_g(k_h)


def min_lstm_log_coefficients(xp: Array) -> tuple[Array, Array]:
    """``(log a, log b)`` of one minLSTM step (normalised gates) from ``xp: (..., 3H)``;
    each ``(..., H)``."""
    k_f, k_i, k_h = jnp.split(xp, 3, axis=-1)
    d = jax.nn.softplus(-k_f) - jax.nn.softplus(-k_i)  # log(i / f)
    return -jax.nn.softplus(d), -jax.nn.softplus(-d) + log_g(k_h)


def _minimal_cell(
    hidden_size: int,
    blocks: int,
    params_type,
    state_type,
    log_coefficients: Callable[[Array], tuple[Array, Array]],
    name: str,
    compute_dtype,
    param_dtype,
) -> Cell:
    H = check_positive_int(hidden_size, "hidden_size")
    compute_dtype = check_dtype(compute_dtype, "compute_dtype")
    param_dtype = check_dtype(param_dtype, "param_dtype", allow_none=False)

    def init(key, input_size: int):
        check_init_args(key, input_size)
        return params_type(
            w_x=glorot_blocks(key, input_size, H, blocks, param_dtype),
            b=jnp.zeros((blocks * H,), param_dtype),
        )

    def initial_carry(params, batch_shape=()):
        return state_type(jnp.zeros((*check_batch_shape(batch_shape), H), params.w_x.dtype))

    def project(params, x: Array) -> Array:
        return matmul(x, params.w_x, compute_dtype) + params.b

    def step(params, carry, xp: Array):
        with jax.named_scope(f"{name}_step"):
            log_a, log_b = log_coefficients(xp)
            h = (jnp.exp(log_a) * carry.h + jnp.exp(log_b)).astype(carry.h.dtype)
            return state_type(h), h

    # No recurrent product to split off (the step is affine in h, its coefficients depend on
    # x only); the parts still say the step is the cell's own, for the engine's backends.
    parts = StepParts(recurrent_product=None, update=None, step=step)

    return Cell(
        init=init,
        initial_carry=initial_carry,
        project=project,
        step=step,
        hidden_size=H,
        output_size=H,
        name=name,
        input_size=lambda p: p.w_x.shape[0],
        parts=parts,
        options=CellOptions(compute_dtype=compute_dtype),
    )


def min_gru(hidden_size: int, *, compute_dtype=None, param_dtype=jnp.float32) -> Cell:
    """A minGRU cell (log-space form; see the module docstring). Sequential on
    :func:`jaxrnn.run`; parallel over time with :func:`jaxrnn.parallel_run`.

    Args:
      hidden_size: ``H``.
      compute_dtype: e.g. ``jnp.bfloat16`` for the input projection (float32 accumulation).
      param_dtype: dtype of ``w_x (F, 2H)`` and ``b (2H,)``.
    """
    return _minimal_cell(
        hidden_size, 2, MinGRUParams, MinGRUState, min_gru_log_coefficients, "min_gru",
        compute_dtype, param_dtype,
    )


def min_lstm(hidden_size: int, *, compute_dtype=None, param_dtype=jnp.float32) -> Cell:
    """A minLSTM cell (log-space form, normalised gates; see the module docstring). Sequential
    on :func:`jaxrnn.run`; parallel over time with :func:`jaxrnn.parallel_run`.

    Args:
      hidden_size: ``H``.
      compute_dtype: e.g. ``jnp.bfloat16`` for the input projection (float32 accumulation).
      param_dtype: dtype of ``w_x (F, 3H)`` and ``b (3H,)``.
    """
    return _minimal_cell(
        hidden_size, 3, MinLSTMParams, MinLSTMState, min_lstm_log_coefficients, "min_lstm",
        compute_dtype, param_dtype,
    )


__all__ = [
    "min_gru",
    "min_lstm",
    "MinGRUParams",
    "MinGRUState",
    "MinLSTMParams",
    "MinLSTMState",
    "g",
    "log_g",
    "min_gru_log_coefficients",
    "min_lstm_log_coefficients",
]
