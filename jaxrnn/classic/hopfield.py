r"""Hopfield networks: the binary associative memory (Hopfield 1982) and its modern continuous
form (Ramsauer et al. 2020, "Hopfield Networks is All You Need").

Binary network over bipolar states :math:`s \in \{-1, +1\}^N`:

.. math::
   W = \frac{1}{N} \sum_{\mu=1}^{P} \xi^\mu {\xi^\mu}^\top, \quad W_{ii} = 0 \qquad
   E(s) = -\tfrac12 s^\top W s + \theta^\top s \qquad
   s_i \leftarrow \operatorname{sgn}\big(\textstyle\sum_j W_{ij} s_j - \theta_i\big)

where a zero field keeps the unit's current value. (With Hebbian weights the fields are
multiples of :math:`1/N`; float32 round-off can turn an exact tie into a tiny non-zero field,
which matters only for tie-breaking -- an odd number of patterns with even ``N`` has no ties.)
*Synchronous* updates change all units at once (and may end in a 2-cycle); *asynchronous*
updates change one unit at a time in a random order, never increase :math:`E` (for symmetric
:math:`W` with zero diagonal) and so end in a fixed point. Both loops run in
:func:`jax.lax.while_loop` up to a maximum number of steps. Retrieval of the stored patterns
breaks down at a load :math:`P/N \approx 0.138` (Amit, Gutfreund & Sompolinsky 1985).

Modern (continuous) Hopfield network with stored patterns as rows of :math:`X` ``(P, d)``:

.. math::
   \xi \leftarrow X^\top \operatorname{softmax}(\beta X \xi) \qquad
   E(\xi) = -\beta^{-1}\log\sum_\mu e^{\beta x_\mu^\top \xi} + \tfrac12 \xi^\top\xi
            + \beta^{-1}\log P + \tfrac12 M^2,\ M = \max_\mu \|x_\mu\|

whose capacity grows exponentially in ``d``.

Shapes: ``B...`` batch (possibly empty), ``N`` units, ``P`` patterns, ``d`` pattern size.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn.cells.base import Array


class RecallResult(NamedTuple):
    state: Array  # (B..., N) final state
    steps: Array  # (B...,) int32 number of updates (sync) or sweeps (async) taken
    converged: Array  # (B...,) bool: the final state is a fixed point


# --------------------------------------------------------------------------- checks


def _check_array(x, argname: str, *, min_ndim: int = 1, floating: bool = True):
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"{argname}: expected an array, got {type(x).__name__}")
    if floating and not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(
            f"{argname}: expected a floating-point array (bipolar values as float), "
            f"got dtype {x.dtype}"
        )
    if x.ndim < min_ndim:
        raise ValueError(f"{argname}: expected rank >= {min_ndim}, got shape {tuple(x.shape)}")
    return x


def _check_bipolar(x, argname: str):
    if not isinstance(x, jax.core.Tracer):
        v = np.asarray(x)
        if v.size and not np.all((v == 1) | (v == -1)):
            raise ValueError(
                f"{argname}: expected bipolar values in {{-1, +1}}, got {np.unique(v)[:6]}"
            )


def _check_weights(w, argname: str = "w"):
    _check_array(w, argname, min_ndim=2)
    if w.ndim != 2 or w.shape[0] != w.shape[1]:
        raise ValueError(f"{argname}: expected a square matrix (N, N), got shape {tuple(w.shape)}")
    return w.shape[0]


def _check_state(s, N: int, argname: str = "s"):
    _check_array(s, argname, min_ndim=1)
    if s.shape[-1] != N:
        raise ValueError(
            f"{argname}: last dimension must be N={N} (from w), got shape {tuple(s.shape)}"
        )
    _check_bipolar(s, argname)


def _check_steps(value, argname: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{argname}: expected an int >= 1, got {value!r}")
    return value


# --------------------------------------------------------------------------- binary network


def hebbian(patterns: Array) -> Array:
    """Hebbian storage ``W = (1/N) sum_mu xi^mu xi^mu^T`` with zero diagonal.

    Args:
      patterns: ``(P, N)`` bipolar patterns (float, values +-1).

    Returns:
      ``(N, N)`` symmetric weights with zero diagonal.
    """
    _check_array(patterns, "patterns", min_ndim=2)
    if patterns.ndim != 2:
        raise ValueError(f"patterns: expected shape (P, N), got {tuple(patterns.shape)}")
    _check_bipolar(patterns, "patterns")
    N = patterns.shape[1]
    w = patterns.T @ patterns / N
    return w * (1.0 - jnp.eye(N, dtype=w.dtype))


def energy(w: Array, s: Array, theta: Array | None = None) -> Array:
    """``E(s) = -1/2 s^T W s + theta^T s`` for states ``(B..., N)``; returns ``(B...)``."""
    N = _check_weights(w)
    _check_array(s, "s")
    if s.shape[-1] != N:
        raise ValueError(f"s: last dimension must be N={N} (from w), got shape {tuple(s.shape)}")
    e = -0.5 * jnp.einsum("...i,ij,...j->...", s, w, s)
    if theta is not None:
        e = e + s @ theta
    return e


def _sign_keep(h: Array, s: Array) -> Array:
    """``sgn(h)``, keeping ``s`` where ``h == 0`` (a unit with no net field does not move)."""
    return jnp.where(h > 0, 1.0, jnp.where(h < 0, -1.0, s)).astype(s.dtype)


def sync_step(w: Array, s: Array, theta: Array | None = None) -> Array:
    """One synchronous update of every unit: ``s <- sgn(s W - theta)``, ``(B..., N)``."""
    h = s @ w
    if theta is not None:
        h = h - theta
    return _sign_keep(h, s)


def recall_sync(
    w: Array, s: Array, *, theta: Array | None = None, max_steps: int = 100
) -> RecallResult:
    """Synchronous updates until every state in the batch is a fixed point or ``max_steps``.

    Runs in :func:`jax.lax.while_loop`. ``steps`` counts the updates that changed something;
    ``converged`` is false for states still moving (for example in a 2-cycle) at the end.
    """
    N = _check_weights(w)
    _check_state(s, N)
    max_steps = _check_steps(max_steps, "max_steps")
    batch = s.shape[:-1]

    def cond(c):
        i, _, _, done = c
        return (i < max_steps) & ~jnp.all(done)

    def body(c):
        i, s, steps, done = c
        new = sync_step(w, s, theta)
        fixed = jnp.all(new == s, axis=-1)
        return i + 1, new, steps + (~fixed).astype(jnp.int32), fixed

    init = (jnp.int32(0), s, jnp.zeros(batch, jnp.int32), jnp.zeros(batch, bool))
    _, s, steps, done = jax.lax.while_loop(cond, body, init)
    return RecallResult(s, steps, jnp.all(sync_step(w, s, theta) == s, axis=-1))


def async_sweep(w: Array, s: Array, order: Array, theta: Array | None = None) -> Array:
    """One asynchronous sweep: units are updated one at a time in ``order`` ``(N,)`` (a
    permutation, shared by the batch), each seeing the already-updated others."""

    def update(s, i):
        h = s @ w[:, i]
        if theta is not None:
            h = h - theta[i]
        return s.at[..., i].set(_sign_keep(h, s[..., i])), None

    s, _ = jax.lax.scan(update, s, order)
    return s


def recall_async(
    w: Array, s: Array, key, *, theta: Array | None = None, max_sweeps: int = 50
) -> RecallResult:
    """Asynchronous updates in a fresh random order each sweep, until a whole sweep changes no
    unit of any state in the batch (a fixed point) or ``max_sweeps``; ``steps`` counts sweeps
    that changed something."""
    N = _check_weights(w)
    _check_state(s, N)
    max_sweeps = _check_steps(max_sweeps, "max_sweeps")
    batch = s.shape[:-1]

    def cond(c):
        i, _, _, done, _ = c
        return (i < max_sweeps) & ~jnp.all(done)

    def body(c):
        i, s, steps, done, key = c
        key, sub = jax.random.split(key)
        new = async_sweep(w, s, jax.random.permutation(sub, N), theta)
        fixed = jnp.all(new == s, axis=-1)
        return i + 1, new, steps + (~fixed).astype(jnp.int32), fixed, key

    init = (jnp.int32(0), s, jnp.zeros(batch, jnp.int32), jnp.zeros(batch, bool), key)
    _, s, steps, done, _ = jax.lax.while_loop(cond, body, init)
    return RecallResult(s, steps, done)


def async_energy_trace(
    w: Array, s: Array, order: Array, theta: Array | None = None
) -> tuple[Array, Array]:
    """Asynchronous updates in the given ``order`` ``(K,)`` of unit indices (any length, repeats
    allowed), returning the final state and the energy after every single-unit update,
    ``(K, B...)`` -- the quantity the convergence proof says never increases."""
    N = _check_weights(w)
    _check_state(s, N)

    def update(s, i):
        h = s @ w[:, i]
        if theta is not None:
            h = h - theta[i]
        s = s.at[..., i].set(_sign_keep(h, s[..., i]))
        return s, energy(w, s, theta)

    return jax.lax.scan(update, s, jnp.asarray(order))


def overlap(patterns: Array, s: Array) -> Array:
    """Overlaps ``m_mu = (1/N) xi^mu . s``: ``(P, N), (B..., N) -> (B..., P)``."""
    return s @ patterns.T / patterns.shape[-1]


# --------------------------------------------------------------------------- modern Hopfield


def _check_modern(patterns, xi, beta):
    _check_array(patterns, "patterns", min_ndim=2)
    if patterns.ndim != 2:
        raise ValueError(f"patterns: expected shape (P, d), got {tuple(patterns.shape)}")
    _check_array(xi, "xi")
    if xi.shape[-1] != patterns.shape[1]:
        raise ValueError(
            f"xi: last dimension must be d={patterns.shape[1]} (from patterns), "
            f"got shape {tuple(xi.shape)}"
        )
    if not isinstance(beta, jax.core.Tracer) and not np.all(np.asarray(beta) > 0):
        raise ValueError(f"beta: expected a positive inverse temperature, got {beta!r}")


def modern_update(patterns: Array, xi: Array, beta) -> Array:
    """One update ``xi <- softmax(beta xi X^T) X``: ``(P, d), (B..., d) -> (B..., d)``."""
    _check_modern(patterns, xi, beta)
    return jax.nn.softmax(beta * (xi @ patterns.T), axis=-1) @ patterns


def modern_recall(
    patterns: Array, xi: Array, beta, *, max_steps: int = 10, tol: float = 1e-6
) -> RecallResult:
    """Iterate :func:`modern_update` until the largest change is below ``tol`` or ``max_steps``
    (usually one step suffices when patterns are well separated; Ramsauer et al. 2020, Thm 4)."""
    _check_modern(patterns, xi, beta)
    max_steps = _check_steps(max_steps, "max_steps")
    batch = xi.shape[:-1]

    def cond(c):
        i, _, _, done = c
        return (i < max_steps) & ~jnp.all(done)

    def body(c):
        i, x, steps, _ = c
        new = jax.nn.softmax(beta * (x @ patterns.T), axis=-1) @ patterns
        moved = jnp.max(jnp.abs(new - x), axis=-1) > tol
        return i + 1, new, steps + moved.astype(jnp.int32), ~moved

    init = (jnp.int32(0), xi, jnp.zeros(batch, jnp.int32), jnp.zeros(batch, bool))
    _, x, steps, done = jax.lax.while_loop(cond, body, init)
    return RecallResult(x, steps, done)


def modern_energy(patterns: Array, xi: Array, beta) -> Array:
    """Ramsauer et al.'s energy ``-lse(beta, X xi) + xi.xi/2 + log(P)/beta + M^2/2``,
    ``(B..., d) -> (B...)``."""
    _check_modern(patterns, xi, beta)
    P = patterns.shape[0]
    lse = jax.nn.logsumexp(beta * (xi @ patterns.T), axis=-1) / beta
    m2 = jnp.max(jnp.sum(patterns**2, axis=-1))
    return -lse + 0.5 * jnp.sum(xi**2, axis=-1) + jnp.log(P) / beta + 0.5 * m2


__all__ = [
    "RecallResult",
    "hebbian",
    "energy",
    "sync_step",
    "recall_sync",
    "async_sweep",
    "recall_async",
    "async_energy_trace",
    "overlap",
    "modern_update",
    "modern_recall",
    "modern_energy",
]
