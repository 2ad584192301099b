r"""Synthetic long-memory problems, generated in-process from a PRNG key (jit-friendly).

**Adding problem** (Hochreiter & Schmidhuber 1997, experiment 4; the form of Le, Jaitly & Hinton
2015). Each input step carries two features: a value :math:`v_t \sim U[0, 1]` and a marker
:math:`m_t \in \{0, 1\}`; exactly two steps are marked, one uniformly in the first half
:math:`[0, \lfloor T/2 \rfloor)` and one in the second half :math:`[\lfloor T/2 \rfloor, T)`.
The target, read after the last step, is the sum of the two marked values,

.. math:: y = \sum_t m_t v_t .

Predicting the constant :math:`E[y] = 1` scores :math:`\mathrm{Var}(U_1 + U_2) = 2/12 \approx
0.167` mean squared error: the baseline a network that cannot carry information across
:math:`T/2` steps is stuck at.

**Copy task** (Hochreiter & Schmidhuber 1997; the form of Arjovsky, Shah & Bengio 2016). The
alphabet has ``n_symbols`` data symbols ``1..n_symbols``, a blank ``0`` and a delimiter
``n_symbols + 1``. The input is ``length`` random data symbols, then ``delay - 1`` blanks, the
delimiter, and ``length`` blanks (total ``T = delay + 2 * length`` steps); the target is blank for
the first ``delay + length`` steps and then repeats the ``length`` data symbols. A memoryless
model that outputs blanks and then guesses uniformly scores a cross-entropy of
:math:`\mathrm{length}\cdot\ln(n)/T` per step and recalls 1/n of the symbols.
"""

from __future__ import annotations

import math
from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array

ADDING_BASELINE_MSE = 1.0 / 6.0


class AddingBatch(NamedTuple):
    inputs: Array  # (B, T, 2) float32: value, marker
    targets: Array  # (B, 1) float32: sum of the two marked values


class CopyBatch(NamedTuple):
    inputs: Array  # (B, T) int32 symbols in [0, n_symbols + 1]
    targets: Array  # (B, T) int32 symbols in [0, n_symbols]
    mask: Array  # (B, T) bool, true on the recall steps (the last `length`)


def _check_int(value, name, minimum):
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value!r}")
    return value


def adding_problem(key, batch_size: int, T: int) -> AddingBatch:
    """One batch of the adding problem with sequence length ``T`` (see the module docstring).

    Args:
      key: a PRNG key.
      batch_size: ``B``.
      T: sequence length, ``>= 2``.
    """
    return _adding(key, _check_int(batch_size, "batch_size", 1), _check_int(T, "T", 2))


@partial(jax.jit, static_argnums=(1, 2))
def _adding(key, B: int, T: int) -> AddingBatch:
    kv, k1, k2 = jax.random.split(key, 3)
    values = jax.random.uniform(kv, (B, T))
    half = T // 2
    first = jax.random.randint(k1, (B,), 0, half)
    second = jax.random.randint(k2, (B,), half, T)
    t = jnp.arange(T)
    markers = ((t == first[:, None]) | (t == second[:, None])).astype(jnp.float32)
    inputs = jnp.stack([values, markers], axis=-1)
    targets = jnp.sum(values * markers, axis=-1, keepdims=True)
    return AddingBatch(inputs, targets)


def copy_task(key, batch_size: int, delay: int, *, length: int = 10, n_symbols: int = 8
              ) -> CopyBatch:
    """One batch of the copy task (see the module docstring); sequences are
    ``delay + 2 * length`` steps long."""
    return _copy(key, _check_int(batch_size, "batch_size", 1), _check_int(delay, "delay", 1),
                 _check_int(length, "length", 1), _check_int(n_symbols, "n_symbols", 2))


@partial(jax.jit, static_argnums=(1, 2, 3, 4))
def _copy(key, B: int, delay: int, L: int, n: int) -> CopyBatch:
    T = delay + 2 * L
    data = jax.random.randint(key, (B, L), 1, n + 1)
    inputs = jnp.zeros((B, T), jnp.int32).at[:, :L].set(data).at[:, delay + L - 1].set(n + 1)
    targets = jnp.zeros((B, T), jnp.int32).at[:, T - L:].set(data)
    mask = jnp.broadcast_to(jnp.arange(T) >= T - L, (B, T))
    return CopyBatch(inputs, targets, mask)


def copy_baseline_cross_entropy(delay: int, *, length: int = 10, n_symbols: int = 8) -> float:
    """Per-step cross-entropy (nats) of the memoryless strategy, over all ``T`` steps."""
    return length * math.log(n_symbols) / (delay + 2 * length)


__all__ = ["AddingBatch", "CopyBatch", "adding_problem", "copy_task",
           "copy_baseline_cross_entropy", "ADDING_BASELINE_MSE"]
