"""Truncated BPTT: carry passing equals one pass over the whole stream; the gradient of a chunk
sees earlier inputs only through the (constant) carried value; stateful evaluation is exact."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxrnn
from jaxrnn import train
from jaxrnn.train import tbptt

B, N, F, H, O, K = 2, 12, 3, 5, 2, 4
CELL = jaxrnn.lstm(H)


@pytest.fixture
def setup(rng):
    # Parameters drawn directly (no initialiser to compile); scaled so the carry matters.
    params = {
        "cell": jaxrnn.LSTMParams(
            w_x=jnp.asarray(rng.normal(size=(F, 4 * H)) * 0.5, jnp.float32),
            w_h=jnp.asarray(rng.normal(size=(H, 4 * H)) * 0.5, jnp.float32),
            b=jnp.zeros((4 * H,), jnp.float32),
        ),
        "out": jnp.asarray(rng.normal(size=(H, O)), jnp.float32),
    }
    xs = rng.normal(size=(B, N, F)).astype(np.float32)
    ys = rng.normal(size=(B, N, O)).astype(np.float32)
    return params, xs, ys


def apply(params, inputs, *, carry=None, key=None, deterministic=True):
    carry, h = jaxrnn.run(CELL, params["cell"], inputs, carry=carry)
    return carry, h @ params["out"]


@jax.jit
def whole(params, xs):
    return apply(params, xs, carry=None)


# Compiled once per shape (eager scans compile op by op, which is slower in tests).
apply_jit = jax.jit(apply)


def test_carry_passing_equals_one_pass(setup):
    params, xs, ys = setup
    chunks = tbptt.stream_chunks({"inputs": xs, "targets": ys}, K)
    carry = tbptt.zeros_carry(apply, params, chunks[0]["inputs"])
    outs = []
    for c in chunks:
        carry, y = apply_jit(params, c["inputs"], carry=carry)
        outs.append(y)
    final, y_all = whole(params, xs)
    np.testing.assert_allclose(np.concatenate(outs, 1), y_all, atol=1e-5)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), carry, final)


def test_chunk_gradient_depends_on_the_past_only_through_the_carry(setup):
    params, xs, ys = setup
    objective = tbptt.chunk_objective(apply, "mse")
    k = 2
    batch_k = {"inputs": xs[:, k * K:(k + 1) * K], "targets": ys[:, k * K:(k + 1) * K]}

    def loss_from_past(p, x_past):
        carry, _ = apply(p, x_past, carry=None)  # the chunks before k, run forward
        return objective(p, carry, batch_k, None, True)[0]

    x_past = jnp.asarray(xs[:, : k * K])
    g_params, g_past = jax.jit(jax.grad(loss_from_past, argnums=(0, 1)))(params, x_past)
    # No gradient reaches the inputs of earlier chunks ...
    np.testing.assert_array_equal(g_past, np.zeros_like(g_past))
    # ... and the parameter gradient equals the one with the carry given as a constant.
    carry_const = jax.tree_util.tree_map(np.asarray, whole(params, x_past)[0])
    g_const = jax.jit(jax.grad(lambda p: objective(p, carry_const, batch_k, None, True)[0]))(
        params)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7),
                           g_params, g_const)

    # Full BPTT through the whole stream gives a different gradient: the truncation is real.
    def full_loss(p):
        _, y = whole(p, jnp.asarray(xs[:, : (k + 1) * K]))
        return train.mse(y[:, k * K:], batch_k["targets"])

    g_full = jax.jit(jax.grad(full_loss))(params)
    assert not np.allclose(g_full["cell"].w_h, g_params["cell"].w_h, atol=1e-6)
    # ... though the loss values are the same (forward values pass through the carry).
    np.testing.assert_allclose(jax.jit(full_loss)(params),
                               jax.jit(loss_from_past)(params, x_past), rtol=1e-5)


def test_tbptt_step_update_and_carry(setup):
    params, xs, ys = setup
    lr = 0.1
    step = tbptt.make_tbptt_step(apply, "mse", optax.sgd(lr), donate=False)
    state = train.init_train_state(params, optax.sgd(lr), 0)
    batch = {"inputs": xs[:, :K], "targets": ys[:, :K]}
    carry0 = tbptt.zeros_carry(apply, params, batch["inputs"])
    new_state, carry1, logs = step(state, carry0, batch)
    objective = tbptt.chunk_objective(apply, "mse")
    g = jax.jit(jax.grad(lambda p: objective(p, carry0, batch, None, True)[0]))(params)
    expected = jax.tree_util.tree_map(lambda p, d: p - lr * d, params, g)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                           new_state.params, expected)
    ref_carry, _ = apply_jit(params, batch["inputs"], carry=carry0)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6),
                           carry1, ref_carry)
    assert int(new_state.step) == 1


def test_train_stream_passes_the_carry_along(setup):
    """With a zero learning rate, the carry after a pass is the whole stream's final carry and
    the per-chunk losses are those of one pass over the whole stream."""
    params, xs, ys = setup
    opt = optax.sgd(0.0)
    step = tbptt.make_tbptt_step(apply, "mse", opt)
    state = train.init_train_state(params, opt, 0)
    data = {"inputs": xs, "targets": ys}
    carry0 = tbptt.zeros_carry(apply, params, xs[:, :K])
    state, carry, losses = tbptt.train_stream(step, state, data, K, carry0)
    final, y_all = whole(params, xs)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), carry, final)
    per_chunk = [np.mean((np.asarray(y_all[:, i:i + K]) - ys[:, i:i + K]) ** 2)
                 for i in range(0, N, K)]
    np.testing.assert_allclose(losses, per_chunk, rtol=1e-4)
    assert int(state.step) == N // K


def test_evaluate_stream_is_exact_over_a_partial_last_chunk(setup):
    params, xs, ys = setup
    xs, ys = xs[:, :11], ys[:, :11]  # chunks of 4, 4, 3
    res, carry = tbptt.evaluate_stream(apply, params, "mse", {"inputs": xs, "targets": ys}, K,
                                       metrics=["rmse"])
    final, y_all = whole(params, xs)
    mse = np.mean((np.asarray(y_all) - ys) ** 2)
    np.testing.assert_allclose(res["loss"], mse, rtol=1e-5)
    np.testing.assert_allclose(res["rmse"], np.sqrt(mse), rtol=1e-5)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-5), carry, final)


def test_batchify_rows_are_contiguous():
    s = np.arange(23)
    b = tbptt.batchify(s, 4)
    assert b.shape == (4, 5)
    np.testing.assert_array_equal(b.reshape(-1), s[:20])


def test_stream_utilities_bad_input():
    with pytest.raises(ValueError, match="batch_size: expected a positive int"):
        tbptt.batchify(np.arange(10), 0)
    with pytest.raises(ValueError, match="stream: 3 steps are fewer than batch_size=4"):
        tbptt.batchify(np.arange(3), 4)
    with pytest.raises(ValueError, match="chunk_len: expected a positive int"):
        tbptt.stream_chunks({"inputs": np.zeros((2, 8, 1))}, 0)
    with pytest.raises(ValueError, match="chunk_len: 9 is longer than the stream"):
        tbptt.stream_chunks({"inputs": np.zeros((2, 8, 1))}, 9)
    with pytest.raises(ValueError, match="data: every array must be"):
        tbptt.stream_chunks({"inputs": np.zeros((2, 8, 1)), "targets": np.zeros((2, 7))}, 4)
    with pytest.raises(TypeError, match="optimizer: expected an optax"):
        tbptt.make_tbptt_step(apply, "mse", None)


def test_tbptt_step_rejects_a_bad_state(setup):
    params, xs, ys = setup
    step = tbptt.make_tbptt_step(apply, "mse", optax.sgd(0.1))
    with pytest.raises(TypeError, match="state: expected a TrainState"):
        step(params, None, {"inputs": xs[:, :K], "targets": ys[:, :K]})
