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
import select
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
      failed_rank: the process that failed first, in the order the processes exited (its
        peers often fail a moment later, in a collective that lost it); None on success or
        timeout. A process the launcher stopped is never it.
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


def _epoll_wait(poller, timeout: float) -> list[tuple[int, int]]:
    """``poller.poll(timeout)`` (a seam: a test delays the launcher here)."""
    return poller.poll(timeout)


class _ExitOrder:
    """Reaps a run's processes and tells in which order they exited.

    The order is the kernel's, not that of whichever launcher thread happened to run first: on
    Linux each process has a pidfd in one epoll set with ``EPOLLONESHOT``; a pidfd becomes
    readable when its process has exited, and epoll queues ready files in the order they became
    ready, so one ``epoll_wait`` lists the exits in the order they happened even when the
    launcher looks late (a loaded machine) and several processes have died by then, as the
    peers of a failed rank do a moment after it. Elsewhere (no ``os.pidfd_open``) it polls every
    process every 10 ms; two that exit within one round are then told apart by rank only.
    """

    def __init__(self, procs: Sequence[subprocess.Popen]):
        self._procs = list(procs)
        self._left = set(range(len(self._procs)))
        self._epoll = None
        self._rank_of_fd: dict[int, int] = {}
        if hasattr(os, "pidfd_open") and hasattr(select, "epoll"):
            self._epoll = select.epoll()
            for rank, p in enumerate(self._procs):
                fd = os.pidfd_open(p.pid)
                self._rank_of_fd[fd] = rank
                self._epoll.register(fd, select.EPOLLIN | select.EPOLLONESHOT)

    def wait(self, timeout: float | None) -> list[int]:
        """The ranks that exited since the last call, first exit first; waits up to ``timeout``
        seconds (None: until one exits) when none has. Each is reaped (``returncode`` set)."""
        if not self._left:
            return []
        if self._epoll is None:
            return self._poll_all(timeout)
        events = _epoll_wait(self._epoll, -1 if timeout is None else timeout)
        ranks = [self._rank_of_fd[fd] for fd, _ in events]
        for rank in ranks:
            self._procs[rank].wait()  # already exited: returns at once with its status
            self._left.discard(rank)
        return ranks

    def _poll_all(self, timeout: float | None) -> list[int]:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            ranks = [r for r in sorted(self._left) if self._procs[r].poll() is not None]
            if ranks or (deadline is not None and time.monotonic() >= deadline):
                self._left.difference_update(ranks)
                return ranks
            time.sleep(0.01)

    def close(self) -> None:
        if self._epoll is not None:
            self._epoll.close()
            for fd in self._rank_of_fd:
                os.close(fd)
            self._epoll, self._rank_of_fd = None, {}


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
    exits: _ExitOrder | None = None
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
        exits = _ExitOrder(procs)
        start = time.monotonic()
        order: list[int] = []  # ranks in the order they exited
        failed, message, status = None, "", 0
        while True:
            order += exits.wait(None if timeout is None
                                else max(0.0, timeout - (time.monotonic() - start)))
            codes = [procs[r].returncode for r in range(num_processes)]
            bad = [r for r in order if codes[r] != 0]
            if bad:
                failed = bad[0]
                code = codes[failed]
                how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
                others = sum(c is None for c in codes)
                message = (f"jaxrnn.launch: rank {failed} of {num_processes} {how}; stopping "
                           f"the {others} other running process(es)")
                status = code if code > 0 else 1
                break
            if len(order) == num_processes:
                break
            if timeout is not None and time.monotonic() - start >= timeout:
                running = [r for r, c in enumerate(codes) if c is None]
                message = (f"jaxrnn.launch: timed out after {timeout:g} s; ranks {running} "
                           f"still running, stopping them")
                status = TIMEOUT_STATUS
                break
    except BaseException:
        _stop(procs, grace)
        raise
    finally:
        if exits is not None:
            exits.close()
    if message:
        with lock:
            print(message, file=sys.stderr, flush=True)
    _stop(procs, grace)
    for t in pumps:
        t.join(timeout=grace)
    return LaunchResult(status, failed, [p.returncode for p in procs], message)


__all__ = ["TIMEOUT_STATUS", "LaunchResult", "free_port", "launch"]
