"""Keras-level training on arrays: ``fit(model, x, y)``, ``predict``, ``evaluate``, ``sample``.

The functional loop (:func:`jaxrnn.train.fit`) wants a dict of equal-length arrays, integer
targets and an optimiser; a user has NumPy arrays or lists of sequences of different lengths,
string labels and a learning rate. The functions here do the glue once, then call
:func:`jaxrnn.train.fit` underneath:

* ``x`` as an array ``(N, T, F)`` / ``(N, T)`` token ids, or a list of ``N`` sequences of any
  lengths: padded at the end with their ``lengths`` passed to the model (masked);
* ``y`` of any labels for a classification loss: encoded to ``0 .. K-1`` by a
  :class:`~jaxrnn.data.LabelEncoder` (kept in the returned history, for decoding predictions);
* ``validation_split`` (the last fraction, before shuffling, as Keras) or ``validation_data``;
* the loss names of :mod:`jaxrnn.train.losses` (one table), Keras' meaning what they mean in
  Keras, from logits: ``"sparse_categorical_crossentropy"`` (labels, encoded to ids),
  ``"categorical_crossentropy"`` (one-hot ``y``), ``"binary_crossentropy"`` (two labels),
  ``"mse"``, ``"mae"``; and Keras-like callbacks (:class:`EarlyStopping`, :class:`BackupAndRestore`,
  :class:`LearningRateScheduler`, or any ``fn(epoch, logs)`` called after each epoch).

A model is a :class:`jaxrnn.models.Model` (``init(key, input_spec) -> params``, ``apply(params,
x, *, lengths=None, key=None, deterministic=True) -> outputs``), as every builder returns:
``jaxrnn.models.sequential([...])``, ``jaxrnn.train.models.sequence_classifier(...)``, a task's
architecture.

    >>> params, history = jaxrnn.keras.fit(model, x, labels, epochs=20, validation_split=0.2)
    >>> probs = jaxrnn.keras.predict(model, params, x_new)            # NumPy, (N, K) logits
    >>> history.label_encoder.inverse_transform(probs.argmax(-1))     # back to the labels

:func:`sample` draws text from a character language model (temperature, top-k, prime text).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn.data.labels import LabelEncoder
from jaxrnn.data.padding import pad_sequences
from jaxrnn.train.loop import check_finite
from jaxrnn.train.options import LoopOptions

# Losses by their names in jaxrnn.train.losses' one table (Keras' names mean what they mean in
# Keras, from logits): those whose targets are class labels, encoded here to ids or 0/1.
_CLASS_IDS = {"sparse_categorical_crossentropy", "softmax_cross_entropy"}
_BINARY = {"binary_cross_entropy_with_logits"}
_CLASSIFICATION = _CLASS_IDS | _BINARY
_DEFAULT_METRICS = {"softmax_cross_entropy": ["accuracy"],
                    "sparse_categorical_crossentropy": ["accuracy"],
                    "categorical_crossentropy": ["accuracy"],
                    "binary_cross_entropy_with_logits": ["binary_accuracy"],
                    "mse": ["rmse"], "mae": ["mae"]}


# --------------------------------------------------------------------------- callbacks

class EarlyStopping(NamedTuple):
    """Stop after ``patience`` epochs without improvement of ``monitor`` (default
    ``"val_loss"`` with validation data, else ``"loss"``); return the best epoch's parameters
    with ``restore_best_weights``."""

    monitor: str | None = None
    patience: int = 5
    min_delta: float = 0.0
    mode: str = "auto"
    restore_best_weights: bool = True


class BackupAndRestore(NamedTuple):
    """Checkpoint every epoch into ``directory`` and continue from it when ``fit`` runs again
    (bit-for-bit, see :mod:`jaxrnn.io`)."""

    directory: str


class LearningRateScheduler(NamedTuple):
    """``schedule(epoch) -> learning rate`` (epochs from 0), evaluated once per epoch."""

    schedule: Callable[[int], float]


class History(dict):
    """``{"loss": [...], "val_loss": [...], "<metric>": [...], ...}`` per epoch, plus:

    Attributes:
      best_epoch: the best epoch by the monitored quantity, counted from 1 as printed (None
        without monitoring).
      label_encoder: the :class:`~jaxrnn.data.LabelEncoder` that mapped ``y`` to class ids
        (None when the targets were not class labels).
      stopped_early: whether :class:`EarlyStopping` ended training.
    """

    best_epoch: int | None = None
    label_encoder: LabelEncoder | None = None
    stopped_early: bool = False


# --------------------------------------------------------------------------- inputs

class Inputs(NamedTuple):
    """Model inputs as arrays: ``x`` padded at the end, ``lengths`` (None: all full)."""

    x: np.ndarray
    lengths: np.ndarray | None


def as_inputs(x, lengths=None, *, maxlen: int | None = None, argname: str = "x") -> Inputs:
    """An array ``(N, T, ...)`` as is, or a list of variable-length sequences padded at the end
    (to ``maxlen`` or the longest) with their lengths. Float features become float32 (``(N, T)``
    floats: one feature per step, ``(N, T, 1)``), token ids int32."""
    if isinstance(x, np.ndarray) or hasattr(x, "__array__") and not isinstance(x, (list, tuple)):
        arr = np.asarray(x)
        if arr.ndim < 2:
            raise ValueError(f"{argname}: expected (N, T) token ids or (N, T, F) features, got "
                             f"shape {arr.shape}")
        if arr.dtype == object:
            raise ValueError(f"{argname}: an object array; pass a list of sequences instead")
    elif isinstance(x, (list, tuple)):
        if not x:
            raise ValueError(f"{argname}: expected at least one sequence, got none")
        first = np.asarray(x[0])
        dtype = "int32" if np.issubdtype(first.dtype, np.integer) else "float32"
        arr, implied = pad_sequences(list(x), maxlen=maxlen, dtype=dtype, truncating="post",
                                     return_lengths=True)
        if lengths is None and (implied < arr.shape[1]).any():
            lengths = implied
    else:
        raise TypeError(f"{argname}: expected an array or a list of sequences, got "
                        f"{type(x).__name__}")
    if np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float32)
        if arr.ndim == 2:  # (N, T) numbers: one feature per step (ids are integers)
            arr = arr[..., None]
        elif arr.ndim == 3 and arr.shape[1] < arr.shape[2]:
            warnings.warn(
                f"{argname}: shape {arr.shape} is read as (N, T, F): {arr.shape[1]} steps of "
                f"{arr.shape[2]} features. If it is channels-first (N, C, T), pass "
                f"{argname}.transpose(0, 2, 1)", UserWarning, stacklevel=3)
    elif np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool:
        arr = arr.astype(np.int32)
    else:
        raise ValueError(f"{argname}: expected numbers, got dtype {arr.dtype}")
    if lengths is not None:
        lengths = np.asarray(lengths)
        if lengths.shape != (len(arr),) or not np.issubdtype(lengths.dtype, np.integer):
            raise ValueError(f"lengths: expected {len(arr)} integers (one per sequence), got "
                             f"shape {lengths.shape} dtype {lengths.dtype}")
        if lengths.min(initial=1) < 1 or lengths.max(initial=0) > arr.shape[1]:
            raise ValueError(f"lengths: expected values in [1, {arr.shape[1]}], got "
                             f"[{lengths.min()}, {lengths.max()}]")
        lengths = lengths.astype(np.int32)
    return Inputs(arr, lengths)


def loss_name(loss) -> str | Callable:
    """The name in :data:`jaxrnn.train.losses.LOSSES` of a Keras or jaxrnn loss name
    (:data:`~jaxrnn.train.losses.ALIASES`, case-insensitive); callables pass through."""
    from jaxrnn.train.losses import ALIASES, LOSSES

    if callable(loss):
        return loss
    name = loss.strip().lower() if isinstance(loss, str) else loss
    name = ALIASES.get(name, name) if isinstance(name, str) else name
    if name not in LOSSES:
        raise ValueError(f"loss: expected one of {sorted({*LOSSES, *ALIASES})} or a function, "
                         f"got {loss!r}")
    return name


def check_batch_size(batch_size) -> int:
    """A positive int (NumPy ints too), else a ValueError naming ``batch_size``."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
            or batch_size < 1:
        raise ValueError(f"batch_size: expected a positive integer, got {batch_size!r}")
    return int(batch_size)


