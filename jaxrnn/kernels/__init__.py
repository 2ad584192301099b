"""Fused CPU sequence kernels for LSTM, GRU, Elman-type, Jordan and minGRU/minLSTM cells (XLA
FFI custom calls).

The engine (:func:`jaxrnn.run`) takes these kernels on CPU for the cells that offer them: the
whole time loop runs in one custom call instead of an XLA while loop, whose per-step overhead
on CPU is as large as the step's own matrix product (see ``benchmarks/NOTES.md``). Values and
gradients are the same as the pure-JAX paths (tests compare them); only speed differs.

The C++ sources ship with the package and are compiled on first use with the machine's C++
compiler against the XLA FFI headers of the installed jaxlib, then cached (like
``torch.utils.cpp_extension``). Where that is impossible (no compiler, a platform other than
Linux/macOS) the engine silently keeps its pure-JAX paths; :func:`status` says why.

Environment:
  ``JAXRNN_KERNELS=0`` turns the kernels off (pure-JAX paths everywhere).
  ``JAXRNN_KERNEL_CACHE`` the directory for the compiled library (default
  ``$XDG_CACHE_HOME/jaxrnn`` or ``~/.cache/jaxrnn``).
  ``CXX`` the compiler (default ``c++``, then ``g++``, ``clang++``).
  ``JAXRNN_KERNEL_SANITIZE=address`` (or ``1``) / ``thread`` builds (and caches separately) a
  variant under AddressSanitizer / ThreadSanitizer; Python must then preload the sanitizer's
  runtime (the commands are in the README's "Kernel sanitizers" paragraph).
  ``JAXRNN_KERNEL_MARCH`` the ``-march`` to build for (default ``native``; cached separately).
  ``JAXRNN_KERNEL_TUNE=0`` keeps the built-in plan rules instead of timing each shape class's
  candidate plans on its first calls (:mod:`jaxrnn.kernels.tune`; ``quiet``: tune silently).

``python -m jaxrnn.kernels`` builds the library now and prints where it is;
``python -m jaxrnn.kernels plans`` prints the plan each shape class runs with here, and why.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from jaxrnn.kernels import tune

HERE = Path(__file__).parent
# One translation unit per cell family (each with its own inlining budget), and the headers they
# share (common.h gathers them); compiled in parallel, linked into one library. Every .cc here is
# a source: a new cell's kernel is one new file, not an entry in a list.
SOURCES = tuple(sorted(HERE.glob("*.cc")))
HEADERS = tuple(sorted(HERE.glob("*.h")))
TARGETS = (
    "jaxrnn_lstm_forward",
    "jaxrnn_lstm_backward",
    "jaxrnn_gru_forward",
    "jaxrnn_gru_backward",
    "jaxrnn_elman_forward",
    "jaxrnn_elman_backward",
    "jaxrnn_steps_outer",
    "jaxrnn_rows_times",
    "jaxrnn_column_sums",
    "jaxrnn_jordan_forward",
    "jaxrnn_jordan_backward",
    "jaxrnn_min_forward",
    "jaxrnn_min_backward",
)
# -ffast-math without its finite-math part: the reassociation, contraction and reciprocal
# rules let GCC vectorise the gate loops (the kernels' own exp is then inlined per vector), but
# the kernels must see NaN and inf as XLA does (a NaN input gives NaN outputs), so the compiler
# may not assume there are none (-ffinite-math-only would let it fold the NaN-preserving clamps
# away). Named one by one rather than as -ffast-math -fno-finite-math-only: with -ffast-math GCC
# may also link crtfastmath.o into the library, which turns on flush-to-zero for the whole
# process that loads it.
#
# -mprefer-vector-width=256: the gate passes are loops GCC vectorises itself, at the width the
# CPU's tuning prefers, which for some CPUs (AMD Zen 1) is 128 bits; naming it makes every x86
# CPU with AVX use 256-bit vectors there. It does not widen AVX-512 code. (x86 only.)
#
# -Wall -Wextra: the build is warning-free (tests/test_kernel_builds.py checks the log of the
# default build); the XLA FFI headers are included as system headers, whose warnings are theirs.
CXXFLAGS = ("-O3", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=fast",
            "-fno-signed-zeros", "-fassociative-math", "-freciprocal-math", "-fopenmp-simd",
            "-std=c++17", "-fPIC", "-Wall", "-Wextra")
X86_FLAGS = ("-mprefer-vector-width=256",)
# JAXRNN_KERNEL_SANITIZE: a separately cached build under a sanitizer, for the tests (README,
# "Kernel sanitizers"); Python must then preload the sanitizer's runtime (and, for ASan,
# libstdc++).
SANITIZERS = {
    "address": ("-fsanitize=address", "-fno-omit-frame-pointer", "-g"),
    "thread": ("-fsanitize=thread", "-g"),
}

_lock = threading.Lock()
_state: dict = {"loaded": False, "error": None, "path": None}
_disabled_depth = 0


def _env_off() -> bool:
    return os.environ.get("JAXRNN_KERNELS", "1").strip().lower() in ("0", "off", "false", "no")


def _cache_dir() -> Path:
    if os.environ.get("JAXRNN_KERNEL_CACHE"):
        return Path(os.environ["JAXRNN_KERNEL_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "jaxrnn"


def _compiler() -> str | None:
    for cand in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if cand and shutil.which(cand):
            return shutil.which(cand)
    return None


def _cpu_signature() -> str:
    """-march=native code runs only on CPUs like the one that built it: key the cache on it."""
    import platform

    # model name *and* instruction-set flags (the first CPU's): two machines may share a model
    # name yet differ in ISA (a VM masking AVX-512), and a home directory may be shared.
    seen: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key = line.split(":", 1)[0].strip()
                if key in ("flags", "Features", "model name") and key not in seen:
                    seen[key] = line
    except OSError:
        pass
    return "".join(seen[k] for k in sorted(seen)) + platform.processor() + platform.machine()


def sanitizer() -> str | None:
    """The sanitizer JAXRNN_KERNEL_SANITIZE asks for: ``"address"`` (also ``1``), ``"thread"``,
    or ``None``."""
    value = os.environ.get("JAXRNN_KERNEL_SANITIZE", "0").strip().lower()
    if value in ("", "0", "off", "false", "no"):
        return None
    if value in ("1", "on", "true", "yes", "address", "asan"):
        return "address"
    if value in ("thread", "tsan"):
        return "thread"
    raise ValueError(f"JAXRNN_KERNEL_SANITIZE: expected address or thread, got {value!r}")


def march() -> str:
    """The ``-march`` the kernels are built for: JAXRNN_KERNEL_MARCH, default ``native`` (the
    tests build ``x86-64-v2`` (SSE) and ``x86-64-v3`` (AVX2) beside it)."""
    return os.environ.get("JAXRNN_KERNEL_MARCH", "").strip() or "native"


def _is_x86() -> bool:
    import platform

    return platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


def _flags() -> tuple[str, ...]:
    kind = sanitizer()
    return (*CXXFLAGS, f"-march={march()}", *(X86_FLAGS if _is_x86() else ()),
            *(SANITIZERS[kind] if kind else ()))


def _library_path(cxx: str) -> Path:
    import jaxlib

    from jaxrnn.digest import sha256_bytes

    version = subprocess.run([cxx, "--version"], capture_output=True, text=True).stdout
    texts = [f"{f.name}\0{f.read_text()}" for f in (*SOURCES, *HEADERS)]
    key = sha256_bytes(
        b"\0".join(
            s.encode()
            for s in (*texts, jaxlib.__version__, " ".join(_flags()), version,
                      _cpu_signature(), sys.platform)
        )
    )[:16]
    kind = sanitizer()
    variant = "".join(f"{v}-" for v in ((kind and {"address": "asan", "thread": "tsan"}[kind]),
                                        march() != "native" and march()) if v)
    return _cache_dir() / f"rnn_kernels-{variant}{key}.so"


def build_log(path: Path | None = None) -> str:
    """What the compiler printed while building the library at ``path`` (default: the one
    :func:`build` gives now): its warnings, if any."""
    path = path or build()
    log = path.with_suffix(".log")
    return log.read_text() if log.exists() else ""


def _compile(cxx: str, out: Path, verbose: bool) -> str:
    """Compile every source into ``out`` (a temporary file): one compiler process per
    translation unit, all at once, then one link. Returns what the compiler printed."""
    import jax.ffi

    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        objects, procs = [], []
        for src in SOURCES:
            obj = Path(tmp) / (src.stem + ".o")
            cmd = [cxx, *_flags(), "-isystem", jax.ffi.include_dir(), "-c", str(src), "-o",
                   str(obj)]
            if verbose:
                print(" ".join(cmd), file=sys.stderr)
            procs.append((src, subprocess.Popen(cmd, stdout=subprocess.PIPE,
                                                stderr=subprocess.PIPE, text=True)))
            objects.append(str(obj))
        failed, printed = [], []
        for src, proc in procs:
            _, err = proc.communicate()
            if err.strip():
                printed.append(err)
            if proc.returncode != 0:
                failed.append(f"{src.name}:\n{err[-4000:]}")
        if failed:
            raise RuntimeError("compiling the kernels failed:\n" + "\n".join(failed))
        cmd = [cxx, *_flags(), "-shared", *objects, "-o", str(out)]
        if verbose:
            print(" ".join(cmd), file=sys.stderr)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"linking the kernels failed:\n{proc.stderr[-4000:]}")
        return "".join(printed) + proc.stderr


def build(verbose: bool = False) -> Path:
    """Compile the kernels into the cache (if not there yet) and return the library's path."""
    cxx = _compiler()
    if cxx is None:
        raise RuntimeError("no C++ compiler found (set CXX, or install g++)")
    path = _library_path(cxx)
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    # Concurrent builders (pytest-xdist workers) each write their own file and rename it into
    # place: the rename is atomic, so a reader never sees a half-written library.
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=path.parent)
    os.close(fd)
    # Once per machine and jaxlib version; say so, as the first run() otherwise seems to hang.
    print(f"jaxrnn: compiling the CPU kernels into {path.parent} (once per machine, 20-60 s)",
          file=sys.stderr)
    try:
        printed = _compile(cxx, Path(tmp), verbose)
        Path(tmp).with_suffix(".log").write_text(printed)
    except BaseException:
        os.unlink(tmp)
        raise
    os.replace(Path(tmp).with_suffix(".log"), path.with_suffix(".log"))
    os.replace(tmp, path)
    return path


