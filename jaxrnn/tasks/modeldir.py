"""One model directory per run on the user's data, and the models the tasks build.

A run writes :func:`jaxrnn.models.save_model`'s directory (``model.json``: the architecture;
``weights.msgpack``; ``preprocessing.json``; ``metrics.json``) with the task's name and
everything that turns raw inputs into model inputs (scaler, vocabulary, label classes, window)
in ``preprocessing``. :func:`load` gives it back; ``predict``, ``evaluate``, ``generate`` and
Python need nothing else::

    run = jaxrnn.tasks.modeldir.load("runs/classify/model")
    logits = jaxrnn.keras.predict(run.model, run.params, x)

(``jaxrnn.models.load_model`` reads the same directory.)
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


def load(directory, *, option: str = "--model", task: str | None = None) -> SavedRun:
    """The run saved in ``directory``.

    Raises:
      FileNotFoundError / ValueError: no model directory there, or one of another task (the
        message names ``option``).
    """
    from jaxrnn.models import load_model

    directory = os.fspath(directory)
    if not os.path.isfile(os.path.join(directory, "model.json")):
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


__all__ = ["recurrent_model", "save", "load", "SavedRun"]
