"""The model directory (jaxrnn.io.model_dir, through jaxrnn.models.save_model/load_model):
bit-exact reload in a fresh process, failed saves that keep the previous model, readers that see
one save whole while another process saves, files that are refused before they are read, only
process 0 writing, no path of the writing machine inside, and a directory that can be moved."""

import json
import os
import pathlib
import shutil
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _reference import assert_trees_close
from test_models import LENGTHS, V, _ids, _keras_example

from jaxrnn import models as M
from jaxrnn.io import model_dir, orbax_store
from jaxrnn.io.digest import sha256_arrays, sha256_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
def _small():
    return M.sequential([M.GRU(3), M.Dense(1)])


def _filled(model, value):
    """Params of ``model`` whose every entry is ``value``: one number identifies the save."""
    return jax.tree_util.tree_map(lambda a: jnp.full(a.shape, value, a.dtype),
                                  model.init(jax.random.key(0), 2))


def _weights_dir(path) -> str:
    header = json.loads((pathlib.Path(path) / "model.json").read_text())
    return os.path.join(path, *header["weights"]["path"].split("/"))


def _data_files(path):
    """The files of array data Orbax wrote (not its metadata)."""
    return [pathlib.Path(d, f) for d, _, fs in os.walk(_weights_dir(path)) for f in fs
            if os.path.basename(d) == "d"]


