"""fit's pieces: the last partial batch trained on and weighted exactly (against SGD written out
in NumPy), data checked on the host before the jitted step, callbacks, the per-epoch
learning-rate hook, best_epoch's counting, bit-exact resume with the new options."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxrnn
from jaxrnn import train


def linear_apply(params, inputs, *, lengths=None, key=None, deterministic=True):
    return inputs @ params["w"] + params["b"]


def linear_data(rng, n=10, f=3, o=2):
    x = rng.normal(size=(n, f)).astype(np.float32)
    y = rng.normal(size=(n, o)).astype(np.float32)
    params = {"w": jnp.asarray(rng.normal(size=(f, o)), jnp.float32), "b": jnp.zeros((o,))}
    return {"inputs": x, "targets": y}, params


def np_sgd_epochs(params, data, *, lr, batch_size, seed, epochs, drop_remainder=False,
                  factors=None):
    """SGD on mean((xw + b - y)^2) in float64, batches in BatchIterator's documented order
    (permutation of ``default_rng([seed, epoch])``); returns params and per-epoch mean loss
    weighted by batch size."""
    w, b = (np.asarray(params[k], np.float64) for k in ("w", "b"))
    x, y = (np.asarray(data[k], np.float64) for k in ("inputs", "targets"))
    n, losses = len(x), []
    for e in range(epochs):
        order = np.random.default_rng([seed, e]).permutation(n)
        stop = n - n % batch_size if drop_remainder else n
        total = count = 0.0
        for i in range(0, stop, batch_size):
            idx = order[i : i + batch_size]
            r = x[idx] @ w + b - y[idx]
            total, count = total + np.mean(r * r) * len(idx), count + len(idx)
            scale = lr * (1.0 if factors is None else factors[e])
            w = w - scale * 2 * x[idx].T @ r / r.size
            b = b - scale * 2 * r.sum(0) / r.size
        losses.append(total / count)
    return w, b, losses


QUIET = dict(progress=False, verbose=False)


def test_the_last_partial_batch_is_trained_on_and_weighted_by_its_size(rng):
    """10 examples at batch 4: batches of 4, 4 and 2 every epoch (today's main dropped the 2)."""
    data, params = linear_data(rng)
    res = train.fit(linear_apply, params, "mse", optax.sgd(0.1), data, epochs=3, batch_size=4,
                    seed=7, **QUIET)
    w, b, losses = np_sgd_epochs(params, data, lr=0.1, batch_size=4, seed=7, epochs=3)
    np.testing.assert_allclose(res.params["w"], w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res.params["b"], b, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res.history["loss"], losses, rtol=1e-5)
    assert int(res.state.step) == 9
    dropped = train.fit(linear_apply, params, "mse", optax.sgd(0.1), data, epochs=3,
                        batch_size=4, seed=7, drop_remainder=True, **QUIET)
    w, _, losses = np_sgd_epochs(params, data, lr=0.1, batch_size=4, seed=7, epochs=3,
                                 drop_remainder=True)
    np.testing.assert_allclose(dropped.params["w"], w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(dropped.history["loss"], losses, rtol=1e-5)
    assert int(dropped.state.step) == 6


def recurrent_model():
    layer = jaxrnn.recurrent(jaxrnn.gru(4))
    head = jaxrnn.dense(3)
    traces = []

    def apply(params, inputs, *, lengths=None, key=None, deterministic=True):
        traces.append(1)
        ys = layer.apply(params[0], inputs, lengths=lengths)
        return head.apply(params[1], jaxrnn.last_valid(ys, lengths))

    k1, k2 = jax.random.split(jax.random.key(0))
    return apply, (layer.init(k1, 2), head.init(k2, 4)), traces


def sequence_data(rng, n=8, T=5):
    return {"inputs": rng.normal(size=(n, T, 2)).astype(np.float32),
            "lengths": rng.integers(1, T + 1, n).astype(np.int32),
            "targets": rng.integers(0, 3, n).astype(np.int32)}


@pytest.mark.parametrize("bad", [6, -1])
def test_lengths_outside_the_time_axis_raise_before_the_jitted_step(rng, bad):
    apply, params, traces = recurrent_model()
    data = sequence_data(rng)
    data["lengths"][3] = bad
    for kw in ({"train_data": data}, {"val_data": data}):
        good = sequence_data(rng)
        args = {"train_data": good, **kw}
        name = next(iter(kw))
        with pytest.raises(ValueError, match=re.escape(f"{name}['lengths']: expected values in "
                                                       f"[0, 5] (the inputs' time axis), got "
                                                       f"{bad} at example 3")):
            train.fit(apply, params, "softmax_cross_entropy", optax.sgd(0.1),
                      args.pop("train_data"), batch_size=4, **args, **QUIET)
    assert traces == []  # nothing was traced
    with pytest.raises(ValueError, match=r"data\['lengths'\]: expected values in \[0, 5\]"):
        train.evaluate(apply, params, "softmax_cross_entropy", data)


def test_labels_outside_the_classes_raise_naming_labels_before_training(rng):
    apply, params, traces = recurrent_model()
    data = sequence_data(rng)
    data["targets"][5] = 3  # the head has 3 classes: 0, 1, 2
    with pytest.raises(ValueError, match=re.escape(
            "labels (train_data['targets']): integer class ids must be in [0, 3) for 3 classes, "
            "got 3 at index (5,)")):
        train.fit(apply, params, "sparse_categorical_crossentropy", optax.sgd(0.1), data,
                  batch_size=4, **QUIET)
    with pytest.raises(ValueError, match=r"labels \(data\['targets'\]\)"):
        train.evaluate(apply, params, "softmax_cross_entropy", data)
    data["targets"][5] = 2
    res = train.fit(apply, params, "sparse_categorical_crossentropy", optax.sgd(0.1), data,
                    batch_size=4, **QUIET)
    assert np.isfinite(res.history["loss"][0])


def test_checkpoint_dir_that_is_a_file_fails_before_training(rng, tmp_path):
    data, params = linear_data(rng)
    calls = []

    def apply(*a, **k):
        calls.append(1)
        return linear_apply(*a, **k)

    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="checkpoint_dir: .* exists and is not a directory"):
        train.fit(apply, params, "mse", optax.sgd(0.1), data, checkpoint_dir=tmp_path / "f",
                  **QUIET)
    assert calls == []


# --------------------------------------------------------------------------- callbacks

def test_callbacks_see_each_epoch_and_can_stop(rng):
    data, params = linear_data(rng)
    seen = []

    class StopAtSecond:
        def on_epoch_end(self, epoch, logs, state):
            seen.append(("object", epoch, logs["loss"], int(state.step)))
            return epoch == 1

    def record(epoch, logs, state):
        seen.append(("function", epoch, logs["val_loss"], None))

    res = train.fit(linear_apply, params, "mse", optax.sgd(0.1), data, epochs=5, batch_size=5,
                    val_data=data, callbacks=[StopAtSecond(), record], **QUIET)
    assert res.stopped_early and len(res.history["loss"]) == 2
    assert seen == [("object", 0, res.history["loss"][0], 2),
                    ("function", 0, res.history["val_loss"][0], None),
                    ("object", 1, res.history["loss"][1], 4),
                    ("function", 1, res.history["val_loss"][1], None)]
    with pytest.raises(TypeError, match=r"callbacks\[1\]: expected an object with on_epoch_end"):
        train.fit(linear_apply, params, "mse", optax.sgd(0.1), data, callbacks=[record, 3])


def test_lr_scale_multiplies_each_epochs_updates(rng):
    data, params = linear_data(rng)
    factors = [1.0, 0.5, 0.0]
    res = train.fit(linear_apply, params, "mse", optax.sgd(0.1), data, epochs=3, batch_size=4,
                    seed=2, lr_scale=lambda e: factors[e], **QUIET)
    w, b, _ = np_sgd_epochs(params, data, lr=0.1, batch_size=4, seed=2, epochs=3,
                            factors=factors)
    np.testing.assert_allclose(res.params["w"], w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res.params["b"], b, rtol=1e-5, atol=1e-6)
    as_list = train.fit(linear_apply, params, "mse", optax.sgd(0.1), data, epochs=3,
                        batch_size=4, seed=2, lr_scale=factors, **QUIET)
    np.testing.assert_array_equal(as_list.params["w"], res.params["w"])
    with pytest.raises(ValueError, match=r"lr_scale\(epoch=1\): expected a finite"):
        train.fit(linear_apply, params, "mse", optax.sgd(0.1), data, epochs=2,
                  lr_scale=[1.0, float("nan")])


def test_best_epoch_counts_from_zero_and_the_printed_epoch_from_one(rng, capsys):
    """history[monitor][best_epoch] is the best value; the early-stopping line prints
    best_epoch + 1, the number of the 'epoch N/E' line that showed it."""
    data, params = linear_data(rng)
    res = train.fit(linear_apply, params, "mse", optax.sgd(3.0), data, epochs=6,
                    batch_size=10, val_data=data, patience=1, progress=False, verbose=True)
    hist = res.history["val_loss"]
    assert res.best_epoch == int(np.argmin(hist)) and res.stopped_early
    out = capsys.readouterr().out
    printed = int(re.search(r"best epoch (\d+)", out).group(1))
    assert printed == res.best_epoch + 1
    line = re.search(rf"epoch {printed}/6 .*val_loss (\S+)", out).group(1)
    assert float(line) == pytest.approx(hist[res.best_epoch], rel=1e-3)


@pytest.mark.slow
def test_resume_is_bit_exact_with_partial_batches_lr_scale_and_the_guard(rng, tmp_path):
    data, params = linear_data(rng)
    kw = dict(epochs=3, batch_size=4, val_data=data, seed=5, lr_scale=[1.0, 0.3, 0.1],
              skip_nonfinite=True, restore_best=False, **QUIET)
    opt = optax.adam(0.05)
    straight = train.fit(linear_apply, params, "mse", opt, data, **kw)
    train.fit(linear_apply, params, "mse", opt, data, checkpoint_dir=tmp_path, max_steps=4,
              **kw)  # stops mid-epoch 2 (3 batches an epoch)
    resumed = train.fit(linear_apply, params, "mse", opt, data, checkpoint_dir=tmp_path,
                        resume=True, **kw)
    for k in ("w", "b"):
        np.testing.assert_array_equal(resumed.params[k], straight.params[k])
    assert resumed.history["loss"] == straight.history["loss"]
    assert resumed.history["val_loss"] == straight.history["val_loss"]


@pytest.mark.parametrize("kw, error, message", [
    ({"drop_remainder": "yes"}, TypeError, "drop_remainder: expected a bool"),
    ({"skip_nonfinite": 1}, TypeError, "skip_nonfinite: expected None or a bool"),
    ({"callbacks": 3}, TypeError, "callbacks: expected None, a callback or a sequence"),
    ({"lr_scale": 3}, TypeError, "lr_scale: expected None, a function"),
    ({"lr_scale": [1.0, -1.0]}, ValueError, r"lr_scale\(epoch=1\): expected a finite"),
    ({"max_steps": 0}, ValueError, "max_steps: expected None or an int >= 1"),
    ({"checkpoint_every": True}, ValueError, "checkpoint_every: expected None or an int >= 1"),
    ({"checkpoint_dir": 3}, TypeError, "checkpoint_dir: expected None or a path"),
    ({"min_delta": float("nan")}, ValueError, "min_delta: expected a finite number >= 0"),
    ({"epochs": True}, ValueError, "epochs: expected an int >= 0"),
])
def test_fit_bad_keywords_name_the_argument_before_tracing(rng, kw, error, message):
    data, params = linear_data(rng)
    traced = []

    def apply(*a, **k):
        traced.append(1)
        return linear_apply(*a, **k)

    with pytest.raises(error, match=message):
        train.fit(apply, params, "mse", optax.sgd(0.1), data,
                  **{"epochs": 2, "batch_size": 4, "patience": 1, **QUIET, **kw})
    assert traced == []


# --------------------------------------------------------------------------- tasks on the loop

def _frame_args(tmp_path, *, epochs, resume=False):
    import argparse

    return argparse.Namespace(batch_size=2, epochs=epochs, seed=3, lr=1e-2, clip_norm=None,
                              skip_nonfinite=True, checkpoint_dir=str(tmp_path / "ck"),
                              resume=resume, data_parallel=None, time_budget=600.0,
                              progress=False)


def test_moving_digits_trains_through_fit_and_resumes_bit_exact(tmp_path, capsys):
    """moving_digits' training (fit_frames, its objective) runs on the one loop: one epoch,
    then --resume for the second, equals two epochs straight, bit for bit (the whole task
    through the command line: the slow test below)."""
    from jaxrnn.tasks.moving_digits import fit_frames

    def apply(params, frames, carries=None):  # (T, B, H, W): a per-pixel sigmoid, no time
        return jax.nn.sigmoid(frames * params["w"] + params["b"]), None

    frames = np.random.default_rng(0).random((6, 4, 3, 3)).astype(np.float32)
    params = {"w": jnp.ones(()), "b": jnp.zeros(())}
    straight, steps, epochs, _ = fit_frames(_frame_args(tmp_path / "a", epochs=2), apply,
                                            params, frames)
    assert (steps, epochs) == (6, 2)  # 3 full batches of 2 per epoch
    fit_frames(_frame_args(tmp_path / "b", epochs=1), apply, params, frames)
    resumed, steps, _, _ = fit_frames(_frame_args(tmp_path / "b", epochs=2, resume=True), apply,
                                      params, frames)
    assert "resumed from" in capsys.readouterr().out and steps == 6
    for a, b in zip(jax.tree_util.tree_leaves(straight), jax.tree_util.tree_leaves(resumed),
                    strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(straight["w"], params["w"])  # it trained


@pytest.mark.slow
def test_moving_digits_task_resumes_bit_exact_from_the_command_line(tmp_path):
    from jaxrnn import cli
    from jaxrnn.tasks import modeldir

    small = ["--train-sequences", "8", "--test-sequences", "4", "--frames", "4", "--size",
             "16", "--digits", "1", "--hidden", "2", "--layers", "1", "--batch-size", "4",
             "--kernel", "3", "--no-progress"]
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    assert cli.main(["train", "--task", "moving_digits", "--epochs", "2", "--out", a,
                     *small]) == 0
    assert cli.main(["train", "--task", "moving_digits", "--epochs", "1", "--out", b,
                     *small]) == 0
    assert cli.main(["train", "--task", "moving_digits", "--epochs", "2", "--out", b,
                     "--resume", *small]) == 0
    for x, y in zip(jax.tree_util.tree_leaves(modeldir.load(a + "/model").params),
                    jax.tree_util.tree_leaves(modeldir.load(b + "/model").params), strict=True):
        np.testing.assert_array_equal(x, y)


def test_memory_refuses_resume_by_name(tmp_path, capsys):
    from jaxrnn import cli

    code = cli.main(["train", "--task", "memory", "--out", str(tmp_path), "--resume"])
    assert code != 0
    assert "--resume: task memory" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["train", "--task", "memory", "--help"])
    assert "refuses --resume" in " ".join(capsys.readouterr().out.split())  # and says why


def _g2p_args(tmp_path, *, epochs, resume=False, batch_size=2):
    import argparse

    return argparse.Namespace(batch_size=batch_size, epochs=epochs, seed=1, lr=1e-2,
                              clip_norm=None, skip_nonfinite=False, sampling_prob=0.0,
                              checkpoint_dir=str(tmp_path / "ck"), resume=resume,
                              data_parallel=None, time_budget=600.0, progress=False)


def _g2p_pairs():
    """Words of two length buckets (<= 10 and 11..14), so batches of two shapes interleave."""
    words = ["cab", "tab", "bat", "act", "abbacatabba", "cattabacbat", "tabbacatcab",
             "batcabacbat", "ab", "ca"]
    return [([1 + "abct".index(c) for c in w], [3 + "abct".index(c) for c in w]) for w in words]


class _TinySeq2Seq:
    """The encoder-decoder's training protocol, ``loss(params, src, src_lengths, tgt,
    tgt_lengths)``, on a two-parameter model (compiles in milliseconds; the real one trains
    through the same fit_pairs in the command-line test below)."""

    def loss(self, params, src, sl, tgt, tl):
        valid = jnp.arange(tgt.shape[1]) < tl[:, None]
        pred = params["w"] * jnp.sum(src, axis=1, keepdims=True) / sl[:, None] + params["b"]
        return jnp.sum(jnp.where(valid, (pred - tgt) ** 2, 0.0)) / jnp.sum(valid)


def _g2p_model():
    return _TinySeq2Seq(), {"w": jnp.full((), 0.5), "b": jnp.zeros(())}


def test_g2p_batches_are_bucketed_seeded_and_full():
    from jaxrnn.tasks import g2p

    data = g2p.training_data(_g2p_pairs())
    it = g2p.batches(data, 2, seed=1)
    epoch = list(it.epoch_batches(0))
    assert len(epoch) == 5  # 6 short words (3 full batches) + 4 long words (2), none dropped
    for b in epoch:
        T = b["inputs"].shape[1]
        assert b["targets"].shape == (2, T) and T in (10, 14)
        assert max(b["lengths"].max(), b["target_lengths"].max()) <= T  # </s> fits
        # the smallest bucket that fits the longer side
        assert T == g2p._bucket(int(max(b["lengths"].max(), b["target_lengths"].max())),
                                g2p.BUCKETS)
        for s, n in zip(b["targets"], b["target_lengths"], strict=True):
            assert s[n - 1] == g2p.EOS and not s[n:].any()
    again = list(g2p.batches(data, 2, seed=1).epoch_batches(0))
    for a, b in zip(epoch, again, strict=True):
        np.testing.assert_array_equal(a["inputs"], b["inputs"])


def test_g2p_trains_through_fit_and_resumes_bit_exact(tmp_path, capsys):
    """g2p's training (fit_pairs, its length-bucketed batches, the teacher-forced objective)
    runs on the one loop: one epoch, then --resume for the second, equals two epochs straight,
    bit for bit (the whole task through the command line: the slow test below)."""
    from jaxrnn.tasks.g2p import fit_pairs

    model, params = _g2p_model()
    pairs = _g2p_pairs()
    straight, steps, epochs, _ = fit_pairs(_g2p_args(tmp_path / "a", epochs=2), model, params,
                                           pairs)
    assert (steps, epochs) == (10, 2)  # 5 full batches a epoch
    fit_pairs(_g2p_args(tmp_path / "b", epochs=1), model, params, pairs)
    resumed, steps, _, _ = fit_pairs(_g2p_args(tmp_path / "b", epochs=2, resume=True), model,
                                     params, pairs)
    assert "resumed from" in capsys.readouterr().out and steps == 10
    leaves = jax.tree_util.tree_leaves
    for a, b in zip(leaves(straight), leaves(resumed), strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b)
               for a, b in zip(leaves(straight), leaves(params), strict=True))  # it trained


