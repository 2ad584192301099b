"""Checkpoints in Orbax's format keep the guarantees of the msgpack file: bit-exact resume of
fit and fit_stream, a corrupt newest step plus a crash in the next save still leaves a readable
checkpoint, latest_checkpoint skips unreadable steps."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

pytest.importorskip("orbax.checkpoint")

import jaxrnn  # noqa: E402
from jaxrnn import train  # noqa: E402
from jaxrnn.io import orbax_store as ox  # noqa: E402


def apply(params, inputs, *, lengths=None, key=None, deterministic=True):
    return jnp.tanh(inputs @ params["w"]) @ params["v"]


def make_params(seed=0):
    r = np.random.default_rng(seed)
    return {"w": jnp.asarray(r.normal(size=(3, 4)), jnp.float32),
            "v": jnp.asarray(r.normal(size=(4, 2)), jnp.float32)}


def make_data():
    x = np.random.default_rng(1).normal(size=(10, 3)).astype(np.float32)
    return {"inputs": x, "targets": np.stack([x.sum(1), x[:, 0]], 1)}


OPT = optax.adam(0.05)


def state_at(step, seed=0):
    s = train.init_train_state(make_params(seed), OPT, 0)
    return s._replace(step=jnp.asarray(step, jnp.int32))


def corrupt_step(path):
    """Flip a byte in every array file of an Orbax step directory."""
    for root, _, files in os.walk(os.path.join(path, "arrays")):
        for f in files:
            p = os.path.join(root, f)
            if os.path.getsize(p) > 16 and f != "commit_success.txt":
                with open(p, "rb") as fh:
                    blob = bytearray(fh.read())
                blob[len(blob) // 2] ^= 0xFF
                with open(p, "wb") as fh:
                    fh.write(bytes(blob))


@pytest.mark.slow
def test_fit_resume_is_bit_exact_with_orbax(tmp_path):
    data = make_data()
    kw = dict(epochs=3, batch_size=4, val_data=data, seed=5, restore_best=True, patience=5,
              progress=False, verbose=False, checkpoint_format="orbax")
    straight = train.fit(apply, make_params(), "mse", OPT, data, **kw)
    train.fit(apply, make_params(), "mse", OPT, data, checkpoint_dir=tmp_path, max_steps=4, **kw)
    assert ox.latest_checkpoint(tmp_path) is not None
    resumed = train.fit(apply, make_params(), "mse", OPT, data, checkpoint_dir=tmp_path,
                        resume=True, **kw)
    for k in ("w", "v"):
        np.testing.assert_array_equal(resumed.params[k], straight.params[k])
        np.testing.assert_array_equal(resumed.state.params[k], straight.state.params[k])
    assert resumed.history["loss"] == straight.history["loss"]
    assert resumed.best_epoch == straight.best_epoch


def test_corrupt_newest_plus_crash_in_the_next_save_keeps_a_readable_step(tmp_path,
                                                                          monkeypatch):
    ox.save_checkpoint(tmp_path, state_at(2), extra={"note": "two"})
    newest = ox.save_checkpoint(tmp_path, state_at(3), extra={"note": "three"})
    assert ox.latest_checkpoint(tmp_path) == newest
    corrupt_step(newest)
    assert ox.latest_checkpoint(tmp_path) == os.path.join(tmp_path, "0")
    ocp = ox._ocp()

    def crash(self, *a, **k):
        raise KeyboardInterrupt("killed during the save (simulated)")

    monkeypatch.setattr(ocp.CheckpointManager, "save", crash)
    with pytest.raises(KeyboardInterrupt), pytest.warns(UserWarning, match="unreadable"):
        ox.save_checkpoint(tmp_path, state_at(4))
    monkeypatch.undo()
    loaded = ox.load_checkpoint(tmp_path, state_at(0))
    assert int(loaded.state.step) == 2 and loaded.extra["note"] == "two"
    # Saves go on; the good step stays until two newer good ones exist.
    ox.save_checkpoint(tmp_path, state_at(5))
    assert int(ox.load_checkpoint(tmp_path, state_at(0)).state.step) == 5
    ox.save_checkpoint(tmp_path, state_at(6))
    steps = sorted(int(d) for d in os.listdir(tmp_path) if d.isdigit())
    assert len(steps) == 2


def test_load_falls_back_and_reports_unreadable_steps(tmp_path):
    ox.save_checkpoint(tmp_path, state_at(1, seed=1))
    newest = ox.save_checkpoint(tmp_path, state_at(2))
    corrupt_step(newest)
    with pytest.warns(UserWarning, match="newest checkpoint unreadable"):
        loaded = ox.load_checkpoint(tmp_path, state_at(0))
    assert int(loaded.state.step) == 1
    np.testing.assert_array_equal(loaded.state.params["w"], make_params(1)["w"])
    corrupt_step(os.path.join(tmp_path, "0"))
    assert ox.latest_checkpoint(tmp_path) is None
    with pytest.raises(train.CheckpointError, match="no readable checkpoint"):
        ox.load_checkpoint(tmp_path, state_at(0))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no checkpoint in"):
        ox.load_checkpoint(empty, state_at(0))
    with pytest.raises(TypeError, match="directory: expected a path"):
        ox.load_checkpoint(None, state_at(0))
    with pytest.raises(ValueError, match="checkpoint_format: expected one of"):
        train.fit(apply, make_params(), "mse", OPT, make_data(), checkpoint_format="zip")


def test_fit_stream_resume_is_bit_exact_with_orbax(tmp_path):
    from jaxrnn.train import tbptt

    ids = np.tile([0, 1, 2, 1], 60)
    data = {"inputs": tbptt.batchify(ids[:-1, None].astype(np.float32), 2),
            "targets": tbptt.batchify(ids[1:, None].astype(np.float32), 2)}
    cell = jaxrnn.gru(4)

    def apply_s(params, inputs, *, carry=None, key=None, deterministic=True):
        carry, ys = jaxrnn.run(cell, params["cell"], inputs, carry=carry)
        return carry, ys @ params["out"]

    params = {"cell": cell.init(jax.random.key(0), 1), "out": jnp.ones((4, 1)) * 0.1}
    kw = dict(epochs=2, progress=False, verbose=False, checkpoint_format="orbax")
    straight = train.fit_stream(apply_s, params, "mse", OPT, data, 10, **kw)
    train.fit_stream(apply_s, params, "mse", OPT, data, 10, checkpoint_dir=tmp_path,
                     max_steps=17, **kw)
    resumed = train.fit_stream(apply_s, params, "mse", OPT, data, 10, checkpoint_dir=tmp_path,
                               resume=True, **kw)
    for a, b in zip(jax.tree_util.tree_leaves(resumed.params),
                    jax.tree_util.tree_leaves(straight.params), strict=True):
        np.testing.assert_array_equal(a, b)
    assert resumed.history["loss"] == straight.history["loss"]


def test_the_sharded_store_round_trips_state_position_and_extra(tmp_path):
    from jaxrnn.io import sharded_store

    store = jaxrnn.io.get_store("orbax-sharded")
    assert store.latest(tmp_path) is None
    best = make_params(seed=3)
    extra = {"history": {"loss": [0.5, 0.25]}, "best": best, "nothing": None}
    store.save(tmp_path, state_at(2), data_position={"epoch": 1, "batch_index": 2, "seed": 5},
               extra=extra)
    newest = store.save(tmp_path, state_at(3), extra=extra)
    assert store.latest(tmp_path) == newest == os.path.join(tmp_path, "1")
    ck = store.load(tmp_path, state_at(0), extra_target={"best": make_params()})
    assert int(ck.state.step) == 3 and ck.data_position is None and ck.path == newest
    assert ck.extra["history"] == {"loss": [0.5, 0.25]} and ck.extra["nothing"] is None
    for a, b in zip(jax.tree_util.tree_leaves(ck.extra["best"]), jax.tree_util.tree_leaves(best),
                    strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert sharded_store.restore_metadata(tmp_path, 0)["data_position"] == {
        "epoch": 1, "batch_index": 2, "seed": 5}
    with pytest.raises(jaxrnn.io.CheckpointError, match="holds other arrays than the target"):
        store.load(tmp_path, train.init_train_state({"w": jnp.ones((5,))}, OPT, 0))


@pytest.mark.slow
def test_fit_resume_is_bit_exact_with_the_sharded_store(tmp_path):
    """The store every process of a run writes (orbax-sharded), used by fit in one process:
    the state, the data position and extra (JSON and pytrees) come back, resume is bit-exact."""
    data = make_data()
    kw = dict(epochs=2, batch_size=4, seed=5, progress=False, verbose=False, val_data=data,
              restore_best=True)
    straight = train.fit(apply, make_params(), "mse", OPT, data, **kw)
    train.fit(apply, make_params(), "mse", OPT, data, checkpoint_dir=tmp_path, max_steps=4,
              checkpoint_format="orbax-sharded", **kw)
    resumed = train.fit(apply, make_params(), "mse", OPT, data, checkpoint_dir=tmp_path,
                        resume=True, checkpoint_format="orbax-sharded", **kw)
    for a, b in zip(jax.tree_util.tree_leaves(resumed.params),
                    jax.tree_util.tree_leaves(straight.params), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert resumed.history["loss"] == straight.history["loss"]
