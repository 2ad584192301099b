"""The command line end to end with tiny runs, and every bad-input path."""

import re
import sys

import numpy as np
import pytest

from jaxrnn import cli

TINY = ["--epochs", "1", "--hidden", "4", "--limit", "120", "--batch-size", "16",
        "--no-progress"]


def test_train_evaluate_and_resume_digits(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", *TINY, "--cell", "elman", "--out", str(out)]
    assert cli.main(args) == 0
    text = capsys.readouterr().out
    acc = float(re.search(r"test accuracy: ([0-9.]+)", text).group(1))
    assert 0.0 <= acc <= 1.0
    plot = re.search(r"learning curves: (\S+)", text).group(1)
    with open(plot, "rb") as f:
        assert f.read(4) == b"\x89PNG"
    assert (out / "checkpoints" / "checkpoint.msgpack").exists()
    # evaluate reloads the saved model (its config comes from the file) and prints the same.
    assert cli.main(["evaluate", "--limit", "120", "--out", str(out)]) == 0
    again = float(re.search(r"test accuracy: ([0-9.]+)", capsys.readouterr().out).group(1))
    assert again == acc
    # --resume with more epochs continues from the checkpoint: only epoch 2 runs.
    args[args.index("--epochs") + 1] = "2"
    assert cli.main([*args, "--task", "digits", "--resume"]) == 0
    text = capsys.readouterr().out
    assert "resumed from" in text and "epoch 2/2" in text and "epoch 1/2" not in text


@pytest.mark.parametrize("argv,message", [
    (["train", "--cell", "transformer"], "invalid choice: 'transformer'"),
    (["train", "--hidden", "-3"], "expected a positive integer, got -3"),
    (["train", "--layers", "0"], "expected a positive integer, got 0"),
    (["train", "--dropout", "1.5"], r"expected a number in \[0, 1\), got 1.5"),
    (["train", "--lr", "0"], "expected a positive number, got 0.0"),
    (["train", "--epochs", "-1"], "expected an integer >= 0, got -1"),
    (["train", "--task", "nonexistent"], "unknown task 'nonexistent'"),
])
def test_bad_arguments_exit_with_a_clear_message(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(argv)
    assert e.value.code == 2
    assert re.search(message, capsys.readouterr().err)


def test_generate_on_a_task_without_it(capsys):
    assert cli.main(["generate"]) == 2
    assert "the task 'digits' has no 'generate'" in capsys.readouterr().err


def test_evaluate_without_a_trained_model(tmp_path, capsys):
    assert cli.main(["evaluate", "--out", str(tmp_path)]) == 2
    assert "does not exist (train first)" in capsys.readouterr().err


def test_missing_dataset_package_says_how_to_install(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # import now fails
    assert cli.main(["train", *TINY, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "scikit-learn" in err and 'pip install "jaxrnn[data]"' in err


def test_common_clip_norm_is_validated_by_the_parser(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["train", *TINY, "--clip-norm", "-1", "--out", str(tmp_path)])
    assert e.value.code == 2
    assert "--clip-norm: expected a positive number" in capsys.readouterr().err


def test_demo_subcommand_still_works(capsys):
    assert cli.main(["demo", "scan", "--batch", "2", "--steps", "3", "--features", "2",
                     "--hidden", "4"]) == 0
    assert "lstm: ys (2, 3, 4)" in capsys.readouterr().out


def test_digits_loader_reads_what_sklearn_load_digits_returns():
    from jaxrnn.tasks.digits import load_digits_arrays

    datasets = pytest.importorskip("sklearn.datasets")
    d = datasets.load_digits()
    x, y = load_digits_arrays()
    np.testing.assert_array_equal(x, (d.images / 16.0).astype(np.float32))
    np.testing.assert_array_equal(y, d.target)
