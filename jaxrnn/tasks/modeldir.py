"""One model directory per run on the user's data, and the models the tasks build.

A run writes :func:`jaxrnn.models.save_model`'s directory (:mod:`jaxrnn.io.model_dir`:
``model.json`` with the architecture, the preprocessing and the metrics; the weights by Orbax)
with the task's name and everything that turns raw inputs into model inputs (scaler,
vocabulary, label classes, window) in ``preprocessing``. :func:`load` gives it back;
``predict``, ``evaluate``, ``generate`` and Python need nothing else::

    run = jaxrnn.tasks.modeldir.load("runs/classify/model")
    logits = jaxrnn.keras.predict(run.model, run.params, x)

(``jaxrnn.models.load_model`` reads the same directory.)

The built-in tasks (digits, fashion, speech, music, g2p, ... on their own datasets) write the
same directory through :func:`save_task`: their networks are rebuilt by the registered
architecture ``jaxrnn.tasks.TASK:architecture`` from the config in ``model.json``
(:func:`jaxrnn.models.architecture`), so loading needs no code from the training run either.
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple


def recurrent_model(*, cell: str, hidden: int, layers: int = 1, bidirectional: bool = False,
                    dropout: float = 0.0, outputs: int, vocab_size: int | None = None,
                    embed: int | None = None, return_sequences: bool = False):
    """``[Embedding ->] [Dropout ->] recurrent x layers -> [Dropout ->] Dense(outputs)`` as a
    :func:`jaxrnn.models.sequential` model: the last recurrent layer summarises each sequence
    (its last valid output) unless ``return_sequences``; ``dropout`` acts on the embedded
    inputs, between recurrent layers and before the head."""
    from jaxrnn import models as M

    specs = []
    if vocab_size is not None:
        specs.append(M.Embedding(int(vocab_size), int(embed)))
        if dropout:
            specs.append(M.Dropout(float(dropout)))
    for i in range(int(layers)):
        last = i == int(layers) - 1
        rnn = M.RNN(cell, int(hidden), return_sequences=return_sequences or not last)
        specs.append(M.Bidirectional(rnn) if bidirectional else rnn)
        if dropout and not last:
            specs.append(M.Dropout(float(dropout)))
    if dropout:
        specs.append(M.Dropout(float(dropout)))
    specs.append(M.Dense(int(outputs)))
    return M.sequential(specs)


class SavedRun(NamedTuple):
    """What :func:`load` returns."""

    task: str
    model: Any  # jaxrnn.models.Model
    params: Any
    preprocessing: dict
    metrics: dict
    directory: str


def save(directory, *, task: str, model, params, preprocessing: dict | None = None,
         metrics: dict | None = None) -> str:
    """Write the run's model directory (replacing an earlier one); returns its path."""
    from jaxrnn.models import save_model

    prep = {"task": task, **(preprocessing or {})}
    return save_model(directory, model, params, preprocessing=prep, metrics=metrics or {})


def require_own_data(run: SavedRun, option: str = "--model") -> SavedRun:
    """``run`` if it was trained on the user's files (its preprocessing turns raw inputs into
    model inputs); a built-in dataset's model fails naming ``option``."""
    if "architecture" in run.model.config:
        raise ValueError(f"{option}: {run.directory!r} holds a model of the built-in "
                         f"{run.task} dataset; this command needs one trained on your own "
                         f"file (--csv), or use `jaxrnn evaluate --task {run.task}`")
    return run


def load(directory, *, option: str = "--model", task: str | None = None) -> SavedRun:
    """The run saved in ``directory``.

    Raises:
      FileNotFoundError / ValueError: no model directory there, or one of another task (the
        message names ``option``).
    """
    from jaxrnn.models import load_model

    directory = os.fspath(directory)
    if not os.path.lexists(os.path.join(directory, "model.json")):
        raise FileNotFoundError(f"{option}: {directory!r} is not a model directory (no "
                                f"model.json; train first, or point at a run's model/)")
    try:
        saved = load_model(directory)
    except (ValueError, FileNotFoundError) as e:
        raise type(e)(f"{option}: {e}") from None
    prep = dict(saved.preprocessing or {})
    saved_task = prep.get("task")
    if task is not None and saved_task != task:
        raise ValueError(f"{option}: {directory!r} holds a model of task {saved_task!r}, not "
                         f"{task!r}")
    return SavedRun(saved_task, saved.model, saved.params, prep, dict(saved.metrics or {}),
                    directory)


def directory_of(args) -> str:
    """The run's model directory: ``--model`` if given, else ``OUT/model``."""
    return getattr(args, "model", None) or os.path.join(args.out, "model")


def task_architecture(task: str, config: dict):
    """The built-in task's network, as a :class:`jaxrnn.models.Model`."""
    from jaxrnn.models import architecture

    return architecture(f"jaxrnn.tasks.{task}:architecture", config)


def config_of(run: SavedRun) -> dict:
    """The architecture config a built-in task saved (:func:`save_task`).

    Raises:
      ValueError: ``run`` was trained on the user's own file (it has no built-in architecture);
        the message says to pass that file again."""
    if "architecture" not in run.model.config:
        raise ValueError(f"--model: {run.directory!r} holds a {run.task} model trained on your "
                         f"own file, not on the built-in dataset: pass the file again (e.g. "
                         f"`jaxrnn evaluate --task {run.task} --model DIR --csv FILE`)")
    return run.model.config["config"]


def save_task(args, *, task: str, config: dict, params, metrics: dict | None = None,
              preprocessing: dict | None = None, directory: str | None = None) -> str:
    """Write a built-in task's model directory (``directory``, default
    :func:`directory_of`); returns its path."""
    model = task_architecture(task, config)
    return save(directory or directory_of(args), task=task, model=model, params=params,
                preprocessing=preprocessing, metrics=_finite(metrics or {}))


def _finite(metrics: dict) -> dict:
    # model.json is strict JSON: a NaN/inf score (a diverged run) is written as null
    import math

    def clean(v):
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        if isinstance(v, bool) or v is None or isinstance(v, str):
            return v
        try:
            f = float(v)
        except (TypeError, ValueError):
            return str(v)
        if isinstance(v, int):
            return v
        return f if math.isfinite(f) else None

    return clean(metrics)


def load_task(args, *, task: str, directory: str | None = None) -> SavedRun:
    """The built-in task's saved run: the model directory ``directory`` (default ``--model``,
    else ``OUT/model``)."""
    directory = directory or directory_of(args)
    if os.path.lexists(os.path.join(directory, "model.json")):
        return load(directory, task=task)
    raise FileNotFoundError(f"--model: {directory!r} does not exist (train first): run "
                            f"`jaxrnn train --task {task}` with the same --out")


__all__ = ["recurrent_model", "save", "load", "SavedRun", "directory_of", "task_architecture",
           "config_of", "save_task", "load_task", "require_own_data"]
