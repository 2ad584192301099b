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

Your own labelled texts: ``--csv FILE --text-column C --label-column L`` (labels: any strings
or numbers, two classes or more; softmax over the classes). The same split, vocabulary and
model; the run writes one model directory (``--model``, default ``OUT/model``: architecture,
weights, vocabulary, classes, metrics) and the held-out predictions
(``OUT/predictions_test.csv``); ``jaxrnn predict --task sentiment --model DIR --input FILE.csv
--output OUT.csv`` labels the texts of a CSV's text column.
"""

from __future__ import annotations

import os
import time
from typing import Any, NamedTuple

import jax
import numpy as np

from jaxrnn.tasks.common import clip_norm, fail, kept_epoch_line, train_classifier

DESCRIPTION = ("Rotten Tomatoes sentences (vaderSentiment sdist): embedding -> LSTM/GRU -> "
               "sigmoid; prints test accuracy")
DEFAULTS = {"epochs": 8, "hidden": 64, "lr": 2e-3, "batch_size": 32, "dropout": 0.5}
PLOT_FILE = "sentiment_curves.png"


def add_arguments(parser) -> None:
    g = parser.add_argument_group("sentiment task")
    g.add_argument("--csv", metavar="FILE", help="your own labelled texts: a CSV file (with "
                   "--text-column and --label-column)")
    g.add_argument("--text-column", metavar="C", help="--csv: the column of texts")
    g.add_argument("--label-column", metavar="L", help="--csv: the column of labels")
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


def build_model(config, num_outputs: int):
    """embedding -> dropout -> recurrent stack -> dropout -> ``num_outputs`` logits, as a
    :mod:`jaxrnn.models` model (your own texts)."""
    from jaxrnn.tasks.modeldir import recurrent_model

    return recurrent_model(cell=config["cell"], hidden=config["hidden"],
                           layers=config["layers"], bidirectional=config["bidirectional"],
                           dropout=config["dropout"], outputs=num_outputs,
                           vocab_size=config["vocab_size"], embed=config["embed"])


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

    def init(key, input_spec=None):  # ids: the config fixes every shape
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


def architecture(config):
    """The built-in dataset's network (registered: :func:`jaxrnn.models.architecture`
    rebuilds it from the model directory)."""
    return make_model(config)


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
    from jaxrnn.tasks import modeldir

    clip_norm(args)  # validated before any data is read
    if args.embed < 1:
        raise ValueError(f"--embed: expected a positive integer, got {args.embed}")
    if args.csv is not None:
        return train_csv(args)
    for option in ("text_column", "label_column"):
        if getattr(args, option) is not None:
            fail("--" + option.replace("_", "-"), "only applies to your own texts: add "
                 "--csv FILE")
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
    run = train_classifier(args, model, splits, loss="binary_cross_entropy_with_logits",
                           monitor="val_accuracy", plot_file=PLOT_FILE)
    test, result = run.test, run.result
    majority = max(float(np.mean(splits["test"]["targets"])),
                   1.0 - float(np.mean(splits["test"]["targets"])))
    bow = bag_of_words_baseline(raw)
    model_path = modeldir.save_task(
        args, task="sentiment", config=config, params=run.params,
        metrics={"test_accuracy": test["accuracy"], "test_loss": test["loss"],
                 "baseline_accuracy": majority})
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
    if args.csv is not None:
        return evaluate_csv(args)
    from jaxrnn.data import Vocab
    from jaxrnn.tasks import modeldir
    from jaxrnn.train import evaluate as evaluate_params

    saved = modeldir.load_task(args, task="sentiment")
    config, model, params, path = (modeldir.config_of(saved), saved.model, saved.params,
                                   saved.directory)
    snippets = _load(args)
    vocab = Vocab.from_dict(config["vocab"])
    idx = split_indices(len(snippets.texts))["test"]
    test_data = encode([snippets.texts[i] for i in idx], snippets.labels[idx], vocab,
                       config["max_len"])
    test = evaluate_params(model.apply, params, "binary_cross_entropy_with_logits", test_data,
                           metrics=["accuracy"])
    print(f"test accuracy: {test['accuracy']:.4f} ({len(idx)} held-out sentences; model {path})")
    return {"test_accuracy": test["accuracy"], "test_loss": test["loss"]}


# --------------------------------------------------------------------------- your own texts

def read_texts(path, text_column, label_column=None, option="--csv"):
    """``(texts, labels or None)`` from the named columns of a CSV (a missing text reads as
    the empty string)."""
    from jaxrnn.tasks.common import read_csv, require_columns

    df = read_csv(path, option)
    require_columns(df, [text_column], "--text-column", path)
    if label_column is not None:
        require_columns(df, [label_column], "--label-column", path)
    texts = ["" if isinstance(t, float) and np.isnan(t) else str(t) for t in df[text_column]]
    labels = None if label_column is None else df[label_column].tolist()
    return texts, labels


def train_csv(args) -> dict:
    from jaxrnn.data import LabelEncoder, TextVectorizer
    from jaxrnn.tasks import modeldir
    from jaxrnn.tasks.classify import prediction_rows
    from jaxrnn.tasks.common import write_csv
    from jaxrnn.train import predict as predict_outputs

    for option in ("text_column", "label_column"):
        if getattr(args, option) is None:
            fail("--" + option.replace("_", "-"), "expected the name of a column of --csv")
    if args.max_len < 1:
        fail("--max-len", f"expected a positive integer, got {args.max_len}")
    if args.min_freq < 1:
        fail("--min-freq", f"expected a positive integer, got {args.min_freq}")
    t0 = time.perf_counter()
    texts, labels = read_texts(args.csv, args.text_column, args.label_column)
    encoder = LabelEncoder.fit(labels, min_classes=2,
                               argname=f"--label-column: column {args.label_column!r}")
    y = encoder.transform(labels)
    if len(texts) < 10:
        fail("--csv", f"{args.csv!r} has {len(texts)} rows; expected at least 10 (train, "
                      f"validation and test splits)")
    idx = split_indices(len(texts))
    if args.limit is not None:
        idx = {k: v[: max(1, int(args.limit * f))] for (k, v), f in
               zip(idx.items(), (0.8, 0.1, 0.1), strict=True)}
    vectorizer = TextVectorizer("word", max_len=args.max_len, min_freq=args.min_freq)
    vectorizer.fit([texts[i] for i in idx["train"]])
    splits = {}
    for name, rows in idx.items():
        ids, lengths = vectorizer.transform([texts[i] for i in rows])
        splits[name] = {"inputs": ids, "lengths": lengths, "targets": y[rows]}
    config = {**_config(args, vectorizer.vocab)}
    model = build_model(config, encoder.num_classes)
    n = {k: len(v["targets"]) for k, v in splits.items()}
    print(f"sentiment: {n} texts of {args.csv} ({args.text_column!r} -> "
          f"{args.label_column!r}, {encoder.num_classes} classes), vocabulary "
          f"{vectorizer.vocab_size} words; embed {args.embed} -> {args.cell} x{args.layers} "
          f"hidden {args.hidden}")
    # The epoch of the lowest validation loss, as Keras' restore_best_weights (accuracy on a
    # small validation split ties early).
    run = train_classifier(args, model, splits, monitor="val_loss", plot_file=PLOT_FILE)
    print(kept_epoch_line(run.result, "val_loss"))
    logits = predict_outputs(model.apply, run.params, splits["test"]["inputs"],
                             lengths=splits["test"]["lengths"])
    header, rows = prediction_rows([int(i) for i in idx["test"]], logits, encoder.classes)
    pred_path = write_csv(os.path.join(args.out, "predictions_test.csv"), header, rows)
    metrics = {"test_accuracy": run.test["accuracy"], "test_loss": run.test["loss"],
               "majority_baseline": run.baseline, "n_test": n["test"]}
    model_dir = modeldir.save(
        args.model, task="sentiment", model=model, params=run.params,
        preprocessing={"vectorizer": vectorizer.to_dict(), "labels": encoder.to_dict(),
                       "text_column": args.text_column, "label_column": args.label_column},
        metrics=metrics)
    verdict = "beats" if run.test["accuracy"] > run.baseline else "does NOT beat"
    print(f"test accuracy: {run.test['accuracy']:.4f} on {n['test']} held-out texts "
          f"(majority-class baseline {run.baseline:.4f}: the model {verdict} it); test loss "
          f"{run.test['loss']:.4f}; {time.perf_counter() - t0:.0f} s")
    print(f"held-out predictions (id = data row of {args.csv}): {pred_path}")
    print(f"learning curves: {run.result.plot_path}")
    print(f"model: {model_dir}")
    return {**metrics, "model": model_dir, "predictions": pred_path}


def predict(args) -> dict:
    """Label the texts of ``--input`` (a CSV with the training run's text column)."""
    from jaxrnn.data import TextVectorizer
    from jaxrnn.tasks import modeldir
    from jaxrnn.tasks.classify import prediction_rows
    from jaxrnn.tasks.common import write_csv
    from jaxrnn.train import predict as predict_outputs

    saved = modeldir.require_own_data(modeldir.load(args.model, task="sentiment"))
    prep = saved.preprocessing
    texts, _ = read_texts(args.input, args.text_column or prep["text_column"],
                          option="--input")
    ids, lengths = TextVectorizer.from_dict(prep["vectorizer"]).transform(texts)
    logits = predict_outputs(saved.model.apply, saved.params, ids, lengths=lengths)
    header, rows = prediction_rows(list(range(len(texts))), logits, prep["labels"]["classes"])
    path = write_csv(args.output, header, rows)
    print(f"predictions: {len(rows)} texts -> {path}")
    return {"predictions": path, "n": len(rows)}


def evaluate_csv(args) -> dict:
    """Accuracy of the model directory ``--model`` on all labelled texts of ``--csv``."""
    from jaxrnn.data import LabelEncoder, TextVectorizer
    from jaxrnn.tasks import modeldir
    from jaxrnn.train import evaluate as evaluate_params

    saved = modeldir.require_own_data(modeldir.load(args.model, task="sentiment"))
    prep = saved.preprocessing
    texts, labels = read_texts(args.csv, args.text_column or prep["text_column"],
                               args.label_column or prep["label_column"])
    targets = LabelEncoder.from_dict(prep["labels"]).transform(labels,
                                                               argname="--label-column")
    ids, lengths = TextVectorizer.from_dict(prep["vectorizer"]).transform(texts)
    scores = evaluate_params(saved.model.apply, saved.params, "softmax_cross_entropy",
                             {"inputs": ids, "lengths": lengths, "targets": targets},
                             metrics=["accuracy"])
    print(f"accuracy: {scores['accuracy']:.4f} on {len(texts)} texts of {args.csv} (model "
          f"{saved.directory})")
    return scores
