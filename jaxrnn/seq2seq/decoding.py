r"""Decoding a sequence from a step function: greedy and beam search, jit-compatible.

Both work on any model given as a step function

    ``step_fn(static, state, tokens (N,)) -> (state, log_probs (N, V))``

where ``static`` is a pytree of per-example arrays that do not change over decoding (e.g. the
encoder memory and its mask), ``state`` is the decoder's carry (a pytree with leading axis ``N``)
and ``log_probs`` are normalised log-probabilities of the next token. ``N = B`` for greedy and
``B * K`` for beam search (beam ``k`` of example ``b`` lives at row ``b * K + k``); ``static`` is
tiled to that layout once, before the loop, and never gathered, because every beam of an
example shares its source.

Decoding runs for a fixed ``max_len`` steps (static shapes, so it compiles once). Each sequence
stops on its own at ``eos``: after it, the sequence is padded with ``pad``, its score stops
changing and its length stops growing (the length counts the ``eos``).

Why ``lax.scan`` here rather than :func:`jaxrnn.run`: the input at each step is the model's own
previous output (and for beams, a re-ordering of the whole state), which is not a sequence known
in advance; ``run`` runs a cell over given inputs. The model's cell step is still the one that
:func:`jaxrnn.run` uses for teacher forcing.

Beam search (as in Sutskever et al. 2014; Wu et al. 2016 for length normalisation) keeps the
``K`` best partial hypotheses by total log-probability :math:`\log p(y_{1..t})`. A finished
hypothesis stays in the beam as one candidate with unchanged score. At the end, each example's
hypotheses are ranked by :math:`\log p(y) / |y|^{\alpha}` with ``alpha = length_penalty``
(``0`` ranks by raw log-probability; ``1`` by mean log-probability per token).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jaxrnn.cells.base import Array


class DecodeResult(NamedTuple):
    tokens: Array  # (B, L) int32, padded with ``pad`` after ``eos``
    lengths: Array  # (B,) int32, number of tokens up to and including ``eos`` (or L)
    scores: Array  # (B,) total log-probability (beam: the ranking score with length penalty)


class BeamResult(NamedTuple):
    tokens: Array  # (B, L) best hypothesis
    lengths: Array  # (B,)
    scores: Array  # (B,) ranking score of the best hypothesis
    beam_tokens: Array  # (B, K, L) all final hypotheses, best first
    beam_lengths: Array  # (B, K)
    beam_scores: Array  # (B, K) ranking scores, descending
    beam_log_probs: Array  # (B, K) raw total log-probabilities


def _check_common(batch_size, max_len, bos, eos, pad):
    for name, v in (("batch_size", batch_size), ("max_len", max_len)):
        if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
            raise ValueError(f"{name}: expected a positive int, got {v!r}")
    for name, v in (("bos", bos), ("eos", eos), ("pad", pad)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise ValueError(f"{name}: expected a non-negative int token id, got {v!r}")


def _check_leading(tree, n, argname):
    for leaf in jax.tree_util.tree_leaves(tree):
        if leaf.ndim == 0 or leaf.shape[0] != n:
            raise ValueError(
                f"{argname}: every leaf needs leading (batch) axis {n}, got a leaf of shape "
                f"{tuple(leaf.shape)}"
            )


def greedy(
    step_fn: Callable[[Any, Any, Array], tuple[Any, Array]],
    static: Any,
    state: Any,
    *,
    batch_size: int,
    bos: int,
    eos: int,
    max_len: int,
    pad: int = 0,
) -> DecodeResult:
    """Greedy decoding: at each step take the most probable next token.

    Args:
      step_fn: see the module docstring.
      static: per-example constants, leading axis ``B``.
      state: initial decoder carry, leading axis ``B``.
      batch_size: ``B``.
      bos, eos, pad: token ids for start, end and padding.
      max_len: number of decoding steps ``L``.
    """
    _check_common(batch_size, max_len, bos, eos, pad)
    _check_leading(static, batch_size, "static")
    _check_leading(state, batch_size, "state")
    B = batch_size

    def body(c, _):
        st, prev, done, score, length = c
        st, logp = step_fn(static, st, prev)
        tok = jnp.argmax(logp, axis=-1).astype(jnp.int32)
        tok_lp = jnp.take_along_axis(logp, tok[:, None], axis=-1)[:, 0]
        score = score + jnp.where(done, 0.0, tok_lp)
        length = length + (~done).astype(jnp.int32)
        out = jnp.where(done, pad, tok)
        done = done | (tok == eos)
        return (st, out, done, score, length), out

    init = (
        state,
        jnp.full((B,), bos, jnp.int32),
        jnp.zeros((B,), bool),
        jnp.zeros((B,), jnp.float32),
        jnp.zeros((B,), jnp.int32),
    )
    (_, _, _, score, length), toks = jax.lax.scan(body, init, None, length=max_len)
    return DecodeResult(jnp.moveaxis(toks, 0, 1), length, score)


def _tile(tree, k):
    return jax.tree_util.tree_map(lambda a: jnp.repeat(a, k, axis=0), tree)


def beam_search(
    step_fn: Callable[[Any, Any, Array], tuple[Any, Array]],
    static: Any,
    state: Any,
    *,
    batch_size: int,
    beam_width: int,
    bos: int,
    eos: int,
    max_len: int,
    length_penalty: float = 0.0,
    pad: int = 0,
) -> BeamResult:
    """Batched beam search with per-hypothesis end-of-sequence handling.

    Args:
      step_fn, static, state, batch_size, bos, eos, max_len, pad: as :func:`greedy`.
      beam_width: ``K``; ``K = 1`` is greedy decoding.
      length_penalty: ``alpha`` in the final ranking ``log p / length ** alpha``.

    Returns:
      A :class:`BeamResult`; ``tokens`` is each example's best hypothesis.
    """
    _check_common(batch_size, max_len, bos, eos, pad)
    if isinstance(beam_width, bool) or not isinstance(beam_width, int) or beam_width <= 0:
        raise ValueError(f"beam_width: expected a positive int, got {beam_width!r}")
    if not isinstance(length_penalty, (int, float)) or length_penalty < 0:
        raise ValueError(f"length_penalty: expected a float >= 0, got {length_penalty!r}")
    _check_leading(static, batch_size, "static")
    _check_leading(state, batch_size, "state")
    B, K, L = batch_size, beam_width, max_len
    static_k = _tile(static, K)
    state_k = _tile(state, K)
    neg_inf = jnp.float32(-jnp.inf)

    def body(c, t):
        st, prev, done, logp, length, toks = c  # (B*K,...), (B,K), (B,K), (B,K), (B,K), (B,K,L)
        st, lp = step_fn(static_k, st, prev.reshape(B * K))
        V = lp.shape[-1]
        lp = lp.reshape(B, K, V).astype(jnp.float32)
        # A finished hypothesis has exactly one continuation (written as ``pad``) costing 0.
        stay = jnp.where(jnp.arange(V) == eos, 0.0, neg_inf)
        lp = jnp.where(done[..., None], stay, lp)
        total = (logp[..., None] + lp).reshape(B, K * V)
        logp, idx = jax.lax.top_k(total, K)  # (B, K)
        parent, tok = idx // V, (idx % V).astype(jnp.int32)
        was_done = jnp.take_along_axis(done, parent, axis=1)
        length = jnp.take_along_axis(length, parent, axis=1) + (~was_done).astype(jnp.int32)
        toks = jnp.take_along_axis(toks, parent[..., None], axis=1)
        out = jnp.where(was_done, pad, tok)
        toks = toks.at[:, :, t].set(out)
        done = was_done | (tok == eos)
        rows = (jnp.arange(B)[:, None] * K + parent).reshape(B * K)
        st = jax.tree_util.tree_map(lambda a: a[rows], st)
        return (st, tok, done, logp, length, toks), None

    # Only beam 0 is live at the start, so the first step does not pick K copies of one token.
    logp0 = jnp.tile(jnp.where(jnp.arange(K) == 0, 0.0, neg_inf), (B, 1)).astype(jnp.float32)
    init = (
        state_k,
        jnp.full((B, K), bos, jnp.int32),
        jnp.zeros((B, K), bool),
        logp0,
        jnp.zeros((B, K), jnp.int32),
        jnp.full((B, K, L), pad, jnp.int32),
    )
    (_, _, _, logp, length, toks), _ = jax.lax.scan(body, init, jnp.arange(L))
    score = logp / jnp.maximum(length, 1).astype(jnp.float32) ** length_penalty
    order = jnp.argsort(-score, axis=1, stable=True)
    score = jnp.take_along_axis(score, order, axis=1)
    logp = jnp.take_along_axis(logp, order, axis=1)
    length = jnp.take_along_axis(length, order, axis=1)
    toks = jnp.take_along_axis(toks, order[..., None], axis=1)
    return BeamResult(toks[:, 0], length[:, 0], score[:, 0], toks, length, score, logp)


__all__ = ["greedy", "beam_search", "DecodeResult", "BeamResult"]
