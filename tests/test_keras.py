"""The Keras-level door (``jaxrnn.keras``) on what a user passes: bad arguments named before
anything is traced, non-finite data reported by array and index, labels of any type encoded
one way and carried by the model, channels-first arrays warned about, and the non-finite
guard reachable from ``keras.fit``."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrnn import keras, train
from jaxrnn import models as M


def _features(n=24, t=6, f=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, t, f)).astype(np.float32)
    return x, (x[:, :, 0].mean(1) > 0).astype(np.int64)


def _untraceable(model):
    """``model`` whose apply fails the test if it is ever called or traced: an error raised
    with it is raised before tracing."""

    def apply(*a, **k):
        raise AssertionError("the model was traced")

    return model._replace(apply=apply)


# --------------------------------------------------------------------------- bad arguments

@pytest.mark.parametrize("batch_size", [0, -3, 2.5, True, "8"])
def test_batch_size_that_is_not_a_positive_int_is_refused_by_name(batch_size):
    x, y = _features()
    model = M.sequential([M.GRU(4), M.Dense(2)])
    params = model.init(jax.random.key(0), 3)
    with pytest.raises(ValueError, match="^batch_size: expected a positive integer"):
        keras.fit(_untraceable(model), x, y, epochs=1, batch_size=batch_size)
    with pytest.raises(ValueError, match="^batch_size: expected a positive integer"):
        keras.evaluate(_untraceable(model), params, x, y, batch_size=batch_size)
    with pytest.raises(ValueError, match="^batch_size: expected a positive integer"):
        keras.predict(_untraceable(model), params, x, batch_size=batch_size)


def test_wrong_feature_size_and_integer_inputs_are_named_x_before_tracing():
    x, y = _features(f=3)
    model = M.sequential([M.GRU(4), M.Dense(2)])
    five = model.init(jax.random.key(0), 5)
    with pytest.raises(ValueError, match=r"^x: expected 5 features per step .* got shape "
                                         r"\(24, 6, 3\)"):
        keras.fit(_untraceable(model), x, y, epochs=1, params=five)
    with pytest.raises(ValueError, match=r"^x: expected 5 features per step"):
        keras.evaluate(_untraceable(model), five, x, y)
    ids = np.random.default_rng(0).integers(0, 3, (24, 6))
    with pytest.raises(ValueError, match=r"^x: the model reads \(N, T, F\) float features, "
                                         r"got integers of shape \(24, 6\)"):
        keras.fit(_untraceable(model), ids, y, epochs=1)
    emb = M.sequential([M.Embedding(3, 4), M.GRU(4), M.Dense(2)])
    with pytest.raises(ValueError, match=r"^x: the model starts with an Embedding"):
        keras.predict(_untraceable(emb), emb.init(jax.random.key(0)), x)


def test_a_wrong_channel_count_shows_the_array_the_user_passed_not_a_batch():
    """train.fit and keras.fit on (300, 100, 1) for a model of 3 features: the message names
    the data and its whole shape (the traced batch would be (32, 100, 1) or (1, 100, 1))."""
    x = np.zeros((300, 100, 1), np.float32)
    y = np.arange(300) % 2
    model = M.sequential([M.GRU(4), M.Dense(2)])
    three = model.init(jax.random.key(0), 3)
    with pytest.raises(ValueError) as e:
        train.fit(model.apply, three, "sparse_categorical_crossentropy", train.make_optimizer(),
                  {"inputs": x, "targets": y}, progress=False, verbose=False)
    msg = str(e.value)
    assert msg.startswith("train_data['inputs']: ") and "(300, 100, 1)" in msg
    assert "(1, 100, 1)" not in msg and "(32, 100, 1)" not in msg
    with pytest.raises(ValueError, match=r"^x: expected 3 features .* \(300, 100, 1\)"):
        keras.fit(model, x, y, epochs=1, params=three)


def test_evaluate_with_x_and_y_of_different_lengths_names_both():
    x, y = _features()
    model = M.sequential([M.GRU(4), M.Dense(2)])
    params = model.init(jax.random.key(0), 3)
    with pytest.raises(ValueError, match=r"^x, y: x has 24 inputs and y 10 targets"):
        keras.evaluate(_untraceable(model), params, x, y[:10])
    with pytest.raises(ValueError, match=r"^y: expected 24 targets"):
        keras.fit(_untraceable(model), x, y[:10], epochs=1)


# --------------------------------------------------------------------------- non-finite

def test_a_nan_or_inf_in_the_inputs_is_named_by_array_and_index_before_training():
    x, y = _features()
    model = M.sequential([M.GRU(4), M.Dense(2)])
    bad = x.copy()
    bad[3, 5, 0] = np.nan
    with pytest.raises(ValueError, match=r"^x\[3, 5, 0\] is nan"):
        keras.fit(_untraceable(model), bad, y, epochs=1)
    bad[3, 5, 0], bad[7, 1, 2] = 0.0, -np.inf
    with pytest.raises(ValueError, match=r"^validation_data\[0\]\[7, 1, 2\] is -inf"):
        keras.fit(model, x, y, epochs=1, validation_data=(bad, y))
    yr = y.astype(np.float32)
    yr[4] = np.nan
    with pytest.raises(ValueError, match=r"^y\[4\] is nan"):
        keras.fit(M.sequential([M.GRU(4), M.Dense(1)]), x, yr, loss="mse", epochs=1)
    # the functional loop too, by the dict key
    params = model.init(jax.random.key(0), 3)
    bad[7, 1, 2] = np.inf
    with pytest.raises(ValueError, match=r"^train_data\['inputs'\]\[7, 1, 2\] is inf"):
        train.fit(model.apply, params, "sparse_categorical_crossentropy",
                  train.make_optimizer(), {"inputs": bad, "targets": y}, progress=False,
                  verbose=False)
    # NaN in padding as well: a masked step's inputs still reach the weight gradients
    padded, lengths = x.copy(), np.full(24, 6)
    padded[0, 4:], lengths[0] = np.nan, 4
    with pytest.raises(ValueError, match=r"^x\[0, 4, 0\] is nan .*this one is padding"):
        keras.fit(_untraceable(model), padded, y, lengths=lengths, epochs=1)


class _SqrtModel:
    """``sqrt(|w x_0|)``: its gradient in ``w`` is NaN (inf * 0) exactly when an example's
    first input is 0, while its loss stays finite: a non-finite update from finite data."""

    @staticmethod
    def init(key, input_size):
        return {"w": jnp.ones((1,), jnp.float32)}

    @staticmethod
    def apply(params, x, *, lengths=None, key=None, deterministic=True):
        return jnp.sqrt(jnp.abs(params["w"] * x[:, 0, :1]))


def test_keras_fit_skip_nonfinite_skips_the_update_the_error_advises_skipping():
    x = np.ones((4, 1, 1), np.float32)
    x[2] = 0.0  # example 2's update has a NaN gradient
    y = np.full(4, 2.0, np.float32)
    with pytest.raises(train.NonFiniteLossError, match="skip_nonfinite=True") as e:
        keras.fit(_SqrtModel, x, y, loss="mse", epochs=1, batch_size=1, clip_norm=None)
    assert "jaxrnn.keras.fit" in str(e.value)
    params, history = keras.fit(_SqrtModel, x, y, loss="mse", epochs=3, batch_size=1,
                                clip_norm=None, lr=0.1, skip_nonfinite=True)
    assert np.isfinite(np.asarray(params["w"])).all() and np.isfinite(history["loss"]).all()
    assert float(params["w"][0]) > 1.0  # the finite updates trained (towards w = 4)
    with pytest.raises(TypeError, match="^skip_nonfinite: expected None or a bool"):
        keras.fit(_SqrtModel, x, y, loss="mse", epochs=1, skip_nonfinite=1)


# --------------------------------------------------------------------------- labels

def test_whole_number_labels_are_encoded_like_floats_and_strings():
    """Labels 1/2 for a model of 2 outputs: encoded in sorted order as 1.0/2.0 and "1"/"2"
    are; ids 0/1 keep their meaning; more classes than outputs name y; keras.fit trains on
    1/2 (it named ``train_data['targets']`` before)."""
    y01 = np.arange(24) % 2
    encoded = {kind: keras.encode_targets(labels, "sparse_categorical_crossentropy",
                                          num_classes=2)
               for kind, labels in (("int", y01 + 1), ("float", (y01 + 1).astype(float)),
                                    ("str", np.array(["1", "2"])[y01]), ("ids", y01))}
    for kind, (ids, encoder) in encoded.items():
        np.testing.assert_array_equal(ids, y01, err_msg=kind)
        assert encoder.num_classes == 2, kind
    assert encoded["int"][1].classes == [1, 2] and encoded["ids"][1].classes == [0, 1]
    three = y01 + np.arange(24) % 3 // 2 + 1
    with pytest.raises(ValueError, match=r"^y: 3 classes \(1, 2, 3\) but the model has 2 "
                                         r"outputs"):
        keras.encode_targets(three, "sparse_categorical_crossentropy", num_classes=2)
    x, _ = _features()
    model = M.sequential([M.GRU(4), M.Dense(2)])
    _, history = keras.fit(model, x, y01 + 1, epochs=1, batch_size=8)
    assert history.label_encoder.classes == [1, 2] and np.isfinite(history["loss"]).all()


def test_evaluate_on_a_subset_missing_a_class_uses_the_encoder_the_model_carries():
    """Issue 28: without label_encoder=, evaluate re-encoded the subset's labels (b -> 0)."""
    rng = np.random.default_rng(1)
    labels = np.array(["a", "b", "c"])[np.arange(64) % 3]
    x = rng.normal(size=(64, 5, 3)).astype(np.float32)
    x[np.arange(64), :, np.arange(64) % 3] += 3.0  # class k: feature k is high
    model = M.sequential([M.GRU(8), M.Dense(3)])
    params, history = keras.fit(model, x, labels, epochs=4, lr=3e-2, batch_size=16)
    assert model.preprocessing["label_encoder"].classes == ["a", "b", "c"]
    keep = labels != "a"
    scores = keras.evaluate(model, params, x[keep], labels[keep])
    predicted = keras.predict(model, params, x[keep]).argmax(-1)
    truth = history.label_encoder.transform(labels[keep])
    assert scores["accuracy"] == pytest.approx(float(np.mean(predicted == truth)))
    assert scores["accuracy"] > 0.9


