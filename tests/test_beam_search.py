"""Greedy and beam search: width 1 is greedy, exhaustive search agrees on tiny models (a
time-varying Markov chain enumerated in NumPy; a seq2seq model scored by teacher forcing),
jit == no jit, end-of-sequence handling, errors."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn
from jaxrnn.seq2seq import beam_search, encoder_decoder, greedy, multiplicative

PAD, BOS, EOS = 0, 1, 2


# --------------------------------------------------------------------------- a Markov chain model

def _markov_tables(B, L, V, seed):
    """log p(next | t, prev) for each example: random, normalised, shape (B, L, V, V)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=2.0, size=(B, L, V, V))
    return logits - np.log(np.exp(logits).sum(-1, keepdims=True))


def _markov_step(table, t, tokens):
    """step_fn: static = table (N, L, V, V); state = time step (N,) int32."""
    rows = jnp.arange(tokens.shape[0])
    return t + 1, table[rows, t, tokens]


def _enumerate_best(table, L, V, alpha):
    """Every sequence of at most L tokens that stops at its first EOS (or at L), scored in
    float64 by sum of log-probs / length ** alpha; the best per example."""
    best = []
    for b in range(table.shape[0]):
        top = (-np.inf, None)
        for n in range(1, L + 1):
            for seq in itertools.product(range(V), repeat=n):
                if EOS in seq[:-1] or (n < L and seq[-1] != EOS):
                    continue
                prev, lp = BOS, 0.0
                for t, tok in enumerate(seq):
                    lp += table[b, t, prev, tok]
                    prev = tok
                score = lp / n**alpha
                if score > top[0]:
                    top = (score, seq)
        best.append(top)
    return best


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_beam_search_finds_the_exhaustive_best_of_a_markov_chain(alpha):
    B, L, V = 3, 3, 4
    table = _markov_tables(B, L, V, seed=0)
    # With V = 4 there are at most 1 + 3 + 9 finished and 27 live hypotheses: K = 40 keeps all.
    res = beam_search(_markov_step, jnp.asarray(table, jnp.float32), jnp.zeros((B,), jnp.int32),
                      batch_size=B, beam_width=40, bos=BOS, eos=EOS, max_len=L,
                      length_penalty=alpha, pad=PAD)
    for b, (score, seq) in enumerate(_enumerate_best(table, L, V, alpha)):
        n = len(seq)
        assert int(res.lengths[b]) == n
        np.testing.assert_array_equal(np.asarray(res.tokens[b, :n]), seq)
        assert np.all(np.asarray(res.tokens[b, n:]) == PAD)
        assert float(res.scores[b]) == pytest.approx(score, rel=1e-5, abs=1e-5)
    # Beam scores come sorted, best first.
    s = np.asarray(res.beam_scores)
    assert np.all(np.diff(s[np.isfinite(s)].reshape(B, -1) if np.isfinite(s).all() else s[:, :1],
                          axis=1) <= 1e-6)


@pytest.mark.slow
def test_small_beam_beats_or_ties_greedy_and_width_one_is_greedy():
    B, L, V = 4, 5, 6
    table = jnp.asarray(_markov_tables(B, L, V, seed=1), jnp.float32)
    t0 = jnp.zeros((B,), jnp.int32)
    g = greedy(_markov_step, table, t0, batch_size=B, bos=BOS, eos=EOS, max_len=L, pad=PAD)
    b1 = beam_search(_markov_step, table, t0, batch_size=B, beam_width=1, bos=BOS, eos=EOS,
                     max_len=L, pad=PAD)
    np.testing.assert_array_equal(np.asarray(g.tokens), np.asarray(b1.tokens))
    np.testing.assert_array_equal(np.asarray(g.lengths), np.asarray(b1.lengths))
    np.testing.assert_allclose(np.asarray(g.scores), np.asarray(b1.scores), rtol=1e-6)
    b3 = beam_search(_markov_step, table, t0, batch_size=B, beam_width=3, bos=BOS, eos=EOS,
                     max_len=L, pad=PAD)
    assert np.all(np.asarray(b3.scores) >= np.asarray(g.scores) - 1e-6)


def test_end_of_sequence_is_per_sequence():
    # Example 0 must end at step 2 (EOS certain there); example 1 can never emit EOS.
    B, L, V = 2, 4, 4
    table = np.full((B, L, V, V), np.log(1e-6))
    table[0, :, :, 3] = 0.0
    table[0, 1, :, :] = np.log(1e-6)
    table[0, 1, :, EOS] = 0.0
    table[1, :, :, 3] = 0.0
    table[1, :, :, EOS] = -np.inf
    for fn in (greedy, lambda *a, **k: beam_search(*a, beam_width=2, **k)):
        r = fn(_markov_step, jnp.asarray(table, jnp.float32), jnp.zeros((B,), jnp.int32),
               batch_size=B, bos=BOS, eos=EOS, max_len=L, pad=PAD)
        np.testing.assert_array_equal(np.asarray(r.tokens), [[3, EOS, PAD, PAD], [3, 3, 3, 3]])
        np.testing.assert_array_equal(np.asarray(r.lengths), [2, 4])


