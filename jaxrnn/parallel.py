"""Data parallelism with JAX's own sharding: a 1-D device mesh over the batch axis, the batch split
along its leading axis, parameters and optimiser state replicated.

One train step on ``n`` devices computes what it computes on one: each device runs the model on
``B / n`` examples; the mean loss and its gradient are reductions over the sharded batch axis,
which XLA (GSPMD) turns into all-reduces, so every device ends the step with the same replicated
parameters. Results equal the single-device run up to the order of floating-point sums.

Usage::

    import jaxrnn.parallel as par
    mesh = par.make_mesh()                       # all devices, axis "batch"
    step = par.data_parallel_jit(step_fn, mesh)  # step_fn(state, batch) -> (state, logs)
    # or simply: jaxrnn.train.fit(..., data_parallel=True)  /  jaxrnn train --data-parallel

Several simulated devices on one CPU (for tests): set
``XLA_FLAGS=--xla_force_host_platform_device_count=8`` in the environment *before* JAX
initialises (before the first ``import jax`` that touches a device).

Several processes and hosts
---------------------------
Run the same program in every process and connect them first with
:func:`jaxrnn.distributed.initialize` (``jax.distributed.initialize`` underneath; on one machine
``python -m jaxrnn.launch -n N -- ...`` starts the processes). After that ``jax.devices()`` lists
the devices of *all* processes and :func:`jaxrnn.distributed.global_mesh` spans them. The steps
compiled by :func:`data_parallel_jit` (so ``fit(..., data_parallel=mesh)`` and ``jaxrnn train``)
then take the *global* batch in every process -- every process loads the same data with the same
seed -- and each contributes only its own rows (``jax.make_array_from_process_local_data``);
with ``batches="local"`` each process passes just its part instead (:func:`shard_batch`).
Parameters are initialised from the same seed everywhere and :func:`replicate` places them.
Only process 0 should write files; :mod:`jaxrnn.io.sharded_store` checkpoints a
mesh-placed state from all processes at once.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

PyTree = Any
BATCH_AXIS = "batch"

# The mesh used by compile_step when no data_parallel argument is given; set by
# use_data_parallel (the CLI's --data-parallel flag), None means single device.
_DEFAULT_MESH: Mesh | None = None


def make_mesh(num_devices: int | None = None, *, devices=None,
              axis_name: str = BATCH_AXIS) -> Mesh:
    """A 1-D mesh over ``num_devices`` devices (default: all of ``jax.devices()``)."""
    devices = list(jax.devices() if devices is None else devices)
    if num_devices is not None:
        if isinstance(num_devices, bool) or not isinstance(num_devices, int) or num_devices < 1:
            raise ValueError(f"num_devices: expected a positive int or None, got {num_devices!r}")
        if num_devices > len(devices):
            raise ValueError(
                f"num_devices: expected at most the {len(devices)} available device(s), got "
                f"{num_devices} (simulate more on CPU with "
                f"XLA_FLAGS=--xla_force_host_platform_device_count=N before importing jax)"
            )
        devices = devices[:num_devices]
    return Mesh(np.asarray(devices), (axis_name,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over the mesh's axis, other axes whole."""
    return NamedSharding(mesh, P(mesh.axis_names[0]))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    """A full copy on every device of the mesh."""
    return NamedSharding(mesh, P())


def _check_divisible(tree, n: int, argname: str) -> None:
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        shape = np.shape(leaf)
        if not shape or shape[0] % n:
            where = jax.tree_util.keystr(path)
            raise ValueError(
                f"{argname}{where}: the leading (batch) axis must divide evenly over {n} "
                f"device(s), got shape {tuple(shape)}"
            )


def shard_batch(batch: PyTree, mesh: Mesh) -> PyTree:
    """Place every leaf of ``batch`` with its leading axis split over the mesh.

    With one process the leaves are the global batch (leading axis divisible by the number of
    devices). With several processes (after ``jax.distributed.initialize``) each process passes
    its local part and the global array is assembled from all of them.
    """
    sharding = batch_sharding(mesh)
    if jax.process_count() > 1:
        _check_divisible(batch, jax.local_device_count(), "batch")
        return jax.tree_util.tree_map(
            lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), batch
        )
    _check_divisible(batch, mesh.devices.size, "batch")
    return jax.device_put(batch, sharding)


def spans_processes(mesh: Mesh) -> bool:
    """Whether ``mesh`` holds devices of other processes (after ``jax.distributed``)."""
    me = jax.process_index()
    return any(d.process_index != me for d in mesh.devices.flat)


