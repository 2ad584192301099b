"""Classify labelled sequences from your own file: ``jaxrnn train --task classify --data FILE``.

Two formats:

* a CSV in long format, one row per time step: an id column (``--id-column``, default ``id``),
  a time column (``--time-column``, default ``t``; rows are sorted by it within each sequence),
  the label column (``--label-column``, default ``label``; one label per sequence) and the
  feature columns (``--feature-columns A,B``; default every other column);
* an ``.npz`` with ``x`` ``(N, T, F)`` (or ``(N, T)``: one feature), ``y`` ``(N,)`` and an
  optional ``lengths`` ``(N,)`` (valid steps at the start of each row).

Sequences may have any lengths: they are padded at the end and masked. Labels may be strings
or numbers (encoded to ``0 .. K-1``, saved). A seeded split holds out ``--test-fraction`` of
the sequences for the reported accuracy and ``--val-fraction`` for early stopping; features are
standardised by the training frames' mean and deviation. Model: recurrent stack -> last valid
output -> dense ``K`` logits. Printed: held-out accuracy against the majority-class baseline.

The run writes one model directory (``--model``, default ``OUT/model``) and the held-out
predictions (``OUT/predictions_test.csv``); ``jaxrnn predict --task classify --model DIR
--input FILE --output FILE.csv`` labels new sequences in either format (labels not needed).
"""

from __future__ import annotations

import os
import sys
import time
from typing import NamedTuple

import numpy as np

from jaxrnn.tasks.common import (
    add_patience,
    check_patience,
    clip_norm,
    column_names,
    drop_index_column,
    existing_file,
    fail,
    numeric_columns,
    read_csv,
    refuse_index_columns,
    require_columns,
    rnn_options,
    train_classifier,
    write_csv,
)

DESCRIPTION = ("your labelled sequences (long-format CSV: id, t, features..., label; or .npz: "
               "x, y, lengths): held-out accuracy vs the majority class; predict on new files")
DEFAULTS = {"epochs": 30, "hidden": 32, "lr": 3e-3, "batch_size": 32}
PLOT_FILE = "classify_curves.png"
PREDICTIONS_FILE = "predictions_test.csv"


def add_arguments(parser) -> None:
    g = parser.add_argument_group("classify task")
    g.add_argument("--data", metavar="FILE", help="labelled sequences: a long-format .csv or "
                   "an .npz (train, evaluate)")
    g.add_argument("--id-column", default="id", help="CSV: sequence id column (default id)")
    g.add_argument("--time-column", default="t", help="CSV: time column, rows sorted by it "
                   "within a sequence (default t; 'none': keep the file's order)")
    g.add_argument("--label-column", default="label", help="CSV: label column (default label)")
    g.add_argument("--feature-columns", metavar="A,B,...",
                   help="CSV: feature columns (default: every other column)")
    g.add_argument("--index-column", metavar="NAME",
                   help="CSV: a column to drop, e.g. the 'Unnamed: 0' index pandas writes "
                        "(a column that looks like one is refused as a feature)")
    g.add_argument("--test", metavar="FILE",
                   help="held-out sequences in a file of their own, as --data (e.g. a "
                        "dataset's TEST file); then --data is all for training")
    g.add_argument("--validation", metavar="FILE",
                   help="sequences for early stopping in a file of their own, as --data")
    g.add_argument("--test-fraction", type=float, default=None,
                   help="fraction of --data held out for the reported accuracy (default 0.2; "
                        "0 with --test)")
    g.add_argument("--val-fraction", type=float, default=None,
                   help="fraction of --data for early stopping and the epoch kept (default "
                        "0.1; 0: none; 0 with --validation)")
    add_patience(g, 8)


# --------------------------------------------------------------------------- reading

class Sequences(NamedTuple):
    """Labelled (or unlabelled) variable-length sequences."""

    ids: list  # one per sequence
    sequences: list  # (L_i, F) float64 arrays
    labels: list | None  # one per sequence, or None
    features: list[str]


def _file_kind(path: str, option: str) -> str:
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npz":
        return "npz"
    if ext in (".csv", ".txt", ".tsv"):
        return "csv"
    fail(option, f"expected a .csv or .npz file, got {path!r}")


