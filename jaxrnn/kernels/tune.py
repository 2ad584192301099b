"""The kernels' plan table from Python: what each shape class runs with on this machine, and the
cache file that keeps it between processes.

The kernels choose a call's plan (team size; unit or row split) by timing the candidates on the
first calls of each shape class (``tuner.h``: like ``torch.backends.cudnn.benchmark`` or FFTW's
wisdom, and as every plan gives the same values bit for bit, tuning never changes a number).
The plans found are written beside the compiled library, whose file name is keyed by the CPU
signature, so a process on the same machine starts with them, and another CPU tunes its own.

Environment: ``JAXRNN_KERNEL_TUNE=0`` keeps the built-in rules (no timing, no cache);
``JAXRNN_KERNEL_TUNE=quiet`` tunes without the one line per shape class on stderr.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import tempfile
import time
from pathlib import Path

# The order of tuner.h's Kernel enum (checked against the library when it loads).
KERNELS = ("lstm_forward", "lstm_backward", "gru_forward", "gru_backward", "elman_forward",
           "elman_backward", "jordan_forward", "jordan_backward")
STATES = ("tuning", "measured", "cached")
KEY_FIELDS = ("kernel", "variant", "B", "H", "F", "log2_T", "max_threads")
FORMAT = 1


def enabled() -> bool:
    """Whether calls are tuned (``JAXRNN_KERNEL_TUNE`` is not ``0``)."""
    return os.environ.get("JAXRNN_KERNEL_TUNE", "1").strip().lower() not in ("0", "off", "no")


def _bind(lib) -> None:
    lib.jaxrnn_tune_entries.restype = ctypes.c_int
    lib.jaxrnn_tune_entry.restype = ctypes.c_int
    lib.jaxrnn_tune_entry.argtypes = (ctypes.c_int, ctypes.POINTER(ctypes.c_int64), ctypes.c_int)
    lib.jaxrnn_tune_kernel_name.restype = ctypes.c_char_p
    lib.jaxrnn_tune_kernel_name.argtypes = (ctypes.c_int,)
    lib.jaxrnn_tune_preload.restype = ctypes.c_int
    lib.jaxrnn_tune_preload.argtypes = (ctypes.c_int,) * 9
    lib.jaxrnn_tune_reset.restype = None
    names = tuple(lib.jaxrnn_tune_kernel_name(i).decode() for i in range(len(KERNELS)))
    if names != KERNELS:
        raise RuntimeError(f"tuner.h's kernels {names} differ from tune.KERNELS {KERNELS}")


def _plan(threads: int, rows: int) -> dict:
    return {"threads": int(threads), "rows": bool(rows)}


def entries(lib) -> list[dict]:
    """Every shape class the library has a plan for (or is tuning) in this process."""
    out = []
    cap = 15 + 4 * 16
    buf = (ctypes.c_int64 * cap)()
    for i in range(lib.jaxrnn_tune_entries()):
        n = lib.jaxrnn_tune_entry(i, buf, cap)
        if n < 0:
            continue
        v = list(buf[:n])
        entry = dict(zip(KEY_FIELDS, v[:7]))
        entry["kernel"] = KERNELS[entry["kernel"]]
        entry.update(state=STATES[v[7]], plan=_plan(v[8], v[9]), rule=_plan(v[10], v[11]),
                     tuning_s=v[12] / 1e9, calls=v[13], tried=[])
        for c in range(v[14]):
            threads, rows, samples, best_ns = v[15 + 4 * c:19 + 4 * c]
            entry["tried"].append({**_plan(threads, rows), "samples": samples,
                                   "ms": None if best_ns >= 2**63 - 1 else best_ns / 1e6})
        out.append(entry)
    return out


def cache_path(library: str | Path) -> Path:
    """The plan cache beside a compiled library (its name carries the CPU signature)."""
    return Path(library).with_suffix(".plans.json")


def read_cache(path: Path) -> list[dict]:
    """The plans in a cache file ([] if there is none or it is not one this version reads)."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return []
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return []
    return [p for p in data.get("plans", []) if isinstance(p, dict)]


