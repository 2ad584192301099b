"""Padding (Keras semantics worked out by hand), masks, the seeded resumable batch iterator,
bucketing, vocabularies with OOV, and the install hint for missing packages."""

import numpy as np
import pytest

from jaxrnn.data import (
    OOV_ID,
    PAD_ID,
    BatchIterator,
    MissingDependencyError,
    Vocab,
    char_vocab,
    lengths_from_mask,
    mask_from_lengths,
    pad_sequences,
    require,
    word_vocab,
)

SEQS = [[1, 2, 3], [4, 5], [6, 7, 8, 9, 10]]


# Expected arrays written out from the Keras definition: "pre" padding puts the pad values in
# front; "pre" truncation drops the first steps of a too-long sequence.
@pytest.mark.parametrize("padding,truncating,expected", [
    ("pre", "pre", [[0, 1, 2, 3], [0, 0, 4, 5], [7, 8, 9, 10]]),
    ("post", "pre", [[1, 2, 3, 0], [4, 5, 0, 0], [7, 8, 9, 10]]),
    ("pre", "post", [[0, 1, 2, 3], [0, 0, 4, 5], [6, 7, 8, 9]]),
    ("post", "post", [[1, 2, 3, 0], [4, 5, 0, 0], [6, 7, 8, 9]]),
])
def test_pad_sequences_keras_semantics(padding, truncating, expected):
    out = pad_sequences(SEQS, maxlen=4, padding=padding, truncating=truncating)
    np.testing.assert_array_equal(out, expected)
    assert out.dtype == np.int32
    if padding == "post":
        _, lengths = pad_sequences(SEQS, maxlen=4, padding=padding, truncating=truncating,
                                   return_lengths=True)
        np.testing.assert_array_equal(lengths, [3, 2, 4])


def test_pad_sequences_pads_at_the_end_by_default():
    # The engine's lengths mean "valid steps first"; the default must agree with them.
    out, lengths = pad_sequences(SEQS, return_lengths=True)
    np.testing.assert_array_equal(out, [[1, 2, 3, 0, 0], [4, 5, 0, 0, 0], [6, 7, 8, 9, 10]])
    np.testing.assert_array_equal(lengths, [3, 2, 5])
    np.testing.assert_array_equal(mask_from_lengths(lengths, 5), out != 0)


def test_pad_sequences_refuses_lengths_with_pre_padding():
    with pytest.raises(ValueError, match="return_lengths: .*post-padding.*padding='pre'"):
        pad_sequences(SEQS, padding="pre", return_lengths=True)


def test_masked_run_over_padded_batch_equals_each_sequence_alone():
    import jax
    import jax.numpy as jnp

    from jaxrnn import gru, last_valid, run

    rng = np.random.default_rng(0)
    seqs = [rng.normal(size=(n, 3)).astype(np.float32) for n in (5, 2, 7, 1)]
    cell = gru(4)
    params = cell.init(jax.random.key(0), 3)
    x, lengths = pad_sequences(seqs, dtype="float32", value=99.0, return_lengths=True)
    final, ys = run(cell, params, jnp.asarray(x), lengths=jnp.asarray(lengths))
    last = last_valid(ys, jnp.asarray(lengths))
    for b, s in enumerate(seqs):
        final_b, ys_b = run(cell, params, jnp.asarray(s)[None])
        np.testing.assert_allclose(np.asarray(ys[b, : len(s)]), np.asarray(ys_b[0]),
                                   rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.asarray(last[b]), np.asarray(ys_b[0, -1]),
                                   rtol=1e-5, atol=1e-6)
        jax.tree_util.tree_map(
            lambda f, g, b=b: np.testing.assert_allclose(np.asarray(f[b]), np.asarray(g[0]),
                                                         rtol=1e-5, atol=1e-6), final, final_b)


