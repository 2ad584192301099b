"""minGRU / minLSTM: the paper's equations in NumPy float64, the sequential form on the common
engine, and the parallel (associative-scan, log-space) form must all agree."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _reference import minimal_ref_run as numpy_reference
from jax.test_util import check_grads

import jaxrnn
from jaxrnn.cells import registry
from jaxrnn.cells.minimal import min_gru, min_lstm
from jaxrnn.engine import parallel_run

# the cells parallel_run computes
FACTORIES = {n: e.factory for n, e in registry.REGISTRY.items() if e.parallel}


def _setup(name, B=3, T=23, F=5, H=7, seed=0, scale=1.0):
    """Cell, random params of its structure (N(0, 1/F) weights, N(0, 1) biases), inputs and an
    initial state of any sign; drawn with NumPy (no per-shape XLA compilation in the set-up)."""
    cell = FACTORIES[name](H)
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(lambda k: cell.init(k, F), jax.random.key(0))
    params = type(shapes)(
        w_x=jnp.asarray(rng.normal(size=shapes.w_x.shape) / np.sqrt(F), jnp.float32),
        b=jnp.asarray(rng.normal(size=shapes.b.shape), jnp.float32),
    )
    xs = jnp.asarray(scale * rng.normal(size=(B, T, F)), jnp.float32)
    h0 = jnp.asarray(rng.normal(size=(B, H)), jnp.float32)  # h0 enters the parallel form linearly
    return cell, params, xs, h0


@pytest.mark.parametrize("name", sorted(FACTORIES))
def test_both_forms_match_numpy_equations(name):
    cell, params, xs, h0 = _setup(name)
    lengths = np.array([23, 9, 0])
    h_ref, ys_ref = numpy_reference(name, params, xs, np.asarray(h0), lengths)
    carry = type(cell.initial_carry(params, (3,)))(h0)
    for fn in (jaxrnn.run, parallel_run):
        final, ys = jax.jit(lambda p, x, c, n, fn=fn: fn(cell, p, x, carry=c, lengths=n))(
            params, xs, carry, jnp.asarray(lengths)
        )
        np.testing.assert_allclose(ys, ys_ref, atol=1e-5, rtol=1e-5)
        np.testing.assert_allclose(final.h, h_ref, atol=1e-5, rtol=1e-5)


# The parallel form against the sequential one, padded, reversed and time-major, from a
# non-zero carry, values and gradients (params, inputs, carry): test_engine's
# test_backend_equals_plain_scan[*-min_gru-associative] and [*-min_lstm-associative].


@pytest.mark.slow
def test_parallel_gradient_finite_differences():
    cell, params, xs, h0 = _setup("min_lstm", B=2, T=4, F=3, H=4)
    with jax.enable_x64(True):
        def to64(tree):
            return jax.tree_util.tree_map(lambda a: jnp.asarray(np.asarray(a), jnp.float64), tree)

        carry = type(cell.initial_carry(params, (2,)))(to64(h0))

        @jax.jit
        def f(p, x):
            return jnp.sum(parallel_run(cell, p, x, carry=carry)[1] ** 2)

        check_grads(f, (to64(params), to64(xs)), order=1, modes=["rev"], atol=1e-6, rtol=1e-6)


def test_long_sequence_stable():
    # Over 128 steps the prefix products A_t = a_1 ... a_t underflow float32 for most units
    # (the mean of log a_t is about -1.2 here: A_T ~ e^-147, far below 1e-38); the log-space
    # scan must still match the sequential form.
    cell, params, xs, h0 = _setup("min_lstm", B=2, T=128, H=8, scale=3.0)
    carry = type(cell.initial_carry(params, (2,)))(h0)
    s_final, s_ys = jax.jit(lambda p, x: jaxrnn.run(cell, p, x, carry=carry))(params, xs)
    p_final, p_ys = jax.jit(lambda p, x: parallel_run(cell, p, x, carry=carry))(params, xs)
    assert np.all(np.isfinite(p_ys))
    np.testing.assert_allclose(p_ys, s_ys, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(p_final.h, s_final.h, atol=1e-5, rtol=1e-5)


def test_any_batch_shape_and_zero_length():
    cell, params, _, _ = _setup("min_gru")
    # two batch dims
    xs = jnp.asarray(np.random.default_rng(5).normal(size=(2, 3, 11, 5)), jnp.float32)
    seq = jax.jit(lambda p, x: jaxrnn.run(cell, p, x))
    par = jax.jit(lambda p, x: parallel_run(cell, p, x))
    f_seq, y_seq = seq(params, xs)
    f_par, y_par = par(params, xs)
    np.testing.assert_allclose(y_par, y_seq, atol=1e-5)
    np.testing.assert_allclose(f_par.h, f_seq.h, atol=1e-5)
    empty = jnp.zeros((2, 0, 5))
    final, ys = parallel_run(cell, params, empty)
    assert ys.shape == (2, 0, 7)
    np.testing.assert_array_equal(final.h, 0.0)


def test_gates_sum_to_one_and_candidate_positive():
    # Invariants of the log-space form: minLSTM's normalised gates f' + i' = 1; g(v) > 0.
    from jaxrnn.cells.minimal import g, log_g, min_lstm_log_coefficients

    v = jnp.linspace(-30, 30, 301)
    g_v, exp_log_g = jax.jit(lambda v: (g(v), jnp.exp(log_g(v))))(v)  # one program, not 10
    assert np.all(np.asarray(g_v) > 0)
    np.testing.assert_allclose(exp_log_g, g_v, rtol=1e-6)
    xp = np.random.default_rng(0).normal(size=(50, 3 * 4)) * 5
    # b = i' g(k_h): with k_h chosen so g = 1 (k_h = 0.5), exp(log a) + exp(log b) = f' + i' = 1.
    xp[:, 8:] = 0.5
    def total(xp):
        log_a, log_b = min_lstm_log_coefficients(xp)
        return jnp.exp(log_a) + jnp.exp(log_b)

    total = jax.jit(total)(jnp.asarray(xp, jnp.float32))
    np.testing.assert_allclose(total, 1.0, rtol=1e-6)


def test_bad_input():
    with pytest.raises(ValueError, match="cell"):
        parallel_run(jaxrnn.lstm(4), None, jnp.zeros((2, 5, 3)))  # rejected before params
    with pytest.raises(ValueError, match="hidden_size"):
        min_gru(0)
    with pytest.raises(ValueError, match="input_size"):
        min_lstm(4).init(jax.random.key(0), -1)
    cell, params, _, _ = _setup("min_lstm", F=3, H=4)
    with pytest.raises(ValueError, match="xs"):
        parallel_run(cell, params, jnp.zeros((2, 5, 4)))
    with pytest.raises(ValueError, match="lengths"):
        parallel_run(cell, params, jnp.zeros((2, 5, 3)), lengths=jnp.array([1, 2, 3]))