def _assert_same(a, b):
    got, want = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert [x.dtype for x in got] == [x.dtype for x in want]
    for x, y in zip(got, want, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


_LOAD_SCRIPT = """
import sys, numpy as np, jax.numpy as jnp
from jaxrnn.models import load_model
saved = load_model(sys.argv[1])
x = np.load(sys.argv[2])
out = saved.model.apply(saved.params, jnp.asarray(x), lengths=jnp.asarray(np.load(sys.argv[3])))
np.save(sys.argv[4], np.asarray(out))
print(saved.metrics["accuracy"], saved.preprocessing["vocab"][:2])
"""


@pytest.mark.slow  # a fresh interpreter imports JAX and Orbax (the same-process reload below)
def test_saved_model_reloads_bit_exact_in_a_fresh_process(tmp_path):
    model = _keras_example()
    params = jax.tree_util.tree_map(lambda a: a + 0.01, model.init(jax.random.key(7), None))
    vocab = [chr(97 + i) for i in range(V)]
    path = M.save_model(tmp_path / "model", model, params, preprocessing={"vocab": vocab},
                        metrics={"accuracy": 0.75})
    assert sorted(os.listdir(path)) == [".lock", "model.json", "v-000001"]
    ids, lengths = np.asarray(_ids(8)), np.asarray(LENGTHS)
    np.save(tmp_path / "x.npy", ids)
    np.save(tmp_path / "n.npy", lengths)
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    res = subprocess.run(
        [sys.executable, "-c", _LOAD_SCRIPT, path, str(tmp_path / "x.npy"),
         str(tmp_path / "n.npy"), str(tmp_path / "out.npy")],
        capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=300,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["0.75", "['a',", "'b']"]
    want = np.asarray(model.apply(params, jnp.asarray(ids), lengths=jnp.asarray(lengths)))
    np.testing.assert_array_equal(np.load(tmp_path / "out.npy"), want)
    # and in this process: the same params, leaf for leaf
    saved = M.load_model(path)
    assert_trees_close(saved.params, params, atol=0, rtol=0)
    assert saved.model.config == model.config


def test_a_save_that_fails_at_the_commit_keeps_the_previous_model(tmp_path, monkeypatch):
    model = _small()
    old, new = _filled(model, 1.0), _filled(model, 2.0)
    path = M.save_model(tmp_path / "m", model, old, metrics={"v": 1})
    before = sorted(os.listdir(path))

    def failing(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(model_dir, "atomic_write", failing)  # replacing model.json fails
    with pytest.raises(OSError, match="disk full"):
        M.save_model(path, model, new, metrics={"v": 2})
    monkeypatch.undo()
    saved = M.load_model(path)
    assert saved.metrics == {"v": 1}
    _assert_same(saved.params, old)
    assert os.listdir(tmp_path) == ["m"], "nothing may be left beside the directory"
    assert sorted(os.listdir(path)) == before, "nor the new version inside it"
    # a successful save replaces it
    M.save_model(path, model, new, metrics={"v": 2})
    assert M.load_model(path).metrics == {"v": 2}
    assert os.listdir(tmp_path) == ["m"]


def test_a_save_that_fails_midway_leaves_the_earlier_model_intact(tmp_path, monkeypatch):
    model = _small()
    old = model.init(jax.random.key(0), 2)
    path = M.save_model(tmp_path / "m", model, old, metrics={"run": 1})
    before = sorted(os.listdir(path))
    real = model_dir._write_weights

    def dies_midway(where, arrays):  # Orbax has written part of the new weights, then a crash
        real(where, dict(list(arrays.items())[:1]))
        raise OSError("disk full")

    monkeypatch.setattr(model_dir, "_write_weights", dies_midway)
    new = jax.tree_util.tree_map(lambda a: a + 1, old)
    with pytest.raises(OSError, match="disk full"):
        M.save_model(path, model, new, metrics={"run": 2})
    assert os.listdir(tmp_path) == ["m"]  # no temporary directory left beside it
    assert sorted(os.listdir(path)) == before  # nor inside it
    saved = M.load_model(path)
    assert saved.metrics == {"run": 1}
    _assert_same(saved.params, old)
    monkeypatch.setattr(model_dir, "_write_weights", real)
    M.save_model(path, model, new, metrics={"run": 2})  # and a good save replaces it
    assert M.load_model(path).metrics == {"run": 2}


def test_bad_directories_and_files_give_errors_naming_the_argument(tmp_path):
    model = _small()
    params = model.init(jax.random.key(0), 2)
    with pytest.raises(FileNotFoundError, match=r"^directory: no saved model at .*missing"):
        M.load_model(tmp_path / "nowhere")
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.txt").write_text("mine")
    with pytest.raises(FileNotFoundError, match=r"^directory: .* has no model.json"):
        M.load_model(tmp_path / "plain")
    with pytest.raises(ValueError, match=r"^directory: .* is not a saved model"):
        M.save_model(tmp_path / "plain", model, params)
    assert (tmp_path / "plain" / "notes.txt").read_text() == "mine"
    with pytest.raises(TypeError, match="^directory: expected a path"):
        M.load_model(None)
    with pytest.raises(ValueError, match=r"^params: leaf \[1\].w should have shape"):
        M.save_model(tmp_path / "x", model, (params[0], params[1]._replace(w=jnp.ones((2, 1)))))
    with pytest.raises(TypeError, match="^metrics: expected JSON-able"):
        M.save_model(tmp_path / "x", model, params, metrics={"a": np.float32(1)})
    path = M.save_model(tmp_path / "ok", model, params)
    for file in _data_files(path):  # flip one byte in each file of array data
        data = bytearray(file.read_bytes())
        data[len(data) // 2] ^= 0xFF
        file.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"^directory: weights/ in .*ok' is corrupt \(its file "
                                         r".* differs from its SHA-256 in model.json"):
        M.load_model(path)
    os.remove(file)  # the last file flipped: now missing
    with pytest.raises(ValueError, match=r"^directory: weights/ in .*ok' is corrupt \(its file "
                                         r".* is missing"):
        M.load_model(path)
    pathlib.Path(file.parent, "intruder").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"its file d/intruder is not in model.json"):
        M.load_model(path)
    shutil.rmtree(_weights_dir(path))
    with pytest.raises(FileNotFoundError, match=r"^directory: .*ok' has no v-000001/weights/"):
        M.load_model(path)
    (tmp_path / "ok" / "model.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"^directory: model.json .* is corrupt"):
        M.load_model(path)


def test_weights_reload_bit_exact_down_to_subnormals_and_signed_zeros(tmp_path):
    model = M.sequential([M.GRU(3), M.Dense(2)])
    params = model.init(jax.random.key(4), 2)
    # every leaf: subnormal float32 values, a -0.0 and a value needing all 24 mantissa bits
    params = jax.tree_util.tree_map(
        lambda a: (a * 1e-39).reshape(-1).at[0].set(-0.0).at[-1].set(1 + 2 ** -23)
        .reshape(a.shape), params)
    saved = M.load_model(M.save_model(tmp_path / "m", model, params))
    got, want = jax.tree_util.tree_leaves(saved.params), jax.tree_util.tree_leaves(params)
    assert [a.dtype for a in got] == [a.dtype for a in want]
    for a, b in zip(got, want, strict=True):
        np.testing.assert_array_equal(np.asarray(a).view(np.uint32),
                                      np.asarray(b).view(np.uint32))


# ------------------------------------------------------------------ saves while a reader loads

def _check_whole(saved):
    """One save, whole: every weight, the metrics and the preprocessing carry one number."""
    values = {float(v) for leaf in jax.tree_util.tree_leaves(saved.params)
              for v in np.unique(np.asarray(leaf))}
    assert len(values) == 1, f"a torn model: weights of several saves {sorted(values)}"
    (value,) = values
    assert saved.metrics == {"k": value} and saved.preprocessing == {"k": value}
    return value


def _save_k(path, model, k):
    return M.save_model(path, model, _filled(model, float(k)), metrics={"k": float(k)},
                        preprocessing={"k": float(k)})


def test_a_save_during_a_load_gives_the_old_model_or_the_new_one(tmp_path, monkeypatch):
    """A save commits between the moment a reader read model.json and the moment it reads the
    weights (once, then twice: the version the reader resolved is then gone): the reader
    returns one save whole, the one it started with or a newer one, never a mix."""
    model = _small()
    path = _save_k(tmp_path / "m", model, 1)
    real = orbax_store.read_arrays
    saves_during_read = []

    def read_while_saving(wdir):
        for _ in range(saves_during_read.pop() if saves_during_read else 0):
            k = len(model_dir._versions(path)) + 10
            _save_k(path, model, k)
        return real(wdir)

    monkeypatch.setattr(orbax_store, "read_arrays", read_while_saving)
    saves_during_read.append(1)
    assert _check_whole(M.load_model(path)) == 1.0  # its version is kept: the old model
    saves_during_read.append(2)
    got = _check_whole(M.load_model(path))  # its version was removed: read again, the newest
    assert got == float(json.loads((tmp_path / "m" / "model.json").read_text())["metrics"]["k"])
    assert sorted(n for n in os.listdir(path) if n.startswith("v-")) == ["v-000003", "v-000004"]


_WRITER = """
import sys, time, pathlib
import jax, jax.numpy as jnp
from jaxrnn import models as M
path, flag, seconds = sys.argv[1], pathlib.Path(sys.argv[2]), float(sys.argv[3])
model = M.sequential([M.GRU(3), M.Dense(1)])
template = model.init(jax.random.key(0), 2)
k, end = 2, None
while end is None or time.monotonic() < end:
    params = jax.tree_util.tree_map(lambda a: jnp.full(a.shape, float(k), a.dtype), template)
    M.save_model(path, model, params, metrics={"k": float(k)}, preprocessing={"k": float(k)})
    if end is None:
        flag.write_text("saving")
        end = time.monotonic() + seconds
    k += 1
print(k - 2)
"""


def _stress(tmp_path, seconds):
    model = _small()
    path = _save_k(tmp_path / "m", model, 1)
    flag = tmp_path / "writing"
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, path, str(flag), str(seconds)],
                              stdout=subprocess.PIPE, text=True, env=env, cwd=str(tmp_path))
    loads, errors, seen = 0, [], set()
    try:
        deadline = time.monotonic() + 300
        while not flag.exists():
            assert writer.poll() is None, "the writer died before its first save"
            assert time.monotonic() < deadline
            time.sleep(0.05)
        while writer.poll() is None:
            try:
                seen.add(_check_whole(M.load_model(path)))
            except (OSError, ValueError) as e:  # a transient error is a failure too
                errors.append(f"{type(e).__name__}: {e}")
            loads += 1
    finally:
        saves = int(writer.communicate(timeout=120)[0].strip() or 0)
    assert writer.returncode == 0
    assert not errors, f"{len(errors)} of {loads} loads failed, e.g. {errors[0]}"
    assert saves >= 2 and loads >= 5 and len(seen) >= 2, (saves, loads, seen)
    return loads, saves


@pytest.mark.slow
def test_a_reader_never_sees_a_torn_model_while_another_process_saves(tmp_path):
    loads, saves = _stress(tmp_path, seconds=3.0)
    print(f"{loads} loads during {saves} saves, all whole")


@pytest.mark.slow
def test_a_reader_never_sees_a_torn_model_over_many_saves(tmp_path):
    _stress(tmp_path, seconds=20.0)


# ------------------------------------------------------------------ files not what they say

def test_a_weights_file_that_is_not_a_regular_file_is_refused_at_once(tmp_path):
    model = _small()
    path = M.save_model(tmp_path / "m", model, model.init(jax.random.key(0), 2))
    victim = _data_files(path)[0]
    victim.unlink()
    victim.symlink_to("/dev/zero")
    start = time.monotonic()
    with pytest.raises(ValueError, match=r"is not a regular file"):
        M.load_model(path)
    victim.unlink()
    os.mkfifo(victim)  # a FIFO nobody writes: open() alone would block
    with pytest.raises(ValueError, match=r"is not a regular file"):
        M.load_model(path)
    victim.unlink()
    victim.write_bytes(b"\0" * 10_000)  # a regular file of another size than was written
    with pytest.raises(ValueError, match=r"has 10000 bytes where \d+ were written"):
        M.load_model(path)
    header = tmp_path / "m" / "model.json"
    header.unlink()
    header.symlink_to("/dev/zero")
    with pytest.raises(ValueError, match=r"model.json in .* is not a regular file"):
        M.load_model(path)
    assert time.monotonic() - start < 5


def test_an_older_format_directory_with_bit_flips_gives_the_digest_error(tmp_path):
    """The directories the previous version wrote (model.json of format jaxrnn.model/1 beside
    weights/ and a SHA-256 per file) still load; with flipped bits, every file is checked
    before Orbax reads one: the digest error, not an error from inside TensorStore. Its earlier
    layouts, which nothing could check before reading, are refused by name."""
    model = _small()
    params = model.init(jax.random.key(3), 2)
    arrays = model_dir.leaf_arrays(params)
    old = tmp_path / "old"
    old.mkdir()
    orbax_store.write_arrays(str(old / "weights"), arrays)
    files = {}
    for d, _, fs in os.walk(old / "weights"):
        for f in fs:
            full = os.path.join(d, f)
            files[os.path.relpath(full, old / "weights")] = sha256_file(full)
    header = {"format": "jaxrnn.model/1", "config": model.config, "input_size": 2,
              "weights": "weights", "weights_sha256": sha256_arrays(arrays),
              "weights_files": files}
    (old / "model.json").write_text(json.dumps(header))
    (old / "metrics.json").write_text(json.dumps({"acc": 0.5}))
    saved = M.load_model(old)
    _assert_same(saved.params, params)
    assert saved.metrics == {"acc": 0.5}
    for d, _, fs in os.walk(old / "weights"):
        for f in fs:
            p = pathlib.Path(d, f)
            data = bytearray(p.read_bytes())
            data[len(data) // 2] ^= 0x10
            p.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"is corrupt \(its file .* differs from its SHA-256"):
        M.load_model(old)
    del header["weights_files"]  # the layout before per-file digests
    (old / "model.json").write_text(json.dumps(header))
    with pytest.raises(ValueError, match=r"early 'jaxrnn.model/1' directory .* cannot be checked"):
        M.load_model(old)
    # a save over it writes the current format and clears the old layout
    M.save_model(old, model, params)
    assert sorted(os.listdir(old)) == [".lock", "model.json", "v-000001"]
    _assert_same(M.load_model(old).params, params)


def test_a_builder_that_is_a_json_list_says_what_was_expected(tmp_path):
    model = M.sequential([M.Dense(2)])
    path = M.save_model(tmp_path / "m", model, model.init(jax.random.key(0), 3))
    header = json.loads((tmp_path / "m" / "model.json").read_text())
    header["config"] = {"format": M.FORMAT, "architecture": ["jaxrnn.tasks.digits",
                                                             "architecture"], "config": {}}
    (tmp_path / "m" / "model.json").write_text(json.dumps(header))
    with pytest.raises(ValueError, match=r"^directory: model.json in .*: architecture: expected "
                                         r"the name of a registered builder, a string "
                                         r"'package.module:function' .* got list"):
        M.load_model(path)


# ------------------------------------------------------------------ who writes, and where it can go

def test_only_process_0_writes_a_model_directory(tmp_path, monkeypatch):
    model = _small()
    params = _filled(model, 1.0)
    monkeypatch.setattr(jax, "process_index", lambda *a, **k: 1)
    path = M.save_model(tmp_path / "m", model, params)
    assert path == str(tmp_path / "m") and not os.path.exists(path)
    monkeypatch.undo()
    M.save_model(tmp_path / "m", model, params, metrics={"by": 0})
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "m").rglob("*")}
    monkeypatch.setattr(jax, "process_index", lambda *a, **k: 3)
    M.save_model(tmp_path / "m", model, _filled(model, 2.0), metrics={"by": 3})
    monkeypatch.undo()
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "m").rglob("*")} == before
    assert M.load_model(tmp_path / "m").metrics == {"by": 0}


