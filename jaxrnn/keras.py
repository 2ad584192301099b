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
* Keras loss names (``"sparse_categorical_crossentropy"``, ``"mse"``, ``"binary_crossentropy"``
  on logits), and Keras-like callbacks (:class:`EarlyStopping`, :class:`BackupAndRestore`,
  :class:`LearningRateScheduler`, or any ``fn(epoch, logs)`` called after each epoch).

A model is anything with ``init(key, input_size) -> params`` (or ``init(key)``) and
``apply(params, x, *, lengths=None, key=None, deterministic=True) -> outputs``, e.g.
``jaxrnn.models.sequential([...])`` or ``jaxrnn.train.models.sequence_classifier(...)``.

    >>> params, history = jaxrnn.keras.fit(model, x, labels, epochs=20, validation_split=0.2)
    >>> probs = jaxrnn.keras.predict(model, params, x_new)            # NumPy, (N, K) logits
    >>> history.label_encoder.inverse_transform(probs.argmax(-1))     # back to the labels

:func:`sample` draws text from a character language model (temperature, top-k, prime text).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn.data.labels import LabelEncoder
from jaxrnn.data.padding import pad_sequences

# Keras names -> the names jaxrnn.train's losses have always had (both are accepted).
LOSS_ALIASES = {
    "sparse_categorical_crossentropy": "softmax_cross_entropy",
    "categorical_crossentropy": "softmax_cross_entropy",
    "softmax_cross_entropy": "softmax_cross_entropy",
    "binary_crossentropy": "binary_cross_entropy_with_logits",
    "binary_cross_entropy_with_logits": "binary_cross_entropy_with_logits",
    "mse": "mse",
    "mean_squared_error": "mse",
}
_CLASSIFICATION = {"softmax_cross_entropy", "binary_cross_entropy_with_logits"}
_DEFAULT_METRICS = {"softmax_cross_entropy": ["accuracy"],
                    "binary_cross_entropy_with_logits": ["binary_accuracy"],
                    "mse": ["rmse"]}


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
    """The jaxrnn name of a Keras or jaxrnn loss name; callables pass through."""
    if callable(loss):
        return loss
    if loss not in LOSS_ALIASES:
        raise ValueError(f"loss: expected one of {sorted(LOSS_ALIASES)} or a function, got "
                         f"{loss!r}")
    return LOSS_ALIASES[loss]


def encode_targets(y, loss, label_encoder: LabelEncoder | None = None):
    """``(targets, label_encoder)``: class labels of a classification loss encoded to int32 ids
    (float 0/1 for the binary loss) with a new or the given encoder; other targets as float32."""
    name = loss_name(loss)
    y_arr = np.asarray(y) if not isinstance(y, (list, tuple)) else np.asarray(y, dtype=object)
    if name in _CLASSIFICATION:
        if label_encoder is None:
            already_ids = (np.issubdtype(y_arr.dtype, np.integer) and y_arr.size
                           and y_arr.min() >= 0)
            if already_ids and name == "softmax_cross_entropy":
                # Integer class ids keep their meaning (id k is class k), as in Keras.
                label_encoder = LabelEncoder(list(range(int(y_arr.max()) + 1)))
                return y_arr.astype(np.int32), label_encoder
            else:
                label_encoder = LabelEncoder.fit(y_arr, min_classes=2, argname="y")
        if name == "binary_cross_entropy_with_logits" and label_encoder.num_classes != 2:
            raise ValueError(f"y: binary_crossentropy needs 2 classes, got "
                             f"{label_encoder.num_classes}")
        ids = label_encoder.transform(y_arr, argname="y")
        if name == "binary_cross_entropy_with_logits":
            return ids.astype(np.float32), label_encoder
        return ids, label_encoder
    try:
        return np.asarray(y_arr, np.float32), None
    except (TypeError, ValueError):
        raise ValueError("y: expected numeric targets for a regression loss") from None


# --------------------------------------------------------------------------- model helpers

