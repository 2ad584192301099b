"""Task pieces (baselines by hand, data preparation, models and sampling on tiny sizes) and one
tiny end-to-end CLI run per kind of task, all on in-test data: nothing is downloaded."""

import argparse
import io
import math
import tarfile

import jax
import numpy as np
import pytest

from jaxrnn import cli
from jaxrnn.data import char_vocab
from jaxrnn.datasets.japanese_vowels import SequenceData, SequenceSplit
from jaxrnn.datasets.rotten_tomatoes import MEMBER, Snippets
from jaxrnn.tasks import TASKS, charlm, forecast, memory, music, sentiment, speech

MINE = ("sentiment", "charlm", "forecast", "fashion", "music", "speech", "memory")


def test_tasks_are_registered():
    for name in MINE:
        assert TASKS[name] == f"jaxrnn.tasks.{name}"


# --------------------------------------------------------------------------- forecast

Y = np.array([3.0, 1.0, 4.0, 1.0, 5.0, 9.0, 2.0, 6.0, 5.0, 3.0])


def test_forecast_baselines_by_hand():
    origins = np.array([6, 7])
    # Persistence repeats y[t-1]: origin 6 -> y[5] = 9, origin 7 -> y[6] = 2.
    np.testing.assert_array_equal(forecast.persistence_forecast(Y, origins, 3),
                                  [[9, 9, 9], [2, 2, 2]])
    # Seasonal naive, period 4: target t+h gets y[t+h-4].
    np.testing.assert_array_equal(forecast.seasonal_naive_forecast(Y, origins, 3, 4),
                                  [[4, 1, 5], [1, 5, 9]])
    truth = np.array([[2.0, 6.0, 5.0], [6.0, 5.0, 3.0]])
    pers = forecast.persistence_forecast(Y, origins, 3)
    by_hand = math.sqrt((49 + 9 + 16 + 16 + 9 + 1) / 6)
    assert forecast.rmse(pers, truth) == pytest.approx(by_hand)
    with pytest.raises(ValueError, match="horizon"):
        forecast.seasonal_naive_forecast(Y, origins, 5, 4)
    with pytest.raises(ValueError, match="origins"):
        forecast.seasonal_naive_forecast(Y, np.array([2]), 2, 4)


def test_forecast_windows_and_split():
    x, t = forecast.make_windows(Y, 3, 2, [3, 8])
    np.testing.assert_array_equal(x[..., 0], [[3, 1, 4], [9, 2, 6]])
    np.testing.assert_array_equal(t, [[1, 5], [5, 3]])
    assert x.shape == (2, 3, 1)
    with pytest.raises(ValueError, match="origins"):
        forecast.make_windows(Y, 3, 2, [9])
    assert forecast.split_points(100, 0.2, 0.1) == (70, 80)
    with pytest.raises(ValueError, match="test_fraction"):
        forecast.split_points(100, 0.0, 0.1)


def test_forecast_prepare_keeps_periods_apart():
    from jaxrnn.datasets.series import Series

    y = np.sin(np.arange(200) * 2 * np.pi / 11) * 50 + 60
    s = Series("toy", y, np.arange(200.0), 11, "u")
    p = forecast.prepare(s, window=20, horizon=5, test_fraction=0.2, val_fraction=0.1)
    assert (p["val_start"], p["test_start"]) == (140, 160)
    train_mean = y[:140].mean()
    assert p["mean"] == pytest.approx(train_mean)
    # The last training target ends before validation starts; test origins cover the rest.
    assert len(p["train"]["targets"]) == 140 - 5 + 1 - 20
    np.testing.assert_array_equal(p["test_origins"], np.arange(160, 196))
    with pytest.raises(ValueError, match="horizon"):
        forecast.prepare(s, window=20, horizon=12, test_fraction=0.2, val_fraction=0.1)


