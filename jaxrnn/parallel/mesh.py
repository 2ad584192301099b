"""Device meshes: the one helper that builds them, and what a training function's
``data_parallel`` argument means."""

from __future__ import annotations

import jax
import numpy as np
from jax.sharding import Mesh

BATCH_AXIS = "batch"


def make_mesh(num_devices: int | None = None, *, devices=None,
              axis_name: str = BATCH_AXIS) -> Mesh:
    """A 1-D mesh over ``num_devices`` devices (default: every device of every process).

    The devices are ordered by process, then by id, so after :func:`jaxrnn.parallel.initialize`
    each process's devices hold one contiguous block of the mesh axis (and of a batch split
    along it). ``devices`` picks the devices instead (kept in that order).
    """
    if devices is None:
        devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
    devices = list(devices)
    if not devices:
        raise ValueError("devices: expected at least one device, got none")
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


def spans_processes(mesh: Mesh) -> bool:
    """Whether ``mesh`` holds devices of other processes (after ``jax.distributed``)."""
    me = jax.process_index()
    return any(d.process_index != me for d in mesh.devices.flat)


def resolve_mesh(data_parallel) -> Mesh | None:
    """``data_parallel`` as the training functions accept it -> a mesh or None (one device).

    ``None`` or ``False``: one device; ``True``: every device (of every process); an int ``n``:
    the first ``n`` devices; a :class:`jax.sharding.Mesh`: that mesh (its first axis is the batch
    axis). Nothing is remembered between calls: a caller that wants data parallelism passes it.
    """
    if data_parallel is None or data_parallel is False:
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


__all__ = ["BATCH_AXIS", "make_mesh", "spans_processes", "resolve_mesh"]
