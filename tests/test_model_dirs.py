"""Built-in tasks write one model directory that another process rebuilds from model.json alone
(a registered architecture for networks sequential cannot express) and predicts with exactly
as the training process did."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrnn import cli
from jaxrnn import models as M
from jaxrnn.tasks import modeldir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# A fresh process that knows nothing of the task: jaxrnn.models.load_model, then apply.
_APPLY_SCRIPT = """
import sys, numpy as np
from jaxrnn.models import load_model
saved = load_model(sys.argv[1])
with np.load(sys.argv[2]) as f:
    args = [f[f"a{i}"] for i in range(len(f.files))]
np.save(sys.argv[3], np.asarray(saved.model.apply(saved.params, *args)))
"""


def _apply_in_fresh_process(tmp_path, directory, *args):
    np.savez(tmp_path / "in.npz", **{f"a{i}": np.asarray(a) for i, a in enumerate(args)})
    env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
    res = subprocess.run([sys.executable, "-c", _APPLY_SCRIPT, str(directory),
                          str(tmp_path / "in.npz"), str(tmp_path / "out.npy")],
                         capture_output=True, text=True, env=env, cwd=str(tmp_path), timeout=300)
    assert res.returncode == 0, res.stderr
    return np.load(tmp_path / "out.npy")


@pytest.fixture
def saved_params(monkeypatch):
    """The params each training run hands to the model directory, as trained in this
    process."""
    seen = []
    real = modeldir.save_task

    def spy(args, **kw):
        seen.append(kw["params"])
        return real(args, **kw)

    monkeypatch.setattr(modeldir, "save_task", spy)
    return seen


@pytest.mark.slow
def test_digits_directory_predicts_in_a_fresh_process_as_trained(tmp_path, saved_params,
                                                                 capsys):
    from jaxrnn.tasks import digits

    out = tmp_path / "run"
    assert cli.main(["train", "--limit", "40", "--epochs", "1", "--hidden", "4",
                     "--no-progress", "--out", str(out)]) == 0
    assert sorted(os.listdir(out / "model")) == [".lock", "model.json", "v-000001"]
    assert not list(out.glob("*_model.msgpack"))
    header = json.loads((out / "model" / "model.json").read_text())
    assert header["config"]["architecture"] == "jaxrnn.tasks.digits:architecture"
    (params,) = saved_params
    x = digits.load_splits(40)["test"]["inputs"]
    want = np.asarray(digits.architecture(header["config"]["config"]).apply(params, x))
    np.testing.assert_array_equal(_apply_in_fresh_process(tmp_path, out / "model", x), want)

    # jaxrnn predict finds the task from the directory alone; its probabilities are softmax(want)
    np.savez(tmp_path / "x.npz", x=x)
    capsys.readouterr()
    assert cli.main(["predict", "--model", str(out / "model"), "--input",
                     str(tmp_path / "x.npz"), "--output", str(tmp_path / "p.csv")]) == 0
    rows = [r.split(",") for r in (tmp_path / "p.csv").read_text().splitlines()[1:]]
    probs = np.asarray([[float(v) for v in r[2:]] for r in rows])
    e = np.exp(want - want.max(1, keepdims=True))
    np.testing.assert_allclose(probs, e / e.sum(1, keepdims=True), rtol=1e-5)
    assert [int(r[1]) for r in rows] == want.argmax(1).tolist()


def test_a_single_file_model_of_an_older_version_is_not_read(tmp_path):
    """0.1.0 had no users: evaluate reads the model directory only, and says how to get one."""
    from jaxrnn.tasks import digits

    (tmp_path / "digits_model.msgpack").write_bytes(b"JAXRNN-CKPT-1\n")
    args = cli.build_parser("digits").parse_args(["evaluate", "--out", str(tmp_path)])
    with pytest.raises(FileNotFoundError, match=r"--model: .*model' does not exist \(train "
                                                r"first\): run `jaxrnn train --task digits`"):
        modeldir.load_task(args, task="digits")
    assert not hasattr(digits, "MODEL_FILE")


def _tiny_lexicon():
    words = ["cat", "bat", "tab", "act", "cab", "tac", "abc", "bca", "cba", "acb"]
    sound = {"a": "AE", "b": "B", "c": "K", "t": "T"}
    return {w: [[sound[c] for c in w]] for w in words}


@pytest.mark.slow
def test_g2p_directory_decodes_in_a_fresh_process_as_trained(tmp_path, saved_params,
                                                             monkeypatch, capsys):
    from jaxrnn.tasks import g2p

    monkeypatch.setattr(g2p, "load_cmudict", _tiny_lexicon)
    out = tmp_path / "run"
    assert cli.main(["train", "--task", "g2p", "--epochs", "2", "--hidden", "8", "--embed", "4",
                     "--test-words", "3", "--batch-size", "4", "--out", str(out)]) == 0
    assert not (out / "g2p_params.npz").exists()
    header = json.loads((out / "model" / "model.json").read_text())
    assert header["config"]["architecture"] == "jaxrnn.tasks.g2p:architecture"
    (params,) = saved_params
    arch = g2p.architecture(header["config"]["config"])
    src, sl, tgt, tl = (jnp.asarray(a) for a in g2p.pad_batch(
        [([1, 2, 3], [3, 4]), ([4, 1], [4, 3, 5])]))
    want = np.asarray(arch.apply(params, src, sl, tgt, tl))
    got = _apply_in_fresh_process(tmp_path, out / "model", src, sl, tgt, tl)
    np.testing.assert_array_equal(got, want)

    # generate reads the directory (no lexicon needed: the vocabularies are in model.json)
    monkeypatch.setattr(g2p, "load_cmudict", None)
    capsys.readouterr()
    assert cli.main(["generate", "--task", "g2p", "--out", str(out), "--text", "cab tac"]) == 0
    assert capsys.readouterr().out.startswith("cab  ")


def test_a_model_json_naming_an_unregistered_builder_is_refused_before_any_import(tmp_path):
    model = M.sequential([M.Dense(2)])
    path = M.save_model(tmp_path / "m", model, model.init(jax.random.key(0), 3))
    header = json.loads((tmp_path / "m" / "model.json").read_text())
    header["config"] = {"format": M.FORMAT, "architecture": "no_such_module_here:build",
                        "config": {}}
    (tmp_path / "m" / "model.json").write_text(json.dumps(header))
    # an import would raise ModuleNotFoundError; the registry check comes first
    with pytest.raises(ValueError, match="'no_such_module_here:build' is not a registered"):
        M.load_model(path)
    with pytest.raises(ValueError, match="name: expected 'package.module:function'"):
        M.register_architecture("no colon")


def test_a_registered_architecture_saves_and_reloads_bit_exact(tmp_path):
    from jaxrnn.tasks import music

    config = {"cell": "gru", "hidden": 5, "layers": 2, "dropout": 0.0, "n_pitches": 6,
              "low": 60, "grid": 0.5}
    model = modeldir.task_architecture("music", config)
    params = jax.tree_util.tree_map(lambda a: a + 0.125, model.init(jax.random.key(1)))
    path = modeldir.save(tmp_path / "m", task="music", model=model, params=params,
                         metrics={"test_nll": 1.5})
    run = modeldir.load(path, task="music")
    assert jax.tree_util.tree_structure(run.params) == jax.tree_util.tree_structure(params)
    for a, b in zip(jax.tree_util.tree_leaves(run.params), jax.tree_util.tree_leaves(params),
                    strict=True):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    rolls = np.random.default_rng(0).integers(0, 2, (2, 7, 6)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(run.model.apply(run.params, rolls)),
                                  np.asarray(music.make_model(config)[3](params, rolls)))
    assert run.metrics == {"test_nll": 1.5}


def test_predict_on_a_built_in_dataset_model_fails_in_one_line(tmp_path, capsys):
    config = {"cell": "gru", "hidden": 2, "layers": 1, "bidirectional": False, "dropout": 0.0,
              "horizon": 3}
    model = modeldir.task_architecture("forecast", config)
    path = modeldir.save_task(None, task="forecast", config=config,
                              params=model.init(jax.random.key(0)),
                              directory=str(tmp_path / "elnino_model"))
    (tmp_path / "x.csv").write_text("a\n1\n2\n")
    capsys.readouterr()
    assert cli.main(["predict", "--model", path, "--input", str(tmp_path / "x.csv"),
                     "--output", str(tmp_path / "p.csv")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--model:" in err and "built-in forecast dataset" in err
    assert not (tmp_path / "p.csv").exists()


def test_builtin_evaluate_refuses_an_own_data_model_by_name():
    """A model trained on the user's file has no built-in architecture config: the built-in
    path says which option to use instead of failing with a KeyError."""
    from types import SimpleNamespace

    from jaxrnn.tasks import modeldir

    run = modeldir.SavedRun("sentiment", SimpleNamespace(config={"layers": []}), None, {}, {},
                            "runs/s/model")
    with pytest.raises(ValueError, match=r"--model: 'runs/s/model' holds a sentiment model "
                                         r"trained on your own file.*--csv FILE"):
        modeldir.config_of(run)