def test_forecast_window_scaling_is_amplitude_invariant():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 7, 1))
    xs, m, s = forecast.window_scale(x)
    np.testing.assert_allclose(xs.mean(1), 0, atol=1e-12)
    np.testing.assert_allclose(xs.std(1), 1, atol=1e-12)
    np.testing.assert_allclose(m[:, None, :] + s[:, None, :] * xs, x)  # invertible
    xs2, m2, s2 = forecast.window_scale(3.0 * x + 5.0)
    np.testing.assert_allclose(xs2, xs, atol=1e-12)  # a taller, shifted cycle looks the same
    np.testing.assert_allclose(s2, 3.0 * s)
    flat = forecast.window_scale(np.ones((1, 5, 1)))[0]
    np.testing.assert_array_equal(flat, 0)  # the floor avoids dividing by zero


# --------------------------------------------------------------------------- memory

def _memory_args(**kw):
    base = dict(copy_length=2, copy_symbols=3, batch_size=4, hidden=4, lr=1e-2, clip_norm=1.0,
                skip_nonfinite=True, steps=2, eval_every=1, eval_size=5, progress=False,
                verbose=False)
    return argparse.Namespace(**{**base, **kw})


def test_memory_copy_problem_scores_recall_on_recall_steps_only():
    problem = memory.Problem("copy", 3, _memory_args())
    batch = problem.make(jax.random.key(0), 4)
    perfect = jax.nn.one_hot(batch.targets, problem.n_out) * 50.0
    scores = problem.score(perfect, batch)
    assert float(scores["recall"]) == 1.0 and float(scores["loss"]) < 1e-6
    blank = jax.nn.one_hot(np.zeros_like(batch.targets), problem.n_out) * 50.0
    assert float(problem.score(blank, batch)["recall"]) == 0.0
    assert problem.baseline == pytest.approx(2 * math.log(3) / (3 + 4))


@pytest.mark.slow
def test_memory_train_one_runs_and_reports(tmp_path):
    from jaxrnn.tasks import modeldir

    problem = memory.Problem("adding", 6, _memory_args())
    r = memory.train_one(problem, "lstm", _memory_args(), seed=0)
    # what train saves per run: a model directory rebuilt from its config, same outputs
    config, params = r.pop("config"), r.pop("params")
    path = modeldir.save_task(None, task="memory", config=config, params=params,
                              directory=str(tmp_path / "m"))
    run = modeldir.load(path, task="memory")
    xs = np.random.default_rng(0).uniform(size=(3, 6, problem.n_in)).astype(np.float32)
    _, trained_apply = memory.make_model("lstm", config["hidden"], problem.n_in, problem.n_out,
                                         per_step=False)
    want = np.asarray(trained_apply(params, xs))
    assert want.shape == (3, problem.n_out)
    np.testing.assert_array_equal(np.asarray(run.model.apply(run.params, xs)), want)
    assert r["steps"] == 2 and len(r["curve"]) == 3
    assert np.isfinite(r["loss"])
    table = memory.format_table([r], "adding", [6], ["lstm"], {6: 1 / 6})
    assert "T=6" in table and "0.1667" in table and f"{r['loss']:.4f}" in table


def test_memory_bad_options():
    with pytest.raises(ValueError, match="--lengths"):
        memory._int_list("50,x")
    with pytest.raises(ValueError, match="--lengths"):
        memory._int_list("1")
    rc = cli.main(["train", "--task", "memory", "--cells", "elman,transformer"])
    assert rc == 2


# --------------------------------------------------------------------------- music