def test_g2p_refuses_a_batch_larger_than_its_words(tmp_path):
    from jaxrnn.tasks.common import OptionError
    from jaxrnn.tasks.g2p import fit_pairs

    model, params = _g2p_model()
    with pytest.raises(OptionError, match="--batch-size: 11 is more than the 10 training words"):
        fit_pairs(_g2p_args(tmp_path, epochs=1, batch_size=11), model, params, _g2p_pairs())


@pytest.mark.slow
def test_g2p_task_resumes_bit_exact_from_the_command_line(tmp_path, monkeypatch):
    from jaxrnn import cli
    from jaxrnn.tasks import g2p, modeldir

    words = ["cat", "bat", "tab", "act", "cab", "tac", "abc", "bca", "cba", "acb", "abbacatabba"]
    sound = {"a": "AE", "b": "B", "c": "K", "t": "T"}
    monkeypatch.setattr(g2p, "load_cmudict",
                        lambda: {w: [[sound[c] for c in w]] for w in words})
    small = ["--hidden", "8", "--embed", "4", "--test-words", "3", "--batch-size", "2",
             "--no-progress"]
    a, b = str(tmp_path / "a"), str(tmp_path / "b")
    assert cli.main(["train", "--task", "g2p", "--epochs", "2", "--out", a, *small]) == 0
    assert cli.main(["train", "--task", "g2p", "--epochs", "1", "--out", b, *small]) == 0
    assert cli.main(["train", "--task", "g2p", "--epochs", "2", "--out", b, "--resume",
                     *small]) == 0
    for x, y in zip(jax.tree_util.tree_leaves(modeldir.load(a + "/model").params),
                    jax.tree_util.tree_leaves(modeldir.load(b + "/model").params), strict=True):
        np.testing.assert_array_equal(x, y)


