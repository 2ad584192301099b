"""One competing busy process for the contended mode (``python -m benchmarks --contended``).

The issue's scenario: a user's training shares the machine with one other CPU-bound process (a
data loader, a notebook, another job of a sweep). :func:`busy_processes` starts such processes
(pure-Python spin loops, like ``python3 -c 'while True: pass'``), waits until each one spins,
and kills them by PID when the block ends, however it ends (exception, Ctrl-C, SIGTERM). A
process the harness could not kill itself (the harness was SIGKILLed) dies with its parent: it
asks the kernel for SIGKILL when the parent exits (Linux ``PR_SET_PDEATHSIG``) and, elsewhere,
notices within ~50 ms that its parent changed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

# In the command line of every busy process, so a leftover one can be found by its arguments.
MARKER = "jaxrnn-bench-busy"

_SPIN = r"""
import ctypes, os, sys
parent = int(sys.argv[1])
try:  # Linux: SIGKILL this process when the harness exits, even if it is SIGKILLed
    ctypes.CDLL(None, use_errno=True).prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
except Exception:
    pass
if os.getppid() != parent:  # the parent died before prctl took effect
    sys.exit(0)
sys.stdout.write("spinning\n")
sys.stdout.flush()
while True:  # the competing load: a pure-Python loop, one core's worth
    for _ in range(1 << 18):
        pass
    if os.getppid() != parent:
        break
"""


class BusyProcess:
    """A started busy process: its PID and the CPU time it has used so far."""

    def __init__(self, popen: subprocess.Popen):
        self.popen = popen
        self.pid = popen.pid
        self.mark()

    def mark(self) -> None:
        """Start counting its CPU use from now (called once it spins, so that the interpreter's
        start-up is not counted)."""
        self.started = time.perf_counter()
        self.cpu_at_start = cpu_seconds(self.pid) or 0.0

    def cpu_seconds(self) -> float | None:
        """User + system CPU seconds used (Linux ``/proc``); None where unknown."""
        return cpu_seconds(self.pid)


def cpu_seconds(pid: int) -> float | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()  # the command name may contain spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def is_running(pid: int) -> bool:
    """Whether ``pid`` is a live (not zombie) process."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def leftover_pids() -> list[int]:
    """PIDs of busy processes of this harness still alive (by their command line; Linux)."""
    out = []
    for d in Path("/proc").glob("[0-9]*"):
        try:
            args = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if MARKER.encode() in args and is_running(int(d.name)):
            out.append(int(d.name))
    return out


def _start_one() -> BusyProcess:
    p = subprocess.Popen(
        [sys.executable, "-c", _SPIN, str(os.getpid()), MARKER],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
    )
    busy = BusyProcess(p)
    try:
        line = p.stdout.readline()  # returns once it spins (or b"" if it died)
    except BaseException:
        _stop(busy)
        raise
    if line.strip() != b"spinning":
        _stop(busy)
        raise RuntimeError(f"busy process {p.pid} did not start (exit code {p.poll()})")
    busy.mark()
    return busy


def _stop(busy: BusyProcess) -> None:
    p = busy.popen
    if p.poll() is None:
        try:
            p.kill()
        except ProcessLookupError:
            pass
    try:
        p.wait(timeout=10)
    except subprocess.TimeoutExpired:  # not expected after SIGKILL; say so rather than hang
        print(f"warning: busy process {p.pid} did not exit after SIGKILL", file=sys.stderr)
    if p.stdout is not None:
        p.stdout.close()


@contextlib.contextmanager
def busy_processes(n: int = 1):
    """Run ``n`` competing busy processes for the duration of the block; yields their
    :class:`BusyProcess` list. They are spinning when the block starts and killed (and
    reaped) when it ends, also on an exception, Ctrl-C or SIGTERM (turned into ``SystemExit``
    while the block runs, in the main thread)."""
    if n < 0:
        raise ValueError(f"n: expected a count >= 0, got {n}")
    old_term = None
    if threading.current_thread() is threading.main_thread():
        def _on_term(signum, frame):
            raise SystemExit(128 + signum)

        old_term = signal.signal(signal.SIGTERM, _on_term)
    procs: list[BusyProcess] = []
    try:
        for _ in range(n):
            procs.append(_start_one())
        yield procs
    finally:
        for b in procs:
            _stop(b)
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)


def share_used(procs: list[BusyProcess]) -> float | None:
    """CPU cores' worth the busy processes got since they started (1.0 = one full core)."""
    used = [b.cpu_seconds() for b in procs]
    if not procs or any(u is None for u in used):
        return None
    now = time.perf_counter()
    return sum((u - b.cpu_at_start) / max(now - b.started, 1e-9)
               for u, b in zip(used, procs, strict=True))