def read_sequences(path, option: str, *, id_column="id", time_column="t",
                   label_column="label", feature_columns=None, need_labels=True,
                   index_column=None) -> Sequences:
    """The sequences of a long-format CSV or an ``.npz`` (see the module docstring), checked:
    every failure names ``option`` and what was expected. ``index_column`` is dropped; without
    ``feature_columns``, a column that looks like a pandas index is refused."""
    path = existing_file(path, option)
    if _file_kind(path, option) == "npz":
        return _read_npz(path, option, need_labels)
    df = drop_index_column(read_csv(path, option), index_column, option, path)
    time_column = None if time_column in (None, "none") else time_column
    fixed = [id_column] + ([time_column] if time_column else [])
    has_label = label_column in df.columns
    if need_labels or has_label:
        fixed.append(label_column)
    require_columns(df, fixed, option, path)
    if feature_columns:
        features = column_names(feature_columns, "--feature-columns")
    else:
        features = [c for c in df.columns if c not in fixed]
        if not features:
            fail(option, f"{path!r} has no feature columns besides {', '.join(fixed)}")
        refuse_index_columns(df, features, option, path)
    values = numeric_columns(df, features, option, path)
    if time_column:
        times = numeric_columns(df, [time_column], option, path)[:, 0]
    else:
        times = np.arange(len(df), dtype=np.float64)
    ids, sequences, labels = [], [], []
    keys = df[id_column].to_numpy()
    label_values = df[label_column].to_numpy() if (need_labels or has_label) else None
    # Group rows by id, in order of first appearance; within a group, by time (stable).
    order = {}
    for i, k in enumerate(keys):
        order.setdefault(k, []).append(i)
    for k, rows in order.items():
        rows = np.asarray(rows)
        rows = rows[np.argsort(times[rows], kind="stable")]
        ids.append(k.item() if isinstance(k, np.generic) else k)
        sequences.append(values[rows])
        if label_values is not None:
            distinct = {str(v) for v in label_values[rows]}
            if len(distinct) != 1:
                fail(option, f"sequence {k!r} has {len(distinct)} different labels in column "
                             f"{label_column!r} (expected one label per sequence)")
            labels.append(label_values[rows[0]])
    return Sequences(ids, sequences, labels if label_values is not None else None, features)


def _read_npz(path, option, need_labels) -> Sequences:
    try:
        f = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        fail(option, f"{path!r} is not a readable .npz ({e})")
    with f:
        if "x" not in f.files:
            fail(option, f"{path!r} has no array 'x' (found {', '.join(f.files) or 'none'}); "
                         f"expected x (N, T, F), y (N,), optional lengths (N,)")
        arrays = {}
        for name in ("x", "y", "lengths"):
            if name in f.files:
                try:
                    arrays[name] = f[name]
                except ValueError:  # an object array: NumPy asks for allow_pickle
                    fail(option, f"array {name!r} in {path!r} holds Python objects (a ragged "
                                 f"list of sequences of different lengths?), which are not "
                                 f"read; save x padded to (N, T, F) with lengths (N,), the "
                                 f"valid steps of each row (jaxrnn.data.pad_sequences(..., "
                                 f"return_lengths=True)), or use the long CSV format (id, t, "
                                 f"features..., label)")
        x, y, lengths = arrays["x"], arrays.get("y"), arrays.get("lengths")
    if need_labels and y is None:
        fail(option, f"{path!r} has no array 'y' of labels (expected y (N,))")
    if x.ndim == 2:
        x = x[..., None]
    if x.ndim != 3 or x.shape[0] == 0 or x.shape[1] == 0:
        fail(option, f"'x' in {path!r}: expected shape (N, T, F) or (N, T) with N, T >= 1, got "
                     f"{x.shape}")
    if not np.issubdtype(x.dtype, np.number):
        fail(option, f"'x' in {path!r}: expected numbers, got dtype {x.dtype}")
    n, t = x.shape[:2]
    if t < x.shape[2]:  # (N, C, T) saved as is reads as C steps of T features: say so
        print(f"{option}: warning: 'x' in {path!r} has shape {x.shape}, read as (N, T, F): {t} "
              f"steps of {x.shape[2]} features. If it is channels-first (N, C, T), save "
              f"x.transpose(0, 2, 1) instead", file=sys.stderr)
    if y is not None and y.shape != (n,):
        fail(option, f"'y' in {path!r}: expected shape ({n},) (one label per row of x), got "
                     f"{y.shape}")
    if lengths is None:
        lengths = np.full(n, t)
    elif lengths.shape != (n,) or not np.issubdtype(lengths.dtype, np.integer) or \
            lengths.min() < 1 or lengths.max() > t:
        fail(option, f"'lengths' in {path!r}: expected {n} integers in [1, {t}], got shape "
                     f"{lengths.shape} dtype {lengths.dtype}")
    seqs = [np.asarray(x[i, : int(lengths[i])], np.float64) for i in range(n)]
    for i, s in enumerate(seqs):
        if not np.isfinite(s).all():
            fail(option, f"'x' in {path!r}: row {i} holds NaN or inf within its length")
    labels = None if y is None else [v.item() if isinstance(v, np.generic) else v for v in y]
    return Sequences(list(range(n)), seqs, labels, [f"x{j}" for j in range(x.shape[2])])