# --------------------------------------------------------------------------- one set of options

def test_fit_and_fit_stream_share_one_options_object_and_keras_fit_passes_it(rng, monkeypatch):
    data, params = linear_data(rng, n=12)
    opts = train.LoopOptions(epochs=2, seed=4, progress=False, verbose=False)
    by_object = train.fit(linear_apply, params, "mse", optax.sgd(0.1), data, batch_size=5,
                          options=opts)
    by_name = train.fit(linear_apply, params, "mse", optax.sgd(0.1), data, batch_size=5,
                        epochs=2, seed=4, progress=False, verbose=False)
    assert by_object.history["loss"] == by_name.history["loss"]
    overridden = train.fit(linear_apply, params, "mse", optax.sgd(0.1), data, batch_size=5,
                           options=opts, epochs=1)
    assert len(overridden.history["loss"]) == 1 and opts.epochs == 2  # the object is unchanged
    for fn, args in ((train.fit, (data,)), (train.fit_stream, (data, 2))):
        with pytest.raises(TypeError, match=r"unexpected keyword argument 'epoch' \(the loop's "
                                            r"options: epochs, metrics"):
            fn(linear_apply, params, "mse", optax.sgd(0.1), *args, epoch=3)
        with pytest.raises(ValueError, match="^epochs: expected an int >= 0"):
            fn(linear_apply, params, "mse", optax.sgd(0.1), *args,
               options=train.LoopOptions(epochs=-1))
    seen, real_fit = {}, train.fit

    def spy(*a, options=None, **k):
        seen["options"] = options
        return real_fit(*a, options=options, **k)

    from jaxrnn import keras
    from jaxrnn import models as M

    monkeypatch.setattr(train, "fit", spy)
    x = rng.normal(size=(12, 4, 3)).astype(np.float32)
    keras.fit(M.sequential([M.GRU(3), M.Dense(2)]), x, np.arange(12) % 2, epochs=1,
              skip_nonfinite=True)
    assert isinstance(seen["options"], train.LoopOptions)
    assert seen["options"].epochs == 1 and seen["options"].skip_nonfinite is True