def _integral_ids(y_arr: np.ndarray) -> np.ndarray | None:
    """``y`` as int64 when every label is a whole number (ints, or floats such as 2.0), else
    None (strings, fractions, NaN)."""
    if y_arr.dtype == object:
        try:
            y_arr = np.asarray(y_arr.tolist())
        except (TypeError, ValueError):
            return None
    if y_arr.size == 0 or not (np.issubdtype(y_arr.dtype, np.integer)
                               or np.issubdtype(y_arr.dtype, np.floating)):
        return None
    if np.issubdtype(y_arr.dtype, np.floating):
        if not np.isfinite(y_arr).all() or not (y_arr == np.round(y_arr)).all():
            return None
    return y_arr.astype(np.int64)


def encode_targets(y, loss, label_encoder: LabelEncoder | None = None, *,
                   num_classes: int | None = None):
    """``(targets, label_encoder)``: class labels of a classification loss encoded to int32 ids
    (float 0/1 for the binary loss) with a new or the given encoder; other targets as float32.

    Without an encoder, whole-number labels that are already class ids of the model (all in
    ``[0, num_classes)``, ``num_classes`` its outputs) keep their meaning (id k is class k, as
    in Keras); any other labels (strings, floats, whole numbers such as 1/2 for 2 outputs) are
    encoded in sorted order, the same way whatever their type."""
    name = loss_name(loss)
    y_arr = np.asarray(y) if not isinstance(y, (list, tuple)) else np.asarray(y, dtype=object)
    if name in _CLASSIFICATION:
        if label_encoder is None:
            ids = _integral_ids(y_arr) if name in _CLASS_IDS else None
            fits = ids is not None and ids.min() >= 0 and (
                num_classes is None or ids.max() < num_classes)
            if fits:
                label_encoder = LabelEncoder(list(range(max(int(ids.max()) + 1,
                                                            num_classes or 0))))
                return ids.astype(np.int32), label_encoder
            label_encoder = LabelEncoder.fit(y_arr, min_classes=2, argname="y")
            if (name in _CLASS_IDS and num_classes is not None
                    and label_encoder.num_classes > num_classes):
                raise ValueError(
                    f"y: {label_encoder.num_classes} classes "
                    f"({', '.join(map(repr, label_encoder.classes[:6]))}"
                    f"{', ...' if label_encoder.num_classes > 6 else ''}) but the model has "
                    f"{num_classes} outputs; give its last layer {label_encoder.num_classes} "
                    f"units")
        if name in _BINARY and label_encoder.num_classes != 2:
            raise ValueError(f"y: binary_crossentropy needs 2 classes, got "
                             f"{label_encoder.num_classes}")
        ids = label_encoder.transform(y_arr, argname="y")
        if name in _BINARY:
            return ids.astype(np.float32), label_encoder
        return ids, label_encoder
    if name == "categorical_crossentropy":
        ok = y_arr.dtype != object and np.issubdtype(y_arr.dtype, np.number) and y_arr.ndim >= 2
        if not ok:
            raise ValueError(f"y: categorical_crossentropy takes one-hot targets (N, ..., K) "
                             f"as in Keras, got shape {y_arr.shape} dtype {y_arr.dtype}; for "
                             f"class labels use 'sparse_categorical_crossentropy'")
    try:
        return np.asarray(y_arr, np.float32), None
    except (TypeError, ValueError):
        raise ValueError("y: expected numeric targets for a regression loss") from None