def test_music_next_step_data_and_masks():
    rolls = [np.eye(3, dtype=np.float32)[[0, 1, 2, 0, 1]], np.eye(3, dtype=np.float32)[[2, 2]]]
    d = music.next_step_data(rolls, max_len=3)
    # Chorale 1 gives 4 (input, target) pairs cut into 3 + 1; chorale 2 gives 1.
    np.testing.assert_array_equal(d["lengths"], [3, 1, 1])
    np.testing.assert_array_equal(d["inputs"][0], rolls[0][:3])
    np.testing.assert_array_equal(d["targets"][0], rolls[0][1:4])
    np.testing.assert_array_equal(d["targets"][1, 0], rolls[0][4])
    np.testing.assert_array_equal(d["mask"], [[1, 1, 1], [1, 0, 0], [1, 0, 0]])
    whole = music.next_step_data(rolls, max_len=None)
    np.testing.assert_array_equal(whole["lengths"], [4, 1])


def test_music_baselines_by_hand():
    train = [np.array([[1, 0], [1, 0], [0, 1]], np.float32)]
    test = [np.array([[1, 0], [0, 1]], np.float32)]
    base = music.baseline_nll(train, test)
    # Frequencies (add-one): pitch 0 on in 2 of 3 frames -> 3/5, pitch 1 -> 2/5.
    # The one test step is [0, 1]: -log(1 - 3/5) - log(2/5).
    assert base["frequency"] == pytest.approx(-math.log(2 / 5) - math.log(2 / 5))
    # Markov: pitch 0 on->on 1 of 2 transitions -> (1+1)/(2+2); pitch 1 off->on 1 of 2 -> 2/4.
    assert base["markov"] == pytest.approx(-math.log(1 - 2 / 4) - math.log(2 / 4))


def test_music_model_loss_and_sampling_respect_shapes_and_note_cap():
    config = {"cell": "gru", "hidden": 8, "layers": 1, "dropout": 0.0, "n_pitches": 6,
              "low": 60, "grid": 0.5}
    _, _, init, apply = music.make_model(config)
    params = init(jax.random.key(0))
    x = np.zeros((2, 5, 6), np.float32)
    assert apply(params, x).shape == (2, 5, 6)
    loss = music.nll_per_step_loss(6)
    z = np.zeros((2, 5, 6), np.float32)  # p = 1/2 everywhere: 6 * ln 2 per step
    assert float(loss(z, x)) == pytest.approx(6 * math.log(2), rel=1e-5)
    primer = np.eye(6, dtype=np.float32)[[0, 1]]
    roll = music.sample_continuation(config, params, primer, 7, key=jax.random.key(1),
                                     temperature=5.0, max_notes=2)
    assert roll.shape == (9, 6)
    np.testing.assert_array_equal(roll[:2], primer)
    assert roll[2:].sum(1).max() <= 2
    with pytest.raises(ValueError, match="temperature"):
        music.sample_continuation(config, params, primer, 3, key=jax.random.key(1),
                                  temperature=0.0)


def test_music_split_is_disjoint():
    idx = music.split_chorales(30)
    allidx = np.concatenate([idx["train"], idx["val"], idx["test"]])
    assert sorted(allidx.tolist()) == list(range(30))
    assert len(idx["test"]) == 3 and len(idx["val"]) == 3
    with pytest.raises(ValueError, match="at least 3"):
        music.split_chorales(2)


# --------------------------------------------------------------------------- charlm

def test_charlm_encoding_streams_and_unigram_baseline():
    text = "to be or not to be\n"
    vocab = char_vocab([text])
    ids = charlm.encode_text(text + "Z", vocab)
    assert ids[:-1].tolist() == vocab.encode(text)
    assert ids[-1] == 1  # unseen character -> OOV id
    d = charlm.stream_data(np.arange(11), 2)
    np.testing.assert_array_equal(d["inputs"], [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]])
    np.testing.assert_array_equal(d["targets"], [[1, 2, 3, 4, 5], [6, 7, 8, 9, 10]])
    train_ids = np.array([2, 2, 3])
    # Add-one counts over V = 4: [1, 1, 3, 2] / 7; held-out [2, 3].
    expected = -(math.log2(3 / 7) + math.log2(2 / 7)) / 2
    assert charlm.unigram_bpc(train_ids, np.array([2, 3]), 4) == pytest.approx(expected)
    with pytest.raises(ValueError, match="--val-fraction"):
        charlm.split_text(text, 0.0)
    seg = charlm.segment_data(np.arange(10), 4)  # 2 segments of 4 (+1 for the last target)
    np.testing.assert_array_equal(seg["inputs"], [[0, 1, 2, 3], [4, 5, 6, 7]])
    np.testing.assert_array_equal(seg["targets"], [[1, 2, 3, 4], [5, 6, 7, 8]])
    with pytest.raises(ValueError, match="segment"):
        charlm.segment_data(np.arange(4), 4)