def init_params(model, key, inputs: Inputs):
    """``model.init(key, input_size)`` (the feature size, or the number of token ids) or
    ``model.init(key)`` for models that know their input size."""
    try:
        n_args = len(inspect.signature(model.init).parameters)
    except (TypeError, ValueError):
        n_args = 2
    if n_args < 2:
        return model.init(key)
    x = inputs.x
    input_size = x.shape[-1] if x.ndim >= 3 else int(x.max(initial=0)) + 1
    return model.init(key, int(input_size))


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
    want = tuple(out_shape[:-1]) if name == "softmax_cross_entropy" and \
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
) -> tuple[Any, History]:
    """Train ``model`` on arrays; returns ``(params, history)``.

    Args:
      model: ``init``/``apply`` as in the module docstring.
      x: inputs ``(N, T, F)`` floats or ``(N, T)`` token ids, or a list of ``N`` sequences of
        any lengths (padded at the end; their lengths mask the model).
      y: targets ``(N, ...)``: any labels for a classification loss, numbers for ``"mse"``.
      loss: a Keras name (``"sparse_categorical_crossentropy"``, ``"binary_crossentropy"``:
        both on logits; ``"mse"``), a jaxrnn name, or ``loss(outputs, targets, mask)``.
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
        a new one.
      progress, verbose: progress bar, one line per epoch.
      data_parallel: see :func:`jaxrnn.train.fit`.
    """
    from jaxrnn.train import fit as train_fit
    from jaxrnn.train import make_optimizer

    name = loss_name(loss)
    inputs = as_inputs(x, lengths)
    targets, encoder = encode_targets(y, name, label_encoder)
    if len(targets) != len(inputs.x):
        raise ValueError(f"y: expected {len(inputs.x)} targets (one per input), got "
                         f"{len(targets)}")
    if validation_split is not None and validation_data is not None:
        raise ValueError("validation_split, validation_data: give one, not both")
    if params is None:
        # A key of its own: fit derives its dropout key from the seed and donates it.
        params = init_params(model, jax.random.fold_in(jax.random.key(seed), 1), inputs)
    out_shape = _output_shape(model, params, inputs)
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
        vy, _ = encode_targets(validation_data[1], name, encoder)
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
    batch_size = max(1, min(int(batch_size), n_train))
    lr_scale = None
    if sched is not None:
        # The schedule gives rates; the loop scales the optimiser's updates by rate / lr.
        lr_scale = [float(sched.schedule(e)) / lr for e in range(max(epochs, 1))]
    opt = make_optimizer(lr, optimizer=optimizer, clip_norm=clip_norm)
    if metrics is None:
        metrics = _DEFAULT_METRICS.get(name, []) if isinstance(name, str) else []
    result = train_fit(
        model.apply, params, name, opt, data, epochs=epochs, batch_size=batch_size,
        val_data=val, metrics=list(metrics), seed=seed,
        monitor=None if stop is None else stop.monitor,
        mode="auto" if stop is None else stop.mode,
        patience=None if stop is None else stop.patience,
        min_delta=0.0 if stop is None else stop.min_delta,
        restore_best=True if stop is None else stop.restore_best_weights,
        checkpoint_dir=None if backup is None else backup.directory, resume=backup is not None,
        progress=progress, verbose=verbose, data_parallel=data_parallel,
        callbacks=epoch_fns or None, lr_scale=lr_scale,
    )
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

    inputs = as_inputs(x, lengths, maxlen=maxlen)
    return train_predict(model.apply, params, inputs.x, lengths=inputs.lengths,
                         batch_size=batch_size)


def evaluate(model, params, x, y, *, loss="sparse_categorical_crossentropy", metrics=None,
             lengths=None, label_encoder: LabelEncoder | None = None,
             batch_size: int = 256) -> dict[str, float]:
    """``{"loss": ..., "<metric>": ...}`` of ``params`` on ``(x, y)``; pass the training run's
    ``history.label_encoder`` so labels map to the same ids."""
    from jaxrnn.train import evaluate as train_evaluate

    name = loss_name(loss)
    inputs = as_inputs(x, lengths)
    targets, _ = encode_targets(y, name, label_encoder)
    targets = _fit_targets_to(targets, _output_shape(model, params, inputs), name)
    if metrics is None:
        metrics = _DEFAULT_METRICS.get(name, []) if isinstance(name, str) else []
    return train_evaluate(model.apply, params, name, _batches(inputs, targets),
                          metrics=list(metrics), batch_size=batch_size)


# --------------------------------------------------------------------------- sampling

def _accepts_carry(apply) -> bool:
    try:
        return "carry" in inspect.signature(apply).parameters
    except (TypeError, ValueError):
        return False


def sample(model, params, vocab, prime: str, length: int, *, temperature: float = 1.0,
           top_k: int | None = None, seed: int = 0, key=None, warmup: str = "",
           context: int = 256) -> str:
    """``prime`` followed by ``length`` characters drawn from a character language model.

    Each next character is drawn from ``softmax(logits / temperature)``, restricted to the
    ``top_k`` most likely characters if given; the padding and unknown ids are never drawn.
    A stateful model (``apply(params, ids, *, carry, ...) -> (carry, logits)``, as trained by
    truncated BPTT) reads ``warmup + prime`` once and then one character per step; any other
    model (``apply(params, ids, *, lengths, ...) -> logits (B, T, V)``) rereads the last
    ``context`` characters each step.

    Args:
      model: ``apply`` (and ``init``), or the ``apply`` function itself.
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
    if _accepts_carry(apply):
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
           "init_params", "EarlyStopping", "BackupAndRestore", "LearningRateScheduler",
           "History", "Inputs", "LOSS_ALIASES"]
