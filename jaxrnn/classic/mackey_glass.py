r"""The Mackey-Glass delay differential equation, integrated in-process (no downloads).

.. math::
   \frac{dx}{dt} = \beta \frac{x(t-\tau)}{1 + x(t-\tau)^n} - \gamma x(t)

with the classic chaotic setting :math:`\beta=0.2, \gamma=0.1, n=10, \tau=17` (Mackey & Glass
1977) used by Jaeger (2001) and Jaeger & Haas (2004) for echo state networks.

The equation is integrated in float64 NumPy with a fourth-order Runge-Kutta scheme on a grid of
``dt``; the delayed value at the half step is the mean of its two grid neighbours (the delay is a
whole number of grid steps, so only the half steps need interpolation). The series is then
sampled every ``sample_every`` time units, as in Jaeger's setup (one sample per time unit).
"""

from __future__ import annotations

import numpy as np


def mackey_glass(
    length: int,
    *,
    tau: float = 17.0,
    beta: float = 0.2,
    gamma: float = 0.1,
    n: float = 10.0,
    dt: float = 0.1,
    sample_every: float = 1.0,
    x0: float = 1.2,
    discard: int = 1000,
    seed: int | None = 0,
) -> np.ndarray:
    """A Mackey-Glass series.

    Args:
      length: number of samples returned.
      tau: the delay; must be a whole multiple of ``dt``.
      beta, gamma, n: the equation's constants.
      dt: the integration step.
      sample_every: time between returned samples; must be a whole multiple of ``dt``.
      x0: constant initial history on ``[-tau, 0]``.
      discard: samples dropped at the start (the transient).
      seed: if not None, the constant history is perturbed by ``U(-0.1, 0.1)`` noise so that
        different seeds give different trajectories on the attractor.

    Returns:
      float64 array of shape ``(length,)``.
    """
    if isinstance(length, bool) or not isinstance(length, int) or length <= 0:
        raise ValueError(f"length: expected a positive int, got {length!r}")
    if not dt > 0:
        raise ValueError(f"dt: expected a positive float, got {dt!r}")
    lag = tau / dt
    sub = sample_every / dt
    if tau <= 0 or abs(lag - round(lag)) > 1e-9:
        raise ValueError(f"tau: expected a positive multiple of dt={dt}, got {tau!r}")
    if sample_every <= 0 or abs(sub - round(sub)) > 1e-9:
        raise ValueError(
            f"sample_every: expected a positive multiple of dt={dt}, got {sample_every!r}"
        )
    if isinstance(discard, bool) or not isinstance(discard, int) or discard < 0:
        raise ValueError(f"discard: expected an int >= 0, got {discard!r}")
    lag, sub = int(round(lag)), int(round(sub))
    steps = (length + discard) * sub

    history = np.full(lag + 1, x0, dtype=np.float64)
    if seed is not None:
        history += np.random.default_rng(seed).uniform(-0.1, 0.1, lag + 1)
    x = np.empty(lag + 1 + steps, dtype=np.float64)
    x[: lag + 1] = history

    def f(xt, xd):
        return beta * xd / (1.0 + xd**n) - gamma * xt

    for i in range(lag, lag + steps):
        d0, d1 = x[i - lag], x[i - lag + 1]
        dh = 0.5 * (d0 + d1)
        xi = x[i]
        k1 = f(xi, d0)
        k2 = f(xi + 0.5 * dt * k1, dh)
        k3 = f(xi + 0.5 * dt * k2, dh)
        k4 = f(xi + dt * k3, d1)
        x[i + 1] = xi + dt / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)

    samples = x[lag::sub][1 : length + discard + 1]
    return samples[discard:].copy()
