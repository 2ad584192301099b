"""Several processes, one program: connecting them with JAX's own distributed runtime
(``jax.distributed``), and how a process of such a run exits.

Every process runs the same program and first (before any computation touches a device)
connects to the others::

    import jaxrnn.parallel as par
    par.initialize("127.0.0.1:1234", num_processes=2, process_id=0)   # on process 0
    par.initialize("127.0.0.1:1234", num_processes=2, process_id=1)   # on process 1
    # or par.initialize() with no arguments: read from JAXRNN_COORDINATOR /
    # JAXRNN_NUM_PROCESSES / JAXRNN_PROCESS_ID (set by ``python -m jaxrnn.launch``), else
    # detected by JAX itself on SLURM, Open MPI and Cloud TPU pods.

After that ``jax.devices()`` lists the devices of *all* processes and
:func:`jaxrnn.parallel.make_mesh` spans them.

On CPU the cross-process collectives are gloo's (TCP), selected with
``jax.config.update("jax_cpu_collectives_implementation", "gloo")`` before the CPU backend starts
(:func:`initialize` selects it when no implementation is set).

Exit: a process that succeeds waits for the others in JAX's shutdown barrier; a process that
fails leaves at once with its status instead (its peers would never reach that barrier). Only
process 0 writes files (the CLI gives the others private scratch directories): two processes
committing the same model directory left one without its weights. If a process dies, the
others block in their next collective until JAX's heartbeat timeout; :mod:`jaxrnn.parallel.launch`
stops them as soon as one exits with an error.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import socket
import sys
from collections.abc import Mapping
from typing import Any

import jax

ENV_COORDINATOR = "JAXRNN_COORDINATOR"
ENV_NUM_PROCESSES = "JAXRNN_NUM_PROCESSES"
ENV_PROCESS_ID = "JAXRNN_PROCESS_ID"

# Environments in which jax.distributed.initialize() finds its arguments itself.
_AUTO_DETECTED = ("SLURM_JOB_ID", "OMPI_COMM_WORLD_SIZE", "TPU_WORKER_HOSTNAMES",
                  "CLOUD_TPU_TASK_ID", "MEGASCALE_COORDINATOR_ADDRESS")

# What this process's connection is: the runtime is process-wide (jax.distributed itself keeps
# one global client), so its bookkeeping is too.
_STATE: dict[str, Any] = {"initialized": False, "num_processes": 1, "process_id": 0}


def _int_arg(value, name: str, *, minimum: int) -> int:
    try:
        v = int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}") from None
    if isinstance(value, bool) or v < minimum or (isinstance(value, float) and v != value):
        raise ValueError(f"{name}: expected an integer >= {minimum}, got {value!r}")
    return v


def check_address(address: str, name: str = "coordinator") -> tuple[str, int]:
    """``"HOST:PORT"`` -> ``(host, port)``; a ValueError naming ``name`` otherwise."""
    if not isinstance(address, str) or ":" not in address:
        raise ValueError(f"{name}: expected 'HOST:PORT' (e.g. '127.0.0.1:1234'), got {address!r}")
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{name}: expected 'HOST:PORT' with a port in 1..65535, got {address!r}")
    return host.strip("[]"), int(port)


def port_in_use(port: int, host: str = "") -> bool:
    """Whether a TCP port cannot be bound here (something listens on it). ``host`` "" means
    every interface, where the coordinator listens."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        # SO_REUSEADDR: a port left in TIME_WAIT by an earlier run is free for a listener
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


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

    Raises ValueError for a malformed argument or (on process 0, which runs the coordinator) a
    coordinator port that something else already listens on, checked before JAX tries to bind
    it; RuntimeError (naming the coordinator) when the others cannot be reached within
    ``initialization_timeout`` seconds.
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
        address = settings["coordinator"]
        _, port = check_address(address)
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
            _register_exit()
        return jax.process_count() > 1
    if n == 1:
        return False
    # Process 0 starts the coordinator's server on this port; when the port is taken, JAX's
    # native server fails to start and the process may die of SIGSEGV instead of an error.
    if i == 0 and port_in_use(port):
        raise ValueError(
            f"coordinator {address}: port {port} is already in use on this host, where "
            f"process 0 runs the coordinator; choose a free port (--coordinator HOST:PORT, or "
            f"python -m jaxrnn.launch --port PORT)")
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
    _register_exit()
    return True


def _register_exit() -> None:
    """Make a failing process exit at once instead of hanging.

    At exit JAX's own handler waits (up to ``shutdown_timeout_seconds``) in a shutdown barrier
    for every other process; after an error the others never get there (they wait for this one
    in a collective), so a failing process would hang for minutes. An uncaught exception (or
    :func:`mark_failed`) makes the exit skip that barrier with ``os._exit``: this handler is
    registered after JAX's, so it runs first (atexit is last-in, first-out). A process that
    succeeds leaves through JAX's handler (the barrier, then the disconnect).
    """
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
    others in JAX's shutdown barrier (see :func:`_register_exit`)."""
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


def same_on_every_process(value) -> bool:
    """Whether every process holds the same array ``value`` as process 0 (a collective: every
    process must call it). True without several processes."""
    import numpy as np

    if jax.process_count() == 1:
        return True
    from jax.experimental import multihost_utils

    mine = np.asarray(value)
    first = np.asarray(multihost_utils.broadcast_one_to_all(mine))
    return bool(np.array_equal(first, mine))


__all__ = [
    "ENV_COORDINATOR",
    "ENV_NUM_PROCESSES",
    "ENV_PROCESS_ID",
    "settings_from_env",
    "check_address",
    "port_in_use",
    "initialize",
    "shutdown",
    "mark_failed",
    "process_index",
    "process_count",
    "is_main_process",
    "same_on_every_process",
]
