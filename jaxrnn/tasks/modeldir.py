"""One model directory per run: architecture, weights, preprocessing and metrics together.

    DIR/model.json          {"format", "task", "architecture": {"builder": NAME, ...}}
    DIR/params.msgpack      the weights (jaxrnn.train.checkpoint.save_params: atomic, hashed)
    DIR/preprocessing.json  what turns raw inputs into model inputs (scaler, vocabulary,
                            label classes, window...), JSON
    DIR/metrics.json        the held-out scores of the training run

:func:`load` rebuilds the model from ``architecture`` alone (a builder of :data:`BUILDERS`
called with it), so ``predict``, ``evaluate``, ``generate`` and Python use a directory without
knowing how it was trained::

    run = jaxrnn.tasks.modeldir.load("runs/classify/model")
    logits = jaxrnn.keras.predict(run.model, run.params, x)
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any, NamedTuple

FORMAT = "jaxrnn-model-dir/1"
MODEL_FILE, PARAMS_FILE = "model.json", "params.msgpack"
PREPROCESSING_FILE, METRICS_FILE = "preprocessing.json", "metrics.json"


def _classifier(arch):
    from jaxrnn.train.models import sequence_classifier

    return sequence_classifier(
        arch["input_size"], arch["num_outputs"], cell=arch["cell"], hidden=arch["hidden"],
        layers=arch["layers"], bidirectional_=arch["bidirectional"],
        dropout_rate=arch["dropout"],
    )


def _text_classifier(arch):
    from jaxrnn.tasks.sentiment import make_model

    return make_model({**arch, "vocab_size": arch["vocab_size"]}, num_outputs=arch["num_outputs"])


def _char_lm(arch):
    from jaxrnn.tasks.charlm import make_model
    from jaxrnn.train.models import Model

    init, apply = make_model(arch)
    return Model(init, apply)


# builder name -> architecture dict -> Model (``init(key)``, ``apply``).
BUILDERS: dict[str, Callable[[dict], Any]] = {
    "sequence_classifier": _classifier,
    "text_classifier": _text_classifier,
    "char_lm": _char_lm,
}


class SavedRun(NamedTuple):
    """What :func:`load` returns."""

    task: str
    model: Any  # init/apply
    params: Any
    architecture: dict
    preprocessing: dict
    metrics: dict
    directory: str


def build(architecture: dict):
    name = architecture.get("builder")
    if name not in BUILDERS:
        raise ValueError(f"architecture: unknown builder {name!r}; expected one of "
                         f"{sorted(BUILDERS)}")
    return BUILDERS[name](architecture)


def _write_json(path: str, obj) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, ensure_ascii=False)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save(directory, *, task: str, architecture: dict, params, preprocessing: dict | None = None,
         metrics: dict | None = None) -> str:
    """Write the model directory (created if needed); returns its path. The weights are
    written first and ``model.json`` last, so a directory with ``model.json`` is complete."""
    from jaxrnn.train.checkpoint import save_params

    build(architecture)  # refuse an architecture that cannot be rebuilt
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    save_params(os.path.join(directory, PARAMS_FILE), params, {"task": task})
    _write_json(os.path.join(directory, PREPROCESSING_FILE), preprocessing or {})
    _write_json(os.path.join(directory, METRICS_FILE), metrics or {})
    _write_json(os.path.join(directory, MODEL_FILE),
                {"format": FORMAT, "task": task, "architecture": architecture})
    return directory


def load(directory, *, option: str = "--model") -> SavedRun:
    """The run saved in ``directory`` by :func:`save`.

    Raises:
      FileNotFoundError: no model directory there (the message names ``option``).
    """
    import jax

    from jaxrnn.train.checkpoint import load_params

    directory = os.fspath(directory)
    path = os.path.join(directory, MODEL_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{option}: {directory!r} is not a model directory (no "
                                f"{MODEL_FILE}; train first, or point at a run's model/)")
    with open(path, encoding="utf-8") as f:
        head = json.load(f)
    if head.get("format") != FORMAT:
        raise ValueError(f"{option}: {path!r} has format {head.get('format')!r}, expected "
                         f"{FORMAT!r}")
    model = build(head["architecture"])
    # The structure of the parameters without computing an initialisation.
    params = load_params(os.path.join(directory, PARAMS_FILE),
                         jax.eval_shape(model.init, jax.random.key(0)))
    with open(os.path.join(directory, PREPROCESSING_FILE), encoding="utf-8") as f:
        prep = json.load(f)
    metrics = {}
    if os.path.isfile(os.path.join(directory, METRICS_FILE)):
        with open(os.path.join(directory, METRICS_FILE), encoding="utf-8") as f:
            metrics = json.load(f)
    return SavedRun(head["task"], model, params, head["architecture"], prep, metrics, directory)


__all__ = ["save", "load", "build", "SavedRun", "BUILDERS", "FORMAT"]