# --------------------------------------------------------------------------- layouts

def test_channels_first_arrays_are_warned_about_with_the_transpose():
    x = np.zeros((8, 3, 50), np.float32)  # (N, C, T): 3 channels of 50 steps
    with pytest.warns(UserWarning, match=r"x: shape \(8, 3, 50\) is read as \(N, T, F\).*"
                                         r"x\.transpose\(0, 2, 1\)"):
        keras.as_inputs(x)
    keras.as_inputs(x.transpose(0, 2, 1))  # (N, T, F) with T >= F: no warning (errors here)


# --------------------------------------------------------------------------- losses

@pytest.mark.parametrize("name", ["sparse_categorical_crossentropy", "categorical_crossentropy",
                                  "binary_crossentropy", "mse", "MAE", "mean_squared_error"])
def test_keras_fit_reads_the_one_loss_table(name):
    """keras.fit's names are jaxrnn.train.losses' (before, its own table made
    categorical_crossentropy the integer-label loss)."""
    from jaxrnn.train.losses import get_loss

    assert get_loss(keras.loss_name(name)) is get_loss(name)


def test_categorical_crossentropy_takes_one_hot_targets_as_in_keras():
    one_hot = np.eye(3, dtype=np.float32)[[0, 2, 1, 1]]
    targets, encoder = keras.encode_targets(one_hot, "categorical_crossentropy")
    np.testing.assert_array_equal(targets, one_hot)
    assert encoder is None
    with pytest.raises(ValueError, match=r"^y: categorical_crossentropy takes one-hot targets "
                                         r".*'sparse_categorical_crossentropy'"):
        keras.encode_targets(np.array(["a", "b", "a", "c"]), "categorical_crossentropy")