# --------------------------------------------------------------------------- preparing

DEFAULT_TEST_FRACTION = 0.2
DEFAULT_VAL_FRACTION = 0.1


def split_indices(n: int, test_fraction: float | None = None, val_fraction: float | None = None,
                  seed: int = 0, *, test_file: bool = False, val_file: bool = False) -> dict:
    """A seeded permutation of ``range(n)`` cut into test, validation and training indices
    (at least one training sequence, and one test sequence unless the test sequences come
    from a file of their own: ``test_file``; likewise ``val_file``). A fraction of None is
    its default: 0.2 and 0.1, or 0 for a split that comes from a file."""
    if test_fraction is None:
        test_fraction = 0.0 if test_file else DEFAULT_TEST_FRACTION
    if val_fraction is None:
        val_fraction = 0.0 if val_file else DEFAULT_VAL_FRACTION
    if test_file and test_fraction != 0.0:
        fail("--test-fraction", f"expected 0 (or nothing) with --test (the held-out sequences "
                                f"come from that file), got {test_fraction}")
    if val_file and val_fraction != 0.0:
        fail("--val-fraction", f"expected 0 (or nothing) with --validation, got {val_fraction}")
    if not test_file and not 0.0 < test_fraction < 1.0:
        fail("--test-fraction", f"expected a number in (0, 1) (0 only with --test FILE), got "
                                f"{test_fraction}")
    if not 0.0 <= val_fraction < 1.0 or test_fraction + val_fraction >= 1.0:
        fail("--val-fraction", f"expected a number in [0, 1) with --test-fraction + "
                               f"--val-fraction < 1, got {val_fraction}")
    order = np.random.default_rng(seed).permutation(n)
    n_test = 0 if test_file else max(1, int(round(test_fraction * n)))
    n_val = int(round(val_fraction * n))
    if n - n_test - n_val < 1:
        fail("--data", f"{n} sequences are too few to hold out {n_test} for testing and "
                       f"{n_val} for validation")
    return {"test": order[:n_test], "val": order[n_test:n_test + n_val],
            "train": order[n_test + n_val:]}


def to_batch(sequences, mean, std, maxlen: int | None = None) -> dict:
    """``{"inputs": (N, T, F) float32 standardised, "lengths": (N,)}``, padded at the end."""
    from jaxrnn.data import pad_sequences

    mean, std = np.asarray(mean), np.asarray(std)
    T = max(len(s) for s in sequences)
    T = T if maxlen is None else max(T, maxlen)
    x, lengths = pad_sequences([(s - mean) / std for s in sequences], maxlen=T,
                               dtype="float32", return_lengths=True)
    return {"inputs": x, "lengths": lengths}


def softmax(logits) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def prediction_rows(ids, logits, classes) -> tuple[list[str], list]:
    """CSV header and rows: ``id, label, p_<class>...`` (the most likely class and the
    softmax probabilities)."""
    probs = softmax(logits)
    header = ["id", "label", *[f"p_{c}" for c in classes]]
    rows = [[i, classes[int(np.argmax(p))], *p.tolist()] for i, p in zip(ids, probs,
                                                                           strict=True)]
    return header, rows


def build_model(args, n_classes):
    """Recurrent stack -> last valid output -> dense ``n_classes`` logits."""
    from jaxrnn.tasks.modeldir import recurrent_model

    return recurrent_model(**rnn_options(args), outputs=n_classes)


# --------------------------------------------------------------------------- commands

def _read_options(args) -> dict:
    return {"id_column": args.id_column, "time_column": args.time_column,
            "label_column": args.label_column, "feature_columns": args.feature_columns}


