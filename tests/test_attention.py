"""Attention: scores and masked weights against NumPy float64 equations, gradients, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

from jaxrnn.seq2seq import additive, attend, masked_softmax, multiplicative
from jaxrnn.seq2seq.attention import check_memory

B, S, Q, D = 3, 5, 4, 6
LENGTHS = np.array([5, 2, 3])


def _inputs(q_size=Q, d_size=D, seed=0):
    rng = np.random.default_rng(seed)
    query = rng.normal(size=(B, q_size)).astype(np.float32)
    memory = rng.normal(size=(B, S, d_size)).astype(np.float32)
    mask = np.arange(S)[None, :] < LENGTHS[:, None]
    return query, memory, mask


def _np_scores(att, params, q, m):
    q, m = q.astype(np.float64), m.astype(np.float64)
    if att.name == "additive":
        wq, wm, b, v = (np.asarray(a, np.float64) for a in params)
        return np.einsum("bsa,a->bs", np.tanh((q @ wq)[:, None, :] + m @ wm + b), v)
    if att.name == "general":
        w = np.asarray(params.w, np.float64)
        return np.einsum("bq,qd,bsd->bs", q, w, m)
    return np.einsum("bq,bsq->bs", q, m)


def _np_softmax(e, mask):
    e = np.where(mask, e, -np.inf)
    e = np.exp(e - e.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


ATTENTIONS = [
    ("additive", lambda: additive(7), Q),
    ("general", lambda: multiplicative("general"), Q),
    ("dot", lambda: multiplicative("dot"), D),
]


@pytest.mark.parametrize("name,make,q_size", ATTENTIONS, ids=[a[0] for a in ATTENTIONS])
def test_weights_match_numpy_sum_to_one_and_zero_on_padding(name, make, q_size):
    att = make()
    params = att.init(jax.random.key(1), q_size, D)
    q, m, mask = _inputs(q_size)
    ctx, w = attend(att, params, jnp.asarray(q), jnp.asarray(m), att.prepare(params, m), mask)
    w = np.asarray(w)
    want = _np_softmax(_np_scores(att, params, q, m), mask)
    np.testing.assert_allclose(w, want, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-6)
    assert np.all(w[~mask] == 0.0)  # exactly zero, not just small
    assert np.all(w[mask] > 0.0)
    np.testing.assert_allclose(np.asarray(ctx), np.einsum("bs,bsd->bd", want, m), rtol=1e-5,
                               atol=1e-6)


def test_padding_values_do_not_matter():
    att = additive(5)
    params = att.init(jax.random.key(0), Q, D)
    q, m, mask = _inputs()
    m2 = np.where(mask[..., None], m, 1e3)  # huge garbage on the padded positions
    outs = [attend(att, params, q, x, att.prepare(params, x), mask) for x in (m, m2)]
    for a, b in zip(*outs, strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)


def test_fully_masked_row_gives_zero_weights_not_nan():
    scores = jnp.array([[1.0, 2.0], [3.0, -1.0]])
    mask = jnp.array([[True, False], [False, False]])
    w = np.asarray(masked_softmax(scores, mask))
    np.testing.assert_array_equal(w, [[1.0, 0.0], [0.0, 0.0]])
    g = jax.grad(lambda s: masked_softmax(s, mask)[0, 0] * 2.0)(scores)
    assert np.all(np.isfinite(np.asarray(g)))


@pytest.mark.parametrize("name,make,q_size", ATTENTIONS, ids=[a[0] for a in ATTENTIONS])
def test_gradients_match_finite_differences(name, make, q_size):
    att = make()
    params = att.init(jax.random.key(2), q_size, D)
    q, m, mask = _inputs(q_size, seed=3)

    @jax.jit
    def f(params, q, m):
        ctx, w = attend(att, params, q, m, att.prepare(params, m), mask)
        return jnp.sum(ctx * jnp.arange(D)) + jnp.sum(w * jnp.arange(S))

    check_grads(f, (params, jnp.asarray(q), jnp.asarray(m)), order=1, modes=["rev"],
                atol=2e-2, rtol=2e-2, eps=1e-2)


def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="kind"):
        multiplicative("bilinear")
    with pytest.raises(ValueError, match="attention_size"):
        additive(0)
    with pytest.raises(ValueError, match="query_size == memory_size"):
        multiplicative("dot").init(jax.random.key(0), 4, 6)
    with pytest.raises(ValueError, match="memory_size"):
        additive(3).init(jax.random.key(0), 4, -1)
    m = jnp.zeros((2, 3, 4))
    with pytest.raises(ValueError, match=r"mask: expected shape \(2, 3\)"):
        check_memory(m, jnp.ones((2, 4), bool))
    with pytest.raises(TypeError, match="mask: expected a boolean"):
        check_memory(m, jnp.ones((2, 3), jnp.int32))
    with pytest.raises(ValueError, match="memory"):
        check_memory(jnp.zeros((3,)), None)
