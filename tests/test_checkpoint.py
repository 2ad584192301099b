"""Checkpoints: bit-exact resume, atomic writes that survive failures, clear errors."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxrnn
from jaxrnn import train
from jaxrnn.data import BatchIterator
from jaxrnn.io import msgpack_store as ck


def apply(params, inputs, *, lengths=None, key=None, deterministic=True):
    h = jaxrnn.dropout(inputs, 0.3, key, deterministic=deterministic)  # uses the step's key
    return jnp.tanh(h @ params["w"]) @ params["v"]


def make_params(seed=0, hidden=4):
    r = np.random.default_rng(seed)
    return {"w": jnp.asarray(r.normal(size=(3, hidden)), jnp.float32),
            "v": jnp.asarray(r.normal(size=(hidden, 2)), jnp.float32)}


@pytest.fixture
def data(rng):
    x = rng.normal(size=(12, 3)).astype(np.float32)
    return {"inputs": x, "targets": np.stack([x.sum(1), x[:, 0]], 1).astype(np.float32)}


OPT = optax.adam(0.05)


def iter_forever(it):
    while True:
        yield from it


def assert_trees_equal(a, b):
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(la) == len(lb)
    for x, y in zip(la, lb, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# One compiled step for every test (no donation: the tests compare with states they keep).
STEP = train.make_train_step(apply, "mse", OPT, donate=False)


def train_n(data, n, state=None, position=None):
    step = STEP
    it = BatchIterator(data, 4, seed=3)
    if position is not None:
        it.set_position(position)
    state = state if state is not None else train.init_train_state(make_params(), OPT, 11)
    gen = iter_forever(it)
    for _ in range(n):
        state, _ = step(state, next(gen))
    return state, it


def test_resume_is_bit_exact(data, tmp_path):
    """N steps straight == k steps, save, load into a fresh state, N - k steps (epochs of 3
    batches, so the run crosses epoch boundaries and resumes mid-epoch)."""
    N, k = 8, 4
    straight, _ = train_n(data, N)
    first, it = train_n(data, k)
    ck.save_checkpoint(tmp_path, first, data_position=it.position)
    fresh = train.init_train_state(make_params(seed=99), OPT, 12345)  # different values
    loaded = ck.load_checkpoint(tmp_path, fresh)
    assert loaded.data_position == {"epoch": 1, "batch_index": 1, "seed": 3}
    resumed, _ = train_n(data, N - k, state=loaded.state, position=loaded.data_position)
    assert_trees_equal(resumed.params, straight.params)
    assert_trees_equal(resumed.opt_state, straight.opt_state)
    assert int(resumed.step) == N
    np.testing.assert_array_equal(jax.random.key_data(resumed.key),
                                  jax.random.key_data(straight.key))


def test_fit_resume_is_bit_exact(data, tmp_path):
    """fit stopped after 4 steps (mid-epoch) and resumed gives the same parameters and
    history as fit that never stopped."""
    kw = dict(epochs=3, batch_size=4, val_data=data, metrics=["rmse"], seed=5,
              progress=False, verbose=False, restore_best=False)
    straight = train.fit(apply, make_params(), "mse", OPT, data,
                         checkpoint_dir=tmp_path / "a", **kw)
    train.fit(apply, make_params(), "mse", OPT, data, checkpoint_dir=tmp_path / "b",
              max_steps=4, **kw)
    resumed = train.fit(apply, make_params(), "mse", OPT, data, checkpoint_dir=tmp_path / "b",
                        resume=True, **kw)
    assert_trees_equal(resumed.params, straight.params)
    for key in ("loss", "rmse", "val_loss", "val_rmse"):
        assert resumed.history[key] == straight.history[key]


@pytest.fixture
def saved_twice(data, tmp_path):
    """A directory with a checkpoint at step 2 (previous) and one at step 3 (latest)."""
    s2, it = train_n(data, 2)
    ck.save_checkpoint(tmp_path, s2, data_position=it.position)
    s3, it = train_n(data, 1, state=s2, position=it.position)
    ck.save_checkpoint(tmp_path, s3, data_position=it.position)
    return tmp_path, s2, s3


def target():
    return train.init_train_state(make_params(seed=1), OPT, 0)


def no_temp_files(directory):
    return not [f for f in os.listdir(directory) if f.endswith(".tmp")]


def test_failure_mid_write_keeps_last_good_checkpoint(saved_twice, data, monkeypatch):
    directory, _, s3 = saved_twice
    before = sorted(os.listdir(directory))
    real_fdopen = os.fdopen

    class HalfWriter:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, b):
            self.f.write(b[: len(b) // 2])
            raise OSError("disk full (simulated)")

    monkeypatch.setattr(ck.os, "fdopen", lambda fd, mode: HalfWriter(real_fdopen(fd, mode)))
    s4, _ = train_n(data, 1, state=s3)
    with pytest.raises(OSError, match="disk full"):
        ck.save_checkpoint(directory, s4)
    monkeypatch.undo()
    assert sorted(os.listdir(directory)) == before and no_temp_files(directory)
    loaded = ck.load_checkpoint(directory, target())
    assert int(loaded.state.step) == 3
    assert_trees_equal(loaded.state.params, s3.params)


def test_failing_serializer_keeps_last_good_checkpoint(saved_twice, monkeypatch):
    directory, _, s3 = saved_twice

    def broken(*a, **k):
        raise RuntimeError("serializer crashed (simulated)")

    monkeypatch.setattr(ck.serialization, "msgpack_serialize", broken)
    with pytest.raises(RuntimeError, match="serializer crashed"):
        ck.save_checkpoint(directory, s3._replace(step=jnp.asarray(99, jnp.int32)))
    monkeypatch.undo()
    assert int(ck.load_checkpoint(directory, target()).state.step) == 3


def test_crash_between_renames_falls_back_to_previous(saved_twice, data, monkeypatch):
    """If the process dies after the last good file became 'previous' but before the new one
    is in place, loading finds the last good state."""
    directory, _, s3 = saved_twice
    real_replace = os.replace
    calls = []

    def replace_then_die(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed between the renames (simulated)")
        real_replace(src, dst)

    monkeypatch.setattr(ck.os, "replace", replace_then_die)
    s4, _ = train_n(data, 1, state=s3)
    with pytest.raises(KeyboardInterrupt):
        ck.save_checkpoint(directory, s4)
    monkeypatch.undo()
    assert not os.path.exists(directory / ck.LATEST) and no_temp_files(directory)
    loaded = ck.load_checkpoint(directory, target())
    assert int(loaded.state.step) == 3
    assert_trees_equal(loaded.state.params, s3.params)


def test_corrupted_latest_falls_back_to_previous(saved_twice):
    directory, s2, _ = saved_twice
    path = directory / ck.LATEST
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) - 10])  # truncated
    with pytest.warns(UserWarning, match="checksum mismatch"):
        loaded = ck.load_checkpoint(directory, target())
    assert int(loaded.state.step) == 2
    assert_trees_equal(loaded.state.params, s2.params)


def test_unreadable_checkpoints_give_a_clear_error(tmp_path):
    (tmp_path / ck.LATEST).write_bytes(b"not a checkpoint")
    with pytest.raises(ck.CheckpointError, match="not a jaxrnn checkpoint"):
        ck.load_checkpoint(tmp_path, target())


def test_missing_directory_and_empty_directory(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ck.load_checkpoint(tmp_path / "nope", target())
    with pytest.raises(FileNotFoundError, match="no checkpoint in"):
        ck.load_checkpoint(tmp_path, target())
    (tmp_path / "file").write_text("x")
    with pytest.raises(ck.CheckpointError, match="exists and is not a directory"):
        ck.save_checkpoint(tmp_path / "file", target())


def test_mismatched_structure_names_the_entry(tmp_path):
    ck.save_checkpoint(tmp_path, target())
    wider = train.init_train_state(make_params(hidden=6), OPT, 0)
    with pytest.raises(ck.CheckpointError, match=r"state/params/v: expected float32\[6, 2\].*"
                                                 r"got float32\[4, 2\]"):
        ck.load_checkpoint(tmp_path, wider)
    other = train.init_train_state({**make_params(), "extra": jnp.zeros(2)}, OPT, 0)
    with pytest.raises(ck.CheckpointError, match=r"missing in checkpoint: \[.*extra"):
        ck.load_checkpoint(tmp_path, other)
    with pytest.raises(TypeError, match="state: expected a TrainState"):
        ck.save_checkpoint(tmp_path, make_params())


def test_extra_target_that_was_not_saved(tmp_path):
    ck.save_checkpoint(tmp_path, target(), extra={"note": "x"})
    assert ck.load_checkpoint(tmp_path, target()).extra["note"] == "x"
    with pytest.raises(ck.CheckpointError, match=r"extra\['best'\] was not saved"):
        ck.load_checkpoint(tmp_path, target(), extra_target={"best": make_params()})


class InterruptingIterator(BatchIterator):
    """Raises KeyboardInterrupt (as Ctrl-C would) when batch ``at`` of epoch 1 is due."""

    at = 2

    def __iter__(self):
        for batch in super().__iter__():
            if self.epoch == 1 and self.batch_index == self.at + 1:
                raise KeyboardInterrupt
            yield batch


def test_ctrl_c_saves_a_checkpoint_that_resumes_bit_exact(data, tmp_path, capsys):
    kw = dict(epochs=3, val_data=data, metrics=["rmse"], progress=False, verbose=False,
              restore_best=False)
    straight = train.fit(apply, make_params(), "mse", OPT, BatchIterator(data, 4, seed=5), **kw)
    with pytest.raises(KeyboardInterrupt):
        train.fit(apply, make_params(), "mse", OPT, InterruptingIterator(data, 4, seed=5),
                  checkpoint_dir=tmp_path, **kw)
    assert "interrupted: checkpoint saved at step 5 (epoch 2, batch 2)" in capsys.readouterr().out
    resumed = train.fit(apply, make_params(), "mse", OPT, BatchIterator(data, 4, seed=5),
                        checkpoint_dir=tmp_path, resume=True, **kw)
    assert_trees_equal(resumed.params, straight.params)
    assert resumed.history["loss"] == straight.history["loss"]


# --------------------------------------------------------------------------- rotation safety

def corrupt(path):
    blob = bytearray(path.read_bytes())
    blob[-5] ^= 0xFF  # one flipped byte in the body: the checksum no longer matches
    path.write_bytes(bytes(blob))


def test_corrupt_newest_plus_crash_in_the_next_save_keeps_a_readable_checkpoint(
        saved_twice, data, monkeypatch):
    """The newest file is corrupt and the next save dies before its file is in place: the
    good previous checkpoint must survive (it must not be replaced by the corrupt one)."""
    directory, s2, s3 = saved_twice
    corrupt(directory / ck.LATEST)
    real_replace = os.replace

    def die_on_the_final_rename(src, dst):
        if os.fspath(dst).endswith(ck.LATEST):
            raise KeyboardInterrupt("killed before the new file was in place (simulated)")
        real_replace(src, dst)

    monkeypatch.setattr(ck.os, "replace", die_on_the_final_rename)
    s4, _ = train_n(data, 1, state=s3)
    with pytest.raises(KeyboardInterrupt), pytest.warns(UserWarning, match="unreadable"):
        ck.save_checkpoint(directory, s4)
    monkeypatch.undo()
    assert ck.latest_checkpoint(directory) == os.path.join(directory, ck.PREVIOUS)
    with pytest.warns(UserWarning, match="checksum mismatch"):
        loaded = ck.load_checkpoint(directory, target())
    assert int(loaded.state.step) == 2
    assert_trees_equal(loaded.state.params, s2.params)
    # The next save that succeeds replaces the corrupt newest file and still keeps step 2.
    with pytest.warns(UserWarning, match="unreadable"):
        ck.save_checkpoint(directory, s4)
    assert int(ck.load_checkpoint(directory, target()).state.step) == 4
    prev = ck._read(os.path.join(directory, ck.PREVIOUS))
    assert int(prev["state"]["step"]) == 2


def test_latest_checkpoint_skips_unreadable_files(saved_twice):
    directory, _, _ = saved_twice
    assert ck.latest_checkpoint(directory) == os.path.join(directory, ck.LATEST)
    corrupt(directory / ck.LATEST)
    assert ck.latest_checkpoint(directory) == os.path.join(directory, ck.PREVIOUS)
    (directory / ck.PREVIOUS).write_bytes(b"garbage")
    assert ck.latest_checkpoint(directory) is None
    assert ck.latest_checkpoint(directory / "missing") is None


def test_stale_temporary_files_are_removed_live_ones_kept(tmp_path):
    old_style = tmp_path / ".checkpoint-k2j4h1.tmp"  # written before pids were in the name
    dead = tmp_path / ".checkpoint-999999999-x1.tmp"  # no such process
    live = tmp_path / f".checkpoint-{os.getppid()}-x2.tmp"  # the test runner's parent lives
    params_tmp = tmp_path / ".params-999999999-x3.tmp"
    for p in (old_style, dead, live, params_tmp):
        p.write_bytes(b"\0" * 1000)
    ck.save_checkpoint(tmp_path, target())
    left = sorted(f for f in os.listdir(tmp_path) if f.endswith(".tmp"))
    assert left == [live.name]


def test_sigkill_during_save_leaves_no_temporary_file_behind(tmp_path):
    """A real writer process killed with SIGKILL while its temporary file is on disk: the next
    save removes that file and the checkpoints stay readable."""
    import signal
    import subprocess
    import sys
    import time

    ck.save_checkpoint(tmp_path, target())
    flag = tmp_path / "writing"
    script = (
        "import sys, time, pathlib\n"
        "from jaxrnn.io import msgpack_store as ck\n"
        "d, flag = sys.argv[1], pathlib.Path(sys.argv[2])\n"
        "def hang():\n"
        "    flag.write_text('x'); time.sleep(120)\n"
        "ck._atomic_write(d + '/' + ck.LATEST, b'x' * 2_000_000, prefix='.checkpoint-',\n"
        "                 before_replace=hang)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path), str(flag)],
                            cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        deadline = time.monotonic() + 120
        while not flag.exists():
            assert proc.poll() is None, "the writer exited before writing"
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    stale = [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
    assert len(stale) == 1 and os.path.getsize(tmp_path / stale[0]) == 2_000_000
    assert int(ck.load_checkpoint(tmp_path, target()).state.step) == 0
    ck.save_checkpoint(tmp_path, target())
    assert no_temp_files(tmp_path)
    assert ck.latest_checkpoint(tmp_path) == os.path.join(tmp_path, ck.LATEST)


def test_load_checkpoint_argument_types_are_named(tmp_path):
    ck.save_checkpoint(tmp_path, target())
    with pytest.raises(TypeError, match=r"directory: expected a path .* got NoneType"):
        ck.load_checkpoint(None, target())
    with pytest.raises(TypeError, match=r"target: expected a TrainState"):
        ck.load_checkpoint(tmp_path, make_params())
    with pytest.raises(TypeError, match=r"extra_target: expected None or a dict"):
        ck.load_checkpoint(tmp_path, target(), extra_target=[make_params()])
    with pytest.raises(TypeError, match=r"directory: expected a path"):
        ck.save_checkpoint(3, target())
    with pytest.raises(TypeError, match=r"extra: expected None or a dict"):
        ck.save_checkpoint(tmp_path, target(), extra=["x"])
    with pytest.raises(TypeError, match=r"directory: expected a path"):
        ck.latest_checkpoint(None)


def test_extra_is_encoded_by_the_module(tmp_path):
    """JSON-able entries come back as they were (no caller-side json.dumps), pytrees as arrays
    (restored against extra_target), None as None."""
    history = {"loss": [0.5, float("nan"), 1e-30], "val_loss": []}
    extra = {"history": history, "count": 3, "name": "run", "nothing": None,
             "best": make_params(seed=4), "maybe": None}
    ck.save_checkpoint(tmp_path, target(), extra=extra)
    got = ck.load_checkpoint(tmp_path, target(),
                             extra_target={"best": make_params(), "maybe": make_params()}).extra
    assert got["history"]["loss"][0] == 0.5 and np.isnan(got["history"]["loss"][1])
    assert got["history"]["loss"][2] == 1e-30 and got["history"]["val_loss"] == []
    assert (got["count"], got["name"], got["nothing"], got["maybe"]) == (3, "run", None, None)
    assert_trees_equal(got["best"], make_params(seed=4))
    raw = ck.load_checkpoint(tmp_path, target()).extra["best"]
    np.testing.assert_array_equal(raw["w"], make_params(seed=4)["w"])


def test_fit_resumes_a_checkpoint_written_by_the_previous_format(data, tmp_path):
    """Before extra was encoded here, fit wrote history and monitor as JSON text and "nothing"
    as {}: such a checkpoint still resumes bit-exactly."""
    import json

    kw = dict(epochs=3, batch_size=4, val_data=data, seed=5, progress=False, verbose=False,
              restore_best=False)
    straight = train.fit(apply, make_params(), "mse", OPT, data, **kw)
    train.fit(apply, make_params(), "mse", OPT, data, checkpoint_dir=tmp_path, max_steps=4,
              **kw)
    path = os.path.join(tmp_path, ck.LATEST)
    body = ck._read(path)
    old = {"history": json.dumps(body["extra"]["history"] and json.loads(
               body["extra"]["history"])),
           "monitor": json.dumps(json.loads(body["extra"]["monitor"])),
           "acc": body["extra"]["acc"], "best_params": {}}
    body["extra"] = old
    del body["extra_kinds"]
    with open(path, "wb") as f:
        f.write(ck._frame(body))
    resumed = train.fit(apply, make_params(), "mse", OPT, data, checkpoint_dir=tmp_path,
                        resume=True, **kw)
    assert_trees_equal(resumed.params, straight.params)
    assert resumed.history["loss"] == straight.history["loss"]
