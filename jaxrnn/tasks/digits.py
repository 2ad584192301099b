"""The default task: scikit-learn's 8x8 handwritten digits read row by row by an RNN classifier.

``sklearn.datasets.load_digits`` ships inside the scikit-learn package (1,797 images of 8 x 8
grey levels 0..16, 10 classes; UCI optical recognition of handwritten digits), so the task needs
no download. Each image is a sequence of 8 rows (time steps) of 8 pixels (features), scaled to
[0, 1]. A fixed split (seed 0, independent of ``--seed``): 25% test, then 10% of the rest for
validation. Model: recurrent stack -> last output -> dense 10 logits; softmax cross-entropy;
Adam with gradient clipping; early stopping on validation loss with the best epoch restored.
"""

from __future__ import annotations

import importlib.util
import os
import time

import numpy as np

from jaxrnn.data.deps import require
from jaxrnn.tasks.common import (
    add_patience,
    check_patience,
    clip_norm,
    kept_epoch_line,
    train_classifier,
)

DESCRIPTION = ("8x8 digits (scikit-learn load_digits) read row by row, 8 steps of 8 features; "
               "prints test accuracy")
DEFAULTS = {"epochs": 40, "hidden": 64, "lr": 3e-3, "batch_size": 32}
PLOT_FILE = "digits_curves.png"


def add_arguments(parser) -> None:
    g = parser.add_argument_group("digits task")
    add_patience(g, 8)
    g.add_argument("--limit", type=int, default=None,
                   help="use only the first N images (smoke tests)")


def _digits_csv() -> str | None:
    """The file ``load_digits`` reads (``sklearn/datasets/data/digits.csv.gz``: 64 grey levels
    then the label per row), located without importing scikit-learn, whose import costs seconds;
    None when this scikit-learn keeps it elsewhere."""
    try:
        spec = importlib.util.find_spec("sklearn")
    except (ImportError, ValueError):
        spec = None
    if spec is None or spec.origin is None:
        require("sklearn", pip_name="scikit-learn", purpose="the digits task")  # raises
    path = os.path.join(os.path.dirname(spec.origin), "datasets", "data", "digits.csv.gz")
    return path if os.path.isfile(path) else None


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """``(images (1797, 8, 8) float32 in [0, 1], labels (1797,) int32)``, the data of
    ``sklearn.datasets.load_digits``."""
    path = _digits_csv()
    if path is not None:
        table = np.loadtxt(path, delimiter=",")
        pixels, labels = table[:, :-1], table[:, -1]
    else:
        d = require("sklearn.datasets", pip_name="scikit-learn",
                    purpose="the digits task").load_digits()
        pixels, labels = d.data, d.target
    return (np.asarray(pixels, np.float32) / 16.0).reshape(-1, 8, 8), labels.astype(np.int32)


def load_splits(limit: int | None = None, *, test_fraction: float = 0.25,
                val_fraction: float = 0.1) -> dict[str, dict[str, np.ndarray]]:
    """``{"train", "val", "test"}``, each ``{"inputs": (N, 8, 8) float32, "targets": (N,)
    int32}``; the split is fixed (seed 0)."""
    x, y = load_digits_arrays()
    order = np.random.default_rng(0).permutation(len(x))
    if limit is not None:
        if limit < 10:
            raise ValueError(f"--limit: expected at least 10 images, got {limit}")
        order = order[:limit]
    x, y = x[order], y[order]
    n_test = int(round(len(x) * test_fraction))
    n_val = int(round((len(x) - n_test) * val_fraction))
    cut = {"test": slice(0, n_test), "val": slice(n_test, n_test + n_val),
           "train": slice(n_test + n_val, None)}
    return {k: {"inputs": x[s], "targets": y[s]} for k, s in cut.items()}


def _config(args) -> dict:
    return {"cell": args.cell, "hidden": args.hidden, "layers": args.layers,
            "bidirectional": bool(args.bidirectional), "dropout": args.dropout}


def architecture(config):
    """The network of ``config`` (registered: :func:`jaxrnn.models.architecture` rebuilds it
    from the model directory)."""
    from jaxrnn.train.models import sequence_classifier

    return sequence_classifier(
        8, 10, cell=config["cell"], hidden=config["hidden"], layers=config["layers"],
        bidirectional_=config["bidirectional"], dropout_rate=config["dropout"],
    )


