r"""The associative backend: a parallel prefix scan for cells linear in their state.

A registered family's step is an affine map of the previous state, ``h_t = a_t h_{t-1} + b_t``,
with coefficients that depend on the input only (minGRU, minLSTM: :mod:`jaxrnn.cells.minimal`).
The maps of all steps are composed by :func:`jax.lax.associative_scan` in log space
(``O(log T)`` depth, ``O(T)`` work):
:math:`(\log a_1, \log b_1) \circ (\log a_2, \log b_2) =
(\log a_1 + \log a_2,\ \mathrm{logaddexp}(\log b_1 + \log a_2, \log b_2))`, and
:math:`h_t = A_t h_0 + B_t` with the prefix products ``A`` and sums ``B``. A padded step is the
identity map (``a = 1, b = 0``), so the carry freezes past a sequence's end.

Only on request (``impl="associative"`` or :func:`parallel_run`): on the CPU it was slower than
the sequential scan and the kernel (BENCHMARKS.md).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxrnn.cells.base import Array, Cell, PyTree
from jaxrnn.cells.minimal import min_gru_log_coefficients, min_lstm_log_coefficients
from jaxrnn.engine import masking, validate
from jaxrnn.engine.backends.fused import step_refusal
from jaxrnn.engine.plan import Backend, Plan

# The families this backend computes: name -> xp -> (log a, log b), each (..., H).
LOG_COEFFICIENTS = {
    "min_gru": min_gru_log_coefficients,
    "min_lstm": min_lstm_log_coefficients,
}

# log(0) for masked (padded) steps. A large finite number rather than -inf keeps the gradients of
# logaddexp exact (its derivative w.r.t. an argument of -inf is 0, but -inf - (-inf) is NaN).
_LOG_ZERO = -1e30


def _compose(earlier, later):
    """Compose affine maps given as ``(log a, log b)``: first ``earlier``, then ``later``."""
    log_a1, log_b1 = earlier
    log_a2, log_b2 = later
    return log_a1 + log_a2, jnp.logaddexp(log_b1 + log_a2, log_b2)


def family_refusal(cell: Cell) -> str | None:
    if cell.name not in LOG_COEFFICIENTS:
        return (f"cell {cell.name!r} is not linear in its state (the associative scan computes "
                f"{', '.join(sorted(LOG_COEFFICIENTS))})")
    return step_refusal(cell)


def refuse(plan: Plan) -> str | None:
    reason = family_refusal(plan.cell)
    if reason is not None:
        return reason
    if plan.chunk:
        return "remat is set: the associative scan has no step loop to rematerialise"
    return None


def run(plan: Plan) -> tuple[PyTree, Array]:
    cell, params, carry, lengths, T = plan.cell, plan.params, plan.carry, plan.lengths, plan.T
    if T == 0:
        return carry, jnp.zeros((0, *plan.batch_shape, cell.output_size), carry.h.dtype)
    log_a, log_b = LOG_COEFFICIENTS[cell.name](cell.project(params, plan.xs))  # (T, B..., H)
    if lengths is not None:
        valid = masking.length_mask(T, lengths)
        log_a = masking.fill_invalid(valid, log_a, 0.0)
        log_b = masking.fill_invalid(valid, log_b, _LOG_ZERO)
    log_A, log_B = jax.lax.associative_scan(_compose, (log_a, log_b), axis=0)
    hs = (jnp.exp(log_A) * carry.h + jnp.exp(log_B)).astype(carry.h.dtype)  # h_t = A_t h_0 + B_t
    return type(carry)(hs[-1]), masking.zero_padded(hs, lengths)


def parallel_run(
    cell: Cell,
    params: PyTree,
    xs: Array,
    *,
    carry: PyTree | None = None,
    lengths: Array | None = None,
    reverse: bool = False,
    time_major: bool = False,
) -> tuple[PyTree, Array]:
    """Run a :func:`~jaxrnn.min_gru` or :func:`~jaxrnn.min_lstm` cell over a sequence with a
    parallel prefix scan (``jax.lax.associative_scan`` in log space, ``O(log T)`` depth);
    the same as ``jaxrnn.run(..., impl="associative")``.

    Same contract as :func:`jaxrnn.run` (and the same result up to float rounding): ``xs`` is
    ``(B..., T, F)`` (or ``(T, B..., F)`` with ``time_major``); steps at or past ``lengths`` leave
    the carry unchanged and emit zeros; ``reverse`` runs each sequence backwards over its own
    valid length and returns outputs in input order.

    Returns:
      ``(final_carry, ys)``, ``ys`` of shape ``(B..., T, H)`` (or ``(T, B..., H)``).
    """
    if not isinstance(cell, Cell) or cell.name not in LOG_COEFFICIENTS:
        got = cell.name if isinstance(cell, Cell) else type(cell).__name__
        raise ValueError(
            f"cell: parallel_run needs a cell linear in its state, one of "
            f"{sorted(LOG_COEFFICIENTS)} (jaxrnn.min_gru / jaxrnn.min_lstm), got {got!r}"
        )
    plan = validate.prepare(cell, params, xs, carry=carry, lengths=lengths, reverse=reverse,
                            time_major=time_major)
    reason = refuse(plan)
    if reason is not None:
        raise ValueError(f"cell: parallel_run cannot run it: {reason}")
    final, ys = run(plan)
    return final, validate.finish(plan, ys)


BACKEND = Backend(
    name="associative",
    refuse=refuse,
    run=run,
    auto=False,
    summary="parallel prefix scan in log space (minGRU/minLSTM); only on request",
)

__all__ = ["BACKEND", "LOG_COEFFICIENTS", "parallel_run"]