def test_pad_sequences_default_maxlen_value_dtype_and_features():
    out = pad_sequences(SEQS, padding="post", value=-1, dtype="int64")
    assert out.shape == (3, 5) and out.dtype == np.int64
    np.testing.assert_array_equal(out[1], [4, 5, -1, -1, -1])
    feats = [np.ones((2, 3)), np.full((4, 3), 2.0), np.zeros((0, 3))]
    out, lengths = pad_sequences(feats, dtype="float32", padding="post", value=0.5,
                                 return_lengths=True)
    assert out.shape == (3, 4, 3)
    np.testing.assert_array_equal(lengths, [2, 4, 0])
    np.testing.assert_array_equal(out[0, 2:], 0.5)
    np.testing.assert_array_equal(out[2], 0.5)


@pytest.mark.parametrize("padding", ["pre", "post"])
def test_mask_matches_padding(padding):
    seqs = [[1, 2, 3], [4], [5, 6, 7, 8]]  # no zero inside, so non-zero == valid
    out = pad_sequences(seqs, maxlen=5, padding=padding)
    lengths = np.array([3, 1, 4], np.int32)
    mask = mask_from_lengths(lengths, 5, padding=padding)
    np.testing.assert_array_equal(mask, out != 0)
    np.testing.assert_array_equal(lengths_from_mask(mask), lengths)


def test_padding_bad_input():
    with pytest.raises(ValueError, match="padding: expected 'pre' or 'post', got 'middle'"):
        pad_sequences(SEQS, padding="middle")
    with pytest.raises(ValueError, match="truncating: expected 'pre' or 'post'"):
        pad_sequences(SEQS, truncating="both")
    with pytest.raises(ValueError, match="maxlen: expected None or an int >= 0, got -1"):
        pad_sequences(SEQS, maxlen=-1)
    with pytest.raises(ValueError, match=r"sequences\[1\]: expected a sequence, got a scalar"):
        pad_sequences([[1], 2])
    with pytest.raises(ValueError, match="every step must have the same shape"):
        pad_sequences([np.ones((2, 3)), np.ones((2, 4))])
    with pytest.raises(TypeError, match="sequences: expected a list of sequences"):
        pad_sequences("abc")
    with pytest.raises(ValueError, match="value: 0.5 cannot be stored in integer dtype"):
        pad_sequences(SEQS, value=0.5)
    with pytest.raises(ValueError, match=r"lengths: values must lie in \[0, maxlen=3\]"):
        mask_from_lengths(np.array([4]), 3)


# ----------------------------------------------------------------------------- batch iterator

def toy(n=10):
    return {"inputs": np.arange(n * 2).reshape(n, 2).astype(np.float32), "targets": np.arange(n)}


def test_each_epoch_is_a_seeded_permutation():
    it = BatchIterator(toy(10), 3, seed=4)
    e0 = np.concatenate([b["targets"] for b in it])
    assert sorted(e0) == list(range(10)) and it.epoch == 1  # last batch of 1 kept
    e1 = np.concatenate([b["targets"] for b in it])
    assert sorted(e1) == list(range(10)) and not np.array_equal(e0, e1)
    again = BatchIterator(toy(10), 3, seed=4)
    np.testing.assert_array_equal(np.concatenate([b["targets"] for b in again]), e0)
    other = BatchIterator(toy(10), 3, seed=5)
    assert not np.array_equal(np.concatenate([b["targets"] for b in other]), e0)
    # Inputs stay aligned with targets.
    for b in BatchIterator(toy(10), 3, seed=4):
        np.testing.assert_array_equal(b["inputs"][:, 0], 2 * b["targets"])


def test_position_save_and_restore_continues_on_the_same_batch():
    it = BatchIterator(toy(10), 3, seed=1, drop_remainder=True)
    assert it.num_batches() == 3
    seen = []
    gen = iter(it)
    seen.append(next(gen)["targets"])
    pos = it.position
    assert tuple(pos) == (0, 1, 1)
    rest = [b["targets"] for b in gen] + [b["targets"] for b in it]
    resumed = BatchIterator(toy(10), 3, seed=1, drop_remainder=True)
    resumed.set_position(pos._asdict())
    got = [b["targets"] for b in resumed] + [b["targets"] for b in resumed]
    assert len(got) == len(rest) == 5
    for a, b in zip(got, rest, strict=True):
        np.testing.assert_array_equal(a, b)


