"""The scaffold every task shares: option errors, the optimiser from the common options, the
classifier loop (fit -> held-out metric -> majority baseline), and reading a user's files.

Bad input must fail before anything is traced, with one line that names the option: tasks raise
:class:`OptionError` (a ``ValueError``, so ``jaxrnn.cli`` prints it and exits with status 2),
through :func:`fail` or the readers here (:func:`read_csv`, :func:`numeric_columns`,
:func:`read_text_files`), which name the option and the expected content.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np

# The default when --clip-norm is not given (Python callers with a bare Namespace): every task
# clipped at 1.0 before the option became common.
DEFAULT_CLIP_NORM = 1.0


class OptionError(ValueError):
    """A command-line option with a bad value or a bad file; the message starts with the
    option's name."""


def fail(option: str, message: str):
    """Raise :class:`OptionError` ``"OPTION: message"``."""
    raise OptionError(f"{option}: {message}")


def check_positive(args, *names: str, integer: bool = True) -> None:
    """Each ``args.<name>`` is a positive int (or number); else fail naming ``--name``."""
    for name in names:
        v = getattr(args, name)
        if v is None:
            continue
        ok = (isinstance(v, int) and not isinstance(v, bool)) if integer else \
            isinstance(v, (int, float))
        if not ok or v <= 0:
            kind = "a positive integer" if integer else "a positive number"
            fail("--" + name.replace("_", "-"), f"expected {kind}, got {v}")


# --------------------------------------------------------------------------- options

def clip_norm(args, default: float | None = DEFAULT_CLIP_NORM) -> float | None:
    """The gradient-clipping norm: ``--clip-norm`` if given, else ``default``."""
    v = getattr(args, "clip_norm", None)
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0:
        fail("--clip-norm", f"expected a positive number, got {v}")
    return float(v)


def task_optimizer(args, *, default_clip: float | None = DEFAULT_CLIP_NORM):
    """Adam at ``--lr`` with gradient clipping at ``--clip-norm`` and, with
    ``--skip-nonfinite``, updates with NaN/inf gradients skipped."""
    from jaxrnn.train import make_optimizer

    return make_optimizer(args.lr, clip_norm=clip_norm(args, default_clip),
                          skip_nonfinite=bool(getattr(args, "skip_nonfinite", False)))


def add_patience(group, default: int) -> None:
    group.add_argument("--patience", type=int, default=default,
                       help=f"early stopping: epochs without validation improvement "
                            f"(default {default})")


def check_patience(args) -> None:
    if getattr(args, "patience", None) is not None and args.patience < 0:
        fail("--patience", f"expected an integer >= 0, got {args.patience}")


def rnn_options(args) -> dict:
    """The recurrent-stack part of a model config, from the common options."""
    return {"cell": args.cell, "hidden": args.hidden, "layers": args.layers,
            "bidirectional": bool(args.bidirectional), "dropout": args.dropout}


# --------------------------------------------------------------------------- classifier loop

def init_params(model, seed: int, inputs):
    """``model.init`` with the key of ``--seed`` (and the input size of ``inputs``, for
    :mod:`jaxrnn.models` models)."""
    import jax

    from jaxrnn.keras import Inputs
    from jaxrnn.keras import init_params as init_for

    return init_for(model, jax.random.key(seed), Inputs(inputs, None))


class Trained(NamedTuple):
    """What :func:`train_classifier` returns."""

    params: object
    result: object  # jaxrnn.train.FitResult
    test: dict  # {"loss", "accuracy"} on the held-out split
    baseline: float  # majority-class accuracy on the held-out split


def majority_baseline(train_targets, test_targets) -> float:
    """Held-out accuracy of always predicting the most frequent training class."""
    train_targets = np.asarray(train_targets).reshape(-1).astype(np.int64)
    top = np.bincount(train_targets).argmax()
    return float(np.mean(np.asarray(test_targets).reshape(-1) == top))


