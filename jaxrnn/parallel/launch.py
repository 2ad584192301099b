"""Start N local processes of one command as one distributed JAX program (the runner behind
``python -m jaxrnn.launch``, usable from a program: :func:`launch`).

Each process gets ``JAXRNN_COORDINATOR=127.0.0.1:PORT`` (a free port), ``JAXRNN_NUM_PROCESSES``
and ``JAXRNN_PROCESS_ID``, which :func:`jaxrnn.parallel.initialize` (and so ``jaxrnn train``)
reads. Their output is streamed line by line with a ``[rank i]`` prefix. When one process exits
with an error, the others are stopped at once (SIGTERM, then SIGKILL after ``grace`` seconds)
and the result names that rank; after ``timeout`` seconds everything is stopped and the exit
status is 124. No hang: a process blocked in a collective whose peer died is killed with the rest.

A leading ``jaxrnn`` in the command runs as ``<this python> -m jaxrnn``, so the processes use the
same interpreter and the same ``jaxrnn`` as the launcher.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from typing import NamedTuple, TextIO

from jaxrnn.parallel.runtime import (
    ENV_COORDINATOR,
    ENV_NUM_PROCESSES,
    ENV_PROCESS_ID,
    port_in_use,
)

TIMEOUT_STATUS = 124


class LaunchResult(NamedTuple):
    """What :func:`launch` returns.

    Attributes:
      returncode: 0 when every process succeeded; else the failed process's status (1 if it
        died by a signal), or 124 on timeout.
      failed_rank: the first process seen failing (None on success or timeout).
      returncodes: each process's exit status (negative: killed by that signal).
      message: a one-line summary (empty on success).
    """

    returncode: int
    failed_rank: int | None
    returncodes: list[int | None]
    message: str


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that nothing listens on right now (the OS's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _resolve(command: Sequence[str]) -> list[str]:
    command = list(command)
    if command and command[0] == "jaxrnn":
        return [sys.executable, "-m", "jaxrnn", *command[1:]]
    return command


def _pump(stream, rank: int, out: TextIO, lock: threading.Lock) -> None:
    for line in iter(stream.readline, ""):
        with lock:
            out.write(f"[rank {rank}] {line if line.endswith(chr(10)) else line + chr(10)}")
            out.flush()
    stream.close()


def _stop(procs: list[subprocess.Popen], grace: float) -> None:
    """SIGTERM every live process group, then SIGKILL what is left after ``grace`` seconds."""
    live = [p for p in procs if p.poll() is None]
    for p in live:
        try:
            os.killpg(p.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    for p in live:
        try:
            p.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()


def launch(command: Sequence[str], num_processes: int, *, timeout: float | None = None,
           port: int | None = None, grace: float = 5.0, env: Mapping[str, str] | None = None,
           output: TextIO | None = None) -> LaunchResult:
    """Run ``command`` as ``num_processes`` processes of one distributed program on this host.

    Args:
      command: the program and its arguments (a leading ``"jaxrnn"`` runs ``python -m jaxrnn``).
      num_processes: how many processes (>= 1).
      timeout: stop everything after this many seconds (None: no limit).
      port: the coordinator's port on 127.0.0.1 (default: a free one); one already in use is
        refused here, before any process starts.
      grace: seconds between SIGTERM and SIGKILL when stopping processes.
      env: extra environment variables for every process.
      output: where the prefixed lines go (default ``sys.stdout``).
    """
    if isinstance(num_processes, bool) or not isinstance(num_processes, int) \
            or num_processes < 1:
        raise ValueError(f"num_processes: expected an int >= 1, got {num_processes!r}")
    command = _resolve(command)
    if not command:
        raise ValueError("command: expected a program to run after '--', got nothing")
    if timeout is not None and not timeout > 0:
        raise ValueError(f"timeout: expected a positive number of seconds or None, "
                         f"got {timeout!r}")
    out = sys.stdout if output is None else output
    if port is not None:
        if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
            raise ValueError(f"port: expected an int in 1..65535 or None, got {port!r}")
        if port_in_use(port):
            raise ValueError(f"port: {port} is already in use on this host (the coordinator "
                             f"of process 0 listens there); choose another or leave it out "
                             f"for a free one")
    address = f"127.0.0.1:{free_port() if port is None else port}"
    lock = threading.Lock()
    procs: list[subprocess.Popen] = []
    pumps: list[threading.Thread] = []
    base_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1",
                ENV_COORDINATOR: address, ENV_NUM_PROCESSES: str(num_processes)}
    try:
        for rank in range(num_processes):
            p = subprocess.Popen(
                command, env={**base_env, ENV_PROCESS_ID: str(rank)},
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                text=True, errors="replace", bufsize=1,
                start_new_session=True,  # its own process group: stopped with its children
            )
            procs.append(p)
            t = threading.Thread(target=_pump, args=(p.stdout, rank, out, lock), daemon=True)
            t.start()
            pumps.append(t)
        # One waiter per process records when it exited: the rank that failed first is the one
        # to name (its peers usually fail a moment later, in a collective that lost it).
        exited: dict[int, float] = {}

        def wait(rank: int, proc: subprocess.Popen) -> None:
            proc.wait()
            exited[rank] = time.monotonic()

        for rank, p in enumerate(procs):
            threading.Thread(target=wait, args=(rank, p), daemon=True).start()
        start = time.monotonic()
        failed, message, status = None, "", 0
        while True:
            codes = [p.returncode if r in exited else None for r, p in enumerate(procs)]
            bad = sorted((exited[r], r) for r, c in enumerate(codes) if c not in (None, 0))
            if bad:
                failed = bad[0][1]
                code = codes[failed]
                how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
                others = sum(c is None for c in codes)
                message = (f"jaxrnn.launch: rank {failed} of {num_processes} {how}; stopping "
                           f"the {others} other running process(es)")
                status = code if code > 0 else 1
                break
            if all(c == 0 for c in codes):
                break
            if timeout is not None and time.monotonic() - start > timeout:
                running = [r for r, c in enumerate(codes) if c is None]
                message = (f"jaxrnn.launch: timed out after {timeout:g} s; ranks {running} "
                           f"still running, stopping them")
                status = TIMEOUT_STATUS
                break
            time.sleep(0.05)
    except BaseException:
        _stop(procs, grace)
        raise
    if message:
        with lock:
            print(message, file=sys.stderr, flush=True)
    _stop(procs, grace)
    for t in pumps:
        t.join(timeout=grace)
    return LaunchResult(status, failed, [p.returncode for p in procs], message)


__all__ = ["TIMEOUT_STATUS", "LaunchResult", "free_port", "launch"]