def train(args) -> dict:
    from jaxrnn.tasks import modeldir

    clip_norm(args)  # validated before any data is read
    check_patience(args)
    t0 = time.perf_counter()
    data = load_splits(args.limit)
    config = _config(args)
    model = architecture(config)
    print(f"digits: {len(data['train']['targets'])} train / {len(data['val']['targets'])} val / "
          f"{len(data['test']['targets'])} test images; {config['cell']} x{config['layers']} "
          f"hidden {config['hidden']}{' bidirectional' if config['bidirectional'] else ''}")
    run = train_classifier(args, model, data, plot_file=PLOT_FILE)
    print(kept_epoch_line(run.result, "val_loss"))
    test = run.test
    model_path = modeldir.save_task(
        args, task="digits", config=config, params=run.params,
        metrics={"test_accuracy": test["accuracy"], "test_loss": test["loss"]})
    seconds = time.perf_counter() - t0
    print(f"model: {model_path}")
    print(f"test accuracy: {test['accuracy']:.4f} ({len(data['test']['targets'])} held-out "
          f"images; test loss {test['loss']:.4f}; {seconds:.0f} s)")
    print(f"learning curves: {run.result.plot_path}")
    return {"test_accuracy": test["accuracy"], "test_loss": test["loss"],
            "plot": run.result.plot_path, "model": model_path, "history": run.result.history,
            "seconds": seconds}


def evaluate(args) -> dict:
    from jaxrnn.tasks import modeldir
    from jaxrnn.train import evaluate as evaluate_params

    saved = modeldir.load_task(args, task="digits")
    path, params = saved.directory, saved.params
    data = load_splits(args.limit)
    test = evaluate_params(saved.model.apply, params, "softmax_cross_entropy", data["test"],
                           metrics=["accuracy"])
    print(f"test accuracy: {test['accuracy']:.4f} ({len(data['test']['targets'])} held-out "
          f"images; model {path})")
    return {"test_accuracy": test["accuracy"], "test_loss": test["loss"]}


def read_images(path, option: str = "--input") -> np.ndarray:
    """Images ``(N, 8, 8)`` float32 from a ``.npy`` or ``.npz`` (array ``x`` or its only
    array) of ``(N, 8, 8)`` or ``(N, 64)`` grey levels in [0, 1], as :func:`load_splits` gives."""
    from jaxrnn.tasks.common import existing_file, fail

    path = existing_file(path, option)
    try:
        with np.load(path, allow_pickle=False) as f:
            if isinstance(f, np.ndarray):
                x = f
            else:
                names = list(f.keys())
                name = "x" if "x" in names else (names[0] if len(names) == 1 else None)
                if name is None:
                    fail(option, f"{path!r} holds {names}; expected an array 'x'")
                x = f[name]
    except (ValueError, OSError) as e:
        fail(option, f"{path!r} is not a .npy/.npz file ({e})")
    x = np.asarray(x)
    if x.ndim == 2 and x.shape[1] == 64:
        x = x.reshape(-1, 8, 8)
    if x.ndim != 3 or x.shape[1:] != (8, 8) or not np.issubdtype(x.dtype, np.number):
        fail(option, f"expected images of shape (N, 8, 8) or (N, 64), got {x.dtype} "
                     f"{tuple(x.shape)}")
    return x.astype(np.float32)


def predict(args) -> dict:
    """``--model DIR --input IMAGES.npz --output FILE.csv``: ``id, label, p_0..p_9``."""
    from jaxrnn.tasks import modeldir
    from jaxrnn.tasks.classify import prediction_rows
    from jaxrnn.tasks.common import write_csv
    from jaxrnn.train import predict as predict_outputs

    saved = modeldir.load_task(args, task="digits")
    x = read_images(args.input)
    logits = np.asarray(predict_outputs(saved.model.apply, saved.params, x))
    header, rows = prediction_rows(range(len(x)), logits, list(range(10)))
    path = write_csv(args.output, header, rows)
    print(f"predictions: {len(rows)} images -> {path}")
    return {"predictions": path, "n": len(rows), "logits": logits}