def load() -> bool:
    """Build (if needed), load and register the kernels once; whether that worked."""
    import jax
    import jax.ffi

    with _lock:
        if _state["loaded"] or _state["error"] is not None:
            return _state["loaded"]
        try:
            path = build()
            lib = ctypes.CDLL(str(path))
            operands = {}
            for name in TARGETS:
                jax.ffi.register_ffi_target(name, jax.ffi.pycapsule(getattr(lib, name)),
                                            platform="cpu")
                listing = getattr(lib, name + "_operands")
                listing.restype = ctypes.c_char_p
                operands[name] = _parse_operands(listing().decode())
                # JAXRNN_MEMBER_HANDLER's mark: the handler takes leading member axes (vmap).
                operands[name]["members"] = hasattr(lib, name + "_member_anchor")
            lib.jaxrnn_build_info.restype = ctypes.c_char_p
            info = dict(item.split("=") for item in lib.jaxrnn_build_info().decode().split())
            tune._bind(lib)
            if tune.enabled():
                tune.preload(lib, tune.cache_path(path))
                # The plans this process measures are kept for the next (a process that dies
                # without running atexit measures them again next time: values never depend
                # on them).
                atexit.register(tune.save, lib, tune.cache_path(path))
            _state.update(loaded=True, path=str(path), lib=lib, operands=operands, info=info)
        except Exception as err:  # no compiler, no headers, a failed build: keep pure JAX
            _state["error"] = f"{type(err).__name__}: {err}"
        return _state["loaded"]


