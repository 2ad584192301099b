"""Images as sequences: Fashion-MNIST read row by row (28 steps of 28 pixels).

Data: Debian's ``dataset-fashion-mnist`` (:mod:`jaxrnn.datasets.fashion_mnist`; 60,000 training
and 10,000 test images, 10 clothing classes). If those files are missing, the task says so and
falls back to scikit-learn's 8x8 digits (8 steps of 8 pixels); ``--dataset`` picks explicitly.

The recurrent net sees one image row per time step and classifies from its last output, so it
has to carry what it saw at the top of the image to the bottom. Pixels are standardised with the
training set's mean and deviation. The last ``--val-size`` training images validate (early
stopping, best epoch restored); the test set is used once. Printed with the test accuracy: the
majority-class baseline (10% here) and, for reference, the published baselines of the data set's
authors (e.g. 84-85% for linear and logistic models, ~87-89% for MLPs; Xiao et al. 2017).
"""

from __future__ import annotations

import sys
import time

import numpy as np

from jaxrnn.tasks.common import clip_norm, train_classifier

DESCRIPTION = ("Fashion-MNIST (Debian dataset-fashion-mnist) read row by row, 28 steps of 28 "
               "pixels (sklearn digits as fallback); prints test accuracy")
DEFAULTS = {"epochs": 4, "hidden": 128, "lr": 2e-3, "batch_size": 128}
PLOT_FILE = "fashion_curves.png"


def add_arguments(parser) -> None:
    g = parser.add_argument_group("fashion task")
    g.add_argument("--dataset", choices=("auto", "fashion", "digits"), default="auto",
                   help="fashion (Debian files), digits (scikit-learn) or auto: fashion if "
                        "installed, else digits (default auto)")
    g.add_argument("--val-size", type=int, default=5000,
                   help="training images held out for validation (default 5000)")
    g.add_argument("--patience", type=int, default=2,
                   help="early stopping: epochs without validation improvement (default 2)")
    g.add_argument("--limit", type=int, default=None,
                   help="use only the first N training and N/5 test images (smoke tests)")


def load_images(which: str):
    """An :class:`~jaxrnn.datasets.fashion_mnist.ImageData`; ``auto`` falls back to digits
    with a message on stderr when the Fashion-MNIST files are missing."""
    from jaxrnn.datasets import fashion_mnist as fm

    if which == "digits":
        return fm.load_digits_images()
    try:
        return fm.load_fashion_mnist()
    except FileNotFoundError as e:
        if which == "fashion":
            raise
        print(f"fashion: {e}\nfashion: falling back to scikit-learn's 8x8 digits",
              file=sys.stderr)
        return fm.load_digits_images()


def prepare(data, *, val_size: int, limit: int | None = None) -> dict:
    """``{"train", "val", "test"}`` of ``{"inputs": (N, rows, cols) float32 standardised,
    "targets": (N,) int32}``, plus ``"mean"``/``"std"`` (scalars from the training images)."""
    x_tr, y_tr = data.train.images, data.train.labels
    x_te, y_te = data.test.images, data.test.labels
    if limit is not None:
        if limit < 20:
            raise ValueError(f"--limit: expected at least 20 images, got {limit}")
        x_tr, y_tr = x_tr[:limit], y_tr[:limit]
        x_te, y_te = x_te[: max(10, limit // 5)], y_te[: max(10, limit // 5)]
    val_size = min(val_size, len(y_tr) // 5)
    if val_size < 1:
        raise ValueError(f"--val-size: expected a positive integer, got {val_size}")
    x_va, y_va = x_tr[-val_size:], y_tr[-val_size:]
    x_tr, y_tr = x_tr[:-val_size], y_tr[:-val_size]
    mean, std = float(x_tr.mean()), float(x_tr.std())
    norm = lambda x: ((x - mean) / std).astype(np.float32)
    return {
        "train": {"inputs": norm(x_tr), "targets": y_tr},
        "val": {"inputs": norm(x_va), "targets": y_va},
        "test": {"inputs": norm(x_te), "targets": y_te},
        "mean": mean, "std": std,
    }


def _config(args, data, rows, cols) -> dict:
    return {"dataset": data.name, "cell": args.cell, "hidden": args.hidden,
            "layers": args.layers, "bidirectional": bool(args.bidirectional),
            "dropout": args.dropout, "rows": rows, "cols": cols,
            "n_classes": len(data.classes)}


def architecture(config):
    """The network of ``config`` (registered: :func:`jaxrnn.models.architecture` rebuilds it
    from the model directory)."""
    from jaxrnn.train.models import sequence_classifier

    return sequence_classifier(
        config["cols"], config["n_classes"], cell=config["cell"], hidden=config["hidden"],
        layers=config["layers"], bidirectional_=config["bidirectional"],
        dropout_rate=config["dropout"],
    )


def train(args) -> dict:
    from jaxrnn.tasks import modeldir

    clip_norm(args)  # validated before any data is read
    t0 = time.perf_counter()
    data = load_images(args.dataset)
    splits = prepare(data, val_size=args.val_size, limit=args.limit)
    _, rows, cols = splits["train"]["inputs"].shape
    config = _config(args, data, rows, cols)
    model = architecture(config)
    n = {k: len(splits[k]["targets"]) for k in ("train", "val", "test")}
    print(f"fashion: {data.name} {n}, {rows} steps of {cols} pixels; {args.cell} "
          f"x{args.layers} hidden {args.hidden}")
    run = train_classifier(args, model, splits, monitor="val_accuracy", plot_file=PLOT_FILE)
    test, result = run.test, run.result
    counts = np.bincount(splits["test"]["targets"], minlength=config["n_classes"])
    majority = float(counts.max() / counts.sum())
    config.update(mean=splits["mean"], std=splits["std"])
    model_path = modeldir.save_task(
        args, task="fashion", config=config, params=run.params,
        metrics={"test_accuracy": test["accuracy"], "test_loss": test["loss"]})
    seconds = time.perf_counter() - t0
    ref = "; published: logistic regression 0.84, MLP 0.87-0.88" \
        if data.name == "fashion-mnist" else ""
    print(f"test accuracy: {test['accuracy']:.4f} on {n['test']} held-out {data.name} images "
          f"(majority-class baseline {majority:.4f}{ref}); test loss {test['loss']:.4f}; "
          f"{seconds:.0f} s")
    print(f"learning curves: {result.plot_path}")
    print(f"model: {model_path}")
    return {"test_accuracy": test["accuracy"], "baseline_accuracy": majority,
            "test_loss": test["loss"], "plot": result.plot_path, "model": model_path,
            "dataset": data.name, "seconds": seconds}


def evaluate(args) -> dict:
    from jaxrnn.tasks import modeldir
    from jaxrnn.train import evaluate as evaluate_params

    saved = modeldir.load_task(args, task="fashion")
    config, model, params, path = (modeldir.config_of(saved), saved.model, saved.params,
                                   saved.directory)
    data = load_images("digits" if config["dataset"] == "digits" else "fashion")
    x = ((data.test.images - config["mean"]) / config["std"]).astype(np.float32)
    test = evaluate_params(model.apply, params, "softmax_cross_entropy",
                           {"inputs": x, "targets": data.test.labels}, metrics=["accuracy"])
    print(f"test accuracy: {test['accuracy']:.4f} ({len(x)} held-out {data.name} images; "
          f"model {path})")
    return {"test_accuracy": test["accuracy"], "test_loss": test["loss"]}