def train_classifier(args, model, splits: dict, *, loss: str = "softmax_cross_entropy",
                     monitor: str | None = None, plot_file: str | None = None,
                     verbose: bool = True) -> Trained:
    """The loop every classification task runs: :func:`jaxrnn.train.fit` on
    ``splits["train"]`` with early stopping on ``splits["val"]`` (if any; ``--patience``),
    checkpoints in ``--checkpoint-dir`` (``--resume``), learning curves to
    ``OUT/plot_file``; then the accuracy on ``splits["test"]`` and its majority baseline."""
    from jaxrnn.train import evaluate, fit

    check_patience(args)
    metric = "accuracy"  # also scores one binary logit per example (threshold 0)
    n_train = len(splits["train"]["targets"])
    val = splits.get("val")
    result = fit(
        model.apply, init_params(model, args.seed, splits["train"]["inputs"]), loss,
        task_optimizer(args),
        splits["train"], val_data=val, epochs=args.epochs,
        batch_size=min(args.batch_size, n_train), metrics=[metric], seed=args.seed,
        monitor=monitor if val is not None else None,
        patience=getattr(args, "patience", None) if val is not None else None,
        checkpoint_dir=args.checkpoint_dir, resume=args.resume, progress=args.progress,
        verbose=verbose, data_parallel=getattr(args, "data_parallel", None),
        plot_path=None if plot_file is None else os.path.join(args.out, plot_file),
    )
    test = evaluate(model.apply, result.params, loss, splits["test"], metrics=[metric])
    baseline = majority_baseline(splits["train"]["targets"], splits["test"]["targets"])
    return Trained(result.params, result, test, baseline)


def fit_objective(args, params, data, objective, **options):
    """Train ``params`` on ``data`` with a task's own ``objective`` (``(params, batch, key) ->
    (loss, aux)``) through :func:`jaxrnn.train.fit`, with the common options (``--epochs``,
    ``--seed``, ``--checkpoint-dir`` / ``--resume``, ``--data-parallel``, ``--time-budget``,
    ``--progress``, the optimiser flags; clipped at 1.0 by default) and the non-finite guard
    every task has; ``options`` are further :func:`~jaxrnn.train.fit` keywords. Returns
    ``(params, steps, epochs, seconds)``."""
    import time

    from jaxrnn.train import fit

    t_train = time.perf_counter()
    result = fit(None, params, None, task_optimizer(args, default_clip=1.0), data,
                 objective=objective, epochs=args.epochs, seed=args.seed,
                 checkpoint_dir=getattr(args, "checkpoint_dir", None),
                 resume=bool(getattr(args, "resume", False)),
                 data_parallel=getattr(args, "data_parallel", None),
                 time_budget_s=args.time_budget, progress=bool(getattr(args, "progress", False)),
                 verbose=True, **options)
    epochs = len(result.history.get("loss", []))
    return result.params, int(result.state.step), epochs, time.perf_counter() - t_train


def kept_epoch_line(result, monitor: str | None = "val_loss") -> str:
    """One line saying which epoch's parameters the run kept and why (``result``: a
    :class:`jaxrnn.train.FitResult`)."""
    history = result.history
    n = len(history.get("loss", []))
    if monitor is None or result.best_epoch is None or monitor not in history:
        return f"kept the last epoch ({n}/{n}): no validation split to choose another by"
    values = history[monitor]
    best = result.best_epoch
    return (f"kept epoch {best + 1}/{n}: the lowest {monitor} ({values[best]:.4g}; last epoch "
            f"{values[-1]:.4g}), as Keras' restore_best_weights")


# --------------------------------------------------------------------------- user files

def existing_file(path, option: str) -> str:
    if path is None:
        fail(option, "expected a file name")
    path = os.fspath(path)
    if not os.path.exists(path):
        fail(option, f"no such file {path!r}")
    if not os.path.isfile(path):
        fail(option, f"{path!r} is not a file")
    return path


def read_csv(path, option: str):
    """A pandas DataFrame of the CSV file ``path`` (header row required)."""
    import pandas as pd

    path = existing_file(path, option)
    try:
        df = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        fail(option, f"{path!r} is empty")
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        fail(option, f"{path!r} is not a readable CSV file ({str(e).splitlines()[0]})")
    if df.shape[0] == 0:
        fail(option, f"{path!r} has a header but no rows")
    return df


def index_like_columns(df, candidates) -> list[str]:
    """The columns among ``candidates`` that look like a pandas index written into the file
    (``DataFrame.to_csv`` keeps the index unless ``index=False``): named ``Unnamed: N``, or
    holding the row numbers 0 .. n-1 (or 1 .. n) in any order (a frame sorted before it was
    written). As a feature such a column is meaningless, and in a file sorted by class it
    leaks the label."""
    n = len(df)
    found = []
    for name in candidates:
        if str(name).startswith("Unnamed:"):
            found.append(name)
            continue
        values = np.sort(np.asarray([_as_float(v) for v in df[name]], np.float64))
        if n >= 3 and (np.array_equal(values, np.arange(n)) or
                       np.array_equal(values, np.arange(1, n + 1))):
            found.append(name)
    return found