def _parse_operands(listing: str) -> dict:
    """``"arg:x,...,ret:hs,...,attr:bool:masked,"`` (each handler's operands in their order,
    from the macro that also generates its C++ signature) -> ``{"args": [...], "rets": [...],
    "attrs": {name: C++ type}}``."""
    out: dict = {"args": [], "rets": [], "attrs": {}}
    for item in filter(None, listing.split(",")):
        kind, *rest = item.split(":")
        if kind == "attr":
            out["attrs"][rest[1]] = rest[0]
        else:
            out[kind + "s"].append(rest[0])
    return out


def operands(target: str) -> dict:
    """The operand names of a kernel target, in the order its handler binds them."""
    if not load():
        raise RuntimeError(f"jaxrnn kernels: {status()}")
    return _state["operands"][target]


def available() -> bool:
    """Whether the kernels can be used now (built, loaded, not turned off)."""
    if _env_off() or _disabled_depth:
        return False
    return load()


def build_info() -> dict:
    """What the loaded build is: ``lanes`` (floats per vector), ``tile_rows`` (rows of the
    register tile) and ``move_threads`` (``"1"`` where team members can be moved between CPUs)."""
    if not load():
        raise RuntimeError(f"jaxrnn kernels: {status()}")
    return dict(_state["info"])


