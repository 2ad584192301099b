"""Benchmark configurations (float32 throughout)."""

from __future__ import annotations

from typing import NamedTuple


class Config(NamedTuple):
    """One problem size. ``out`` is the width of the readout the training loss is taken over."""

    name: str
    batch: int
    T: int
    features: int
    hidden: int
    out: int = 16

    @property
    def tokens(self) -> int:
        return self.batch * self.T


# --quick measures the cells issue 16's targets name: every cell with a kernel (a whole-sequence
# path) and a peer; the harness resolves this name against the registry in the worker
QUICK_CELLS = "kernel"
# cells also timed on the plain scan (no fused path), to show that lever in every full run
PLAIN_TOO = ("lstm", "gru")

CONFIGS = {
    # throughput-bound: a medium product per step
    "A": Config("A", batch=32, T=128, features=64, hidden=256),
    # latency-bound: small products, long sequence
    "B": Config("B", batch=8, T=512, features=32, hidden=128),
    # large products per step
    "C": Config("C", batch=128, T=64, features=128, hidden=512),
}

# LSTM sequence-length sweep: hidden 256, batch 8 (input 64 as in config A).
SWEEP_T_FULL = (128, 512, 2048, 8192)
# the longest sequence is timed in its own process, which also records its peak memory
SWEEP_T_LONG = 65536
# Chunk length of the rematerialised training step for long sequences (jaxrnn.run(remat=k)):
# memory O(T/k + k) carries instead of O(T) residuals.
SWEEP_REMAT_FROM_T = 8192
SWEEP_REMAT_CHUNK = 256


def sweep_config(T: int) -> Config:
    return Config(f"T{T}", batch=8, T=T, features=64, hidden=256)


# Allocator settings (PERF-NOTES "The allocator"): glibc otherwise returns large freed blocks to
# the OS and faults them in again every step. Applied to every library alike, via the
# environment of a fresh worker process (glibc reads them at start-up).
ALLOCATORS = {
    "default": {},
    "tuned": {
        "MALLOC_MMAP_THRESHOLD_": "4000000000",
        "MALLOC_TRIM_THRESHOLD_": "8000000000",
        "MALLOC_TOP_PAD_": "536870912",
    },
}