# --------------------------------------------------------------------------- model helpers

def init_params(model, key, inputs: Inputs):
    """``model.init(key, input_spec)`` (:class:`jaxrnn.models.Model`'s protocol): the feature
    size for features, the number of token ids for ids (a model that starts with an Embedding
    ignores it)."""
    x = inputs.x
    input_spec = x.shape[-1] if x.ndim >= 3 else int(x.max(initial=0)) + 1
    return model.init(key, int(input_spec))


def check_model_inputs(model, params, inputs: Inputs, argname: str = "x") -> None:
    """Raise a ValueError naming ``argname`` and the array's shape when ``model`` (with
    ``params``) cannot read ``inputs``: ids for a model of features or the reverse, the wrong
    feature size; checked from the shapes before anything is traced. Models other than
    :func:`jaxrnn.models.sequential` ones are asked through ``jax.eval_shape``, their error
    re-raised naming ``argname``."""
    from jaxrnn import models as M

    x = inputs.x
    if isinstance(model, M.Model):
        if model.takes_ids and not np.issubdtype(x.dtype, np.integer):
            raise ValueError(f"{argname}: the model starts with an Embedding and reads (N, T) "
                             f"integer token ids, got {x.dtype} values of shape {x.shape}")
        if not model.takes_ids:
            if np.issubdtype(x.dtype, np.integer):
                raise ValueError(
                    f"{argname}: the model reads (N, T, F) float features, got integers of "
                    f"shape {x.shape}; pass floats (x.astype('float32'), one feature per step "
                    f"for (N, T)) or start the model with an Embedding for token ids")
            want = M.input_size_of(model, params)
            if x.shape[-1] != want:
                raise ValueError(f"{argname}: expected {want} features per step (the model's "
                                 f"params were made for {want}), got shape {x.shape}")
        return
    try:
        _output_shape(model, params, inputs)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{argname}: the model does not read an array of shape {x.shape} "
                         f"dtype {x.dtype} ({e})") from None


