"""The benchmark harness on a tiny configuration (no timing assertions: only that it runs and
that what it reports is consistent with its own raw measurements)."""

import json

import jax
import numpy as np
import pytest

pytest.importorskip("matplotlib")

import jaxrnn  # noqa: E402
from benchmarks import harness, report  # noqa: E402
from benchmarks.registry import all_cells  # noqa: E402


def test_registry_covers_every_cell_factory():
    entries, _ = all_cells()
    names = {e.name for e in entries}
    for expected in ("elman", "jordan", "lstm", "gru", "fully_recurrent"):
        assert expected in names
    for e in entries:
        cell = e.make(4)
        assert isinstance(cell, jaxrnn.Cell)
        assert e.peer in (None, "lstm", "gru", "rnn", "jordan")


def test_flax_jordan_peer_computes_the_jordan_equations():
    # Flax has no Jordan cell; the harness's peer is one written as a Flax cell. It must be the
    # same network as jaxrnn.jordan(H, H), or the ratio compares different work.
    nn = pytest.importorskip("flax.linen")
    from benchmarks.competitors import _flax_jordan_cell

    B, T, F, H = 3, 6, 4, 5
    x = jax.random.normal(jax.random.key(0), (B, T, F))
    rnn = nn.RNN(_flax_jordan_cell(nn)(H))
    variables = rnn.init(jax.random.key(1), x)
    ys_flax = rnn.apply(variables, x)
    v = variables["params"]["cell"]
    params = jaxrnn.cells.JordanParams(
        w_x=v["i"]["kernel"], w_y_h=v["h"]["kernel"], b=v["i"]["bias"],
        w_y=v["o"]["kernel"], b_y=v["o"]["bias"])
    _, ys = jaxrnn.run(jaxrnn.jordan(H, H), params, x)
    np.testing.assert_allclose(ys, ys_flax, atol=1e-5)


def test_tiny_run_writes_consistent_records(tmp_path):
    md = tmp_path / "BENCH.md"
    run = harness.main(["--tiny", "--cells", "lstm", "--skip-peers", "equinox", "keras", "torch",
                        "--reps", "2", "--out", str(tmp_path), "--markdown", str(md)])
    files = sorted(p.name for p in tmp_path.iterdir())
    assert any(f.endswith("-tiny.json") for f in files)
    assert any(f.endswith("-tiny.png") for f in files)
    saved = json.loads(next(tmp_path.glob("*-tiny.json")).read_text())
    recs = saved["sections"][0]["records"]
    libs = {(r["lib"], r["mode"]) for r in recs}
    assert libs == {("jaxrnn", "forward"), ("jaxrnn", "train"), ("flax", "forward"),
                    ("flax", "train")}
    for r in recs:
        assert r["reps"] >= 2
        # tokens/s is batch * T over the median of the raw step times
        assert r["tokens_per_s"] == pytest.approx(2 * 8 / r["median_s"])
        assert r["min_s"] <= r["median_s"] <= r["max_s"]
        assert r["compile_s"] > 0
    # the reported ratio is exactly jaxrnn's rate over the peer's, per mode
    R = report.ratios(run)
    for mode in ("forward", "train"):
        j = next(r for r in recs if r["lib"] == "jaxrnn" and r["mode"] == mode)
        f = next(r for r in recs if r["lib"] == "flax" and r["mode"] == mode)
        assert R[("default", "tiny", mode, "lstm")]["flax"] == pytest.approx(
            j["tokens_per_s"] / f["tokens_per_s"])
    text = md.read_text()
    assert "| default | tiny | forward | lstm |" in text and "python -m benchmarks" in text


def test_bad_arguments_are_rejected():
    with pytest.raises(SystemExit):
        harness.main(["--reps", "0"])
    with pytest.raises(ValueError, match="--cells: unknown"):
        harness._cell_entries(["no_such_cell"])


def test_extras_convlstm_and_min_sweep_tiny():
    from benchmarks import extras

    video = dict(name="tinyvideo", batch=2, T=3, height=4, width=4, in_channels=1, channels=2)
    res = harness.worker({"kind": "convlstm", "config_dims": video, "modes": ["forward", "train"],
                          "reps": 2})
    assert {r["mode"] for r in res["records"]} == {"forward", "train"}
    for r in res["records"]:
        assert r["tokens_per_s"] == pytest.approx(2 * 3 / r["median_s"])
    sweep = harness.worker({"kind": "minsweep", "Ts": [4], "modes": ["forward", "train"],
                            "reps": 2, "dims": dict(batch=2, features=3, hidden=4)})
    run = {"sections": [dict(res, allocator="default"), dict(sweep, allocator="default")]}
    W = extras.min_sweep_winners(run)
    assert set(W) == {(4, "forward"), (4, "train")}
    names = {r["cell"] for r in sweep["records"]}
    assert {"lstm", "gru"} <= names
    for win, tps in W.values():
        assert tps[win] == max(tps.values())
    text = "\n".join(extras.markdown_parts(run))
    assert "ConvLSTM" in text and "minGRU" in text


def test_median_of_runs_judges_each_target(monkeypatch):
    from benchmarks import median

    per_run = [
        [("[default] lstm A train >= 1.5x Flax", "1.40x", "no"),
         ("[default] LSTM A train >= PyTorch", "1.10x", "yes"),
         ("[default] lstm A train >= 50% of FLOP ceiling", "60%", "yes")],
        [("[default] lstm A train >= 1.5x Flax", "1.70x", "yes"),
         ("[default] LSTM A train >= PyTorch", "0.90x", "no"),
         ("[default] lstm A train >= 50% of FLOP ceiling", "40%", "no")],
        [("[default] lstm A train >= 1.5x Flax", "1.60x", "yes"),
         ("[default] LSTM A train >= PyTorch", "0.95x", "no"),
         ("[default] lstm A train >= 50% of FLOP ceiling", "45%", "no")],
    ]
    monkeypatch.setattr(median, "targets", lambda run: per_run[run])
    rows = median.median_table([0, 1, 2]).splitlines()[2:]
    assert rows[0].endswith("| 1.40x | 1.70x | 1.60x | 1.60x | yes |")
    assert rows[1].endswith("| 1.10x | 0.90x | 0.95x | 0.95x | no |")
    assert rows[2].endswith("| 60% | 40% | 45% | 45% | no |")
    assert median.threshold("[tuned] gru B forward >= 1.2x best peer") == 1.2
