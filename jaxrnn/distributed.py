"""Several processes, one program: JAX's own distributed runtime (``jax.distributed``), a global
device mesh over the devices of every process, and each process feeding its part of a batch.

Every process runs the same program. First thing (before any computation touches a device) each
connects to the others::

    import jaxrnn.distributed as dist
    dist.initialize("127.0.0.1:1234", num_processes=2, process_id=0)   # on process 0
    dist.initialize("127.0.0.1:1234", num_processes=2, process_id=1)   # on process 1
    # or dist.initialize() with no arguments: read from JAXRNN_COORDINATOR /
    # JAXRNN_NUM_PROCESSES / JAXRNN_PROCESS_ID (set by ``python -m jaxrnn.launch``), else
    # detected by JAX itself on SLURM, Open MPI and Cloud TPU pods.

After that ``jax.devices()`` lists the devices of *all* processes and :func:`global_mesh` spans
them. Parameters and optimiser state are replicated (every process initialises them from the same
seed); each batch is split along its leading axis over the mesh. A process holds only the rows
that its own devices compute: :func:`local_rows` says which rows of a global batch those are, and
:func:`global_batch` builds the global ``jax.Array`` from each process's part with
``jax.make_array_from_process_local_data``. A step compiled by ``jax.jit`` over such arrays runs
as one SPMD program on all processes; the mean loss's gradient becomes a cross-process all-reduce.

On CPU the cross-process collectives are gloo's (TCP), selected with
``jax.config.update("jax_cpu_collectives_implementation", "gloo")`` before the CPU backend starts
(gloo is jax 0.10's default; :func:`initialize` selects it when no implementation is set).

Failure: if a process dies, the others block in their next collective until JAX's heartbeat
timeout (``heartbeat_timeout_seconds``). :mod:`jaxrnn.launch` does not wait for that: it stops
the remaining processes as soon as one exits with an error.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Mapping
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

PyTree = Any
BATCH_AXIS = "batch"

ENV_COORDINATOR = "JAXRNN_COORDINATOR"
ENV_NUM_PROCESSES = "JAXRNN_NUM_PROCESSES"
ENV_PROCESS_ID = "JAXRNN_PROCESS_ID"

# Environments in which jax.distributed.initialize() finds its arguments itself.
_AUTO_DETECTED = ("SLURM_JOB_ID", "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES",
                  "CLOUD_TPU_TASK_ID", "MEGASCALE_COORDINATOR_ADDRESS")

_STATE: dict[str, Any] = {"initialized": False, "num_processes": 1, "process_id": 0}


def _int_arg(value, name: str, *, minimum: int) -> int:
    try:
        v = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}") from None
    if isinstance(value, bool) or v < minimum or (isinstance(value, float) and v != value):
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return v


def _check_address(address: str, name: str = "coordinator") -> str:
    if not isinstance(address, str) or ":" not in address:
        raise ValueError(f"{name}: expected 'HOST:PORT' (e.g. '127.0.0.1:1234'), got {address!r}")
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{name}: expected 'HOST:PORT' with a port in 1..65535, got {address!r}")
    return address


def settings_from_env(env: Mapping[str, str] | None = None) -> dict | None:
    """``{"coordinator", "num_processes", "process_id"}`` from the ``JAXRNN_*`` variables, or None
    when none is set (a variable set without the others is an error)."""
    env = os.environ if env is None else env
    names = (ENV_COORDINATOR, ENV_NUM_PROCESSES, ENV_PROCESS_ID)
    present = [n for n in names if env.get(n)]
    if not present:
        return None
    if len(present) != len(names):
        missing = [n for n in names if n not in present]
        raise ValueError(f"environment: {', '.join(present)} set but {', '.join(missing)} "
                         f"missing; set all three or none")
    return {"coordinator": env[ENV_COORDINATOR],
            "num_processes": env[ENV_NUM_PROCESSES],
            "process_id": env[ENV_PROCESS_ID]}


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None, *, auto_detect: bool = True,
               initialization_timeout: int = 120, heartbeat_timeout_seconds: int = 30) -> bool:
    """Connect this process to the others (``jax.distributed.initialize``); call it before any
    computation. Returns True when several processes are now connected, False for a single
    process (``num_processes == 1``: nothing to connect). Calling it again once connected is a
    no-op.

    Arguments, in order of precedence: the ones given; else the ``JAXRNN_*`` environment
    variables (:func:`settings_from_env`, set by :mod:`jaxrnn.launch`); else, with
    ``auto_detect`` on SLURM, Open MPI or a Cloud TPU pod, JAX's own detection
    (``jax.distributed.initialize()``); else a single process.

    Raises ValueError for a malformed argument, RuntimeError (naming the coordinator) when the
    others cannot be reached within ``initialization_timeout`` seconds.
    """
    given = [coordinator, num_processes, process_id]
    if any(v is not None for v in given) and not all(v is not None for v in given):
        raise ValueError(
            f"coordinator, num_processes, process_id: give all three or none, got "
            f"coordinator={coordinator!r}, num_processes={num_processes!r}, "
            f"process_id={process_id!r}"
        )
    settings = None if coordinator is None else {
        "coordinator": coordinator, "num_processes": num_processes, "process_id": process_id}
    settings = settings or settings_from_env()
    if settings is not None:
        n = _int_arg(settings["num_processes"], "num_processes", minimum=1)
        i = _int_arg(settings["process_id"], "process_id", minimum=0)
        if i >= n:
            raise ValueError(f"process_id: expected 0 .. {n - 1} (num_processes={n}), got {i}")
        address = _check_address(settings["coordinator"])
    if _STATE["initialized"]:
        return _STATE["num_processes"] > 1
    _use_gloo_on_cpu()
    if settings is None:
        if not auto_detect or not any(os.environ.get(n) for n in _AUTO_DETECTED):
            return False  # a single process: nothing to connect (a later call may still)
        jax.distributed.initialize(initialization_timeout=initialization_timeout,
                                   heartbeat_timeout_seconds=heartbeat_timeout_seconds)
        _STATE.update(initialized=True, num_processes=jax.process_count(),
                      process_id=jax.process_index())
        if jax.process_count() > 1:
            _exit_fast_on_failure()
        return jax.process_count() > 1
    if n == 1:
        return False
    try:
        jax.distributed.initialize(coordinator_address=address, num_processes=n, process_id=i,
                                   initialization_timeout=initialization_timeout,
                                   heartbeat_timeout_seconds=heartbeat_timeout_seconds)
    except Exception as e:  # the runtime raises XlaRuntimeError / RuntimeError variants
        raise RuntimeError(
            f"process {i} of {n}: could not join the coordinator at {address} within "
            f"{initialization_timeout} s ({type(e).__name__}: {e})"
        ) from e
    _STATE.update(initialized=True, num_processes=n, process_id=i)
    _exit_fast_on_failure()
    return True


def _exit_fast_on_failure() -> None:
    """Make a failing process exit at once instead of hanging.

    At exit JAX waits (up to ``shutdown_timeout_seconds``) in a shutdown barrier for every other
    process; after an error the others never get there (they wait for this one in a collective),
    so a failing process would hang for minutes. An uncaught exception (or :func:`mark_failed`)
    makes the exit skip that barrier: this handler is registered after JAX's, so it runs first
    (atexit is last-in, first-out) and leaves with ``os._exit``.
    """
    import atexit

    previous = sys.excepthook

    def hook(kind, value, tb):
        previous(kind, value, tb)
        mark_failed(1)

    sys.excepthook = hook

    def leave():
        code = _STATE.get("failed")
        if code is not None:
            for stream in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    stream.flush()
            os._exit(code)

    atexit.register(leave)


def mark_failed(code: int = 1) -> None:
    """Record that this process failed: it then exits with ``code`` without waiting for the
    others in JAX's shutdown barrier (see :func:`_exit_fast_on_failure`)."""
    _STATE["failed"] = int(code) if code else 1