def carried_label_encoder(model) -> LabelEncoder | None:
    """The label encoder :func:`fit` left on ``model`` (None if none, or the model has no
    ``preprocessing`` dict to carry one)."""
    carried = getattr(model, "preprocessing", None)
    return carried.get("label_encoder") if isinstance(carried, dict) else None


def carry_label_encoder(model, encoder: LabelEncoder | None) -> None:
    carried = getattr(model, "preprocessing", None)
    if isinstance(carried, dict):
        if encoder is None:
            carried.pop("label_encoder", None)
        else:
            carried["label_encoder"] = encoder


def _output_shape(model, params, inputs: Inputs):
    n = min(2, len(inputs.x))
    lengths = None if inputs.lengths is None else jnp.asarray(inputs.lengths[:n])
    out = jax.eval_shape(lambda p, x, n_: model.apply(p, x, lengths=n_, key=None,
                                                      deterministic=True),
                         params, jnp.asarray(inputs.x[:n]), lengths)
    return out.shape[1:]


def _fit_targets_to(targets: np.ndarray, out_shape, name) -> np.ndarray:
    """Reshape per-example targets to the model's per-example output shape when they hold the
    same number of values (``(N,)`` labels for ``(N, 1)`` logits, ``(N, H, 1)`` for ``(N, H)``)."""
    want = tuple(out_shape[:-1]) if name in _CLASS_IDS and \
        np.issubdtype(targets.dtype, np.integer) else tuple(out_shape)
    if targets.shape[1:] != want and int(np.prod(targets.shape[1:])) == int(np.prod(want)):
        return targets.reshape((len(targets), *want))
    return targets


def _batches(inputs: Inputs, targets=None) -> dict:
    data = {"inputs": inputs.x}
    if inputs.lengths is not None:
        data["lengths"] = inputs.lengths
    if targets is not None:
        data["targets"] = targets
    return data


