"""The engine's backends, side by side; :data:`BACKENDS` is the order ``impl="auto"`` tries.

Each module exports one :class:`~jaxrnn.engine.plan.Backend` (``BACKEND``): a name, a
``refuse(plan)`` that says why it cannot compute exactly this run, and a ``run(plan)``.

- ``cudnn`` (:mod:`.cudnn`): the LSTM through cuDNN, on a GPU default backend only;
- ``kernel`` (:mod:`.cpu_kernels`): compiled CPU kernels, one adapter per cell family;
- ``fused`` (:mod:`.fused`): custom-VJP scan for cells that expose ``StepParts``;
- ``scan`` (:mod:`.scan`): the plain ``lax.scan``, every cell and option, the reference;
- ``associative`` (:mod:`.associative`): parallel prefix scan for cells linear in their state,
  only on request.
"""

from jaxrnn.engine.backends import associative, cpu_kernels, cudnn, fused, scan

BACKENDS = (cudnn.BACKEND, cpu_kernels.BACKEND, fused.BACKEND, scan.BACKEND, associative.BACKEND)
BY_NAME = {b.name: b for b in BACKENDS}

__all__ = ["BACKENDS", "BY_NAME"]