def _use_gloo_on_cpu() -> None:
    # Only meaningful before the CPU backend exists; afterwards the setting has no effect.
    if jax.config.values.get("jax_cpu_collectives_implementation") is None:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")


def shutdown() -> None:
    """Disconnect (``jax.distributed.shutdown``); a no-op for a single process."""
    if _STATE["initialized"] and _STATE["num_processes"] > 1:
        jax.distributed.shutdown()
    _STATE.update(initialized=False, num_processes=1, process_id=0)


def process_index() -> int:
    """This process's index (0 without a distributed runtime)."""
    return jax.process_index()


def process_count() -> int:
    return jax.process_count()


def is_main_process() -> bool:
    """Whether this process prints, plots and writes files (process 0)."""
    return jax.process_index() == 0


def global_mesh(axis_name: str = BATCH_AXIS) -> Mesh:
    """A 1-D mesh over the devices of every process, ordered by process then device id, so each
    process's devices hold one contiguous block of the batch axis."""
    devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
    return Mesh(np.asarray(devices), (axis_name,))


def _batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(mesh.axis_names[0]))


def local_rows(global_size: int, mesh: Mesh) -> slice:
    """The rows of a global batch of ``global_size`` that this process's devices hold under the
    batch sharding of ``mesh`` (one contiguous block for a :func:`global_mesh`)."""
    n = mesh.devices.size
    if global_size % n:
        raise ValueError(f"batch: the leading (batch) axis must divide evenly over the {n} "
                         f"device(s) of the mesh, got {global_size}")
    index_map = _batch_sharding(mesh).addressable_devices_indices_map((global_size,))
    blocks = sorted((idx[0].start or 0, idx[0].stop if idx[0].stop is not None else global_size)
                    for idx in index_map.values())
    for (_, stop), (start, _) in zip(blocks, blocks[1:], strict=False):
        if stop != start:
            raise ValueError("mesh: this process's devices do not hold one contiguous block of "
                             "the batch axis; build the mesh with global_mesh()")
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


