"""What the engine hands a backend: one validated run, time-major, and the backend protocol."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from jaxrnn.cells.base import Array, Cell, PyTree


class Plan(NamedTuple):
    """One call of :func:`jaxrnn.run` after validation and layout.

    ``xs`` is time-major ``(T, B..., F)`` and already reversed (per sequence) for a reverse run;
    the backend returns time-major outputs in the same (run) order, and the engine undoes
    reversal and layout (``reverse``, ``time_major``: the caller's request, for that last step
    only). ``lengths`` is an integer ``(B...)`` array or ``None``; ``chunk`` is the remat setting
    (0: none, 1: every step, ``k > 1``: chunks of ``k`` steps).
    """

    cell: Cell
    params: PyTree
    carry: PyTree
    xs: Array
    lengths: Array | None
    batch_shape: tuple[int, ...]
    unroll: int
    chunk: int
    hoist_projection: bool
    fused_gradient: bool
    reverse: bool = False
    time_major: bool = False

    @property
    def T(self) -> int:
        return self.xs.shape[0]


class Backend(NamedTuple):
    """A way to run a cell over time.

    Attributes:
      name: the ``impl=`` value that forces it.
      refuse: ``refuse(plan) -> str | None``: why this backend cannot compute exactly this run
        (``None``: it can). Called before tracing; reads only static facts (shapes, dtypes,
        the cell's options and parts, the platform).
      run: ``run(plan) -> (final_carry, ys)`` with ``ys`` time-major ``(T, B..., O)``.
      auto: whether ``impl="auto"`` may take it (else only on request).
      summary: one line for :func:`jaxrnn.engine.explain`.
    """

    name: str
    refuse: Callable[[Plan], str | None]
    run: Callable[[Plan], tuple[PyTree, Array]]
    auto: bool = True
    summary: str = ""


__all__ = ["Backend", "Plan"]