class Prepared(NamedTuple):
    """What :func:`prepare` returns: the batches and what a model directory keeps."""

    splits: dict  # {"train", "val"?, "test"}: {"inputs", "lengths", "targets"}
    ids: dict  # the sequence ids of each split
    encoder: object  # jaxrnn.data.LabelEncoder
    features: list
    mean: np.ndarray
    std: np.ndarray
    maxlen: int
    lengths: list  # every sequence's length


def prepare(args) -> Prepared:
    """``--data`` (and ``--test`` / ``--validation`` files) read, labels encoded by the
    training labels, split by ``--test-fraction`` / ``--val-fraction`` (seeded) where no file
    gives a split, standardised by the training frames' mean and deviation."""
    from jaxrnn.data import LabelEncoder

    if getattr(args, "data", None) is None:
        fail("--data", "expected a labelled-sequence file (.csv in long format or .npz)")
    options = {**_read_options(args), "index_column": getattr(args, "index_column", None)}
    data = read_sequences(args.data, "--data", **options)
    extra = {}
    for name, option in (("test", "--test"), ("val", "--validation")):
        path = getattr(args, {"test": "test", "val": "validation"}[name], None)
        if path is not None:
            extra[name] = read_sequences(path, option, **{
                **options, "feature_columns": ",".join(map(str, data.features))
                if _file_kind(path, option) == "csv" and _file_kind(args.data, "--data") == "csv"
                else args.feature_columns})
            if len(extra[name].features) != len(data.features):
                fail(option, f"{path!r} has {len(extra[name].features)} features, --data has "
                             f"{len(data.features)}")
    encoder = LabelEncoder.fit(data.labels, min_classes=2,
                               argname=f"--data: label column {args.label_column!r}")
    idx = split_indices(len(data.sequences), getattr(args, "test_fraction", None),
                        getattr(args, "val_fraction", None), test_file="test" in extra,
                        val_file="val" in extra)
    parts = {name: ([data.ids[i] for i in rows], [data.sequences[i] for i in rows],
                    encoder.transform([data.labels[i] for i in rows])
                    if len(rows) else np.zeros(0, np.int32))
             for name, rows in idx.items()}
    for name, seqs in extra.items():
        option = "--test" if name == "test" else "--validation"
        parts[name] = (seqs.ids, seqs.sequences,
                       encoder.transform(seqs.labels, argname=f"{option}: labels"))
    frames = np.concatenate(parts["train"][1])
    mean = frames.mean(0)
    std = np.where(frames.std(0) > 0, frames.std(0), 1.0)
    lengths = [len(s) for part in parts.values() for s in part[1]]
    maxlen = max(lengths)
    splits, ids = {}, {}
    for name, (part_ids, seqs, y) in parts.items():
        if len(seqs):
            splits[name] = {**to_batch(seqs, mean, std, maxlen), "targets": y}
            ids[name] = part_ids
    return Prepared(splits, ids, encoder, data.features, mean, std, int(maxlen), lengths)


def train(args) -> dict:
    from jaxrnn.tasks import modeldir
    from jaxrnn.tasks.common import kept_epoch_line
    from jaxrnn.train import predict as predict_outputs

    clip_norm(args)
    check_patience(args)
    t0 = time.perf_counter()
    p = prepare(args)
    encoder, splits = p.encoder, p.splits
    model = build_model(args, encoder.num_classes)
    n = {k: len(v["targets"]) for k, v in splits.items()}
    print(f"classify: {sum(n.values())} sequences ({n}), lengths {min(p.lengths)}-"
          f"{max(p.lengths)}, {len(p.features)} features, {encoder.num_classes} classes; "
          f"{args.cell} x{args.layers} hidden {args.hidden}")
    # As Keras' restore_best_weights: the epoch of the lowest validation loss. Accuracy on a
    # small validation split ties early and often (7 sequences: steps of 1/7).
    run = train_classifier(args, model, splits, monitor="val_loss" if "val" in splits
                           else None, plot_file=PLOT_FILE)
    print(kept_epoch_line(run.result, "val_loss" if "val" in splits else None))
    logits = predict_outputs(model.apply, run.params, splits["test"]["inputs"],
                             lengths=splits["test"]["lengths"])
    header, rows = prediction_rows(p.ids["test"], logits, encoder.classes)
    pred_path = write_csv(os.path.join(args.out, PREDICTIONS_FILE), header, rows)
    metrics = {"test_accuracy": run.test["accuracy"], "test_loss": run.test["loss"],
               "majority_baseline": run.baseline, "n_test": n["test"],
               "kept_epoch": None if run.result.best_epoch is None
               else run.result.best_epoch + 1}
    prep = {"features": p.features, "mean": p.mean.tolist(), "std": p.std.tolist(),
            "maxlen": p.maxlen, "labels": encoder.to_dict(), **_read_options(args)}
    model_dir = modeldir.save(args.model, task="classify", model=model, params=run.params,
                              preprocessing=prep, metrics=metrics)
    seconds = time.perf_counter() - t0
    verdict = "beats" if run.test["accuracy"] > run.baseline else "does NOT beat"
    source = f" of {args.test}" if getattr(args, "test", None) else ""
    print(f"test accuracy: {run.test['accuracy']:.4f} on {n['test']} held-out sequences{source} "
          f"(majority-class baseline {run.baseline:.4f}: the model {verdict} it); test loss "
          f"{run.test['loss']:.4f}; {seconds:.0f} s")
    print(f"held-out predictions: {pred_path}")
    print(f"learning curves: {run.result.plot_path}")
    print(f"model: {model_dir}")
    return {**metrics, "model": model_dir, "predictions": pred_path,
            "plot": run.result.plot_path, "seconds": seconds}


