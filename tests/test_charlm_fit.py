"""The char-level LM task trains through fit_stream: its time budget stops training after a
chunk and still evaluates and saves; --resume then finishes the run exactly as a run that was
never stopped (same held-out bits per character)."""

import os
import re

import pytest

from jaxrnn import cli
from jaxrnn.train import latest_checkpoint


def run(argv, capsys):
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    chunks = int(re.search(r"charlm: trained (\d+) chunks", out).group(1))
    bpc = float(re.search(r"held-out bits per character: ([0-9.]+)", out).group(1))
    return out, chunks, bpc


@pytest.mark.slow
def test_charlm_time_budget_then_resume_equals_a_straight_run(tmp_path, capsys):
    text = tmp_path / "text.txt"
    text.write_text("\n".join(f"the cat sat on the mat {i % 7} times." for i in range(120)),
                    encoding="utf-8")
    common = ["train", "--task", "charlm", "--text", str(text), "--epochs", "2", "--hidden",
              "16", "--embed", "8", "--batch-size", "8", "--bptt", "20", "--reset-every", "3",
              "--val-fraction", "0.1", "--no-progress"]
    cut_dir = tmp_path / "cut"
    # 6 ms of budget are gone before training starts: one chunk, then evaluate and save.
    out, chunks, _ = run([*common, "--out", str(cut_dir), "--minutes", "0.0001"], capsys)
    assert "stopped by time budget" in out and chunks == 1
    assert os.path.isdir(cut_dir / "model") and os.path.isfile(cut_dir / "charlm_curves.png")
    assert latest_checkpoint(cut_dir / "checkpoints") is not None
    out, resumed_chunks, resumed_bpc = run([*common, "--out", str(cut_dir), "--resume"], capsys)
    assert "resumed from" in out and "stopped by 2 epoch(s)" in out
    _, straight_chunks, straight_bpc = run([*common, "--out", str(tmp_path / "straight")],
                                           capsys)
    assert resumed_chunks == straight_chunks > chunks
    assert resumed_bpc == straight_bpc
