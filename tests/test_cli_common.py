"""The options every task shares (jaxrnn.cli.add_common_arguments): validated by the parser,
before any data is loaded or anything is traced."""

import argparse
import re

import pytest

from jaxrnn import cli


def parse(argv):
    return cli.build_parser("digits").parse_args(["train", *argv])


@pytest.mark.parametrize("value, message", [
    ("nan", "expected a finite positive number, got nan"),
    ("inf", "expected a finite positive number, got inf"),
    ("0", "expected a positive number, got 0.0"),
    ("-2", "expected a positive number, got -2.0"),
    ("one", "expected a positive number, got 'one'"),
])
def test_clip_norm_nan_inf_and_non_positive_exit_2(value, message, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "--clip-norm", value])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert re.search(r"argument --clip-norm: " + re.escape(message), err), err


def test_lr_nan_and_inf_are_rejected(capsys):
    for value in ("nan", "inf"):
        with pytest.raises(SystemExit):
            cli.main(["train", "--lr", value])
        assert f"argument --lr: expected a finite positive number, got {value}" in \
            capsys.readouterr().err


def test_clip_norm_is_defined_once_and_every_task_parses_it():
    """One definition in the common group: every task's parser accepts it (a second
    definition in a task would make argparse raise a conflict here)."""
    from jaxrnn.tasks import TASKS

    for task in TASKS:
        args = cli.build_parser(task).parse_args(["train", "--task", task, "--clip-norm", "0.5"])
        assert args.clip_norm == 0.5
        assert cli.build_parser(task).parse_args(["train", "--task", task]).clip_norm == 1.0
    p = argparse.ArgumentParser()
    cli.add_common_arguments(p)
    flags = [s for a in p._actions for s in a.option_strings]
    assert flags.count("--clip-norm") == 1


def test_skip_nonfinite_is_on_by_default_and_can_be_turned_off():
    assert parse([]).skip_nonfinite is True
    assert parse(["--no-skip-nonfinite"]).skip_nonfinite is False
    assert parse(["--skip-nonfinite"]).skip_nonfinite is True


def test_checkpoint_dir_that_is_a_file_fails_before_training(tmp_path, capsys, monkeypatch):
    path = tmp_path / "a_file"
    path.write_text("x")
    import jaxrnn.train

    def must_not_train(*a, **k):
        raise AssertionError("training started")

    monkeypatch.setattr(jaxrnn.train, "fit", must_not_train)
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "--checkpoint-dir", str(path), "--out", str(tmp_path)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "argument --checkpoint-dir:" in err and "exists and is not a directory" in err
    assert parse(["--checkpoint-dir", str(tmp_path / "new")]).checkpoint_dir == \
        str(tmp_path / "new")
