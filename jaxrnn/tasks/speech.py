"""Speaker recognition from the Japanese vowels set: variable-length sequences with masking.

640 utterances of /ae/ by nine speakers, each 7-29 frames of 12 LPC cepstrum coefficients
(:mod:`jaxrnn.datasets.japanese_vowels`, from sktime). The official split: 270 train (30 per
speaker), 370 test. Sequences are post-padded to 29 frames and the true lengths go to the scan
engine, which freezes each sequence's carry after its last frame, so padding cannot change a
prediction (the classifier reads the output at the last *valid* frame). Features are
standardised with the training set's mean and standard deviation. 10% of the training set
(seeded) is held out for early stopping; the test set is used once, at the end.

Published test accuracies: 94.1% (Kudo et al. 1999, the data's authors), 96-99% for later
recurrent and convolutional models. The majority-class baseline of the test set is printed with
the result.
"""

from __future__ import annotations

import time

import numpy as np

from jaxrnn.tasks.common import clip_norm, majority_baseline, train_classifier

DESCRIPTION = ("Japanese vowels speaker recognition (sktime): 12 LPC coefficients, 7-29 frames, "
               "masked lengths; prints test accuracy")
DEFAULTS = {"epochs": 60, "hidden": 64, "lr": 3e-3, "batch_size": 16}
PLOT_FILE = "speech_curves.png"


def add_arguments(parser) -> None:
    g = parser.add_argument_group("speech task")
    g.add_argument("--patience", type=int, default=15,
                   help="early stopping: epochs without validation improvement (default 15)")
    g.add_argument("--val-fraction", type=float, default=0.1,
                   help="fraction of the training set held out for early stopping")


def prepare(data, *, val_fraction: float = 0.1, seed: int = 0) -> dict:
    """Padded, standardised splits ``{"train", "val", "test"}`` of a
    :class:`~jaxrnn.datasets.japanese_vowels.SequenceData`: each ``{"inputs": (N, T, F)
    float32, "lengths": (N,) int32, "targets": (N,) int32}``, plus ``"mean"``/``"std"`` (F,)."""
    from jaxrnn.data import pad_sequences

    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction: expected a float in [0, 1), got {val_fraction!r}")
    seqs, labels = data.train.sequences, data.train.labels
    order = np.random.default_rng(seed).permutation(len(seqs))
    n_val = int(round(val_fraction * len(seqs)))
    val_idx, train_idx = order[:n_val], order[n_val:]
    frames = np.concatenate([seqs[i] for i in train_idx])
    mean, std = frames.mean(0), frames.std(0) + 1e-6
    T = max(len(s) for s in seqs + data.test.sequences)

    def split(sequences, targets):
        x, lengths = pad_sequences([(s - mean) / std for s in sequences], maxlen=T,
                                   dtype="float32", truncating="post", return_lengths=True)
        return {"inputs": x, "lengths": lengths, "targets": np.asarray(targets, np.int32)}

    out = {
        "train": split([seqs[i] for i in train_idx], labels[train_idx]),
        "test": split(data.test.sequences, data.test.labels),
        "mean": mean,
        "std": std,
    }
    if n_val:
        out["val"] = split([seqs[i] for i in val_idx], labels[val_idx])
    return out


def _config(args, n_features: int, n_classes: int) -> dict:
    return {"cell": args.cell, "hidden": args.hidden, "layers": args.layers,
            "bidirectional": bool(args.bidirectional), "dropout": args.dropout,
            "n_features": n_features, "n_classes": n_classes}


def architecture(config):
    """The network of ``config`` (registered: :func:`jaxrnn.models.architecture` rebuilds it
    from the model directory)."""
    from jaxrnn.train.models import sequence_classifier

    return sequence_classifier(
        config["n_features"], config["n_classes"], cell=config["cell"], hidden=config["hidden"],
        layers=config["layers"], bidirectional_=config["bidirectional"],
        dropout_rate=config["dropout"],
    )


def _load_data(args):
    from jaxrnn.datasets.japanese_vowels import load_japanese_vowels

    data = load_japanese_vowels()
    return data, prepare(data, val_fraction=args.val_fraction, seed=0)


def train(args) -> dict:
    from jaxrnn.tasks import modeldir

    clip_norm(args)  # validated before any data is read
    t0 = time.perf_counter()
    data, splits = _load_data(args)
    config = _config(args, splits["train"]["inputs"].shape[-1], len(data.classes))
    model = architecture(config)
    n = {k: len(splits[k]["targets"]) for k in ("train", "val", "test") if k in splits}
    print(f"speech: Japanese vowels, {n} utterances, {config['n_features']} features, "
          f"{config['n_classes']} speakers; {config['cell']} x{config['layers']} hidden "
          f"{config['hidden']}")
    run = train_classifier(args, model, splits, plot_file=PLOT_FILE)
    test, result = run.test, run.result
    baseline = majority_baseline(splits["train"]["targets"], splits["test"]["targets"])
    config["mean"], config["std"] = splits["mean"].tolist(), splits["std"].tolist()
    model_path = modeldir.save_task(
        args, task="speech", config=config, params=run.params,
        metrics={"test_accuracy": test["accuracy"], "test_loss": test["loss"]})
    seconds = time.perf_counter() - t0
    print(f"test accuracy: {test['accuracy']:.4f} on {n['test']} held-out utterances "
          f"(majority-class baseline {baseline:.4f}; published 0.94-0.99); "
          f"test loss {test['loss']:.4f}; {seconds:.0f} s")
    print(f"learning curves: {result.plot_path}")
    print(f"model: {model_path}")
    return {"test_accuracy": test["accuracy"], "baseline_accuracy": baseline,
            "test_loss": test["loss"], "plot": result.plot_path, "model": model_path,
            "seconds": seconds}


def evaluate(args) -> dict:
    from jaxrnn.tasks import modeldir
    from jaxrnn.train import evaluate as evaluate_params

    saved = modeldir.load_task(args, task="speech")
    model, params, path = saved.model, saved.params, saved.directory
    _, splits = _load_data(args)
    test = evaluate_params(model.apply, params, "softmax_cross_entropy", splits["test"],
                           metrics=["accuracy"])
    print(f"test accuracy: {test['accuracy']:.4f} ({len(splits['test']['targets'])} held-out "
          f"utterances; model {path})")
    return {"test_accuracy": test["accuracy"], "test_loss": test["loss"]}