def _take(data: dict, idx) -> dict:
    return {k: v[idx] for k, v in data.items()}


# --------------------------------------------------------------------------- fit

def fit(
    model,
    x,
    y,
    *,
    loss="sparse_categorical_crossentropy",
    epochs: int = 10,
    batch_size: int = 32,
    validation_split: float | None = None,
    validation_data: tuple | None = None,
    callbacks: Sequence = (),
    optimizer: str = "adam",
    lr: float = 1e-3,
    clip_norm: float | None = 1.0,
    metrics: Sequence | None = None,
    seed: int = 0,
    lengths=None,
    params=None,
    label_encoder: LabelEncoder | None = None,
    progress: bool = False,
    verbose: bool = False,
    data_parallel=None,
    skip_nonfinite: bool | None = None,
) -> tuple[Any, History]:
    """Train ``model`` on arrays; returns ``(params, history)``.

    Args:
      model: ``init``/``apply`` as in the module docstring.
      x: inputs ``(N, T, F)`` floats or ``(N, T)`` token ids, or a list of ``N`` sequences of
        any lengths (padded at the end; their lengths mask the model).
      y: targets ``(N, ...)``: any labels for a classification loss, numbers for ``"mse"``.
      loss: a name of :func:`jaxrnn.train.losses.get_loss` (Keras' names as in Keras, from
        logits: ``"sparse_categorical_crossentropy"`` on labels, ``"categorical_crossentropy"``
        on one-hot targets, ``"binary_crossentropy"`` on two labels, ``"mse"``, ``"mae"``) or
        ``loss(outputs, targets, mask)``.
      epochs, batch_size: as Keras (``batch_size`` capped at the number of examples).
      validation_split: hold out this last fraction of ``(x, y)`` (before shuffling).
      validation_data: ``(x_val, y_val)`` or ``(x_val, y_val, lengths_val)``.
      callbacks: :class:`EarlyStopping`, :class:`BackupAndRestore`,
        :class:`LearningRateScheduler`, functions ``fn(epoch, logs)`` (epochs from 1) called
        after each epoch, or :mod:`jaxrnn.train.callbacks` objects; one returning True stops
        training.
      optimizer, lr, clip_norm: see :func:`jaxrnn.train.make_optimizer`.
      metrics: metric names (default: accuracy for classification, RMSE for ``"mse"``).
      seed: initialisation, shuffling and dropout.
      lengths: valid steps per sequence of ``x`` when ``x`` is an already padded array.
      params: start from these parameters instead of ``model.init``.
      label_encoder: encode ``y`` with this one (e.g. from a previous run) instead of fitting
        a new one (default: a new one, or, with ``params``, the one the model carries).
      progress, verbose: progress bar, one line per epoch.
      data_parallel: see :func:`jaxrnn.train.fit`.
      skip_nonfinite: True: skip an update whose loss or gradient is NaN/inf and go on (as
        the command line does by default), e.g. an Elman net with a large recurrent scale on
        10,000 steps whose gradient overflows to NaN on every backend, where clipping cannot
        help (a clipped NaN is NaN). False/None: stop with
        :class:`~jaxrnn.train.NonFiniteLossError` naming the update. Inputs and regression
        targets are checked for NaN/inf first, by array name and index.

    The label encoder is also kept by the model (a :class:`jaxrnn.models.Model` carries it
    in ``model.preprocessing["label_encoder"]``, as a Keras model keeps what it was fitted
    with), so :func:`evaluate` maps labels to the same ids without ``label_encoder=``.
    """
    from jaxrnn.train import fit as train_fit
    from jaxrnn.train import make_optimizer

    name = loss_name(loss)
    batch_size = check_batch_size(batch_size)
    if skip_nonfinite is not None and not isinstance(skip_nonfinite, bool):
        raise TypeError(f"skip_nonfinite: expected None or a bool, got {skip_nonfinite!r}")
    inputs = as_inputs(x, lengths)
    check_finite(inputs.x, "x", inputs.lengths)
    n_y = len(y) if isinstance(y, (list, tuple)) else len(np.asarray(y)) if np.ndim(y) else 0
    if n_y != len(inputs.x):
        raise ValueError(f"y: expected {len(inputs.x)} targets (one per input of x), got "
                         f"{n_y}")
    if validation_split is not None and validation_data is not None:
        raise ValueError("validation_split, validation_data: give one, not both")
    if params is None:
        # A key of its own: fit derives its dropout key from the seed and donates it.
        params = init_params(model, jax.random.fold_in(jax.random.key(seed), 1), inputs)
    elif label_encoder is None:
        label_encoder = carried_label_encoder(model)  # training on: the same label ids
    check_model_inputs(model, params, inputs, "x")
    out_shape = _output_shape(model, params, inputs)
    targets, encoder = encode_targets(y, name, label_encoder,
                                      num_classes=out_shape[-1] if out_shape else None)
    if name not in _CLASSIFICATION:
        check_finite(targets, "y")
    data = _batches(inputs, _fit_targets_to(targets, out_shape, name))
    val = None
    if validation_split is not None:
        if not 0.0 < validation_split < 1.0:
            raise ValueError(f"validation_split: expected a float in (0, 1), got "
                             f"{validation_split!r}")
        n_val = int(math.floor(len(targets) * validation_split))
        if n_val < 1 or n_val >= len(targets):
            raise ValueError(f"validation_split: {validation_split} of {len(targets)} examples "
                             f"leaves no validation or no training example")
        cut = len(targets) - n_val
        data, val = _take(data, slice(0, cut)), _take(data, slice(cut, None))
    elif validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
            raise ValueError("validation_data: expected (x_val, y_val) or (x_val, y_val, "
                             "lengths_val)")
        vx = as_inputs(validation_data[0], validation_data[2] if len(validation_data) == 3
                       else None, maxlen=inputs.x.shape[1], argname="validation_data[0]")
        check_finite(vx.x, "validation_data[0]", vx.lengths)
        vy, _ = encode_targets(validation_data[1], name, encoder)
        if len(vy) != len(vx.x):
            raise ValueError(f"validation_data: x_val has {len(vx.x)} inputs and y_val "
                             f"{len(vy)} targets; expected one target per input")
        if name not in _CLASSIFICATION:
            check_finite(vy, "validation_data[1]")
        val = _batches(vx, _fit_targets_to(vy, out_shape, name))
        if "lengths" in data and "lengths" not in val:
            val["lengths"] = np.full(len(vx.x), vx.x.shape[1], np.int32)
        if "lengths" in val and "lengths" not in data:
            data["lengths"] = np.full(len(inputs.x), inputs.x.shape[1], np.int32)

    stop = next((c for c in callbacks if isinstance(c, EarlyStopping)), None)
    backup = next((c for c in callbacks if isinstance(c, BackupAndRestore)), None)
    sched = next((c for c in callbacks if isinstance(c, LearningRateScheduler)), None)
    epoch_fns = []
    for c in callbacks:
        if isinstance(c, (EarlyStopping, BackupAndRestore, LearningRateScheduler)):
            continue
        if hasattr(c, "on_epoch_end"):  # jaxrnn.train's protocol: (epoch from 0, logs, state)
            epoch_fns.append(c)
        elif callable(c):
            epoch_fns.append(lambda epoch, logs, state, fn=c: fn(epoch + 1, logs))
        else:
            raise TypeError(f"callbacks: expected EarlyStopping, BackupAndRestore, "
                            f"LearningRateScheduler or a function fn(epoch, logs), got "
                            f"{type(c).__name__}")
    n_train = len(data["inputs"])
    batch_size = min(batch_size, n_train)
    lr_scale = None
    if sched is not None:
        # The schedule gives rates; the loop scales the optimiser's updates by rate / lr.
        lr_scale = [float(sched.schedule(e)) / lr for e in range(max(epochs, 1))]
    opt = make_optimizer(lr, optimizer=optimizer, clip_norm=clip_norm)
    if metrics is None:
        metrics = _DEFAULT_METRICS.get(name, []) if isinstance(name, str) else []
    options = LoopOptions(
        epochs=epochs, metrics=list(metrics), seed=seed,
        monitor=None if stop is None else stop.monitor,
        mode="auto" if stop is None else stop.mode,
        patience=None if stop is None else stop.patience,
        min_delta=0.0 if stop is None else stop.min_delta,
        restore_best=True if stop is None else stop.restore_best_weights,
        checkpoint_dir=None if backup is None else backup.directory, resume=backup is not None,
        progress=progress, verbose=verbose, data_parallel=data_parallel,
        callbacks=epoch_fns or None, lr_scale=lr_scale, skip_nonfinite=skip_nonfinite)
    result = train_fit(model.apply, params, name, opt, data, batch_size=batch_size,
                       val_data=val, options=options)
    carry_label_encoder(model, encoder)
    history = History(result.history)
    history.best_epoch = None if result.best_epoch is None else result.best_epoch + 1
    history.label_encoder = encoder
    history.stopped_early = bool(result.stopped_early)
    return result.params, history


