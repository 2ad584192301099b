"""The compiled train step against hand-computed updates; clipping, schedules, dropout keys,
compile-once; fit / evaluate / predict behaviour; bad input."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxrnn
from jaxrnn import train
from jaxrnn.train import TrainState, init_train_state, make_optimizer, make_train_step


def linear_apply(params, inputs, *, lengths=None, key=None, deterministic=True):
    return inputs @ params["w"] + params["b"]


def linear_data(rng, n=12, f=3, o=2):
    x = rng.normal(size=(n, f)).astype(np.float32)
    y = rng.normal(size=(n, o)).astype(np.float32)
    params = {"w": jnp.asarray(rng.normal(size=(f, o)), jnp.float32), "b": jnp.zeros((o,))}
    return x, y, params


def np_mse_grad(w, b, x, y):
    """d/dw, d/db of mean((xw + b - y)^2) over all N*O elements, float64."""
    r = x @ w + b - y
    n = r.size
    return 2 * x.T @ r / n, 2 * r.sum(0) / n


def test_sgd_step_equals_hand_computed_gradient(rng):
    x, y, params = linear_data(rng)
    w0, b0 = np.asarray(params["w"], np.float64), np.asarray(params["b"], np.float64)
    step = make_train_step(linear_apply, "mse", optax.sgd(0.1))
    state = init_train_state(params, optax.sgd(0.1), 0)
    state, logs = step(state, {"inputs": x, "targets": y})
    gw, gb = np_mse_grad(w0, b0, x.astype(np.float64), y.astype(np.float64))
    np.testing.assert_allclose(state.params["w"], w0 - 0.1 * gw, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(state.params["b"], b0 - 0.1 * gb, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(logs["loss"], np.mean((x @ w0 + b0 - y) ** 2), rtol=1e-5)
    np.testing.assert_allclose(logs["grad_norm"], np.sqrt((gw ** 2).sum() + (gb ** 2).sum()),
                               rtol=1e-5)
    assert int(state.step) == 1


def test_clipping_by_global_norm(rng):
    x, y, params = linear_data(rng)
    y = y * 1000.0  # a huge gradient
    w0, b0 = np.asarray(params["w"], np.float64), np.asarray(params["b"], np.float64)
    opt = make_optimizer(0.5, optimizer="sgd", clip_norm=0.25)
    state = init_train_state(params, opt, 0)
    state, _ = make_train_step(linear_apply, "mse", opt)(state, {"inputs": x, "targets": y})
    gw, gb = np_mse_grad(w0, b0, x.astype(np.float64), y.astype(np.float64))
    norm = np.sqrt((gw ** 2).sum() + (gb ** 2).sum())
    assert norm > 0.25
    scale = 0.25 / norm
    np.testing.assert_allclose(state.params["w"], w0 - 0.5 * scale * gw, rtol=1e-4, atol=1e-6)
    # The applied update has global norm exactly lr * clip_norm.
    dw = np.asarray(state.params["w"]) - w0
    db = np.asarray(state.params["b"]) - b0
    np.testing.assert_allclose(np.sqrt((dw ** 2).sum() + (db ** 2).sum()), 0.5 * 0.25, rtol=1e-4)


def test_learning_rate_schedule_is_applied_per_step(rng):
    x, y, params = linear_data(rng)
    sched = optax.piecewise_constant_schedule(0.1, {1: 0.0})  # lr 0.1 at step 0, then 0
    opt = make_optimizer(sched, optimizer="sgd", clip_norm=None)
    step = make_train_step(linear_apply, "mse", opt)
    state = init_train_state(params, opt, 0)
    batch = {"inputs": x, "targets": y}
    state, _ = step(state, batch)
    after_one = np.asarray(state.params["w"]).copy()
    assert not np.allclose(after_one, np.asarray(params["w"]))
    state, _ = step(state, batch)
    np.testing.assert_array_equal(state.params["w"], after_one)  # lr 0 at step 1


def dropout_apply(params, inputs, *, lengths=None, key=None, deterministic=True):
    h = jaxrnn.dropout(inputs, 0.5, key, deterministic=deterministic)
    return h @ params["w"] + params["b"]


def test_dropout_key_is_fold_in_of_step(rng):
    """Step s draws its dropout mask from fold_in(state.key, s): the loss it reports equals the
    objective evaluated by hand with that key, and differs between steps."""
    x, y, params = linear_data(rng)
    opt = optax.sgd(0.0)  # parameters stay fixed: only the key changes the loss
    step = make_train_step(dropout_apply, "mse", opt, donate=False)
    state = init_train_state(params, opt, jax.random.key(7))
    losses = []
    for s in range(3):
        state, logs = step(state, {"inputs": x, "targets": y})
        k = jax.random.fold_in(jax.random.key(7), s)
        by_hand = train.mse(dropout_apply(params, x, key=k, deterministic=False), y)
        np.testing.assert_allclose(logs["loss"], by_hand, rtol=1e-6)
        losses.append(float(logs["loss"]))
    assert len(set(losses)) == 3


def test_step_is_traced_once_for_equal_shapes(rng):
    x, y, params = linear_data(rng)
    traces = []

    def counting_apply(p, inputs, **kw):
        traces.append(1)  # runs only while tracing
        return linear_apply(p, inputs, **kw)

    opt = optax.adam(1e-2)
    step = make_train_step(counting_apply, "mse", opt)
    state = init_train_state(params, opt, 0)
    for _ in range(4):
        state, _ = step(state, {"inputs": x, "targets": y})
    assert len(traces) == 1


def test_donation_consumes_the_old_state(rng):
    x, y, params = linear_data(rng)
    opt = optax.adam(1e-2)
    state = init_train_state(jax.tree_util.tree_map(jnp.array, params), opt, 0)
    old_w = state.params["w"]
    make_train_step(linear_apply, "mse", opt, donate=True)(state, {"inputs": x, "targets": y})
    assert old_w.is_deleted()


def test_train_step_bad_input(rng):
    x, y, params = linear_data(rng)
    with pytest.raises(TypeError, match="optimizer: expected an optax.GradientTransformation"):
        make_train_step(linear_apply, "mse", "adam")
    step = make_train_step(linear_apply, "mse", optax.sgd(0.1))
    state = init_train_state(params, optax.sgd(0.1), 0)
    with pytest.raises(ValueError, match=r"batch: missing keys \['targets'\]"):
        step(state, {"inputs": x})
    with pytest.raises(TypeError, match="batch: expected a dict"):
        step(state, (x, y))
    with pytest.raises(TypeError, match="state: expected a TrainState"):
        step(params, {"inputs": x, "targets": y})
    with pytest.raises(TypeError, match="key: expected a typed PRNG key"):
        init_train_state(params, optax.sgd(0.1), "seed")


def test_make_optimizer_bad_input():
    with pytest.raises(ValueError, match="learning_rate: expected a finite positive number"):
        make_optimizer(-1.0)
    with pytest.raises(ValueError, match="optimizer: expected one of"):
        make_optimizer(1e-3, optimizer="lbfgs-ish")
    with pytest.raises(ValueError, match="clip_norm: expected a finite positive number"):
        make_optimizer(1e-3, clip_norm=0)


@pytest.mark.parametrize("argname, value, error", [
    ("learning_rate", float("nan"), ValueError),
    ("learning_rate", float("inf"), ValueError),
    ("learning_rate", 0.0, ValueError),
    ("learning_rate", True, TypeError),
    ("learning_rate", "0.1", TypeError),
    ("clip_norm", float("nan"), ValueError),
    ("clip_norm", float("inf"), ValueError),
    ("clip_norm", -1.0, ValueError),
    ("clip_norm", True, TypeError),
    ("clip_norm", "1", TypeError),
    ("weight_decay", float("nan"), ValueError),
    ("weight_decay", -0.1, ValueError),
    ("skip_nonfinite", 1, TypeError),
])
def test_make_optimizer_rejects_non_numbers_nan_inf_and_non_positive(argname, value, error):
    with pytest.raises(error, match=f"^{argname}: expected"):
        make_optimizer(**{"learning_rate": 1e-3, argname: value})


def test_make_optimizer_valid_values_build_the_documented_chain(rng):
    """clip then adam (compared with optax's own chain), numpy scalars accepted, and
    skip_nonfinite wraps the chain with apply_if_finite."""
    params = {"w": jnp.asarray(rng.normal(size=(3,)), jnp.float32)}
    grads = {"w": jnp.asarray([3.0, 4.0, 0.0], jnp.float32)}
    ours = make_optimizer(np.float32(0.1), clip_norm=np.float64(1.0))
    ref = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(0.1))
    u1, _ = ours.update(grads, ours.init(params), params)
    u2, _ = ref.update(grads, ref.init(params), params)
    np.testing.assert_allclose(u1["w"], u2["w"], rtol=1e-6)
    guarded = make_optimizer(0.1, skip_nonfinite=True)
    assert isinstance(guarded.init(params), optax.ApplyIfFiniteState)


# ----------------------------------------------------------------------------- fit and friends

def test_fit_history_plot_evaluate_predict(rng, tmp_path):
    x, y, params = linear_data(rng, n=40)
    w_true = rng.normal(size=(3, 2)).astype(np.float32)
    y = x @ w_true
    tr = {"inputs": x[:30], "targets": y[:30]}
    va = {"inputs": x[30:], "targets": y[30:]}
    res = train.fit(linear_apply, params, "mse", optax.adam(0.1), tr, val_data=va, epochs=4,
                    batch_size=8, metrics=["rmse"], progress=False, verbose=False,
                    plot_path=tmp_path / "curves.png")
    assert set(res.history) == {"loss", "rmse", "val_loss", "val_rmse", "epoch_time"}
    assert all(len(v) == 4 for v in res.history.values())
    assert res.history["val_loss"][-1] < res.history["val_loss"][0]
    with open(res.plot_path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    # The caller's params survive the donating step.
    assert not params["w"].is_deleted()
    # evaluate with unequal batches (4 + 4 + 2) equals the loss computed in one go.
    ev = train.evaluate(linear_apply, res.params, "mse", va, metrics=["rmse"], batch_size=4)
    direct = np.mean((np.asarray(linear_apply(res.params, va["inputs"])) - va["targets"]) ** 2)
    np.testing.assert_allclose(ev["loss"], direct, rtol=1e-5)
    np.testing.assert_allclose(ev["rmse"], np.sqrt(direct), rtol=1e-5)
    # predict keeps the order and the last, smaller batch.
    pred = train.predict(linear_apply, res.params, x, batch_size=16)
    np.testing.assert_allclose(pred, np.asarray(linear_apply(res.params, x)), rtol=1e-6)


def test_early_stopping_restores_best(rng):
    x, y, params = linear_data(rng, n=24)
    data = {"inputs": x, "targets": y}
    # min_delta so large that nothing after epoch 0 counts as an improvement.
    res = train.fit(linear_apply, params, "mse", optax.adam(0.05), data, val_data=data,
                    epochs=10, batch_size=8, patience=2, min_delta=1e9, progress=False,
                    verbose=False)
    assert res.stopped_early and res.best_epoch == 0
    assert len(res.history["loss"]) == 3  # epoch 0, then 2 without improvement
    ev = train.evaluate(linear_apply, res.params, "mse", data)
    np.testing.assert_allclose(ev["loss"], res.history["val_loss"][0], rtol=1e-6)
    assert not np.allclose(res.params["w"], res.state.params["w"])


def test_fit_trains_a_recurrent_classifier(rng):
    """A tiny Elman net separates sequences by the sign of their sum (held-out accuracy)."""
    from jaxrnn.train.models import sequence_classifier

    x = rng.normal(size=(192, 5, 1)).astype(np.float32)
    y = (x.sum((1, 2)) > 0).astype(np.int32)
    model = sequence_classifier(1, 2, cell="elman", hidden=8)
    res = train.fit(model.apply, model.init(jax.random.key(0)), "softmax_cross_entropy",
                    make_optimizer(0.03), {"inputs": x[:160], "targets": y[:160]},
                    epochs=15, batch_size=32, metrics=["accuracy"], progress=False,
                    verbose=False)
    ev = train.evaluate(model.apply, res.params, "softmax_cross_entropy",
                        {"inputs": x[160:], "targets": y[160:]}, metrics=["accuracy"])
    assert ev["accuracy"] >= 0.8


def test_fit_bad_input(rng, tmp_path):
    x, y, params = linear_data(rng)
    data = {"inputs": x, "targets": y}
    with pytest.raises(ValueError, match="epochs: expected an int >= 0"):
        train.fit(linear_apply, params, "mse", optax.sgd(0.1), data, epochs=-1)
    with pytest.raises(ValueError, match="monitor: expected one of"):
        train.fit(linear_apply, params, "mse", optax.sgd(0.1), data, monitor="val_loss",
                  batch_size=4)
    with pytest.raises(ValueError, match="resume: needs checkpoint_dir"):
        train.fit(linear_apply, params, "mse", optax.sgd(0.1), data, resume=True, batch_size=4)
    with pytest.raises(TypeError, match="train_data: expected a dict of arrays"):
        train.fit(linear_apply, params, "mse", optax.sgd(0.1), [x, y])
    with pytest.raises(ValueError, match="patience: expected None or an int >= 0"):
        train.fit(linear_apply, params, "mse", optax.sgd(0.1), data, patience=-2, batch_size=4)
    with pytest.raises(ValueError, match="batch_size: 32 with drop_remainder leaves no batch"):
        train.fit(linear_apply, params, "mse", optax.sgd(0.1), data, batch_size=32,
                  drop_remainder=True)
    with pytest.raises(ValueError, match=r"lengths: expected shape \(12,\)"):
        train.predict(linear_apply, params, x, lengths=np.ones(3, np.int32))


def test_state_is_a_named_pytree():
    assert TrainState._fields == ("params", "opt_state", "step", "key")


def test_bidirectional_summary_is_forward_last_and_backward_first(rng):
    """A bidirectional stack summarises a padded sequence by the forward run's output at the
    last valid step and the backward run's output at step 0, each computed here with
    jaxrnn.run on the sequence alone."""
    from jaxrnn.train.models import recurrent_stack

    layer = recurrent_stack("gru", 3, bidirectional_=True, return_sequences=False)
    params = layer.init(jax.random.key(0), 2)
    xs = rng.normal(size=(2, 5, 2)).astype(np.float32)
    lengths = np.array([5, 3], np.int32)
    out = jax.jit(lambda p, x, n: layer.apply(p, x, lengths=n))(params, xs, lengths)
    cell = jaxrnn.gru(3)
    p_fw, p_bw = params[0].forward, params[0].backward
    for b, n in enumerate(lengths):
        seq = xs[b, :n]
        _, y_fw = jaxrnn.run(cell, p_fw, seq)
        _, y_bw = jaxrnn.run(cell, p_bw, seq[::-1])
        np.testing.assert_allclose(out[b], np.concatenate([y_fw[-1], y_bw[-1]]), atol=1e-5)


def test_more_bad_input_paths(rng, tmp_path):
    from jaxrnn.train.models import recurrent_stack, sequence_classifier

    x, y, params = linear_data(rng)
    data = {"inputs": x, "targets": y}
    with pytest.raises(TypeError, match="optimizer: expected an optax.GradientTransformation"):
        init_train_state(params, "adam", 0)
    with pytest.raises(TypeError, match="apply_fn: expected a callable model apply"):
        make_train_step(None, "mse", optax.sgd(0.1))
    with pytest.raises(ValueError, match="checkpoint_every: expected None or an int >= 1"):
        train.fit(linear_apply, params, "mse", optax.sgd(0.1), data, batch_size=4,
                  checkpoint_every=0)
    with pytest.raises(ValueError, match="mode: expected 'min', 'max' or 'auto'"):
        train.fit(linear_apply, params, "mse", optax.sgd(0.1), data, batch_size=4,
                  mode="up")
    with pytest.raises(TypeError, match="val_data: expected a dict of arrays"):
        train.fit(linear_apply, params, "mse", optax.sgd(0.1), data, batch_size=4,
                  val_data=[x, y], progress=False, verbose=False)
    with pytest.raises(ValueError, match="history: nothing to plot"):
        train.plot_history({"epoch_time": [1.0]}, tmp_path / "x.png")
    with pytest.raises(ValueError, match="cell: expected one of"):
        recurrent_stack("transformer", 4)
    with pytest.raises(ValueError, match=r"dropout: expected a float in \[0, 1\), got 1.0"):
        recurrent_stack("gru", 4, dropout_rate=1.0)
    with pytest.raises(ValueError, match="layers: expected a positive int, got 0"):
        recurrent_stack("gru", 4, layers=0)
    with pytest.raises(ValueError, match="num_outputs: expected a positive int"):
        sequence_classifier(3, 0)