def _files_mentioning(root, needles):
    hits = []
    for d, _, fs in os.walk(root):
        for f in fs:
            blob = pathlib.Path(d, f).read_bytes()
            hits += [(os.path.join(d, f), n) for n in needles if n.encode() in blob]
    return hits


def test_no_path_of_the_writing_machine_and_the_directory_moves(tmp_path):
    model = _keras_example()
    params = model.init(jax.random.key(5), None)
    where = tmp_path / "deep" / "place"
    path = M.save_model(where / "m", model, params, metrics={"a": 1})
    M.save_model(path, model, params, metrics={"a": 2})  # a second version, the first kept
    needles = {str(tmp_path), os.path.realpath(tmp_path), "deep/place"}
    assert _files_mentioning(path, needles) == []
    moved = tmp_path / "elsewhere" / "renamed"
    moved.parent.mkdir()
    shutil.move(path, moved)
    saved = M.load_model(moved)
    _assert_same(saved.params, params)
    assert saved.metrics == {"a": 2}


def test_orbax_checkpoints_hold_no_absolute_path(tmp_path):
    import optax

    from jaxrnn import train
    from jaxrnn.io import sharded_store

    state = train.init_train_state({"w": jnp.ones((2, 3))}, optax.adam(0.1), 0)
    orbax_store.save_checkpoint(tmp_path / "ox", state, extra={"note": "x"})
    sharded_store.save_state(tmp_path / "sh", state)
    needles = {str(tmp_path), os.path.realpath(tmp_path)}
    assert _files_mentioning(tmp_path, needles) == []
    shutil.move(tmp_path / "ox", tmp_path / "ox2")
    loaded = orbax_store.load_checkpoint(tmp_path / "ox2", state)
    _assert_same(loaded.state.params, state.params)
