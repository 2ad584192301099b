"""What a run's claims depend on: the CPU model (name, family, model), its ISA flags, the cores,
memory and the load average."""

from __future__ import annotations

import os
import platform
from pathlib import Path

# CPU features the kernels' code generation (-march=native) and XLA's CPU backend can use
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512dq", "avx512cd",
             "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "avx512_fp16", "avx_vnni",
             "amx_tile", "amx_bf16", "amx_int8")


def cpuinfo(text: str | None = None) -> dict:
    """The first processor's model name, vendor, family/model/stepping and flags, from
    ``/proc/cpuinfo`` (empty where there is none)."""
    if text is None:
        try:
            text = Path("/proc/cpuinfo").read_text()
        except OSError:
            return {}
    info = {}
    for line in text.splitlines():
        if not line.strip():
            if info:
                break  # the first processor's block is enough
            continue
        key, _, val = line.partition(":")
        info.setdefault(key.strip(), val.strip())
    return info


def machine() -> dict:
    """What the claims depend on: the CPU model, its relevant ISA flags, the cores this process
    may use, memory, and the load average now (the caller records it before and after)."""
    info = cpuinfo()
    flags = set(info.get("flags", "").split())
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count()
    return {"cpu": info.get("model name") or platform.processor() or platform.machine(),
            "vendor": info.get("vendor_id"),
            "cpu_family_model_stepping": "/".join(
                info.get(k, "?") for k in ("cpu family", "model", "stepping")),
            "isa": {f: f in flags for f in ISA_FLAGS} if flags else {},
            "cores": os.cpu_count(), "usable_cores": usable, "memory_bytes": mem,
            "platform": platform.platform(), "loadavg": list(os.getloadavg())}