# What predict and evaluate read from a classify model directory's preprocessing.json.
PREPROCESSING_KEYS = ("features", "mean", "std", "maxlen", "labels", "id_column", "time_column",
                      "label_column")


def load_saved(args):
    """The classify run in ``--model``; one saved some other way (``jaxrnn.models.save_model``
    without this task's preprocessing) fails naming ``--model`` and what it lacks."""
    from jaxrnn.tasks import modeldir

    directory = modeldir.directory_of(args)
    try:
        saved = modeldir.load(directory, task="classify")
    except ValueError as e:
        if "of task None" not in str(e):
            raise
        fail("--model", f"{directory!r} holds a model saved without a task (e.g. by "
                        f"jaxrnn.models.save_model); predict and evaluate read the model "
                        f"directory `jaxrnn train --task classify` writes (OUT/model)")
    missing = [k for k in PREPROCESSING_KEYS if k not in saved.preprocessing]
    if missing or "classes" not in (saved.preprocessing.get("labels") or {}):
        fail("--model", f"{directory!r} was not written by `jaxrnn train --task classify`: its "
                        f"preprocessing lacks {', '.join(missing) or 'labels.classes'} (the "
                        f"label encoder, feature names and scaling that predict needs); train "
                        f"with jaxrnn train --task classify, or save with those entries")
    return saved


def _inputs_of(saved, path, option, need_labels):
    prep = saved.preprocessing
    data = read_sequences(path, option, id_column=prep["id_column"],
                          time_column=prep["time_column"], label_column=prep["label_column"],
                          feature_columns=",".join(prep["features"])
                          if not str(path).lower().endswith(".npz") else None,
                          need_labels=need_labels)
    if len(data.features) != len(prep["features"]):
        fail(option, f"{path!r} has {len(data.features)} features, the model was trained on "
                     f"{len(prep['features'])}")
    return data, to_batch(data.sequences, prep["mean"], prep["std"], prep["maxlen"])


def predict(args) -> dict:
    from jaxrnn.train import predict as predict_outputs

    saved = load_saved(args)
    classes = saved.preprocessing["labels"]["classes"]
    data, batch = _inputs_of(saved, args.input, "--input", need_labels=False)
    logits = predict_outputs(saved.model.apply, saved.params, batch["inputs"],
                             lengths=batch["lengths"])
    header, rows = prediction_rows(data.ids, logits, classes)
    path = write_csv(args.output, header, rows)
    print(f"predictions: {len(rows)} sequences -> {path}")
    return {"predictions": path, "n": len(rows)}


def evaluate(args) -> dict:
    from jaxrnn.data import LabelEncoder
    from jaxrnn.train import evaluate as evaluate_params

    saved = load_saved(args)
    if args.data is None:
        fail("--data", "expected a labelled-sequence file to evaluate on")
    data, batch = _inputs_of(saved, args.data, "--data", need_labels=True)
    encoder = LabelEncoder.from_dict(saved.preprocessing["labels"])
    batch["targets"] = encoder.transform(data.labels, argname="--data: labels")
    scores = evaluate_params(saved.model.apply, saved.params, "softmax_cross_entropy", batch,
                             metrics=["accuracy"])
    print(f"accuracy: {scores['accuracy']:.4f} on {len(data.ids)} sequences of {args.data} "
          f"(model {saved.directory})")
    return scores
