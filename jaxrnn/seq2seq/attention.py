r"""Attention over an encoder's outputs: additive (Bahdanau et al. 2015) and multiplicative
(Luong et al. 2015, ``general`` and ``dot``), with a mask so padded source positions get exactly
zero weight.

Shapes: ``B...`` batch, ``S`` source length, ``D`` memory (encoder output) size, ``Q`` query
(decoder state) size, ``A`` attention size (additive only).

Scores, for a query :math:`q` and memory rows :math:`m_s`:

.. math::
   \text{additive:}\quad        e_s &= v^\top \tanh(q W_q + m_s W_m + b) \\
   \text{general:}\quad         e_s &= q^\top W m_s \\
   \text{dot:}\quad             e_s &= q^\top m_s \qquad (Q = D) \\
   \alpha_s &= \frac{\mathbb 1[s \text{ valid}]\, e^{e_s}}
                   {\sum_{s'} \mathbb 1[s' \text{ valid}]\, e^{e_{s'}}} \qquad
   c = \sum_s \alpha_s m_s

The part of each score that depends only on the memory (``m W_m`` for additive, ``m W^\top`` for
general) is computed once per source sentence by :attr:`Attention.prepare`, not at every decoder
step: ``prepare(params, memory) -> keys`` then ``score(params, query, keys) -> (B..., S)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxrnn.cells.base import Array, check_positive_int


class Attention(NamedTuple):
    """An attention mechanism as pure functions.

    Attributes:
      init: ``init(key, query_size, memory_size) -> params``.
      prepare: ``prepare(params, memory (B..., S, D)) -> keys (B..., S, K)``: the query-free part,
        computed once per source.
      score: ``score(params, query (B..., Q), keys (B..., S, K)) -> (B..., S)`` unnormalised.
      name: ``"additive"``, ``"general"`` or ``"dot"``.
    """

    init: Callable[..., Any]
    prepare: Callable[[Any, Array], Array]
    score: Callable[[Any, Array, Array], Array]
    name: str


class AdditiveParams(NamedTuple):
    w_query: Array  # (Q, A)
    w_memory: Array  # (D, A)
    b: Array  # (A,)
    v: Array  # (A,)


class GeneralParams(NamedTuple):
    w: Array  # (Q, D): e_s = q W m_s


class DotParams(NamedTuple):
    """No parameters; ``query_size`` is kept (as a shape) to check that ``Q == D``."""


def additive(attention_size: int) -> Attention:
    """Bahdanau et al. (2015) additive attention, ``e_s = v . tanh(q W_q + m_s W_m + b)``."""
    A = check_positive_int(attention_size, "attention_size")

    def init(key, query_size: int, memory_size: int) -> AdditiveParams:
        check_positive_int(query_size, "query_size")
        check_positive_int(memory_size, "memory_size")
        kq, km, kv = jax.random.split(key, 3)
        glorot = jax.nn.initializers.glorot_uniform()
        return AdditiveParams(
            w_query=glorot(kq, (query_size, A), jnp.float32),
            w_memory=glorot(km, (memory_size, A), jnp.float32),
            b=jnp.zeros((A,), jnp.float32),
            v=jax.random.normal(kv, (A,), jnp.float32) / jnp.sqrt(A),
        )

    def prepare(params: AdditiveParams, memory: Array) -> Array:
        return memory @ params.w_memory + params.b

    def score(params: AdditiveParams, query: Array, keys: Array) -> Array:
        q = (query @ params.w_query)[..., None, :]  # (B..., 1, A)
        return jnp.tanh(q + keys) @ params.v

    return Attention(init, prepare, score, "additive")


def multiplicative(kind: str = "general") -> Attention:
    """Luong et al. (2015) multiplicative attention: ``general`` (``e_s = q W m_s``) or ``dot``
    (``e_s = q . m_s``, which needs ``query_size == memory_size``)."""
    if kind not in ("general", "dot"):
        raise ValueError(f"kind: expected 'general' or 'dot', got {kind!r}")

    if kind == "general":

        def init(key, query_size: int, memory_size: int) -> GeneralParams:
            check_positive_int(query_size, "query_size")
            check_positive_int(memory_size, "memory_size")
            w = jax.nn.initializers.glorot_uniform()(key, (query_size, memory_size), jnp.float32)
            return GeneralParams(w)

        def prepare(params: GeneralParams, memory: Array) -> Array:
            return memory @ params.w.T  # (B..., S, Q): then e_s = keys_s . q

    else:

        def init(key, query_size: int, memory_size: int) -> DotParams:
            del key
            check_positive_int(query_size, "query_size")
            check_positive_int(memory_size, "memory_size")
            if query_size != memory_size:
                raise ValueError(
                    f"query_size: dot attention needs query_size == memory_size, got "
                    f"{query_size} and {memory_size}; use multiplicative('general') or additive"
                )
            return DotParams()

        def prepare(params: DotParams, memory: Array) -> Array:
            return memory

    def score(params, query: Array, keys: Array) -> Array:
        return jnp.einsum("...q,...sq->...s", query, keys)

    return Attention(init, prepare, score, kind)


def masked_softmax(scores: Array, mask: Array | None) -> Array:
    """Softmax over the last axis in which masked-out entries get weight exactly ``0``.

    A row with no valid entry gets all-zero weights (and so a zero context), not NaN.
    """
    if mask is None:
        return jax.nn.softmax(scores, axis=-1)
    big_negative = jnp.finfo(scores.dtype).min
    safe = jnp.where(mask, scores, big_negative)
    safe = safe - jax.lax.stop_gradient(jnp.max(safe, axis=-1, keepdims=True))
    e = jnp.where(mask, jnp.exp(safe), 0.0)
    total = jnp.sum(e, axis=-1, keepdims=True)
    return e / jnp.where(total > 0, total, 1.0)


def attend(
    attention: Attention,
    params: Any,
    query: Array,
    memory: Array,
    keys: Array,
    mask: Array | None,
) -> tuple[Array, Array]:
    """One attention read.

    Args:
      query: ``(B..., Q)``; memory: ``(B..., S, D)``; keys: ``attention.prepare(params, memory)``;
      mask: boolean ``(B..., S)``, true on valid source positions, or ``None``.

    Returns:
      ``(context (B..., D), weights (B..., S))``.
    """
    weights = masked_softmax(attention.score(params, query, keys), mask)
    context = jnp.einsum("...s,...sd->...d", weights, memory)
    return context, weights


def check_memory(memory, mask, argname: str = "memory") -> None:
    """Validate an encoder memory and its mask before tracing."""
    if not hasattr(memory, "shape") or memory.ndim < 2:
        raise ValueError(
            f"{argname}: expected an array (B..., S, D), got "
            f"{getattr(memory, 'shape', type(memory).__name__)}"
        )
    if mask is not None:
        if not hasattr(mask, "shape") or tuple(mask.shape) != tuple(memory.shape[:-1]):
            raise ValueError(
                f"mask: expected shape {tuple(memory.shape[:-1])} (memory without its last axis), "
                f"got {getattr(mask, 'shape', type(mask).__name__)}"
            )
        if mask.dtype != jnp.bool_:
            raise TypeError(f"mask: expected a boolean array, got dtype {mask.dtype}")


__all__ = [
    "Attention",
    "AdditiveParams",
    "GeneralParams",
    "DotParams",
    "additive",
    "multiplicative",
    "masked_softmax",
    "attend",
]