def preload(lib, path: Path) -> int:
    """Give the library the cached plans; returns how many it took."""
    taken = 0
    for p in read_cache(path):
        try:
            args = [KERNELS.index(p["kernel"]), *(int(p[k]) for k in KEY_FIELDS[1:]),
                    int(p["plan"]["threads"]), int(bool(p["plan"]["rows"]))]
        except (KeyError, TypeError, ValueError):
            continue
        taken += lib.jaxrnn_tune_preload(*args) == 0
    return taken


def _key(p: dict) -> tuple:
    return tuple(p[k] for k in KEY_FIELDS)


@contextlib.contextmanager
def _locked(path: Path):
    """An exclusive lock on ``path``'s lock file, so that processes saving at once (pytest-xdist
    workers, a sweep) merge their plans instead of dropping each other's."""
    import fcntl

    with open(path.with_suffix(".lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _load() -> float | None:
    """The 1-minute load average when plans are saved: a plan measured on a busy machine says
    so in the plans command (``--reset`` then lets a quiet run measure again)."""
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def save(lib, path: Path) -> int:
    """Merge the plans this process measured into the cache file (written atomically); returns
    how many are new or changed. Nothing is written when nothing was measured."""
    measured = [e for e in entries(lib) if e["state"] == "measured"]
    if not measured:
        return 0
    path = Path(path)
    try:
        with _locked(path):
            plans = {_key(p): p for p in read_cache(path) if all(k in p for k in KEY_FIELDS)}
            for e in measured:
                plans[_key(e)] = {**{k: e[k] for k in KEY_FIELDS}, "plan": e["plan"],
                                  "rule": e["rule"], "tried": e["tried"],
                                  "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                            time.gmtime()),
                                  "load": _load()}
            fd, tmp = tempfile.mkstemp(suffix=".json", dir=path.parent)
            with os.fdopen(fd, "w") as f:
                json.dump({"format": FORMAT, "plans": sorted(plans.values(), key=_key)}, f,
                          indent=1)
            os.replace(tmp, path)
    except OSError:  # a read-only cache directory: the plans are measured again next time
        return 0
    return len(measured)


def describe(entry: dict) -> str:
    """One line: the shape class, the plan it runs with, and why (each candidate's best call)."""
    def words(p):
        return "1 thread" if p["threads"] == 1 else \
            f"{p['threads']} threads by {'rows' if p['rows'] else 'units'}"

    what = (f"{entry['kernel']}{' (training)' if entry['variant'] & 1 else ''}"
            f"{' masked' if entry['variant'] & 2 else ''} B={entry['B']} H={entry['H']}"
            f"{' F=' + str(entry['F']) if entry['F'] else ''} T~2^{entry['log2_T']}"
            f" ({entry['max_threads']} threads at most)")
    tried = ", ".join(f"{words(t)} {t['ms']:.3f} ms" for t in entry.get("tried", [])
                      if t.get("ms") is not None)
    state = entry.get("state", "cached")
    if state == "tuning":
        return f"{what}: being tuned ({tried or 'no call timed yet'})"
    why = (f"fastest of: {tried}" if tried else "from the cache file")
    if entry.get("measured"):
        why += f" (measured {entry['measured']}, load average {entry.get('load')})"

    rule = entry.get("rule")
    if rule and rule != entry["plan"]:
        why += f"; the built-in rules would give {words(rule)}"
    elif rule:
        why += "; the built-in rules' plan (kept unless another is 5% faster)"
    return f"{what}: {words(entry['plan'])} - {why}"


def warm_up(fn, *args, max_calls: int = 64) -> int:
    """Call ``fn(*args)`` (blocking on its result) until the shape classes its calls touch are
    tuned, so that no timed call of a benchmark runs a candidate plan; returns the calls made.

    Stops when a call advanced no shape class that is still being tuned (or after
    ``max_calls``)."""
    import jax

    from jaxrnn import kernels

    if not kernels.available() or not enabled():
        return 0
    lib = kernels._state["lib"]
    for calls in range(1, max_calls + 1):
        before = {_key(e): e["calls"] for e in entries(lib) if e["state"] == "tuning"}
        jax.block_until_ready(fn(*args))
        after = {_key(e): e for e in entries(lib)}
        if not any(after[k]["calls"] != n or after[k]["state"] != "tuning"
                   for k, n in before.items() if k in after) and not any(
                e["state"] == "tuning" and k not in before for k, e in after.items()):
            return calls
    return max_calls