# --------------------------------------------------------------------------- predict/evaluate

def predict(model, params, x, *, lengths=None, batch_size: int = 256,
            maxlen: int | None = None) -> np.ndarray:
    """Model outputs for ``x`` (an array or a list of sequences, padded as in :func:`fit`), in
    order, deterministically; a NumPy array with leading axis ``N``."""
    from jaxrnn.train import predict as train_predict

    batch_size = check_batch_size(batch_size)
    inputs = as_inputs(x, lengths, maxlen=maxlen)
    check_model_inputs(model, params, inputs, "x")
    return train_predict(model.apply, params, inputs.x, lengths=inputs.lengths,
                         batch_size=batch_size)


def evaluate(model, params, x, y, *, loss="sparse_categorical_crossentropy", metrics=None,
             lengths=None, label_encoder: LabelEncoder | None = None,
             batch_size: int = 256) -> dict[str, float]:
    """``{"loss": ..., "<metric>": ...}`` of ``params`` on ``(x, y)``. Labels map to ids with
    ``label_encoder``, else with the one the model carries from :func:`fit` (so a subset
    missing a class is scored with the training run's ids), else as :func:`fit` maps them."""
    from jaxrnn.train import evaluate as train_evaluate

    name = loss_name(loss)
    batch_size = check_batch_size(batch_size)
    inputs = as_inputs(x, lengths)
    n_y = len(y) if isinstance(y, (list, tuple)) else len(np.asarray(y)) if np.ndim(y) else 0
    if n_y != len(inputs.x):
        raise ValueError(f"x, y: x has {len(inputs.x)} inputs and y {n_y} targets; expected "
                         f"one target per input")
    check_finite(inputs.x, "x", inputs.lengths)
    check_model_inputs(model, params, inputs, "x")
    out_shape = _output_shape(model, params, inputs)
    if label_encoder is None:
        label_encoder = carried_label_encoder(model)
    targets, _ = encode_targets(y, name, label_encoder,
                                num_classes=out_shape[-1] if out_shape else None)
    if name not in _CLASSIFICATION:
        check_finite(targets, "y")
    targets = _fit_targets_to(targets, out_shape, name)
    if metrics is None:
        metrics = _DEFAULT_METRICS.get(name, []) if isinstance(name, str) else []
    return train_evaluate(model.apply, params, name, _batches(inputs, targets),
                          metrics=list(metrics), batch_size=batch_size)