def test_unshuffled_order_and_epoch_batches():
    it = BatchIterator(toy(7), 3, shuffle=False)
    parts = [b["targets"].tolist() for b in it.epoch_batches(0)]
    assert parts == [[0, 1, 2], [3, 4, 5], [6]]
    assert it.position.epoch == 0  # epoch_batches does not move the position


def test_bucketing_groups_similar_lengths_and_cuts_time():
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 13, size=40)
    x = pad_sequences([np.ones(n) for n in lengths], maxlen=12, dtype="float32")
    mask = mask_from_lengths(lengths.astype(np.int32), 12)
    data = {"inputs": x[..., None], "lengths": lengths.astype(np.int32), "mask": mask,
            "targets": np.arange(40)}
    it = BatchIterator(data, 4, seed=0, bucket_boundaries=[4, 8, 12])
    covered = []
    for b in it:
        T = b["inputs"].shape[1]
        assert T in (4, 8, 12) and b["mask"].shape[1] == T
        lo = {4: 0, 8: 4, 12: 8}[T]
        assert np.all((b["lengths"] > lo) & (b["lengths"] <= T))  # one bucket per batch
        # Cutting the time axis loses no valid step.
        np.testing.assert_array_equal(b["inputs"][..., 0].sum(1), b["lengths"])
        covered += b["targets"].tolist()
    assert sorted(covered) == list(range(40))


def test_batch_iterator_bad_input():
    with pytest.raises(ValueError, match="batch_size: expected an int >= 1, got 0"):
        BatchIterator(toy(), 0)
    with pytest.raises(ValueError, match="data: every array must have the same leading size"):
        BatchIterator({"inputs": np.zeros((3, 2)), "targets": np.zeros(4)}, 2)
    with pytest.raises(TypeError, match="data: expected a non-empty dict"):
        BatchIterator([np.zeros(3)], 2)
    with pytest.raises(ValueError, match="leaves no batch"):
        BatchIterator(toy(3), 5, drop_remainder=True)
    with pytest.raises(ValueError, match="bucket_boundaries: expected a non-empty increasing"):
        BatchIterator({**toy(4), "lengths": np.ones(4, int)}, 2, bucket_boundaries=[3, 2])
    with pytest.raises(ValueError, match="the last boundary 2 is below the longest sequence"):
        BatchIterator({**toy(4), "lengths": np.full(4, 5)}, 2, bucket_boundaries=[2])
    with pytest.raises(ValueError, match=r"length_key: bucketing needs data\['lengths'\]"):
        BatchIterator(toy(4), 2, bucket_boundaries=[2])
    it = BatchIterator(toy(), 2, seed=1)
    with pytest.raises(ValueError, match="position: saved with seed 2"):
        it.set_position((0, 0, 2))
    with pytest.raises(ValueError, match="position: out of range"):
        it.set_position((0, 99, 1))


# ----------------------------------------------------------------------------- vocabularies

def test_char_vocab_frequency_order_and_round_trip():
    v = char_vocab(["abracadabra"])
    assert v.itos[:2] == ["<pad>", "<unk>"] and PAD_ID == 0 and OOV_ID == 1
    assert v.itos[2:] == ["a", "b", "r", "c", "d"]  # by count 5, 2, 2, 1, 1; ties first-seen
    ids = v.encode("cab")
    assert ids == [5, 2, 3]
    assert v.decode(ids) == "cab"
    assert v.encode("abz") == [2, 3, OOV_ID]
    assert v.decode([0, 2, 0]) == "a"  # padding skipped


def test_word_vocab_min_freq_max_size_and_serialisation():
    texts = ["The cat sat.", "the cat ran!", "A dog ran."]
    v = word_vocab(texts, min_freq=2)
    assert set(v.itos[2:]) == {"the", "cat", "ran", "."}
    assert v.encode("The dog sat") == [v.stoi["the"], OOV_ID, OOV_ID]
    assert v.decode(v.encode("the cat ran")) == "the cat ran"
    small = word_vocab(texts, max_size=4)
    assert len(small) == 4
    assert Vocab.from_dict(v.to_dict()).itos == v.itos