@pytest.mark.slow
def test_charlm_sample_continues_the_prime():
    vocab = char_vocab(["abc\n"])
    config = {"cell": "lstm", "hidden": 8, "layers": 1, "dropout": 0.0, "embed": 4,
              "vocab_size": len(vocab)}
    init, apply = charlm.make_model(config)
    params = init(jax.random.key(0))
    carry, logits = apply(params, np.zeros((2, 3), np.int32))
    assert logits.shape == (2, 3, len(vocab))
    text = charlm.sample(config, params, vocab, "ab", 10, key=jax.random.key(0),
                         temperature=0.8)
    assert text.startswith("ab") and len(text) == 12 and set(text) <= set("abc\n")
    warmed = charlm.sample(config, params, vocab, "ab", 10, key=jax.random.key(0),
                           temperature=0.8, warmup="cab\nca")
    assert warmed.startswith("ab") and len(warmed) == 12  # the warm-up text is not returned
    with pytest.raises(ValueError, match="--temperature"):
        charlm.sample(config, params, vocab, "ab", 10, key=jax.random.key(0), temperature=0)


# --------------------------------------------------------------------------- speech

def test_speech_prepare_pads_standardises_and_masks():
    rng = np.random.default_rng(0)
    seqs = [rng.normal(3.0, 2.0, (n, 2)).astype(np.float32) for n in (3, 5, 4, 2, 6)]
    data = SequenceData("toy", SequenceSplit(seqs[:4], np.array([0, 1, 0, 1], np.int32)),
                        SequenceSplit(seqs[4:], np.array([1], np.int32)), ("a", "b"))
    p = speech.prepare(data, val_fraction=0.25, seed=0)
    assert p["train"]["inputs"].shape == (3, 6, 2) and len(p["val"]["targets"]) == 1
    valid = np.concatenate([p["train"]["inputs"][i, :n]
                            for i, n in enumerate(p["train"]["lengths"])])
    np.testing.assert_allclose(valid.mean(0), 0, atol=1e-5)  # standardised on training frames
    np.testing.assert_allclose(valid.std(0), 1, atol=1e-4)
    for i, n in enumerate(p["train"]["lengths"]):
        np.testing.assert_array_equal(p["train"]["inputs"][i, n:], 0)  # post-padding
    assert p["test"]["lengths"].tolist() == [6]
    assert speech.majority_baseline(np.array([0, 0, 1]), np.array([0, 1, 1, 1])) == 0.25


# --------------------------------------------------------------------------- sentiment

def test_sentiment_splits_vocab_and_model():
    texts = [f"good movie {i}" if i % 2 else f"bad film {i}" for i in range(40)]
    labels = np.array([i % 2 for i in range(40)], np.int32)
    snippets = Snippets(texts, labels.astype(float) - 0.5, labels)
    splits, vocab, raw = sentiment.build_splits(snippets, min_freq=2, max_len=2)
    assert {k: len(v["targets"]) for k, v in splits.items()} == {"train": 32, "val": 4,
                                                                "test": 4}
    assert "good" in vocab and "17" not in vocab  # numbers occur once: out of vocabulary
    assert splits["train"]["inputs"].shape == (32, 2)  # truncated to max_len
    np.testing.assert_array_equal(splits["train"]["lengths"], 2)
    for i in range(4):
        assert (splits["test"]["targets"][i, 0] == 1) == raw["test"][0][i].startswith("good")
    config = {"cell": "gru", "hidden": 4, "layers": 1, "bidirectional": False, "dropout": 0.0,
              "embed": 3, "vocab_size": len(vocab)}
    model = sentiment.make_model(config)
    logits = model.apply(model.init(jax.random.key(0)), splits["test"]["inputs"],
                         lengths=splits["test"]["lengths"])
    assert logits.shape == (4, 1)
    with pytest.raises(ValueError, match="--max-len"):
        sentiment.build_splits(snippets, min_freq=2, max_len=0)