def status() -> str:
    """A line saying whether the kernels are in use, and if not, why."""
    if _env_off():
        return "off (JAXRNN_KERNELS=0)"
    if load():
        line = f"on ({_state['path']})"
        if _state["info"].get("move_threads") != "1":
            # One line on what this platform lacks: the teams still run, values are the same.
            line += ("; no sched_setaffinity on this platform: team threads are not spread "
                     "over CPUs")
        return line
    return f"unavailable: {_state['error']}"


# The order of jaxrnn_counters::Counter in team.h.
TEAM_COUNTERS = ("phase_calls", "stalls", "solo_switches", "held_solo", "row_calls",
                 "row_blocks_caller", "row_blocks_helper", "row_handovers", "row_turns",
                 "helper_start_ns", "helpers_missed", "idle_sleeps")


def team_counters() -> dict:
    """What the kernels' thread teams did since the library was loaded, summed over every call
    in this process: calls per scheduler, stalls and calls that went (or started) alone, row
    blocks per thread kind, handovers, helper start delays, idle sleeps. The difference between
    two readings says what happened in the calls between them (e.g. whether a slow call ran
    alone)."""
    if not load():
        raise RuntimeError(f"jaxrnn kernels: {status()}")
    read = _state["lib"].jaxrnn_team_counter
    read.restype = ctypes.c_int64
    read.argtypes = (ctypes.c_int,)
    return {name: int(read(i)) for i, name in enumerate(TEAM_COUNTERS)}


def plans() -> list[dict]:
    """The plan of every shape class the kernels have met in this process (tuned here, being
    tuned, or read from the cache file), each as a dict with its key fields, ``state``,
    ``plan`` (threads, rows), ``rule`` (what the built-in rules give) and ``tried`` (each
    candidate's best call in ms); :func:`jaxrnn.kernels.tune.describe` words one."""
    if not load():
        raise RuntimeError(f"jaxrnn kernels: {status()}")
    return tune.entries(_state["lib"])


def reset_plans() -> None:
    """Forget every plan in this process (the next calls of each shape class tune again); the
    cache file is left as it is."""
    if load():
        _state["lib"].jaxrnn_tune_reset()


@contextlib.contextmanager
def disabled():
    """Trace the pure-JAX paths instead of the kernels inside this block (for comparisons).

    Takes effect when a function is traced: a function already compiled with the kernels keeps
    them."""
    global _disabled_depth
    _disabled_depth += 1
    try:
        yield
    finally:
        _disabled_depth -= 1


__all__ = ["available", "build", "build_info", "build_log", "disabled", "load", "march",
           "operands", "plans", "reset_plans", "sanitizer", "status", "team_counters", "tune"]
