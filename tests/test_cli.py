"""The command line end to end with tiny runs, and every bad-input path."""

import re
import sys

import numpy as np
import pytest

from jaxrnn import cli

TINY = ["--epochs", "1", "--hidden", "4", "--limit", "120", "--batch-size", "16",
        "--no-progress"]


@pytest.mark.slow
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


@pytest.mark.parametrize("flag", ["--resume", "--data-parallel", "--seeds", "--skip-nonfinite"])
def test_demos_refuse_the_training_flags_by_name(flag, capsys):
    """The demonstrations (their own small loops, no checkpoints, one device) take none of the
    tasks' training flags: each is refused by name, not ignored."""
    from jaxrnn.tasks import DEMOS

    for name in DEMOS:
        with pytest.raises(SystemExit) as e:
            cli.main(["demo", name, flag, *(["1-2"] if flag == "--seeds" else [])])
        assert e.value.code == 2
        assert f"unrecognized arguments: {flag}" in capsys.readouterr().err, name


def test_memory_refuses_resume_by_name(tmp_path, capsys):
    """Task memory keeps no checkpoints: --resume is refused, naming the flag and the task,
    before anything trains."""
    assert cli.main(["train", "--task", "memory", "--resume", "--epochs", "1", "--out",
                     str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "error: --resume: task memory keeps no checkpoints" in err, err


def test_digits_loader_reads_what_sklearn_load_digits_returns():
    from jaxrnn.tasks.digits import load_digits_arrays

    datasets = pytest.importorskip("sklearn.datasets")
    d = datasets.load_digits()
    x, y = load_digits_arrays()
    np.testing.assert_array_equal(x, (d.images / 16.0).astype(np.float32))
    np.testing.assert_array_equal(y, d.target)


# --------------------------------------------------------------------------- Ctrl-C

# One example per batch: an epoch is then ~1,200 updates (about a second), so that a Ctrl-C sent
# after an epoch line lands inside the next epoch's updates, not in the validation and
# checkpoint between epochs, which at the default batch took most of an epoch's wall time on a
# fast CPU (then no run was interrupted mid-training, 1 run of the test in 3).
INTERRUPTED_RUN = ("--hidden", "8", "--batch-size", "1")


def _interrupted_runs(tmp_path, delays):
    """``jaxrnn train`` processes run side by side, each sent SIGINT ``delay`` seconds after
    its first epoch line (None: after its first output line, while it may still be compiling);
    their exit statuses and outputs. Each trains far longer than the test waits."""
    import os
    import signal
    import subprocess
    import time

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [os.path.dirname(os.path.dirname(cli.__file__)), os.environ.get("PYTHONPATH", "")])}
    procs = []
    for i, delay in enumerate(delays):
        out = tmp_path / f"run{i}"
        p = subprocess.Popen(
            [sys.executable, "-m", "jaxrnn", "train", *INTERRUPTED_RUN, "--epochs", "5000",
             "--patience", "5000", "--no-progress", "--out", str(out)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
        procs.append((p, delay, out))
    results = []
    for p, delay, out in procs:
        seen = [p.stdout.readline()]
        if delay is not None:
            while not seen[-1].startswith("epoch 1/") and seen[-1]:
                seen.append(p.stdout.readline())
        time.sleep(delay or 0.0)
        p.send_signal(signal.SIGINT)
        results.append((p, out, seen))
    done = []
    for p, out, seen in results:
        text = "".join(seen) + p.communicate(timeout=120)[0]
        done.append((p.returncode, text, out))
    return done


def _check_interrupted(done):
    for status, text, _ in done:
        assert status == 130, (status, text[-2000:])
        assert "interrupted" in text and "resume=True" not in text
        # the first Ctrl-C during an epoch's updates waits for the update in flight (cli.py,
        # _interrupts): it never lands inside a step, losing the updates since the last
        # checkpoint (before, 2 of 16 runs here ended "interrupted mid-step")
        assert "interrupted mid-step" not in text, text[-2000:]
        if "checkpoint saved" in text:
            assert "continue with --resume" in text, text[-2000:]


def test_sigint_exits_130_and_says_resume(tmp_path):
    """Ctrl-C at moments from startup to mid-training exits 130 (interpreter teardown with
    XLA's threads cut off used to die of SIGSEGV in about 1 run in 3), the message names the
    command-line option, and ``--resume`` says where it continued from."""
    import random

    done = _interrupted_runs(tmp_path, [None, random.Random(0).uniform(0, 1), 0.0, 0.2])
    _check_interrupted(done)
    saved = [(text, out) for _, text, out in done if "checkpoint saved" in text]
    assert saved, "no run was interrupted mid-training"
    text, out = saved[0]
    epoch = int(re.search(r"checkpoint saved at step \d+ \(epoch (\d+)", text).group(1))
    argv = ["train", *INTERRUPTED_RUN, "--epochs", str(epoch), "--patience", "5000",
            "--no-progress", "--out", str(out), "--resume"]
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert cli.main(argv) == 0
    assert f"resumed from {out / 'checkpoints'}" in buf.getvalue()


@pytest.mark.slow
def test_sigint_at_random_moments_always_exits_130(tmp_path):
    import random

    rng = random.Random(1)
    for group in range(5):
        delays = [None if rng.random() < 0.3 else rng.uniform(0, 1.5) for _ in range(6)]
        _check_interrupted(_interrupted_runs(tmp_path / str(group), delays))


# --------------------------------------------------------------------------- refusals, help

def test_epochs_zero_is_refused_by_name_and_writes_nothing(tmp_path, capsys):
    assert cli.main(["train", *TINY, "--epochs", "0", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "--epochs: expected at least 1, got 0" in err
    assert not (tmp_path / "run").exists()


def test_rerun_into_an_earlier_out_refuses_without_resume_or_overwrite(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", *TINY, "--out", str(out)]
    assert cli.main(args) == 0
    weights = {p: p.read_bytes() for p in (out / "model").rglob("*") if p.is_file()}
    capsys.readouterr()
    assert cli.main([*args, "--seed", "1"]) == 2
    err = capsys.readouterr().err
    assert "--out:" in err and "--resume" in err and "--overwrite" in err
    assert {p: p.read_bytes() for p in weights} == weights  # the earlier model untouched
    assert cli.main([*args, "--seed", "1", "--overwrite"]) == 0
    assert any(p.read_bytes() != b for p, b in weights.items() if p.exists())


def test_absurd_hidden_is_one_line_naming_it_and_the_memory(capsys):
    """The estimate is the LSTM's own parameter count (w_x (1, 4H), w_h (H, 4H), b (4H) for
    one input feature) in float32, checked here by hand."""
    H = 10**9
    assert cli.main(["train", "--hidden", str(H), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("jaxrnn train: error: --hidden:")
    pib = 4 * (4 * H + 4 * H * H + 4 * H) / 2**50
    assert f"{pib:,.1f} PiB for the lstm weights" in err


def test_help_shows_defaults_and_no_developer_text(capsys):
    def help_of(argv):
        with pytest.raises(SystemExit):
            cli.main([*argv, "--help"])
        return " ".join(capsys.readouterr().out.split())  # argparse's line breaks undone

    top = help_of([])
    assert ":func:" not in top and "``" not in top and "DEFAULTS" not in top
    train = help_of(["train"])  # the digits task's own defaults
    for option, default in (("--hidden", "64"), ("--epochs", "40"), ("--batch-size", "32"),
                            ("--lr", "0.003")):
        assert re.search(re.escape(option) + r" [A-Z_]+ (?:(?!--).)*?\(default: " + default + r"\)",
                         train), option
    assert "(default: until the time budget)" in help_of(["train", "--task", "charlm"])
    generate = help_of(["generate"])
    assert "8x8 digits" not in generate and "charlm" in generate
    for command in ("predict", "evaluate", "generate"):
        text = help_of([command])
        for option in ("--hidden", "--epochs", "--lr", "--batch-size", "--resume"):
            assert option not in text, (command, option)