def _fake_sentiment_cache(root):
    good, bad = "a lovely warm film", "a dull cold mess"
    lines = [f"{i}\t{1.5 if i % 2 else -1.5}\t{good if i % 2 else bad}" for i in range(60)]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = "\r\n".join(lines).encode()
        info = tarfile.TarInfo(MEMBER)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    inner = buf.getvalue()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        info = tarfile.TarInfo("vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz")
        info.size = len(inner)
        tar.addfile(info, io.BytesIO(inner))
    (root / "vaderSentiment-3.3.2.tar.gz").write_bytes(buf.getvalue())


@pytest.mark.slow
def test_cli_sentiment_end_to_end_on_a_tiny_archive(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("JAXRNN_DATA", str(tmp_path))
    _fake_sentiment_cache(tmp_path)
    out = tmp_path / "run"
    rc = cli.main(["train", "--task", "sentiment", "--epochs", "2", "--hidden", "4",
                   "--embed", "4", "--batch-size", "8", "--lr", "0.05", "--dropout", "0.0",
                   "--no-download", "--no-progress", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "test accuracy:" in printed and "majority-class baseline" in printed
    assert (out / "model" / "model.json").is_file() and (out / sentiment.PLOT_FILE).is_file()
    assert not list(out.glob("*_model.msgpack"))  # one model directory, no loose file
    rc = cli.main(["evaluate", "--task", "sentiment", "--no-download", "--out", str(out)])
    assert rc == 0
    evaluated = capsys.readouterr().out
    # the reloaded directory scores the held-out sentences exactly as the trained params did
    trained_acc = printed.split("test accuracy: ")[1].split()[0]
    assert evaluated.split("test accuracy: ")[1].split()[0] == trained_acc


def test_cli_sentiment_without_archive_says_how_to_fetch(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("JAXRNN_DATA", str(tmp_path))
    rc = cli.main(["train", "--task", "sentiment", "--no-download", "--out", str(tmp_path)])
    assert rc == 2
    assert "python -m jaxrnn.datasets fetch" in capsys.readouterr().err


@pytest.mark.parametrize("task, option, value, name", [
    ("sentiment", "--clip-norm", "-1", "--clip-norm"),
    ("sentiment", "--embed", "0", "--embed"),
    ("charlm", "--bptt", "0", "--bptt"),
    ("charlm", "--minutes", "-2", "--minutes"),
    ("charlm", "--reset-every", "-1", "--reset-every"),
    ("forecast", "--clip-norm", "0", "--clip-norm"),
    ("fashion", "--clip-norm", "0", "--clip-norm"),
    ("music", "--max-len", "1", "--max-len"),
    ("speech", "--clip-norm", "0", "--clip-norm"),
    ("memory", "--lengths", "1,2", "--lengths"),
    ("memory", "--steps", "0", "--steps"),
])
def test_cli_bad_task_options_fail_before_loading_data(task, option, value, name, capsys,
                                                       tmp_path):
    try:  # a common option (--clip-norm) is refused by the parser itself
        rc = cli.main(["train", "--task", task, option, value, "--out", str(tmp_path)])
    except SystemExit as e:
        rc = e.code
    assert rc == 2
    assert name in capsys.readouterr().err
