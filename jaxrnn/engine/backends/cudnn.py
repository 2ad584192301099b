"""The cuDNN backend: the LSTM on NVIDIA GPUs through :func:`jax.experimental.rnn.lstm`.

cuDNN computes the whole sequence (both products of every step, and the backward pass) in one
call. It takes only what it computes exactly: the plain LSTM (no peepholes, tanh / sigmoid),
float32 everywhere, on a GPU default backend; products at full float32 precision (no TF32), so
its values are the plain scan's up to float rounding.

Weights go into cuDNN's one flat vector in its documented layout (``jax.experimental.rnn``, the
PyTorch names): ``W_ih (4H, F)``, ``W_hh (4H, H)``, ``b_ih (4H,)``, ``b_hh (4H,)`` with the gate
blocks in the order (i, f, g, o), jaxrnn's own. So ``W_ih = w_x^T``, ``W_hh = w_h^T``,
``b_ih = b`` and ``b_hh = 0`` (jaxrnn keeps one bias); :func:`pack_weights` does that and is
tested on the CPU against :func:`jax.experimental.rnn.lstm_ref`.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxrnn.cells.base import Array, PyTree
from jaxrnn.engine import masking
from jaxrnn.engine.backends import cpu_kernels
from jaxrnn.engine.backends.fused import sequence_kernel_refusal
from jaxrnn.engine.plan import Backend, Plan


def pack_weights(params) -> Array:
    """jaxrnn ``LSTMParams`` (no peepholes) -> cuDNN's flat weight vector for one layer, one
    direction: ``[W_ih, W_hh, b_ih, b_hh]`` flattened row-major."""
    w_ih, w_hh = params.w_x.T, params.w_h.T
    b_ih, b_hh = params.b, jnp.zeros_like(params.b)
    return jnp.concatenate([a.reshape(-1) for a in (w_ih, w_hh, b_ih, b_hh)])


def refuse(plan: Plan) -> str | None:
    cell = plan.cell
    if cell.name != "lstm":
        return f"cuDNN runs the LSTM only, not cell {cell.name!r}"
    if jax.default_backend() != "gpu":
        return f"the default backend is {jax.default_backend()!r}: cuDNN runs on NVIDIA GPUs"
    reason = sequence_kernel_refusal(plan, "cuDNN")
    if reason is not None:
        return reason
    o = cell.options
    if o.get("peephole", True):
        return f"cell {cell.name!r} has peepholes (or does not say): cuDNN computes it without"
    for key, want in (("activation", "tanh"), ("recurrent_activation", "sigmoid")):
        if not cpu_kernels.is_activation(o.get(key), want):
            return f"{key}={o.get(key)!r}: cuDNN computes {want}"
    if not cpu_kernels.full_precision(o.get("compute_dtype")):
        return (f"compute_dtype={cpu_kernels.dtype_name(o['compute_dtype'])}: cuDNN is run in "
                f"float32")
    return cpu_kernels.dtype_refusal(plan, "cuDNN is run in float32 only")


def run(plan: Plan) -> tuple[PyTree, Array]:
    from jax.experimental import rnn

    cell, params, T, batch_shape = plan.cell, plan.params, plan.T, plan.batch_shape
    n, F, H = math.prod(batch_shape), plan.xs.shape[-1], cell.hidden_size
    x = jnp.moveaxis(plan.xs.reshape(T, n, F), 0, 1)  # cuDNN takes (B, T, F)
    h0 = plan.carry.h.reshape(1, n, H)
    c0 = plan.carry.c.reshape(1, n, H)
    lengths = (jnp.full((n,), T, jnp.int32) if plan.lengths is None
               else plan.lengths.reshape(n).astype(jnp.int32))
    ys, h_n, c_n = rnn.lstm(x, h0, c0, pack_weights(params), lengths, input_size=F,
                            hidden_size=H, num_layers=1, dropout=0.0, bidirectional=False,
                            precision=jax.lax.Precision.HIGHEST)
    final = plan.carry._replace(h=h_n[0].reshape(plan.carry.h.shape),
                                c=c_n[0].reshape(plan.carry.c.shape))
    if plan.lengths is not None:
        # a sequence of length 0 keeps its initial carry (the engine's contract; cuDNN is not
        # asked what it does with one)
        final = masking.freeze(plan.lengths > 0, final, plan.carry)
    ys = jnp.moveaxis(ys, 1, 0).reshape((T, *batch_shape, H))
    return final, masking.zero_padded(ys, plan.lengths)


BACKEND = Backend(
    name="cudnn",
    refuse=refuse,
    run=run,
    summary="cuDNN LSTM on the GPU (jax.experimental.rnn), custom VJP",
)

__all__ = ["BACKEND", "pack_weights"]
