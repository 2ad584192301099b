"""Placement: a batch split along its leading axis over a mesh, everything else replicated, and
the step compiled over that placement (:func:`data_parallel_jit`).

One process or several, the same calls: with a mesh over the devices of several processes
(after :func:`jaxrnn.parallel.initialize`) each process contributes only the rows its own
devices hold (``jax.make_array_from_process_local_data``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxrnn.parallel.mesh import spans_processes

PyTree = Any
BATCHES = ("local", "global")


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over the mesh's first axis, other axes whole."""
    return NamedSharding(mesh, P(mesh.axis_names[0]))


def replicated_sharding(mesh: Mesh) -> NamedSharding:
    """A full copy on every device of the mesh."""
    return NamedSharding(mesh, P())


def _local_device_count(mesh: Mesh) -> int:
    me = jax.process_index()
    return sum(d.process_index == me for d in mesh.devices.flat)


def _check_divisible(tree, n: int, argname: str) -> None:
    for path, leaf in jax.tree_util.tree_leaves_with_path(tree):
        shape = np.shape(leaf)
        if not shape or shape[0] % n:
            where = jax.tree_util.keystr(path)
            raise ValueError(
                f"{argname}{where}: the leading (batch) axis must divide evenly over {n} "
                f"device(s), got shape {tuple(shape)}"
            )


def local_rows(global_size: int, mesh: Mesh) -> slice:
    """The rows of a global batch of ``global_size`` that this process's devices hold under the
    batch sharding of ``mesh`` (one contiguous block for a mesh from :func:`make_mesh`)."""
    n = mesh.devices.size
    if global_size % n:
        raise ValueError(f"batch: the leading (batch) axis must divide evenly over the {n} "
                         f"device(s) of the mesh, got {global_size}")
    index_map = batch_sharding(mesh).addressable_devices_indices_map((global_size,))
    blocks = sorted((idx[0].start or 0, idx[0].stop if idx[0].stop is not None else global_size)
                    for idx in index_map.values())
    for (_, stop), (start, _) in zip(blocks, blocks[1:], strict=False):
        if stop != start:
            raise ValueError("mesh: this process's devices do not hold one contiguous block of "
                             "the batch axis; build the mesh with make_mesh()")
    return slice(blocks[0][0], blocks[-1][1])


def local_shard(batch: PyTree, mesh: Mesh) -> PyTree:
    """This process's rows (:func:`local_rows`) of every leaf of a *global* batch that every
    process holds in full (e.g. the same seeded data set and shuffle on every process)."""
    leaves = jax.tree_util.tree_leaves(batch)
    if not leaves:
        return batch
    sizes = {np.shape(x)[0] if np.ndim(x) else None for x in leaves}
    if len(sizes) != 1 or None in sizes:
        raise ValueError(f"batch: every leaf needs the same leading (batch) axis, got sizes "
                         f"{sorted(map(str, sizes))}")
    rows = local_rows(sizes.pop(), mesh)
    return jax.tree_util.tree_map(lambda x: np.asarray(x)[rows], batch)


def shard_batch(batch: PyTree, mesh: Mesh, *, batches: str = "local") -> PyTree:
    """Every leaf of ``batch`` placed with its leading axis split over the mesh.

    With one process ``batch`` is the whole batch (its leading axis divisible by the number of
    devices). With a mesh over several processes, ``batches`` says what each process passes:
    ``"local"`` (default) its own rows (:func:`local_shard` of the global batch), ``"global"``
    the whole global batch, of which it contributes only its own rows.
    """
    if batches not in BATCHES:
        raise ValueError(f"batches: expected 'local' or 'global', got {batches!r}")
    sharding = batch_sharding(mesh)
    if not spans_processes(mesh):
        _check_divisible(batch, mesh.devices.size, "batch")
        return jax.device_put(batch, sharding)
    if batches == "global":
        batch = local_shard(batch, mesh)
    local = _local_device_count(mesh)
    _check_divisible(batch, local, "batch (this process's part)")

    def make(x):
        x = np.asarray(x)
        global_shape = (x.shape[0] * mesh.devices.size // local, *x.shape[1:])
        return jax.make_array_from_process_local_data(sharding, x, global_shape)

    return jax.tree_util.tree_map(make, batch)


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


def _is_global(tree) -> bool:
    leaves = jax.tree_util.tree_leaves(tree)
    return bool(leaves) and all(isinstance(x, jax.Array) and not x.is_fully_addressable
                                for x in leaves)


def data_parallel_jit(fn: Callable, mesh: Mesh, *, donate_argnums: tuple[int, ...] = (),
                      batch_argnums: tuple[int, ...] = (-1,), batches: str = "global"):
    """Compile ``fn`` data parallel over ``mesh``: the arguments at ``batch_argnums`` (default:
    the last one, the batch of a ``step(state, batch)`` or ``step(state, carry, batch)``) are split
    along their leading axis, every other argument is replicated, and XLA propagates the
    placement through the step (gradients of a mean over the sharded batch become all-reduces,
    so updated parameters come out replicated).

    A batch whose leading axis does not divide over the devices (e.g. the last, smaller
    evaluation batch) runs replicated instead: same result, no speed-up.

    ``batches`` matters only with a mesh over several processes (see :func:`shard_batch`):
    ``"global"`` (default, what ``fit`` does when every process loads the same data with the
    same seed) or ``"local"``.
    """
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh: expected a jax.sharding.Mesh (see make_mesh), got {mesh!r}")
    if batches not in BATCHES:
        raise ValueError(f"batches: expected 'global' or 'local', got {batches!r}")
    compiled = jax.jit(fn, donate_argnums=donate_argnums)
    rows_per_part = (_local_device_count(mesh) if batches == "local" and spans_processes(mesh)
                     else mesh.devices.size)

    def call(*args):
        batch_idx = {i % len(args) for i in batch_argnums}
        placed = []
        for i, a in enumerate(args):
            leaves = jax.tree_util.tree_leaves(a)
            if _is_global(a):
                placed.append(a)  # already placed over the processes (e.g. by shard_batch)
            elif i in batch_idx and leaves and all(
                    np.ndim(x) and np.shape(x)[0] % rows_per_part == 0 for x in leaves):
                placed.append(shard_batch(a, mesh, batches=batches))
            else:
                placed.append(replicate(a, mesh))
        return compiled(*placed)

    call.mesh = mesh
    return call


__all__ = [
    "batch_sharding",
    "replicated_sharding",
    "local_rows",
    "local_shard",
    "shard_batch",
    "replicate",
    "data_parallel_jit",
]