def _replicated_global(x, sharding: NamedSharding):
    # device_put refuses a committed single-device array onto devices of other processes, and
    # checks uncommitted values for equality across processes with a collective per leaf; every
    # process holds the same value here (same seed, same step), so build the global array
    # from the local copy directly.
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return jax.device_put(x, sharding)  # already global: a no-op or a reshard
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        data = _replicated_global(jax.random.key_data(x), sharding)
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
    x = np.asarray(x)
    return jax.make_array_from_process_local_data(sharding, x, x.shape)


def replicate(tree: PyTree, mesh: Mesh) -> PyTree:
    """A copy of ``tree`` on every device of the mesh (parameters, optimiser state, keys).

    With a mesh over several processes every process must pass the same values (as it does
    when all initialise from the same seed)."""
    sharding = replicated_sharding(mesh)
    if not spans_processes(mesh):
        return jax.device_put(tree, sharding)
    return jax.tree_util.tree_map(lambda x: _replicated_global(x, sharding), tree)


def resolve_mesh(data_parallel) -> Mesh | None:
    """``data_parallel`` as accepted by the training functions -> a mesh or None.

    ``None``: the mesh set by :func:`use_data_parallel` if any, else single device;
    ``False``: single device; ``True``: all devices; an int ``n``: the first ``n`` devices;
    a :class:`jax.sharding.Mesh`: that mesh (its first axis is the batch axis).
    """
    if data_parallel is None:
        return _DEFAULT_MESH
    if data_parallel is False:
        return None
    if data_parallel is True:
        return make_mesh()
    if isinstance(data_parallel, Mesh):
        return data_parallel
    if isinstance(data_parallel, int):
        return make_mesh(data_parallel)
    raise TypeError(
        f"data_parallel: expected None, a bool, a number of devices or a jax.sharding.Mesh, "
        f"got {data_parallel!r}"
    )


@contextlib.contextmanager
def use_data_parallel(data_parallel) -> Iterator[Mesh | None]:
    """Within the block, steps compiled by :func:`jaxrnn.train.compile_step` without an explicit
    ``data_parallel`` are data parallel over ``resolve_mesh(data_parallel)`` (how the CLI's
    ``--data-parallel`` reaches every task's training loop)."""
    global _DEFAULT_MESH
    previous = _DEFAULT_MESH
    _DEFAULT_MESH = None if data_parallel is None else resolve_mesh(data_parallel)
    try:
        yield _DEFAULT_MESH
    finally:
        _DEFAULT_MESH = previous


def data_parallel_jit(fn: Callable, mesh: Mesh, *, donate_argnums: tuple[int, ...] = (),
                      batch_argnums: tuple[int, ...] = (-1,), batches: str = "global"):
    """Compile ``fn`` data parallel over ``mesh``: the arguments at ``batch_argnums`` (default:
    the last one, the batch of a ``step(state, batch)`` or ``step(state, carry, batch)``) are split
    along their leading axis, every other argument is replicated, and XLA propagates the
    placement through the step (gradients of a mean over the sharded batch become all-reduces,
    so updated parameters come out replicated).

    A batch whose leading axis does not divide over the devices (e.g. the last, smaller
    evaluation batch) runs replicated instead: same result, no speed-up.

    ``batches`` matters only with several processes (a mesh from
    :func:`jaxrnn.distributed.global_mesh`): ``"global"`` (default, what ``fit`` does when every
    process loads the same data with the same seed) -- every process passes the whole global batch
    and contributes only its own rows; ``"local"`` -- every process passes just its part (see
    :func:`shard_batch`).
    """
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh: expected a jax.sharding.Mesh (see make_mesh), got {mesh!r}")
    if batches not in ("global", "local"):
        raise ValueError(f"batches: expected 'global' or 'local', got {batches!r}")
    compiled = jax.jit(fn, donate_argnums=donate_argnums)
    n = mesh.devices.size

    def call(*args):
        batch_idx = {i % len(args) for i in batch_argnums}
        placed = []
        for i, a in enumerate(args):
            leaves = jax.tree_util.tree_leaves(a)
            if leaves and all(isinstance(x, jax.Array) and not x.is_fully_addressable
                              for x in leaves):
                placed.append(a)  # already global (e.g. from jaxrnn.distributed.global_batch)
            elif i in batch_idx and leaves and all(
                    np.ndim(x) and np.shape(x)[0] % n == 0 for x in leaves):
                if batches == "global" and jax.process_count() > 1:
                    from jaxrnn.distributed import shard_global_batch

                    placed.append(shard_global_batch(a, mesh))
                else:
                    placed.append(shard_batch(a, mesh))
            else:
                placed.append(replicate(a, mesh))
        return compiled(*placed)

    call.mesh = mesh
    return call


__all__ = [
    "BATCH_AXIS",
    "make_mesh",
    "batch_sharding",
    "replicated_sharding",
    "shard_batch",
    "replicate",
    "spans_processes",
    "resolve_mesh",
    "use_data_parallel",
    "data_parallel_jit",
]
