"""The engine's entry (``jaxrnn.run``): :func:`run` validates, lays out, chooses a backend and
runs it; :func:`explain` says which backend ``impl="auto"`` takes for a call, and why not the
others."""

from __future__ import annotations

from typing import NamedTuple

from jaxrnn.cells.base import Array, Cell, PyTree
from jaxrnn.engine import validate
from jaxrnn.engine.backends import BACKENDS, BY_NAME
from jaxrnn.engine.plan import Backend, Plan

IMPLS = ("auto", *(b.name for b in BACKENDS))


def _check_impl(impl) -> str:
    if not isinstance(impl, str) or impl not in IMPLS:
        raise ValueError(f"impl: expected one of {list(IMPLS)}, got {impl!r}")
    return impl


def _refusals(plan: Plan, impl: str) -> tuple[Backend, dict[str, str]]:
    """The backend for ``impl`` and, for every backend tried before it, why not."""
    if impl != "auto":
        backend = BY_NAME[impl]
        reason = backend.refuse(plan)
        if reason is not None:
            raise ValueError(f"impl={impl!r}: {reason}")
        return backend, {}
    reasons: dict[str, str] = {}
    for backend in BACKENDS:
        if not backend.auto:
            continue
        reason = backend.refuse(plan)
        if reason is None:
            return backend, reasons
        reasons[backend.name] = reason
    raise AssertionError("the plain scan refuses nothing")  # pragma: no cover


def run(
    cell: Cell,
    params: PyTree,
    xs: Array,
    *,
    carry: PyTree | None = None,
    lengths: Array | None = None,
    reverse: bool = False,
    time_major: bool = False,
    unroll: int = 1,
    remat: bool | int = False,
    hoist_projection: bool = False,
    fused_gradient: bool = True,
    impl: str = "auto",
) -> tuple[PyTree, Array]:
    """Run ``cell`` over a sequence.

    Args:
      cell: any :class:`~jaxrnn.Cell`.
      params: the cell's parameters (checked against ``cell.init``: structure and shapes).
      xs: inputs ``(B..., T, F)``, or ``(T, B..., F)`` with ``time_major=True``. ``B...`` is any
        batch shape, possibly empty.
      carry: initial carry (default: ``cell.initial_carry``, zeros).
      lengths: integer ``(B...)`` valid lengths; steps at or past a sequence's length leave its
        carry unchanged and emit zeros. ``None`` means every sequence is ``T`` long.
      reverse: run each sequence backwards over its own valid length. Outputs are returned in the
        original time order (``ys[t]`` belongs to input ``t``); padding stays at the end.
      time_major: layout of ``xs`` and ``ys``.
      unroll: passed to :func:`jax.lax.scan`.
      remat: ``True`` rematerialises each step in the backward pass; an int ``k > 1``
        checkpoints only every ``k``-th carry (chunks of ``k`` steps, recomputed in the backward
        pass), bounding memory on long sequences to ``O(T/k + k)`` carries (plain scan only).
      hoist_projection: compute ``cell.project`` for all steps before the loop (one large product)
        instead of per step inside it. Which is faster is machine-dependent; see BENCHMARKS.md.
      fused_gradient: ``False`` forces the plain scan (as ``impl="scan"``): forward-mode
        autodiff (``jax.jvp``, ``jax.jacfwd``, ``jax.linearize``) needs it, as the fused
        backends' custom VJPs have no forward mode.
      impl: the backend. ``"auto"`` (default) takes the first that computes exactly this run, in
        the order ``"kernel"`` (compiled CPU kernels), ``"fused"`` (custom-VJP scan), ``"scan"``
        (plain ``lax.scan``); ``"associative"`` (parallel prefix scan, minGRU/minLSTM) only on
        request. Naming a backend that cannot compute this run raises a ``ValueError`` saying
        why; :func:`jaxrnn.engine.explain` tells which backend ``"auto"`` takes.

    Returns:
      ``(final_carry, ys)`` with ``ys`` of shape ``(B..., T, O)`` (or ``(T, B..., O)``). The final
      carry of a masked sequence is the carry after its last valid step.
    """
    impl = _check_impl(impl)
    plan = validate.prepare(cell, params, xs, carry=carry, lengths=lengths, reverse=reverse,
                            time_major=time_major, unroll=unroll, remat=remat,
                            hoist_projection=hoist_projection, fused_gradient=fused_gradient)
    backend, _ = _refusals(plan, impl)
    final, ys = backend.run(plan)
    return final, validate.finish(plan, ys)


class Explanation(NamedTuple):
    """Which backend :func:`run` takes for a call, and why not the others.

    Attributes:
      backend: the name of the backend taken.
      reasons: ``{backend name: reason}`` for each backend refused before it (``impl="auto"``
        tries them in order), and for each backend never tried, why.
      impl: the ``impl`` asked for.
      cell: the cell's family name.
    """

    backend: str
    reasons: dict[str, str]
    impl: str
    cell: str

    def __str__(self) -> str:
        lines = [f"jaxrnn.run(cell {self.cell!r}, impl={self.impl!r}) takes the "
                 f"{self.backend!r} backend"]
        width = max(len(b.name) for b in BACKENDS)
        for b in BACKENDS:
            if b.name == self.backend:
                lines.append(f"  {b.name:<{width}}  taken: {b.summary}")
            elif b.name in self.reasons:
                lines.append(f"  {b.name:<{width}}  not taken: {self.reasons[b.name]}")
        return "\n".join(lines)


def explain(cell: Cell, params: PyTree, xs: Array, **run_kwargs) -> Explanation:
    """Which backend ``run(cell, params, xs, **run_kwargs)`` takes, and why not the others.

    Validates exactly as :func:`run` does (the same errors, including the ``ValueError`` for an
    ``impl`` forced onto a backend that cannot run the call) and runs nothing. For every backend
    not taken, ``reasons`` says why: refused (dtype, platform, activation, peepholes, masking
    of the step, remat, kernels' build status...), lower in ``impl="auto"``'s order than the one
    taken, or only taken on request. ``print(explain(...))`` gives a readable table.

    Example:
      >>> cell = jaxrnn.lstm(8, peephole=True)
      >>> p = cell.init(jax.random.key(0), 3)
      >>> jaxrnn.engine.explain(cell, p, jnp.ones((2, 5, 3))).backend
      'fused'
    """
    impl = _check_impl(run_kwargs.pop("impl", "auto"))
    plan = validate.prepare(cell, params, xs, **run_kwargs)
    backend, reasons = _refusals(plan, impl)
    reasons = dict(reasons)
    taken = False
    for b in BACKENDS:
        if b is backend:
            taken = True
        elif b.name not in reasons:
            reason = b.refuse(plan)
            if impl != "auto":
                why = f"impl={impl!r} was asked for"
                reasons[b.name] = why if reason is None else f"{why} (and: {reason})"
            elif not b.auto:
                reasons[b.name] = ("only on request (impl=" + repr(b.name) + ")" if reason is None
                                   else reason)
            elif taken:
                reasons[b.name] = (f"{backend.name!r} comes first" if reason is None
                                   else reason)
    return Explanation(backend.name, reasons, impl, cell.name)


__all__ = ["IMPLS", "Explanation", "explain", "run"]
