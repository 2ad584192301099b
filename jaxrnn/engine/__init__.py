"""The scan engine: how any :class:`~jaxrnn.Cell` runs over time.

The shape, top down::

    jaxrnn.run(cell, params, xs, *, carry, lengths, reverse, time_major, unroll, remat,
               hoist_projection, fused_gradient, impl="auto")
      |
      +-- validate (engine/validate.py): every argument checked before tracing, each error
      |   naming its argument; params against the cell's own init (jax.eval_shape: structure
      |   and leaf shapes, cached per cell and input size)
      +-- layout: a Plan (engine/plan.py): time-major inputs, reversed per sequence for
      |   reverse=True, the initial carry, the lengths
      +-- choose a backend (engine/dispatch.py): impl="auto" asks each backend in turn whether it
      |   computes exactly this run (its refuse(plan) gives the reason when not) and takes the
      |   first that does; impl="<name>" forces one and raises ValueError with the reason when it
      |   cannot; explain(cell, params, xs, ...) reports the choice and every reason
      +-- the backend (engine/backends/), all time-major, all masking through one module
      |   (engine/masking.py: freeze the carry, zero padded outputs, length masks, reversal):
      |     kernel       cpu_kernels.py  compiled CPU kernels; one adapter per cell family,
      |                                  keyed on Cell.name, reading Cell.options; all the glue
      |     fused        fused.py        custom-VJP scan from the cell's StepParts
      |     scan         scan.py         plain lax.scan, remat chunks; every cell, the reference
      |     associative  associative.py  log-space prefix scan for minGRU/minLSTM (on request;
      |                                  also jaxrnn.parallel_run)
      +-- undo reversal and layout (engine/validate.py: finish)

Modules: ``dispatch`` (run, explain), ``validate`` (argument and params checks, Plan layout),
``plan`` (the Plan handed to a backend, the Backend protocol), ``masking``, ``backends/``.

Cells know nothing of backends: a cell states its maths (``init``, ``project``, ``step``), its
optional ``StepParts`` (the step as recurrent product + update) and its configuration as static
data (``Cell.options``); a backend registers the families it accelerates. A backend that does not
call ``cell.step`` takes a cell only while ``cell.parts.step is cell.step`` (a wrapper that
replaces the step, such as recurrent dropout, gets the plain scan). Every backend gives the plain
scan's values, NaN and inf included, and is tested against it (tests/test_engine.py).
"""

from jaxrnn.engine.backends.associative import parallel_run
from jaxrnn.engine.dispatch import IMPLS, Explanation, explain, run
from jaxrnn.engine.masking import last_valid, reverse_padded, sequence_mask
from jaxrnn.engine.validate import check_params, validate_inputs

__all__ = [
    "IMPLS",
    "Explanation",
    "check_params",
    "explain",
    "last_valid",
    "parallel_run",
    "reverse_padded",
    "run",
    "sequence_mask",
    "validate_inputs",
]
