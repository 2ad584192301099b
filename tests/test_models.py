"""The model builder against hand composition of the engine, its config round trip, and saved
models reloaded in a fresh process."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxrnn
from jaxrnn import models as M
from jaxrnn.cells import registry

V, B, T = 11, 4, 6
LENGTHS = jnp.array([T, 3, 1, 0])


def _ids(seed=0):
    return jnp.asarray(np.random.default_rng(seed).integers(0, V, (B, T)), jnp.int32)


def _keras_example():
    return M.sequential([M.Embedding(V, 5), M.LSTM(6, return_sequences=True),
                         M.Bidirectional(M.GRU(4)), M.Dropout(0.2), M.Dense(3)])


@pytest.mark.slow
def test_keras_style_model_equals_hand_composition():
    """Embedding -> LSTM (sequences) -> Bidirectional GRU (summary) -> Dropout -> Dense: the
    forward GRU's last valid output and the backward GRU's output at step 0, then the head."""
    model = _keras_example()
    params = model.init(jax.random.key(0), None)
    ids = _ids()
    got = model.apply(params, ids, lengths=LENGTHS)
    assert got.shape == (B, 3) and not model.returns_sequences

    x = jnp.take(params[0], ids, axis=0)
    _, h1 = jaxrnn.run(jaxrnn.lstm(6), params[1], x, lengths=LENGTHS)
    _, yf = jaxrnn.run(jaxrnn.gru(4), params[2].forward, h1, lengths=LENGTHS)
    _, yb = jaxrnn.run(jaxrnn.gru(4), params[2].backward, h1, lengths=LENGTHS, reverse=True)
    idx = np.maximum(np.asarray(LENGTHS) - 1, 0)
    summary = np.concatenate([np.asarray(yf)[np.arange(B), idx], np.asarray(yb)[:, 0]], -1)
    summary[np.asarray(LENGTHS) == 0] = 0.0
    want = summary @ np.asarray(params[4].w) + np.asarray(params[4].b)
    np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
    # training mode: dropout needs a key and changes the output
    with pytest.raises(ValueError, match="^key: "):
        model.apply(params, ids, lengths=LENGTHS, deterministic=False)
    train = model.apply(params, ids, lengths=LENGTHS, key=jax.random.key(1), deterministic=False)
    assert not np.allclose(train, got)


def test_sequence_outputs_are_zero_at_padded_steps_and_equal_the_engine():
    model = M.sequential([M.RNN("elman", 4, return_sequences=True), M.Dense(2, "tanh")])
    params = model.init(jax.random.key(2), (T, 3))  # a shape ending with F works as well
    xs = jnp.asarray(np.random.default_rng(3).standard_normal((B, T, 3)), jnp.float32)
    got = model.apply(params, xs, lengths=LENGTHS)
    _, h = jaxrnn.run(jaxrnn.elman(4), params[0], xs, lengths=LENGTHS)
    want = np.tanh(np.asarray(h) @ np.asarray(params[1].w) + np.asarray(params[1].b))
    valid = np.arange(T) < np.asarray(LENGTHS)[:, None]
    np.testing.assert_allclose(np.asarray(got)[valid], want[valid], atol=1e-5, rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(got)[~valid], 0.0)


@pytest.mark.parametrize("name", registry.names(inputs="features"))
def test_every_registered_cell_builds_a_model(name):
    """The builder reads the registry: any registered feature cell is one RNN spec."""
    model = M.sequential([M.RNN(name, 3), M.Dense(2)])
    params = model.init(jax.random.key(0), 2)
    out = model.apply(params, jnp.ones((2, 4, 2)), lengths=jnp.array([4, 2]))
    cell = registry.make(name, 3)
    _, h = jaxrnn.run(cell, params[0], jnp.ones((2, 4, 2)), lengths=jnp.array([4, 2]))
    want = jaxrnn.last_valid(h, jnp.array([4, 2])) @ params[1].w + params[1].b
    np.testing.assert_allclose(out, want, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_config_is_json_and_rebuilds_the_same_model():
    model = M.sequential([M.Embedding(V, 5), M.RNN("min_gru", 4, return_sequences=True,
                                                    cell_options={"compute_dtype": "float32"}),
                          M.Bidirectional(M.LSTM(3, return_sequences=True, peephole=True),
                                          merge="sum"),
                          M.Dense(2)])
    text = json.dumps(model.config)
    again = M.from_config(json.loads(text))
    assert again.config == model.config
    params = model.init(jax.random.key(4), None)
    np.testing.assert_array_equal(again.apply(params, _ids(5), lengths=LENGTHS),
                                  model.apply(params, _ids(5), lengths=LENGTHS))


def test_specs_are_checked_when_built():
    with pytest.raises(ValueError, match="^units: "):
        M.LSTM(0)
    with pytest.raises(ValueError, match="^cell: expected one of"):
        M.RNN("lsmt", 4)
    with pytest.raises(ValueError, match="^cell: 'convlstm' takes frames"):
        M.RNN("convlstm", 4)
    with pytest.raises(TypeError, match="^cell_options: expected JSON-able"):
        M.LSTM(4, compute_dtype=jnp.bfloat16)
    with pytest.raises(ValueError, match=r"^layers\[1\]: a recurrent layer needs sequences"):
        M.sequential([M.LSTM(4), M.GRU(4)])
    with pytest.raises(ValueError, match=r"^layers\[1\]: an Embedding must be the first"):
        M.sequential([M.Dense(3), M.Embedding(3, 2)])
    with pytest.raises(ValueError, match="^activation: "):
        M.Dense(3, "swishy")
    with pytest.raises(ValueError, match="^config: expected format"):
        M.from_config({"layers": []})
    with pytest.raises(ValueError, match=r"^x: expected \(B, T\) integer ids"):
        model = _keras_example()
        model.apply(model.init(jax.random.key(0), None), jnp.ones((2, 3, 4), jnp.int32))


# --------------------------------------------------------------------------- Normalization

def _skewed_features(seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(12, 7, 3)) * [1.0, 10.0, 0.01] + [5.0, -3.0, 50.0]).astype(
        np.float32)


def test_normalization_adapts_to_the_valid_steps_and_is_part_of_the_model():
    """(x - mean) / std per feature over the valid steps, written out in NumPy; the statistics
    live in the config (rebuilt and saved with the model) and are never trained."""
    x = _skewed_features()
    lengths = np.array([7, 3, 5, 1, 7, 7, 2, 4, 6, 7, 7, 7])
    norm = M.Normalization().adapt(x, lengths)
    steps = np.concatenate([x[i, :n] for i, n in enumerate(lengths)]).astype(np.float64)
    np.testing.assert_allclose(norm.mean, steps.mean(0), rtol=1e-6)
    np.testing.assert_allclose(norm.variance, steps.var(0), rtol=1e-5)
    assert M.Normalization().adapt([x[i, :n] for i, n in enumerate(lengths)]) == norm
    model = M.sequential([norm, M.GRU(4), M.Dense(2)])
    plain = M.sequential([M.GRU(4), M.Dense(2)])
    params = model.init(jax.random.key(0), 3)
    scaled = ((x - np.float32(norm.mean)) / np.sqrt(np.float32(norm.variance)))
    np.testing.assert_allclose(model.apply(params, x, lengths=lengths),
                               plain.apply(params[1:], scaled, lengths=lengths),
                               rtol=1e-5, atol=1e-6)
    assert M.input_size_of(model, params) == 3
    rebuilt = M.from_config(json.loads(json.dumps(model.config)))
    np.testing.assert_array_equal(rebuilt.apply(params, x), model.apply(params, x))
    assert jax.tree_util.tree_leaves(params[0]) == []  # nothing for an optimiser to move


def test_normalization_matches_keras_normalization_after_adapt():
    os.environ.setdefault("KERAS_BACKEND", "jax")
    keras = pytest.importorskip("keras")

    if keras.backend.backend() != "jax":
        pytest.skip("keras runs on another backend here")
    rng = np.random.default_rng(1)  # well conditioned: Keras accumulates in float32
    x = (rng.normal(size=(12, 7, 3)) * [1.0, 10.0, 2.0] + [5.0, -3.0, 1.0]).astype(np.float32)
    x[:, :, 1] = 4.0  # a constant feature: variance 0, divided by Keras' epsilon floor
    theirs = keras.layers.Normalization(axis=-1)
    theirs.adapt(x)
    ours = M.sequential([M.Normalization().adapt(x)])
    np.testing.assert_allclose(ours.apply(ours.init(jax.random.key(0), 3), x),
                               np.asarray(theirs(x)), rtol=1e-5, atol=1e-5)


def test_normalization_specs_are_checked():
    with pytest.raises(ValueError, match="Normalization: not adapted"):
        M.sequential([M.Normalization(), M.GRU(4)])
    with pytest.raises(ValueError, match=r"layers\[1\]: a Normalization must be the first"):
        M.sequential([M.GRU(4, return_sequences=True), M.Normalization([0.0], [1.0])])
    with pytest.raises(ValueError, match="mean, variance: give both"):
        M.Normalization([0.0])
    with pytest.raises(ValueError, match="variance: expected values >= 0"):
        M.Normalization([0.0], [-1.0])
    model = M.sequential([M.Normalization([0.0, 1.0], [1.0, 4.0]), M.GRU(4)])
    with pytest.raises(ValueError, match="input_size: Normalization was adapted to 2 features"):
        model.init(jax.random.key(0), 3)


# --------------------------------------------------------------------------- one Model

def test_every_builder_returns_the_one_model_type_with_init_key_input_spec():
    """sequential, the CLI stack, the model directory's builder, the ensembles' classifier and
    the registered task architectures all return jaxrnn.models.Model, whose init takes
    (key, input_spec); nothing in the package asks inspect which kind it holds."""
    from jaxrnn.tasks import modeldir
    from jaxrnn.train import ensemble
    from jaxrnn.train import models as TM

    assert TM.Model is M.Model
    key = jax.random.key(0)
    built = {
        "sequential": (M.sequential([M.GRU(4), M.Dense(2)]), 3),
        "sequence_classifier": (TM.sequence_classifier(3, 2, cell="gru", hidden=4), 3),
        "recurrent_model": (modeldir.recurrent_model(cell="gru", hidden=4, outputs=2), 3),
        "ensemble_classifier": (ensemble.ensemble_classifier(3, 2, cell="gru", hidden=4), 3),
        "digits": (M.architecture("jaxrnn.tasks.digits:architecture", {
            "cell": "gru", "hidden": 4, "layers": 1, "bidirectional": False, "dropout": 0.0}),
            8),
        "memory": (M.architecture("jaxrnn.tasks.memory:architecture", {
            "cell": "gru", "hidden": 4, "n_in": 3, "n_out": 2, "per_step": False}), None),
    }
    for name, (model, spec) in built.items():
        assert type(model) is M.Model, name
        params = model.init(key, spec)
        x = jnp.ones((2, 5, 8 if name == "digits" else 3), jnp.float32)
        out = model.apply(params, x)
        assert out.shape[0] == 2 and np.isfinite(np.asarray(out)).all(), name
    with pytest.raises(ValueError, match="^input_spec: this model reads 3 features"):
        TM.sequence_classifier(3, 2, cell="gru", hidden=4).init(key, 5)
    package = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "jaxrnn")
    for folder, _, files in os.walk(package):
        for f in files:
            if f.endswith(".py"):
                with open(os.path.join(folder, f), encoding="utf-8") as fh:
                    assert "inspect.signature" not in fh.read(), os.path.join(folder, f)
