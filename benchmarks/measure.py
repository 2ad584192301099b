"""Timing, the FLOP ceiling, and peak memory."""

from __future__ import annotations

import resource
import time

import jax
import jax.numpy as jnp
import numpy as np


def interleaved(runners: dict, reps: int, warmup: int = 2, min_seconds: float = 0.0) -> dict:
    """Time ``runner.call()`` for every runner in round-robin order, ``reps`` rounds (more until
    ``min_seconds`` have passed), so drift of the shared machine hits every library alike.
    Returns ``{name: [seconds per call, ...]}``."""
    for _ in range(warmup):
        for r in runners.values():
            r.call()
    times = {k: [] for k in runners}
    t_start = time.perf_counter()
    rounds = 0
    while rounds < reps or (time.perf_counter() - t_start < min_seconds and rounds < 50 * reps):
        order = list(runners.items())
        if rounds % 2:  # alternate the order so no library always follows the same one
            order.reverse()
        for k, r in order:
            t0 = time.perf_counter()
            own = r.call()  # a runner in another process reports its own step time
            times[k].append(own if isinstance(own, float) else time.perf_counter() - t0)
        rounds += 1
    return times


def summarise(samples: list[float], tokens: int) -> dict:
    """Median step time, tokens/s, and the spread as the interquartile range over the median."""
    s = np.sort(np.asarray(samples))
    med = float(np.median(s))
    q1, q3 = np.percentile(s, [25, 75])
    return {
        "median_s": med,
        "tokens_per_s": tokens / med,
        "spread": float((q3 - q1) / med),
        "min_s": float(s[0]),
        "max_s": float(s[-1]),
        "reps": len(s),
    }


def matmul_ceiling(n: int = 1024, reps: int = 15) -> float:
    """FLOP/s of one large float32 ``(n, n) @ (n, n)`` product under ``jit`` on this machine now,
    from the fastest of ``reps`` runs (a ceiling is a peak rate; the median is pulled down by
    other jobs on a shared machine): the ceiling the recurrent steps are compared with."""
    a = jnp.asarray(np.random.default_rng(0).standard_normal((n, n)), jnp.float32)
    f = jax.jit(lambda a, b: a @ b)
    jax.block_until_ready(f(a, a))
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(f(a, a))
        ts.append(time.perf_counter() - t0)
    return 2.0 * n**3 / min(ts)


def max_rss_bytes() -> int:
    """This process's peak resident set size (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