def global_batch(local_batch: PyTree, mesh: Mesh) -> PyTree:
    """The global batch-sharded arrays assembled from each process's ``local_batch`` (its rows,
    as :func:`local_shard` gives them) with ``jax.make_array_from_process_local_data``."""
    sharding = _batch_sharding(mesh)
    local_devices = sum(d.process_index == jax.process_index() for d in mesh.devices.flat)

    def make(x):
        x = np.asarray(x)
        if x.ndim == 0 or x.shape[0] % max(local_devices, 1):
            raise ValueError(f"batch: this process's part must split evenly over its "
                             f"{local_devices} device(s), got shape {x.shape}")
        global_shape = (x.shape[0] * mesh.devices.size // local_devices, *x.shape[1:])
        return jax.make_array_from_process_local_data(sharding, x, global_shape)

    return jax.tree_util.tree_map(make, local_batch)


def shard_global_batch(batch: PyTree, mesh: Mesh) -> PyTree:
    """A global batch that every process holds in full -> the global sharded arrays, each process
    contributing only its own rows (``global_batch(local_shard(batch, mesh), mesh)``)."""
    return global_batch(local_shard(batch, mesh), mesh)


# --------------------------------------------------------------------------- the CLI's hook

def _checkpoint_fingerprint(directory: str | None) -> np.ndarray:
    """32 bytes identifying the newest checkpoint file in ``directory`` (zeros when none)."""
    from jaxrnn.io import latest_checkpoint
    from jaxrnn.io.digest import sha256_file

    path = latest_checkpoint(directory) if directory else None
    if path is None:
        return np.zeros(32, np.uint8)
    return np.frombuffer(bytes.fromhex(sha256_file(path)), np.uint8).copy()


@contextlib.contextmanager
def cli_session(args) -> Iterator[Mesh | None]:
    """The ``jaxrnn`` command's distributed setup, from ``--num-processes / --process-id /
    --coordinator`` (or the ``JAXRNN_*`` variables of :mod:`jaxrnn.launch`; ``--num-processes
    auto``: JAX's detection on SLURM / TPU pods).

    Yields the :func:`global_mesh` when several processes are connected (the training path
    compiles its steps data parallel over it), else None. Every process runs the whole task on
    the same data; only process 0 prints, plots and writes: the others have no progress bar,
    their standard output goes to ``os.devnull`` and their ``--out`` / ``--checkpoint-dir`` to a
    private scratch directory removed at the end (with ``--resume`` it starts as a copy of the
    shared checkpoint directory, which every process must see: checked before training).
    """
    n = getattr(args, "num_processes", None)
    auto = n == "auto"
    given = (None if auto else n, getattr(args, "process_id", None),
             getattr(args, "coordinator", None))
    if any(v is not None for v in given) and not all(v is not None for v in given):
        raise ValueError(
            "--num-processes, --process-id, --coordinator: give all three (or launch with "
            "python -m jaxrnn.launch -n N -- jaxrnn ...), got "
            f"--num-processes {n} --process-id {given[1]} --coordinator {given[2]}")
    if all(v is None for v in given):
        given = (None, None, None)
    if not initialize(num_processes=given[0], process_id=given[1], coordinator=given[2],
                      auto_detect=auto):
        yield None
        return
    mesh = global_mesh()
    if jax.process_index() == 0:
        print(f"distributed: {jax.process_count()} processes, {len(jax.devices())} devices "
              f"(global batch {getattr(args, 'batch_size', '?')} split over them)", flush=True)
    if getattr(args, "resume", False):
        from jax.experimental import multihost_utils

        mine = _checkpoint_fingerprint(getattr(args, "checkpoint_dir", None))
        first = np.asarray(multihost_utils.broadcast_one_to_all(mine))
        if not np.array_equal(first, mine):
            raise ValueError(
                f"--resume: process {jax.process_index()} sees a different checkpoint in "
                f"{args.checkpoint_dir!r} than process 0 (a resumed multi-process run needs "
                f"the same checkpoint directory on every host, e.g. a shared file system)")
    try:
        if jax.process_index() == 0:
            yield mesh
        else:
            with _quiet_secondary(args):
                yield mesh
    except BaseException:
        mark_failed(130 if isinstance(sys.exc_info()[1], KeyboardInterrupt) else 1)
        raise


@contextlib.contextmanager
def _quiet_secondary(args) -> Iterator[None]:
    """A process other than 0 writes into a private scratch directory and prints nothing."""
    import shutil
    import tempfile

    scratch = tempfile.mkdtemp(prefix=f"jaxrnn-rank{jax.process_index()}-")
    shared_ckpt = getattr(args, "checkpoint_dir", None)
    args.out = os.path.join(scratch, "out")
    args.checkpoint_dir = os.path.join(scratch, "checkpoints")
    if shared_ckpt and getattr(args, "resume", False) and os.path.isdir(shared_ckpt):
        shutil.copytree(shared_ckpt, args.checkpoint_dir)
    args.progress = False
    stdout = sys.stdout
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 -- closed below
    try:
        yield
    finally:
        sys.stdout.close()
        sys.stdout = stdout
        shutil.rmtree(scratch, ignore_errors=True)


__all__ = [
    "cli_session",
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
    "global_mesh",
    "local_rows",
    "local_shard",
    "global_batch",
    "shard_global_batch",
]