def test_vocab_bad_input():
    with pytest.raises(TypeError, match="texts: expected an iterable of strings, got one"):
        char_vocab("abc")
    with pytest.raises(ValueError, match="min_freq: expected an int >= 1"):
        char_vocab(["abc"], min_freq=0)
    with pytest.raises(ValueError, match="kind: expected 'char' or 'word'"):
        Vocab(["a"], kind="byte")
    with pytest.raises(ValueError, match="must be unique"):
        Vocab(["a", "a"])
    with pytest.raises(ValueError, match=r"ids: 9 is outside the vocabulary \[0, 3\)"):
        Vocab(["a"]).decode([9])
    with pytest.raises(TypeError, match="text: expected a string"):
        Vocab(["a"]).encode(["a"])


def test_missing_package_says_how_to_install():
    with pytest.raises(MissingDependencyError, match=r'pip install "jaxrnn\[data\]"'):
        require("surely_not_a_module_xyz", pip_name="surely-not", purpose="the test task")
    assert require("json").dumps([1]) == "[1]"


def test_more_bad_input_paths():
    with pytest.raises(ValueError, match="padding: expected 'pre' or 'post'"):
        mask_from_lengths(np.array([1]), 3, padding="mid")
    with pytest.raises(TypeError, match="lengths: expected integers"):
        mask_from_lengths(np.array([1.5]), 3)
    with pytest.raises(ValueError, match="max_size: expected None or an int >= 3"):
        char_vocab(["abc"], max_size=2)
    with pytest.raises(ValueError, match="time_keys: 'nope' is not an array of rank >= 2"):
        BatchIterator({**toy(4), "lengths": np.ones(4, int)}, 2, bucket_boundaries=[2],
                      time_keys=["nope"])


# ----------------------------------------------------------------------------- preprocessing

def test_sliding_windows_index_the_series_as_written():
    from jaxrnn.data import sliding_windows

    y = np.arange(10.0)
    x, t = sliding_windows(y, 3, 2)
    # Origins 3..8: inputs y[t-3:t], targets y[t:t+2].
    assert x.shape == (6, 3, 1) and t.shape == (6, 2, 1)
    np.testing.assert_array_equal(x[0, :, 0], [0, 1, 2])
    np.testing.assert_array_equal(t[0, :, 0], [3, 4])
    np.testing.assert_array_equal(x[-1, :, 0], [5, 6, 7])
    np.testing.assert_array_equal(t[-1, :, 0], [8, 9])
    two = np.stack([y, -y], 1)
    x2, t2 = sliding_windows(two, 3, 2, origins=[5])
    np.testing.assert_array_equal(x2[0], [[2, -2], [3, -3], [4, -4]])
    np.testing.assert_array_equal(t2[0], [[5, -5], [6, -6]])
    with pytest.raises(ValueError, match="origins: need 3 <= t <= 8"):
        sliding_windows(y, 3, 2, origins=[2])
    with pytest.raises(ValueError, match="window: expected a positive integer"):
        sliding_windows(y, 0, 2)
    with pytest.raises(ValueError, match="values: missing or infinite value at row 1"):
        sliding_windows([1.0, np.nan, 2.0], 1, 1)