# --------------------------------------------------------------------------- a seq2seq model

def _seq2seq(V=4):
    return encoder_decoder(
        source_vocab=5, target_vocab=V, embed_size=3,
        encoder=jaxrnn.bidirectional(jaxrnn.gru(3)), decoder=jaxrnn.lstm(4),
        attention=multiplicative("general"), bos=BOS, eos=EOS, pad=PAD,
    )


SRC = jnp.array([[3, 4, 1], [2, 0, 0]], jnp.int32)
SRC_LEN = jnp.array([3, 1], jnp.int32)


@pytest.mark.slow
def test_seq2seq_beam_matches_exhaustive_teacher_forced_scores():
    V, L = 4, 3
    model = _seq2seq(V)
    p = jax.jit(model.init)(jax.random.key(0))
    # Scale the readout so the distribution is peaked and the search is not trivial.
    p = p._replace(readout=p.readout._replace(w=3.0 * p.readout.w))
    res = jax.jit(lambda p: model.beam_search(p, SRC, SRC_LEN, max_len=L, beam_width=40))(p)
    logits = jax.jit(model.logits)
    seqs = [s for n in range(1, L + 1) for s in itertools.product(range(V), repeat=n)
            if EOS not in s[:-1] and (n == L or s[-1] == EOS)]
    for b in range(2):
        tgt = np.zeros((len(seqs), L), np.int32)
        for i, s in enumerate(seqs):
            tgt[i, : len(s)] = s
        tl = np.array([len(s) for s in seqs], np.int32)
        src = jnp.repeat(SRC[b : b + 1], len(seqs), 0)
        sl = jnp.repeat(SRC_LEN[b : b + 1], len(seqs), 0)
        logp = jax.nn.log_softmax(logits(p, src, sl, jnp.asarray(tgt), jnp.asarray(tl)))
        tok_lp = np.take_along_axis(np.asarray(logp, np.float64), tgt[..., None], -1)[..., 0]
        total = np.where(np.arange(L) < tl[:, None], tok_lp, 0.0).sum(1)
        i = int(np.argmax(total))
        n = len(seqs[i])
        np.testing.assert_array_equal(np.asarray(res.tokens[b, :n]), seqs[i])
        assert int(res.lengths[b]) == n
        assert float(res.scores[b]) == pytest.approx(total[i], rel=1e-4, abs=1e-4)


@pytest.mark.slow
def test_decoding_is_the_same_with_and_without_jit():
    model = _seq2seq(6)
    p = jax.jit(model.init)(jax.random.key(1))
    g = model.greedy(p, SRC, SRC_LEN, max_len=6)
    gj = jax.jit(lambda p, s, l: model.greedy(p, s, l, max_len=6))(p, SRC, SRC_LEN)
    bs = model.beam_search(p, SRC, SRC_LEN, max_len=6, beam_width=3, length_penalty=0.6)
    bj = jax.jit(lambda p, s, l: model.beam_search(p, s, l, max_len=6, beam_width=3,
                                                   length_penalty=0.6))(p, SRC, SRC_LEN)
    for a, b in ((g, gj), (bs, bj)):
        np.testing.assert_array_equal(np.asarray(a.tokens), np.asarray(b.tokens))
        np.testing.assert_array_equal(np.asarray(a.lengths), np.asarray(b.lengths))
        np.testing.assert_allclose(np.asarray(a.scores), np.asarray(b.scores), rtol=1e-5)
    b1 = jax.jit(lambda p: model.beam_search(p, SRC, SRC_LEN, max_len=6, beam_width=1))(p)
    np.testing.assert_array_equal(np.asarray(b1.tokens), np.asarray(g.tokens))


def test_bad_arguments_raise_clear_errors():
    table = jnp.zeros((2, 3, 4, 4))
    t0 = jnp.zeros((2,), jnp.int32)
    kw = dict(batch_size=2, bos=BOS, eos=EOS, max_len=3)
    with pytest.raises(ValueError, match="beam_width: expected a positive int"):
        beam_search(_markov_step, table, t0, beam_width=0, **kw)
    with pytest.raises(ValueError, match="length_penalty"):
        beam_search(_markov_step, table, t0, beam_width=2, length_penalty=-1.0, **kw)
    with pytest.raises(ValueError, match="max_len: expected a positive int"):
        greedy(_markov_step, table, t0, **{**kw, "max_len": 0})
    with pytest.raises(ValueError, match=r"state: every leaf needs leading \(batch\) axis 2"):
        greedy(_markov_step, table, jnp.zeros((3,), jnp.int32), **kw)
    with pytest.raises(ValueError, match="eos: expected a non-negative int"):
        greedy(_markov_step, table, t0, **{**kw, "eos": -1})
