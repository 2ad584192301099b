"""The CPU-kernel backend: a whole sequence in one call of a compiled kernel (jaxrnn.kernels).

All the glue between the engine and :mod:`jaxrnn.kernels.ops` lives here, once: the batch
flattening the kernels need (``(T, B..., F)`` -> ``(T, B, F)``, carries ``(B..., K)`` ->
``(B, K)``) and back, zeroing padded outputs (:mod:`jaxrnn.engine.masking`), the platform, dtype
and availability checks, and one adapter per cell family, keyed on the family name
(``Cell.name``), that says which configurations (``Cell.options``) the kernel computes exactly
and calls the family's kernel. Cells know nothing of this module.

To give a family a kernel: write ``ops.<family>_sequence`` and register an adapter in
:data:`ADAPTERS`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxrnn import kernels
from jaxrnn.cells.base import Array, Cell, PyTree
from jaxrnn.engine import masking
from jaxrnn.engine.backends.fused import sequence_kernel_refusal
from jaxrnn.engine.plan import Backend, Plan
from jaxrnn.kernels import ops

_f32 = jnp.dtype(jnp.float32)
_MISSING = object()
# What the kernels compute for the activations they support; callables given as activations
# are recognised when they are these functions.
_KNOWN_ACTIVATIONS = {"tanh": jnp.tanh, "sigmoid": jax.nn.sigmoid}


def is_activation(fn, name: str) -> bool:
    """Whether a cell's activation (given by name or as a callable) is the kernel's ``name``."""
    return (isinstance(fn, str) and fn == name) or fn is _KNOWN_ACTIVATIONS[name]


def full_precision(compute_dtype) -> bool:
    """Whether a cell's ``compute_dtype`` leaves its products in float32 (the kernels' only
    precision); not a dtype at all: no (the plain scan reports it)."""
    try:
        return compute_dtype is None or jnp.dtype(compute_dtype) == _f32
    except TypeError:
        return False


def dtype_name(dtype) -> str:
    """``bfloat16`` for ``jnp.bfloat16``, ``"bfloat16"``...; the repr of anything else."""
    try:
        return jnp.dtype(dtype).name
    except TypeError:
        return repr(dtype)


class KernelAdapter(NamedTuple):
    """How one cell family runs on its kernel.

    Attributes:
      refuse: ``refuse(cell) -> str | None``: why the kernel does not compute this
        configuration (read from ``cell.options``), or ``None``.
      sequence: ``sequence(cell, params, carry, x, lengths) -> (final_carry, ys)`` on a flat
        batch: ``x`` ``(T, B, F)``, carry leaves ``(B, K)``, ``lengths`` ``(B,)`` or ``None``;
        ``ys`` ``(T, B, O)`` need not be zero past the lengths (the backend zeroes them).
    """

    refuse: Callable[[Cell], str | None]
    sequence: Callable[..., tuple[PyTree, Array]]


def _options_refusal(cell: Cell, activations: dict[str, str]) -> str | None:
    """The checks every family shares: each named activation is the kernel's, and the products
    are float32."""
    o = cell.options
    for key, want in activations.items():
        got = o.get(key, _MISSING)
        if got is _MISSING:
            return f"cell {cell.name!r} does not state {key!r} in Cell.options"
        if not is_activation(got, want):
            return f"{key}={got!r}: the {cell.name} kernel computes {want}"
    compute_dtype = o.get("compute_dtype", None)
    if not full_precision(compute_dtype):
        return f"compute_dtype={dtype_name(compute_dtype)}: the kernels compute in float32 only"
    return None


def _refuse_with(activations: dict[str, str], *flags: tuple[str, object, str]):
    """A ``refuse`` for a family: ``(option, the value the kernel needs, reason otherwise)``
    triples (the reason is formatted with the cell's name), then the shared checks."""

    def refuse(cell: Cell) -> str | None:
        for key, needed, reason in flags:
            got = cell.options.get(key, _MISSING)
            if got is _MISSING:
                return f"cell {cell.name!r} does not state {key!r} in Cell.options"
            if got != needed:
                return reason.format(name=cell.name)
        return _options_refusal(cell, activations)

    return refuse


# --------------------------------------------------------------------------- adapters


def _lstm(cell, p, carry, x, lengths):
    hs, c_last = ops.lstm_sequence(x, p.w_x, p.b, p.w_h, carry.h, carry.c, lengths)
    return carry._replace(h=hs[-1], c=c_last), hs


def _gru(cell, p, carry, x, lengths):
    hs = ops.gru_sequence(x, p.w_x, p.b, p.w_h, p.b_h, carry.h, lengths)
    return carry._replace(h=hs[-1]), hs


def _tanh_recurrence(weights, *, outputs=None):
    """The Elman-type families on the leaky tanh kernel: ``weights(cell, params) -> (w_x, b,
    w_h)``; ``outputs(cell, hs)`` maps the states to the cell's outputs (default: the states)."""

    def sequence(cell, p, carry, x, lengths):
        w_x, b, w_h = weights(cell, p)
        leak = float(cell.options.get("leak", 1.0))
        hs = ops.elman_sequence(x, w_x, b, w_h, carry.h, lengths, leak=leak)
        return carry._replace(h=hs[-1]), hs if outputs is None else outputs(cell, hs)

    return sequence


def _plain_weights(cell, p):
    return p.w_x, p.b, p.w_h


def _reservoir_weights(cell, p):
    # the inputs carry [u_t, y_{t-1}]: the feedback weights go under the input weights
    w_x = p.w_in if p.w_fb is None else jnp.concatenate([p.w_in, p.w_fb])
    return w_x, p.b, p.w


def _jordan(cell, p, carry, x, lengths):
    ys = ops.jordan_sequence(x, p.w_x, p.b, p.w_y_h, p.w_y, p.b_y, carry.y, lengths)
    return carry._replace(y=ys[-1]), ys


def _minimal(cell, p, carry, x, lengths):
    hs = ops.minimal_sequence(cell.name, x, p.w_x, p.b, carry.h, lengths)
    return carry._replace(h=hs[-1]), hs


_GATED = {"activation": "tanh", "recurrent_activation": "sigmoid"}
_TANH = {"activation": "tanh"}

ADAPTERS: dict[str, KernelAdapter] = {
    "lstm": KernelAdapter(
        _refuse_with(_GATED, ("peephole", False, "cell {name!r} has peepholes; the CPU kernel "
                                                "computes the LSTM without them")),
        _lstm),
    "gru": KernelAdapter(
        _refuse_with(_GATED, ("reset_after", True, "reset_after=False: the GRU kernel computes "
                                                    "the reset-after form")),
        _gru),
    "elman": KernelAdapter(
        _refuse_with(_TANH, ("readout", False, "cell {name!r} has a readout (output_size): the "
                                              "kernel computes the state recurrence only")),
        _tanh_recurrence(_plain_weights)),
    "fully_recurrent": KernelAdapter(
        _refuse_with(_TANH),
        _tanh_recurrence(_plain_weights, outputs=lambda cell, hs: hs[..., : cell.output_size])),
    "reservoir": KernelAdapter(_refuse_with(_TANH), _tanh_recurrence(_reservoir_weights)),
    "jordan": KernelAdapter(
        _refuse_with({"activation": "tanh", "output_activation": "tanh"}), _jordan),
    "min_gru": KernelAdapter(_refuse_with({}), _minimal),
    "min_lstm": KernelAdapter(_refuse_with({}), _minimal),
}


# --------------------------------------------------------------------------- the backend


def dtype_refusal(plan: Plan, why: str = "the kernels compute in float32 only") -> str | None:
    """Why not, if any of ``xs``, the params and the carry is not float32."""
    named = [("xs", plan.xs)]
    for what, tree in (("params", plan.params), ("carry", plan.carry)):
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
            named.append((f"{what}{jax.tree_util.keystr(path)}", leaf))
    for name, a in named:
        dtype = jnp.result_type(a)
        if dtype != _f32:
            return f"{name} is {dtype.name}: {why}"
    return None


def refuse(plan: Plan) -> str | None:
    cell = plan.cell
    reason = sequence_kernel_refusal(plan, "the kernel")
    if reason is not None:
        return reason
    adapter = ADAPTERS.get(cell.name)
    if adapter is None:
        return (f"no CPU kernel for cell family {cell.name!r} (kernels: "
                f"{', '.join(sorted(ADAPTERS))})")
    reason = adapter.refuse(cell)
    if reason is not None:
        return reason
    if jax.default_backend() != "cpu":
        return f"the default backend is {jax.default_backend()!r}: the kernels run on the CPU"
    reason = dtype_refusal(plan)
    if reason is not None:
        return reason
    if not kernels.available():  # last: the first call may compile the kernels
        return f"the kernels are {kernels.status()}"
    return None


def run(plan: Plan) -> tuple[PyTree, Array]:
    cell, T, batch_shape = plan.cell, plan.T, plan.batch_shape
    n = math.prod(batch_shape)
    x = plan.xs.reshape(T, n, plan.xs.shape[-1])
    carry = jax.tree_util.tree_map(lambda c: c.reshape(n, c.shape[-1]), plan.carry)
    lengths = None if plan.lengths is None else plan.lengths.reshape(n)
    final, ys = ADAPTERS[cell.name].sequence(cell, plan.params, carry, x, lengths)
    final = jax.tree_util.tree_map(lambda f, c: f.reshape(c.shape), final, plan.carry)
    ys = ys.reshape((T, *batch_shape, ys.shape[-1]))
    return final, masking.zero_padded(ys, plan.lengths)


BACKEND = Backend(
    name="kernel",
    refuse=refuse,
    run=run,
    summary="compiled CPU kernel for the whole sequence (jaxrnn.kernels), custom VJP",
)

__all__ = [
    "ADAPTERS",
    "BACKEND",
    "KernelAdapter",
    "dtype_name",
    "dtype_refusal",
    "full_precision",
    "is_activation",
]