def drop_index_column(df, name: str | None, option: str, path: str):
    """``df`` without the column ``--index-column NAME`` (``df`` itself when ``name`` is
    None)."""
    if name is None:
        return df
    require_columns(df, [name], "--index-column", path)
    return df.drop(columns=[name])


def refuse_index_columns(df, candidates, option: str, path: str) -> None:
    """Fail naming ``--index-column`` when a column of ``candidates`` looks like an index."""
    found = index_like_columns(df, candidates)
    if found:
        name = found[0]
        fail(option, f"column {name!r} of {path!r} looks like a pandas index (an 'Unnamed' "
                     f"column or the row numbers 0..n-1), not a feature; drop it with "
                     f"--index-column {name!r} (or choose the features with "
                     f"--feature-columns)")


def column_names(text: str | None, option: str) -> list[str]:
    """``"A,B"`` -> ``["A", "B"]`` (no empty names)."""
    if text is None:
        return []
    names = [c.strip() for c in text.split(",")]
    if not all(names) or len(set(names)) != len(names):
        fail(option, f"expected distinct comma-separated column names, got {text!r}")
    return names


def require_columns(df, names, option: str, path: str) -> None:
    missing = [c for c in names if c not in df.columns]
    if missing:
        fail(option, f"no column {missing[0]!r} in {path!r}; its columns are "
                     f"{', '.join(map(str, df.columns))}")


def numeric_columns(df, names, option: str, path: str) -> np.ndarray:
    """``df[names]`` as float64 ``(N, len(names))``; fails on a missing column, a
    non-numeric or missing value (naming the row as the file counts it), or an empty series."""
    require_columns(df, names, option, path)
    out = np.empty((len(df), len(names)), np.float64)
    for j, name in enumerate(names):
        col = df[name]
        values = np.asarray([_as_float(v) for v in col], np.float64)
        bad = np.flatnonzero(~np.isfinite(values))
        if len(bad):
            row = int(bad[0])
            fail(option, f"column {name!r} of {path!r} is not numeric: row {row + 2} holds "
                         f"{col.iloc[row]!r} (expected a number)")
        out[:, j] = values
    if len(out) == 0:
        fail(option, f"column {names[0]!r} of {path!r} is empty")
    return out


def _as_float(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


# Control characters that text holds (tab, newline, vertical tab, form feed, carriage return).
TEXT_CONTROLS = frozenset("\t\n\v\f\r")
# A text with more than this share of NUL bytes or other control characters is refused as binary.
MAX_CONTROL_SHARE = 0.01


def read_text_files(paths, option: str) -> str:
    """The UTF-8 texts of ``paths`` joined by newlines; a file that is not UTF-8 or looks
    binary (more than 1% NUL bytes or other control characters) is refused naming ``option``."""
    if not paths:
        fail(option, "expected at least one text file")
    parts = []
    for path in paths:
        path = existing_file(path, option)
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except UnicodeDecodeError as e:
            fail(option, f"{path!r} is not UTF-8 text (byte {e.start}: {e.reason})")
        controls = sum(1 for c in text if c < " " and c not in TEXT_CONTROLS)
        if text and controls > MAX_CONTROL_SHARE * len(text):
            nul = text.count("\0")
            fail(option, f"{path!r} looks binary, not text: {controls:,} of its {len(text):,} "
                         f"characters are control characters ({nul:,} NUL bytes); expected a "
                         f"UTF-8 text file")
        parts.append(text)
    return "\n".join(parts)


def write_csv(path, header: list[str], rows) -> str:
    """Write ``rows`` under ``header``; floats with ``repr`` (17 significant digits), so a
    float32 prediction read back is the same number."""
    import csv

    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        for row in rows:
            w.writerow([repr(float(v)) if isinstance(v, (float, np.floating)) else v
                        for v in row])
    return path


__all__ = ["OptionError", "fail", "check_positive", "clip_norm",
           "task_optimizer", "add_patience", "check_patience", "rnn_options", "Trained",
           "majority_baseline", "train_classifier", "kept_epoch_line", "init_params",
           "existing_file", "read_csv",
           "column_names", "require_columns", "index_like_columns", "drop_index_column",
           "refuse_index_columns", "numeric_columns", "read_text_files",
           "write_csv", "DEFAULT_CLIP_NORM"]
