"""The store protocol: formats are registered classes found by name, a new format is one class,
and the package has one SHA-256 for what it persists."""

import os
import pickle
import re

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxrnn import io, train
from jaxrnn.io import store
from jaxrnn.train.epochs import checkpoint_store

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def apply(params, inputs, *, lengths=None, key=None, deterministic=True):
    return jnp.tanh(inputs @ params["w"]) @ params["v"]


def make_params():
    r = np.random.default_rng(0)
    return {"w": jnp.asarray(r.normal(size=(3, 4)), jnp.float32),
            "v": jnp.asarray(r.normal(size=(4, 2)), jnp.float32)}


DATA = {"inputs": np.random.default_rng(1).normal(size=(12, 3)).astype(np.float32),
        "targets": np.random.default_rng(2).normal(size=(12, 2)).astype(np.float32)}


def test_the_built_in_formats_are_registered_stores():
    assert io.store_names() == ("msgpack", "orbax", "orbax-sharded")
    for name in io.store_names():
        s = checkpoint_store(name)
        assert isinstance(s, io.Store) and s.name == name
    with pytest.raises(ValueError, match=r"^checkpoint_format: expected one of \('msgpack', "
                                         r"'orbax', 'orbax-sharded'\), got 'zip'"):
        checkpoint_store("zip")
    with pytest.raises(ValueError, match=r"^checkpoint_format: expected one of"):
        train.fit(apply, make_params(), "mse", optax.adam(0.1), DATA, epochs=1, batch_size=4,
                  checkpoint_format="zip", progress=False, verbose=False)
    with pytest.raises(TypeError, match=r"lacks \['latest'\]"):
        store.register(type("Half", (), {"name": "half", "save": print, "load": print}))


def test_a_new_format_is_one_registered_class_and_fit_resumes_through_it(tmp_path,
                                                                         monkeypatch):
    """A pickle store written in a few lines: fit saves, finds and resumes through it, and the
    resumed run equals the uninterrupted one bit for bit."""
    monkeypatch.setattr(store, "_STORES", dict(store._STORES))  # registered for this test only
    calls = []

    @store.register
    class PickleStore:
        name = "pickle"

        def save(self, directory, state, *, data_position=None, extra=None):
            calls.append("save")
            os.makedirs(directory, exist_ok=True)
            path = os.path.join(directory, "state.pkl")
            blob = io.checkpoint.body(state, data_position, extra)
            with open(path, "wb") as f:
                pickle.dump(blob, f)
            return path

        def latest(self, directory):
            path = os.path.join(directory, "state.pkl")
            return path if os.path.isfile(path) else None

        def load(self, directory, target, *, extra_target=None):
            calls.append("load")
            path = self.latest(directory)
            with open(path, "rb") as f:
                return io.checkpoint.restore(pickle.load(f), target, extra_target or {}, path)

    kw = dict(epochs=2, batch_size=6, seed=5, progress=False, verbose=False)
    straight = train.fit(apply, make_params(), "mse", optax.adam(0.05), DATA, **kw)
    train.fit(apply, make_params(), "mse", optax.adam(0.05), DATA, checkpoint_dir=tmp_path,
              checkpoint_format="pickle", max_steps=3, **kw)
    assert os.listdir(tmp_path) == ["state.pkl"] and "save" in calls
    resumed = train.fit(apply, make_params(), "mse", optax.adam(0.05), DATA,
                        checkpoint_dir=tmp_path, checkpoint_format="pickle", resume=True, **kw)
    assert "load" in calls
    for name in ("w", "v"):
        np.testing.assert_array_equal(np.asarray(resumed.params[name]),
                                      np.asarray(straight.params[name]))
    assert resumed.history["loss"] == straight.history["loss"]


def test_sha256_is_written_in_one_module():
    """hashlib is used in jaxrnn/digest.py only (the bottom floor, so that the kernels' build
    cache key comes from it as well as every checksum of io/)."""
    found = []
    for folder, _, files in os.walk(os.path.join(ROOT, "jaxrnn")):
        for f in files:
            if f.endswith(".py"):
                path = os.path.join(folder, f)
                with open(path, encoding="utf-8") as fh:
                    if re.search(r"\bhashlib\b|sha256\(", fh.read()):
                        found.append(os.path.relpath(path, ROOT))
    assert sorted(found) == [os.path.join("jaxrnn", "digest.py")]