# --------------------------------------------------------------------------- sampling

def sample(model, params, vocab, prime: str, length: int, *, temperature: float = 1.0,
           top_k: int | None = None, seed: int = 0, key=None, warmup: str = "",
           context: int = 256, stateful: bool | None = None) -> str:
    """``prime`` followed by ``length`` characters drawn from a character language model.

    Each next character is drawn from ``softmax(logits / temperature)``, restricted to the
    ``top_k`` most likely characters if given; the padding and unknown ids are never drawn.
    A stateful model (``apply(params, ids, *, carry, ...) -> (carry, logits)``, as trained by
    truncated BPTT) reads ``warmup + prime`` once and then one character per step; any other
    model (``apply(params, ids, *, lengths, ...) -> logits (B, T, V)``) rereads the last
    ``context`` characters each step.

    Args:
      model: a :class:`~jaxrnn.models.Model`, or the ``apply`` function itself.
      stateful: whether ``apply`` takes and returns a carry (default: the model's
        ``stateful``; False for a bare function).
      vocab: the character :class:`~jaxrnn.data.Vocab` of training.
      prime: text to continue (at least one character).
      warmup: text read before ``prime`` but not returned (a model trained by truncated BPTT
        has rarely seen the zero state; the end of its training text warms the state up).
    """
    from jaxrnn.data.text import encode_chars

    if not isinstance(prime, str) or not prime:
        raise ValueError("prime: expected at least one character, got an empty string")
    if isinstance(length, bool) or not isinstance(length, int) or length < 1:
        raise ValueError(f"length: expected a positive integer, got {length!r}")
    if not (isinstance(temperature, (int, float)) and temperature > 0):
        raise ValueError(f"temperature: expected a positive number, got {temperature!r}")
    if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k: expected None or a positive integer, got {top_k!r}")
    apply = model if callable(model) and not hasattr(model, "apply") else model.apply
    if stateful is None:
        stateful = bool(getattr(model, "stateful", False))
    elif not isinstance(stateful, bool):
        raise TypeError(f"stateful: expected None or a bool, got {stateful!r}")
    key = jax.random.key(seed) if key is None else key
    k = None if top_k is None else min(top_k, len(vocab) - 2)

    def draw(logits, key):
        # Never emit the padding or out-of-vocabulary ids (0 and 1).
        logits = logits.at[..., :2].set(-jnp.inf) / temperature
        if k is not None:
            kth = jax.lax.top_k(logits, k)[0][..., -1:]
            logits = jnp.where(logits < kth, -jnp.inf, logits)
        return jax.random.categorical(key, logits).astype(jnp.int32)

    ids = encode_chars(warmup + prime, vocab)
    out: list[int] = []
    if stateful:
        @jax.jit
        def step(params, carry, ids, key):
            carry, logits = apply(params, ids, carry=carry)
            return carry, draw(logits[:, -1], key)

        ids = jnp.asarray(ids)[None, :]
        carry = apply(params, ids[:, :-1], carry=None)[0] if ids.shape[1] > 1 else None
        carry, nxt = step(params, carry, ids[:, -1:], jax.random.fold_in(key, 0))
        out.append(int(nxt[0]))
        for i in range(1, length):
            carry, nxt = step(params, carry, nxt[:, None], jax.random.fold_in(key, i))
            out.append(int(nxt[0]))
    else:
        @jax.jit
        def step(params, window, n, key):
            logits = apply(params, window, lengths=n, key=None, deterministic=True)
            return draw(logits[0, n[0] - 1], key)

        seq = list(map(int, ids))
        for i in range(length):
            tail = seq[-context:]
            window = np.zeros((1, context), np.int32)
            window[0, :len(tail)] = tail
            nxt = step(params, jnp.asarray(window), jnp.asarray([len(tail)], jnp.int32),
                       jax.random.fold_in(key, i))
            seq.append(int(nxt))
            out.append(int(nxt))
    return prime + vocab.decode(out)


__all__ = ["fit", "predict", "evaluate", "sample", "as_inputs", "encode_targets", "loss_name",
           "init_params", "check_batch_size", "check_finite", "check_model_inputs",
           "carried_label_encoder", "EarlyStopping", "BackupAndRestore", "LearningRateScheduler",
           "History", "Inputs"]
