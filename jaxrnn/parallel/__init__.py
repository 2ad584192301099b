"""Data parallelism with JAX's own sharding, on one process or several.

A 1-D device mesh over the batch axis, the batch split along its leading axis, parameters and
optimiser state replicated. One train step on ``n`` devices computes what it computes on one:
each device runs the model on ``B / n`` examples; the mean loss and its gradient are reductions
over the sharded batch axis, which XLA (GSPMD) turns into all-reduces, so every device ends the
step with the same replicated parameters (equal to the single-device run up to the order of
floating-point sums).

    import jaxrnn.parallel as par
    mesh = par.make_mesh()                       # every device, axis "batch"
    step = par.data_parallel_jit(step_fn, mesh)  # step_fn(state, batch) -> (state, logs)
    # or simply: jaxrnn.train.fit(..., data_parallel=mesh)  /  jaxrnn train --data-parallel

Nothing here is remembered between calls: whoever wants data parallelism passes the mesh (or
``data_parallel=True``) to the function that compiles the step.

Several simulated devices on one CPU (for tests): set
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` before JAX initialises.

Several processes and hosts: run the same program in every process and connect them first with
:func:`initialize` (on one machine ``python -m jaxrnn.launch -n N -- ...`` starts them). Then
``jax.devices()`` lists the devices of *all* processes and :func:`make_mesh` spans them; the
steps compiled by :func:`data_parallel_jit` take the *global* batch in every process (every
process loads the same data with the same seed) and each contributes only its own rows
(``shard_batch(..., batches="global")``; ``batches="local"``: each passes just its part).
Parameters are initialised from the same seed everywhere and :func:`replicate` places them. Only
process 0 writes files; :mod:`jaxrnn.io.sharded_store` checkpoints a mesh-placed state
from all processes at once.

Modules: :mod:`~jaxrnn.parallel.mesh` (the mesh helper, what ``data_parallel`` means),
:mod:`~jaxrnn.parallel.placement` (shardings, batches, the compiled step),
:mod:`~jaxrnn.parallel.runtime` (``jax.distributed``: connecting, exiting),
:mod:`~jaxrnn.parallel.launch` (local processes of one program).
"""

from jaxrnn.parallel.mesh import BATCH_AXIS, make_mesh, resolve_mesh, spans_processes
from jaxrnn.parallel.placement import (
    batch_sharding,
    data_parallel_jit,
    local_rows,
    local_shard,
    replicate,
    replicated_sharding,
    shard_batch,
)
from jaxrnn.parallel.runtime import (
    ENV_COORDINATOR,
    ENV_NUM_PROCESSES,
    ENV_PROCESS_ID,
    initialize,
    is_main_process,
    mark_failed,
    process_count,
    process_index,
    same_on_every_process,
    settings_from_env,
    shutdown,
)

__all__ = [
    "BATCH_AXIS",
    "make_mesh",
    "resolve_mesh",
    "spans_processes",
    "batch_sharding",
    "replicated_sharding",
    "local_rows",
    "local_shard",
    "shard_batch",
    "replicate",
    "data_parallel_jit",
    "ENV_COORDINATOR",
    "ENV_NUM_PROCESSES",
    "ENV_PROCESS_ID",
    "settings_from_env",
    "initialize",
    "shutdown",
    "mark_failed",
    "process_index",
    "process_count",
    "is_main_process",
    "same_on_every_process",
]
