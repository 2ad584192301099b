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


# --------------------------------------------------------------------------- fit_stream

V = 3
PATTERN = np.array([0, 0, 1, 1, 2, 2])  # the next symbol needs the previous two: memory


def lm():
    embed, layer, head = jaxrnn.embedding(V, 4), jaxrnn.recurrent(jaxrnn.gru(16)), \
        jaxrnn.dense(V)

    def init(key):
        k1, k2, k3 = jax.random.split(key, 3)
        return {"embed": embed.init(k1), "rnn": layer.init(k2, 4), "head": head.init(k3, 16)}

    def apply_lm(params, inputs, *, carry=None, key=None, deterministic=True):
        carry, ys = layer.apply_with_carry(params["rnn"], embed.apply(params["embed"], inputs),
                                            carry=carry)
        return carry, head.apply(params["head"], ys)

    return init, apply_lm


def stream(n, offset=0):
    ids = np.tile(PATTERN, n // len(PATTERN) + 2)[offset : offset + n + 1]
    return {"inputs": tbptt.batchify(ids[:-1], 4), "targets": tbptt.batchify(ids[1:], 4)}


@pytest.mark.slow
def test_fit_stream_learns_what_needs_the_carry():
    """Next symbol of 001122... : a unigram model gets log 3 = 1.10 nats; the first symbol of
    each chunk is predictable only through the carried state."""
    init, apply_lm = lm()
    res = train.fit_stream(apply_lm, init(jax.random.key(0)), "sparse_categorical_crossentropy",
                           optax.adam(0.03), stream(960), 8, epochs=6,
                           val_data=stream(240, offset=3), metrics=["accuracy"],
                           progress=False, verbose=False)
    assert set(res.history) >= {"loss", "accuracy", "val_loss", "val_accuracy", "epoch_time"}
    assert len(res.history["loss"]) == 6
    assert res.history["val_loss"][-1] < 0.15 < np.log(V)
    assert res.history["val_accuracy"][-1] > 0.95
    assert res.best_epoch == int(np.argmin(res.history["val_loss"]))


@pytest.mark.slow
def test_fit_stream_resume_is_bit_exact(tmp_path):
    init, apply_lm = lm()
    params = init(jax.random.key(1))
    kw = dict(epochs=2, val_data=stream(120, offset=1), restore_best=False, progress=False,
              verbose=False)
    data = stream(480)  # 4 streams x 120 steps: 15 chunks of 8 an epoch
    straight = train.fit_stream(apply_lm, params, "softmax_cross_entropy", optax.adam(0.02),
                                data, 8, **kw)
    train.fit_stream(apply_lm, params, "softmax_cross_entropy", optax.adam(0.02), data, 8,
                     checkpoint_dir=tmp_path, checkpoint_every=4, max_steps=21, **kw)
    saved = train.load_checkpoint(tmp_path, straight.state,
                                  extra_target={"carry": jax.tree_util.tree_map(
                                      jnp.zeros_like, tbptt.zeros_carry(
                                          apply_lm, params, data["inputs"][:, :8]))})
    assert saved.data_position == {"epoch": 1, "batch_index": 6, "seed": 0}
    assert float(jnp.abs(jax.tree_util.tree_leaves(saved.extra["carry"])[0]).sum()) > 0
    resumed = train.fit_stream(apply_lm, params, "softmax_cross_entropy", optax.adam(0.02),
                               data, 8, checkpoint_dir=tmp_path, resume=True, **kw)
    for a, b in zip(jax.tree_util.tree_leaves(resumed.params),
                    jax.tree_util.tree_leaves(straight.params), strict=True):
        np.testing.assert_array_equal(a, b)
    assert resumed.history == {**straight.history,
                               "epoch_time": resumed.history["epoch_time"]}


def test_fit_stream_early_stopping_and_bad_input():
    init, apply_lm = lm()
    res = train.fit_stream(apply_lm, init(jax.random.key(2)), "softmax_cross_entropy",
                           optax.sgd(0.0), stream(240), 8, epochs=5, patience=1,
                           val_data=stream(120), progress=False, verbose=False)
    assert res.stopped_early and len(res.history["val_loss"]) == 2  # lr 0: never improves
    with pytest.raises(ValueError, match="chunk_len: 500 is longer than the stream"):
        train.fit_stream(apply_lm, init(jax.random.key(2)), "mse", optax.sgd(0.1), stream(240),
                         500)
    with pytest.raises(ValueError, match="monitor: expected one of"):
        train.fit_stream(apply_lm, init(jax.random.key(2)), "mse", optax.sgd(0.1), stream(240),
                         8, monitor="val_loss")


# --------------------------------------------------------------------------- reset_every, budget

def manual_stream_fit(step, apply_lm, params, opt, data, k, epochs, reset_every):
    """The reference: a make_tbptt_step ``step`` by hand, zero carry at the start of each epoch
    and before every chunk whose index is a multiple of ``reset_every`` (None: never inside an
    epoch)."""
    state = train.init_train_state(params, opt, jax.random.key(0))
    chunks = tbptt.stream_chunks(data, k)
    zero = lambda: tbptt.zeros_carry(apply_lm, params, chunks[0]["inputs"])  # noqa: E731
    for _ in range(epochs):
        carry = zero()
        for i, batch in enumerate(chunks):
            if reset_every and i % reset_every == 0:
                carry = zero()
            state, carry, _ = step(state, carry, batch)
    return state


@pytest.mark.parametrize("reset_every", [1, 3])
def test_fit_stream_reset_every_equals_the_manual_loop(reset_every):
    """reset_every=1 is training on independent chunks from the zero carry; 3 resets inside
    the epoch (chunks 0, 3, 6 of 7)."""
    init, apply_lm = lm()
    params, data, opt = init(jax.random.key(3)), stream(240), optax.adam(0.02)  # 7 chunks
    res = train.fit_stream(apply_lm, params, "softmax_cross_entropy", opt, data, 8, epochs=2,
                           reset_every=reset_every, progress=False, verbose=False)
    step = tbptt.make_tbptt_step(apply_lm, "softmax_cross_entropy", opt, donate=False)
    ref = manual_stream_fit(step, apply_lm, params, opt, data, 8, 2, reset_every)
    assert int(res.state.step) == int(ref.step) == 14 and res.stop_reason == "epochs"
    for a, b in zip(jax.tree_util.tree_leaves(res.params), jax.tree_util.tree_leaves(ref.params),
                    strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    if reset_every == 1:  # the resets are real: carrying the state trains other parameters
        carried = manual_stream_fit(step, apply_lm, params, opt, data, 8, 2, None)
        assert not np.allclose(carried.params["head"].w, res.params["head"].w, atol=1e-6)


RESET_KW = dict(epochs=2, reset_every=2, restore_best=False, progress=False, verbose=False)


@pytest.fixture(scope="module")
def straight_reset_run():
    """A run never interrupted: 2 epochs of 7 chunks, the carry reset every 2 chunks."""
    init, apply_lm = lm()
    params = init(jax.random.key(4))
    res = train.fit_stream(apply_lm, params, "softmax_cross_entropy", optax.adam(0.02),
                           stream(240), 8, **RESET_KW)
    return apply_lm, params, res


def assert_same_run(res, straight):
    assert int(res.state.step) == int(straight.state.step) == 14
    assert res.stop_reason == straight.stop_reason == "epochs"
    for a, b in zip(jax.tree_util.tree_leaves(res.params),
                    jax.tree_util.tree_leaves(straight.params), strict=True):
        np.testing.assert_array_equal(a, b)
    assert res.history == {**straight.history, "epoch_time": res.history["epoch_time"]}


@pytest.mark.slow
def test_fit_stream_time_budget_stops_after_a_chunk_and_resumes_exactly(tmp_path,
                                                                        straight_reset_run):
    apply_lm, params, straight = straight_reset_run
    data = stream(240)
    cut = train.fit_stream(apply_lm, params, "softmax_cross_entropy", optax.adam(0.02), data, 8,
                           checkpoint_dir=tmp_path, time_budget_s=1e-9, **RESET_KW)
    steps = int(cut.state.step)
    assert cut.stop_reason == "time_budget" and not cut.stopped_early
    assert 1 <= steps < 14 and cut.history == {}  # stopped inside the first epoch
    target = {"carry": tbptt.zeros_carry(apply_lm, params, data["inputs"][:, :8])}
    saved = train.load_checkpoint(tmp_path, cut.state, extra_target=target)
    # The checkpoint is the state the result holds, at the position after its last update.
    assert int(saved.state.step) == steps
    assert saved.data_position == {"epoch": 0, "batch_index": steps, "seed": 0}
    assert saved.extra["stop_reason"] == "time_budget" and saved.extra["stopped"] is False
    for a, b in zip(jax.tree_util.tree_leaves(saved.state.params),
                    jax.tree_util.tree_leaves(cut.state.params), strict=True):
        np.testing.assert_array_equal(a, b)
    # Resuming without a budget finishes the run as if it had never stopped.
    resumed = train.fit_stream(apply_lm, params, "softmax_cross_entropy", optax.adam(0.02), data,
                               8, checkpoint_dir=tmp_path, resume=True, **RESET_KW)
    assert_same_run(resumed, straight)


def test_fit_stream_resume_with_reset_every_is_bit_exact(tmp_path, straight_reset_run):
    apply_lm, params, straight = straight_reset_run
    data = stream(240)
    train.fit_stream(apply_lm, params, "softmax_cross_entropy", optax.adam(0.02), data, 8,
                     checkpoint_dir=tmp_path, checkpoint_every=4, max_steps=10, **RESET_KW)
    target = {"carry": tbptt.zeros_carry(apply_lm, params, data["inputs"][:, :8])}
    saved = train.load_checkpoint(tmp_path, straight.state, extra_target=target)
    # Epoch 2 after chunk 3 of 7: one chunk past the reset before chunk 2, so the saved carry
    # is not the zero one and the next reset (before chunk 4) happens after the resume.
    assert saved.data_position == {"epoch": 1, "batch_index": 3, "seed": 0}
    assert float(jnp.abs(jax.tree_util.tree_leaves(saved.extra["carry"])[0]).sum()) > 0
    resumed = train.fit_stream(apply_lm, params, "softmax_cross_entropy", optax.adam(0.02),
                               data, 8, checkpoint_dir=tmp_path, resume=True, **RESET_KW)
    assert_same_run(resumed, straight)


def test_fit_stream_on_step_sees_every_chunk_and_can_stop():
    init, apply_lm = lm()
    seen = []

    def on_step(step, logs):
        seen.append((step, logs["loss"]))
        return step == 9

    res = train.fit_stream(apply_lm, init(jax.random.key(5)), "softmax_cross_entropy",
                           optax.adam(0.02), stream(240), 8, epochs=3, on_step=on_step,
                           progress=False, verbose=False)
    assert res.stop_reason == "callback" and int(res.state.step) == 9
    assert [s for s, _ in seen] == list(range(1, 10))
    # The first epoch's logged losses are the epoch's training loss (its 7 equal-weight chunks).
    np.testing.assert_allclose(np.mean([float(v) for _, v in seen[:7]]), res.history["loss"][0],
                               rtol=1e-5)


@pytest.mark.parametrize("kwargs, match", [
    ({"reset_every": -1}, "reset_every: expected None or an int >= 0"),
    ({"reset_every": 2.0}, "reset_every: expected None or an int >= 0"),
    ({"time_budget_s": 0}, "time_budget_s: expected None or a positive finite number"),
    ({"time_budget_s": float("inf")}, "time_budget_s: expected None or a positive finite"),
    ({"time_budget_s": True}, "time_budget_s: expected None or a positive finite number"),
    ({"on_step": 3}, "on_step: expected None or a function"),
])
def test_fit_stream_rejects_bad_reset_budget_and_on_step_before_tracing(kwargs, match):
    def never_traced(params, inputs, **kw):
        raise AssertionError("the model was traced before the arguments were checked")

    with pytest.raises((ValueError, TypeError), match=match):
        train.fit_stream(never_traced, {"w": jnp.zeros(2)}, "mse", optax.sgd(0.1), stream(240),
                         8, progress=False, verbose=False, **kwargs)