@pytest.mark.parametrize("mode", ["global", "window"])
def test_window_scaler_round_trip_and_json(mode):
    import json

    from jaxrnn.data import WindowScaler, sliding_windows

    rng = np.random.default_rng(0)
    y = np.stack([10 + 3 * rng.normal(size=50), -5 + 0.5 * rng.normal(size=50)], 1)
    scaler = WindowScaler.fit(y[:30], mode=mode)
    np.testing.assert_allclose(scaler.mean, y[:30].mean(0))
    np.testing.assert_allclose(scaler.std, y[:30].std(0))
    x, t = sliding_windows(y, 6, 3)
    xs, ts, stats = scaler.transform(x, t)
    z = (x - y[:30].mean(0)) / y[:30].std(0)
    if mode == "global":
        np.testing.assert_allclose(xs, z, rtol=1e-5, atol=1e-5)
    else:
        # Each window standardised by its own mean and deviation (floor 0.1).
        m = z.mean(1, keepdims=True)
        s = np.maximum(z.std(1, keepdims=True), 0.1)
        np.testing.assert_allclose(xs, (z - m) / s, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(scaler.inverse(ts, stats), t, rtol=1e-5, atol=1e-4)
    again = WindowScaler.from_dict(json.loads(json.dumps(scaler.to_dict())))
    xs2, _, _ = again.transform(x)
    np.testing.assert_array_equal(xs2, xs)
    with pytest.raises(ValueError, match="x: expected 2 feature"):
        scaler.transform(x[..., :1])


def test_detect_period_finds_the_season():
    from jaxrnn.data import detect_period

    t = np.arange(240)
    rng = np.random.default_rng(1)
    monthly = 5 * np.sin(2 * np.pi * t / 12) + 0.05 * t + rng.normal(size=240)
    assert detect_period(monthly) == 12
    weekly = np.tile([1.0, 3.0, 2.0, 8.0, 1.0, 0.0, 4.0], 20) + 0.1 * rng.normal(size=140)
    assert detect_period(weekly) == 7
    assert detect_period(np.ones(50)) is None


def test_text_vectorizer_char_and_word_with_saved_vocabulary():
    import json

    from jaxrnn.data import TextVectorizer, encode_chars

    words = TextVectorizer("word").fit(["the cat sat", "the dog"])
    # ids: 0 pad, 1 oov, then by frequency then first appearance: the cat sat dog.
    ids, lengths = words.transform(["the dog sat", "a cat", ""])
    np.testing.assert_array_equal(ids, [[2, 5, 4], [1, 3, 0], [1, 0, 0]])
    np.testing.assert_array_equal(lengths, [3, 2, 1])
    again = TextVectorizer.from_dict(json.loads(json.dumps(words.to_dict())))
    np.testing.assert_array_equal(again.transform(["the dog sat"])[0], ids[:1])
    chars = TextVectorizer("char", max_len=4).fit(["ßaß日本"])
    ids, lengths = chars.transform(["日本語ßa"])
    vocab = chars.vocab
    assert vocab.decode(ids[0]) == "日本" + vocab.itos[1] + "ß"
    np.testing.assert_array_equal(lengths, [4])
    np.testing.assert_array_equal(encode_chars("aß?", vocab),
                                  [vocab.stoi["a"], vocab.stoi["ß"], 1])
    with pytest.raises(ValueError, match="call fit"):
        TextVectorizer("char").transform(["x"])
    with pytest.raises(TypeError, match=r"texts\[1\]: expected a string"):
        words.transform(["a", 3])


def test_label_encoder_strings_and_ints_round_trip():
    import json

    from jaxrnn.data import LabelEncoder

    enc = LabelEncoder.fit(["dog", "cat", "dog", "emu"])
    assert enc.classes == ["cat", "dog", "emu"]
    np.testing.assert_array_equal(enc.transform(["emu", "cat"]), [2, 0])
    assert enc.inverse_transform([1, 2]) == ["dog", "emu"]
    ints = LabelEncoder.fit(np.array([7, -1, 7, 3]))
    np.testing.assert_array_equal(ints.transform([3, 7, -1]), [1, 2, 0])
    again = LabelEncoder.from_dict(json.loads(json.dumps(ints.to_dict())))
    np.testing.assert_array_equal(again.transform(np.array([7.0, 3.0])), [2, 1])
    with pytest.raises(ValueError, match="label 'fox' at position 0 is not one of"):
        enc.transform(["fox"])
    with pytest.raises(ValueError, match="labels: expected at least 2 classes, got 1"):
        LabelEncoder.fit(["a", "a"], min_classes=2)


def test_pad_sequences_names_a_dtype_that_is_not_one():
    with pytest.raises(TypeError, match=r"^dtype: expected a NumPy dtype .* got 'nope'"):
        pad_sequences(SEQS, dtype="nope")
