"""``fit`` / ``evaluate`` / ``predict``: the Keras-style loop over the functional pieces.

:func:`fit` runs epochs of the compiled train step over a seeded
:class:`~jaxrnn.data.BatchIterator`, shows a tqdm progress bar with the running loss and metrics,
validates after every epoch, stops early when the monitored quantity stops improving (optionally
restoring the best parameters), checkpoints (state, data position, history and early-stopping
record) so a resumed run continues bit-for-bit, and returns the history as a dict of lists; the
learning curves go to a PNG.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import numpy as np
import optax
from tqdm.auto import tqdm

from jaxrnn.data.batching import BatchIterator
from jaxrnn.train.callbacks import Monitor, as_callbacks
from jaxrnn.train.epochs import (
    EpochLoop,
    FitResult,
    NonFiniteLossError,
    PlainStepper,
    accumulate,
    snapshot,
    summarise,
)
from jaxrnn.train.losses import CLASS_ID_LOSSES, check_label_range, get_loss
from jaxrnn.train.metrics import get_metrics
from jaxrnn.train.options import LoopOptions
from jaxrnn.train.options import loop_options as loop_options_of
from jaxrnn.train.step import (
    init_train_state,
    make_eval_step,
    make_train_step,
    scale_by_epoch,
    skip_nonfinite_updates,
    skips_nonfinite,
)

PyTree = Any


def _as_iterator(data, batch_size, *, shuffle, seed, drop_remainder, argname) -> BatchIterator:
    if isinstance(data, BatchIterator):
        return data
    if isinstance(data, Mapping):
        return BatchIterator(
            data, batch_size, shuffle=shuffle, seed=seed, drop_remainder=drop_remainder
        )
    raise TypeError(
        f"{argname}: expected a dict of arrays or a jaxrnn.data.BatchIterator, "
        f"got {type(data).__name__}"
    )


def _eval_batches(data, batch_size, argname):
    if isinstance(data, BatchIterator):
        return data.epoch_batches(0)
    if isinstance(data, Mapping):
        return BatchIterator(data, batch_size, shuffle=False).epoch_batches(0)
    raise TypeError(
        f"{argname}: expected a dict of arrays or a jaxrnn.data.BatchIterator, "
        f"got {type(data).__name__}"
    )


def evaluate_with(eval_step, params, batches, metrics, *, progress=False, desc="eval") -> dict:
    """Run a compiled ``eval_step`` (from :func:`make_eval_step`) over ``batches``; exact
    (weighted) loss and metrics over the whole set."""
    acc = None
    for batch in tqdm(batches, desc=desc, disable=not progress, leave=False):
        acc = accumulate(acc, eval_step(params, batch), 0)
    if acc is None:
        raise ValueError("data: no batches to evaluate")
    return summarise(acc, metrics)


def evaluate(
    apply_fn: Callable,
    params: PyTree,
    loss,
    data,
    *,
    metrics=(),
    batch_size: int = 256,
    objective: Callable | None = None,
    progress: bool = False,
) -> dict[str, float]:
    """Loss and metrics of ``params`` on ``data`` (dict of arrays or BatchIterator), computed
    deterministically (no dropout): ``{"loss": ..., "<metric>": ...}``."""
    metrics = get_metrics(metrics)
    if isinstance(_data_dict(data), Mapping):
        check_lengths(data, "data")
        if objective is None:
            check_inputs(data, "data", apply_fn, params)
            check_labels(data, "data", apply_fn, params, get_loss(loss))
    step = make_eval_step(apply_fn, loss, metrics=metrics, objective=objective)
    return evaluate_with(step, params, _eval_batches(data, batch_size, "data"), metrics,
                         progress=progress)


def predict(
    apply_fn: Callable,
    params: PyTree,
    inputs,
    *,
    lengths=None,
    batch_size: int = 256,
) -> np.ndarray:
    """Model outputs for ``inputs`` (``(N, ...)``), in order, computed in batches
    deterministically; returns a NumPy array with leading axis ``N``.

    Every batch has exactly ``batch_size`` rows (the last is filled up with copies of its last
    row, whose outputs are dropped): XLA's CPU products pick their algorithm by shape, so a row
    computed in a batch of 30 can differ in the last bits from the same row in a batch of 217.
    With one shape a row's outputs do not depend on which other rows came with it, and a saved
    model's ``predict`` on a file reproduces the training run's held-out predictions exactly
    (one compile, too)."""
    inputs = np.asarray(inputs)
    if (isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer))
            or batch_size < 1):
        raise ValueError(f"batch_size: expected a positive integer, got {batch_size!r}")
    n = inputs.shape[0]
    if lengths is not None:
        lengths = np.asarray(lengths)
        if lengths.shape != inputs.shape[:1]:
            raise ValueError(
                f"lengths: expected shape {inputs.shape[:1]} (one per input), got {lengths.shape}"
            )
    fn = jax.jit(
        lambda p, x, n: apply_fn(p, x, lengths=n, key=None, deterministic=True)
    )

    outs = []
    for start in range(0, n, batch_size):
        stop = min(start + batch_size, n)
        rows = np.arange(start, start + batch_size).clip(max=stop - 1)
        x = inputs[rows]
        ln = None if lengths is None else lengths[rows]
        out = jax.tree_util.tree_map(np.asarray, fn(params, x, ln))
        outs.append(jax.tree_util.tree_map(lambda o, k=stop - start: o[:k], out))
    if not outs:
        return np.asarray(fn(params, inputs, lengths))
    return jax.tree_util.tree_map(lambda *os_: np.concatenate(os_, axis=0), *outs)


# --------------------------------------------------------------------------- plotting

def plot_history(history: Mapping[str, list], path: str | os.PathLike, *, title: str = "",
                 best_epoch: int | None = None) -> str:
    """Save learning curves as a PNG: one panel per quantity (``loss`` and each metric), the
    training curve with its ``val_`` counterpart, and a dotted line at ``best_epoch`` (0-based)
    if given. Uses Matplotlib's Agg canvas directly (no pyplot, no global backend change).
    Returns the path."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    names = [k for k in history if not k.startswith("val_") and k != "epoch_time"]
    names += [k[4:] for k in history if k.startswith("val_") and k[4:] not in names]
    if not names:
        raise ValueError("history: nothing to plot")
    fig = Figure(figsize=(4.5 * len(names), 3.4))
    FigureCanvasAgg(fig)
    for i, name in enumerate(names):
        ax = fig.add_subplot(1, len(names), i + 1)
        for key, style in ((name, "-o"), ("val_" + name, "--s")):
            ys = history.get(key)
            if ys:
                ax.plot(range(1, len(ys) + 1), ys, style, markersize=3, label=key)
        if best_epoch is not None:
            ax.axvline(best_epoch + 1, color="grey", linestyle=":", label="best epoch")
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


# --------------------------------------------------------------------------- data checks

def _data_dict(data):
    return data.data if isinstance(data, BatchIterator) else data


def check_lengths(data, argname: str) -> None:
    """``lengths`` (if present) must be integers in ``[0, T]`` with ``T`` the inputs' time axis:
    checked on the host, since under ``jit`` the engine cannot see values."""
    data = _data_dict(data)
    if "lengths" not in data or "inputs" not in data or np.ndim(data["inputs"]) < 2:
        return
    lengths, T = np.asarray(data["lengths"]), np.shape(data["inputs"])[1]
    if not np.issubdtype(lengths.dtype, np.integer):
        raise TypeError(f"{argname}['lengths']: expected integers, got dtype {lengths.dtype}")
    if lengths.shape != np.shape(data["inputs"])[:1]:
        raise ValueError(f"{argname}['lengths']: expected shape {np.shape(data['inputs'])[:1]} "
                         f"(one per example), got {lengths.shape}")
    bad = (lengths < 0) | (lengths > T)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{argname}['lengths']: expected values in [0, {T}] (the inputs' time "
                         f"axis), got {int(lengths[i])} at example {i}")


def check_finite(arr, argname: str, lengths=None) -> None:
    """Raise a ValueError naming the first NaN/inf of ``arr`` (``"x[3, 7, 0] is nan"``): a
    non-finite input is a data problem, and found here it is not reported later as a
    non-finite loss. Padding counts too (with ``lengths`` the message says it is padding): a
    masked step's inputs still enter the weight gradients' products, where NaN * 0 is NaN."""
    arr = np.asarray(arr)
    if not np.issubdtype(arr.dtype, np.floating):
        return
    bad = ~np.isfinite(arr)
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        padded = (lengths is not None and arr.ndim >= 2
                  and where[1] >= int(np.asarray(lengths)[where[0]]))
        raise ValueError(
            f"{argname}[{', '.join(map(str, where))}] is {arr[where]} ({int(bad.sum())} "
            f"non-finite values in {argname}"
            f"{'; this one is padding, after the sequence length' if padded else ''}): the "
            f"data must be finite; drop or fill those values before training")


def check_finite_data(data, argname: str) -> None:
    """The float ``inputs`` (at valid steps) and ``targets`` of a dict of arrays must be
    finite: see :func:`check_finite`."""
    data = _data_dict(data)
    lengths = data.get("lengths")
    for k in ("inputs", "targets"):
        if k in data and isinstance(data[k], np.ndarray | jax.Array):
            check_finite(data[k], f"{argname}[{k!r}]", lengths if k == "inputs" else None)


def _output_struct(data, argname: str, apply_fn, params):
    """The model's output on the whole of ``data['inputs']``, by ``jax.eval_shape`` on their
    shape (nothing is computed); an error of the model on them is re-raised naming
    ``argname``, and the shape in it is the array's, not a batch's."""
    lengths, x = data.get("lengths"), data["inputs"]
    spec = jax.ShapeDtypeStruct(np.shape(x), np.asarray(x[:1]).dtype)
    n_spec = None if lengths is None else jax.ShapeDtypeStruct(
        np.shape(lengths), np.asarray(lengths[:1]).dtype)
    try:
        return jax.eval_shape(
            lambda p, x, n: apply_fn(p, x, lengths=n, key=None, deterministic=True),
            params, spec, n_spec)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{argname}['inputs']: the model does not read an array of shape "
                         f"{spec.shape} dtype {spec.dtype} ({e})") from None


def check_inputs(data, argname: str, apply_fn, params) -> None:
    """The model must read ``data['inputs']`` (the feature size, ids or features): checked
    once before training, so a mistake is one error naming ``argname``."""
    data = _data_dict(data)
    if "inputs" in data and np.ndim(data["inputs"]) >= 1 and len(data["inputs"]):
        _output_struct(data, argname, apply_fn, params)


def check_labels(data, argname: str, apply_fn, params, loss_fn) -> None:
    """Integer targets of a class-id loss must lie in ``[0, C)``, ``C`` the model's last output
    axis (found with ``jax.eval_shape``, nothing is computed); a NaN loss otherwise."""
    data = _data_dict(data)
    if loss_fn not in CLASS_ID_LOSSES or "targets" not in data or "inputs" not in data:
        return
    targets = np.asarray(data["targets"])
    if not np.issubdtype(targets.dtype, np.integer) or targets.size == 0:
        return
    out = _output_struct(data, argname, apply_fn, params)
    check_label_range(targets, out.shape[-1], data.get("mask"),
                      argname=f"labels ({argname}['targets'])")


def _default_monitor(monitor, val_data, patience, metrics):
    if monitor is None and val_data is not None:
        monitor = "val_loss"
    elif monitor is None and patience is not None:
        monitor = "loss"  # early stopping without validation data watches the training loss
    names = {"loss", *(m.name for m in metrics)}
    if val_data is not None:
        names |= {"val_" + n for n in list(names)}
    if monitor is not None and monitor not in names:
        raise ValueError(f"monitor: expected one of {sorted(names)}, got {monitor!r}")
    return monitor


def _guard(optimizer, params, skip_nonfinite):
    """``(optimizer, skipping)``: wrapped with apply_if_finite when asked and not already."""
    if not isinstance(optimizer, optax.GradientTransformation):
        raise TypeError(f"optimizer: expected an optax.GradientTransformation (e.g. "
                        f"jaxrnn.train.make_optimizer(1e-3)), got {type(optimizer).__name__}")
    if skip_nonfinite is not None and not isinstance(skip_nonfinite, bool):
        raise TypeError(f"skip_nonfinite: expected None or a bool, got {skip_nonfinite!r}")
    guarded = skips_nonfinite(optimizer, params)
    if skip_nonfinite is None:
        return optimizer, guarded
    if skip_nonfinite and not guarded:
        optimizer = skip_nonfinite_updates(optimizer)
    return optimizer, skip_nonfinite


def with_lr_scale(optimizer, lr_scale, epochs: int, steps_per_epoch: int):
    """``optimizer`` followed by the per-epoch factors ``lr_scale(0..epochs-1)``."""
    if lr_scale is None or epochs == 0:
        return optimizer
    if isinstance(lr_scale, Sequence):
        factors = list(lr_scale)
    elif callable(lr_scale):
        factors = [lr_scale(e) for e in range(epochs)]
    else:
        raise TypeError(f"lr_scale: expected None, a function epoch -> factor or a list of "
                        f"factors, got {type(lr_scale).__name__}")
    return optax.chain(optimizer, scale_by_epoch(factors, steps_per_epoch))


# --------------------------------------------------------------------------- fit

def run_loop(stepper, it, state, opts: LoopOptions, *, metrics, monitor: str | None, validate,
             skipping: bool, params) -> FitResult:
    """The epoch loop of ``opts`` (checked :class:`~jaxrnn.train.options.LoopOptions`) over
    ``it`` with ``stepper`` from ``state``: what :func:`fit` and
    :func:`~jaxrnn.train.fit_stream` both end in."""
    tracker = Monitor(monitor or "loss", opts.mode, opts.min_delta, opts.patience)
    loop = EpochLoop(stepper, it, state, epochs=opts.epochs, metrics=metrics,
                     monitor=tracker if monitor is not None else None,
                     restore_best=opts.restore_best, validate=validate,
                     callbacks=as_callbacks(opts.callbacks), checkpoint_dir=opts.checkpoint_dir,
                     checkpoint_every=opts.checkpoint_every, max_steps=opts.max_steps,
                     skip_nonfinite=skipping, progress=opts.progress, verbose=opts.verbose,
                     params_template=params, checkpoint_format=opts.checkpoint_format,
                     on_step=() if opts.on_step is None else (opts.on_step,),
                     time_budget_s=opts.time_budget_s)
    if opts.resume:
        loop.resume()
    loop.run()
    return loop.result(opts.plot_path, plot_history)


def fit(
    apply_fn: Callable | None,
    params: PyTree,
    loss,
    optimizer: optax.GradientTransformation,
    train_data,
    *,
    batch_size: int = 32,
    val_data=None,
    objective: Callable | None = None,
    drop_remainder: bool = False,
    options: LoopOptions | None = None,
    **loop_options,
) -> FitResult:
    """Train ``params`` with the compiled step of :func:`~jaxrnn.train.make_train_step`.

    Args:
      apply_fn: the model, ``apply(params, inputs, *, lengths=None, key=None,
        deterministic=True) -> outputs`` (None when ``objective`` is given).
      params: initial parameters.
      loss: ``loss(outputs, targets, mask) -> scalar`` or a loss name (Keras names too, see
        :func:`~jaxrnn.train.losses.get_loss`).
      optimizer: any ``optax.GradientTransformation`` (see :func:`make_optimizer`).
      train_data: a dict of arrays (batched by a shuffling :class:`~jaxrnn.data.BatchIterator`
        with ``batch_size``, the options' ``seed`` and ``drop_remainder``) or a
        ``BatchIterator``. Dict data is checked on the host first: lengths, NaN/inf (named by
        key and index), inputs the model cannot read, labels out of range.
      val_data: dict of arrays or BatchIterator, evaluated after each epoch.
      objective: a full objective instead of ``apply_fn``/``loss`` (see ``make_train_step``).
      drop_remainder: drop each epoch's last, smaller batch (one shape, one compilation). By
        default it is trained on (a second compilation for its shape), and its loss enters the
        epoch's mean weighted by its size (:func:`~jaxrnn.train.step.batch_weight`), so every
        example counts once per epoch.
      options: the loop's :class:`~jaxrnn.train.options.LoopOptions` (epochs, metrics, seed,
        early stopping, checkpoints and ``resume``, progress, the non-finite guard,
        callbacks, ``lr_scale``, ``data_parallel``, ``time_budget_s`` ...), shared with
        :func:`~jaxrnn.train.fit_stream` and :func:`jaxrnn.keras.fit`.
      **loop_options: the same options by name (``epochs=3``), applied over ``options``.

    Returns:
      A :class:`~jaxrnn.train.epochs.FitResult` (``best_epoch`` counts from 0).
    """
    opts = loop_options_of(options, loop_options, "fit")
    if not isinstance(drop_remainder, bool):
        raise TypeError(f"drop_remainder: expected a bool, got {drop_remainder!r}")
    metrics = get_metrics(opts.metrics)
    loss_fn = get_loss(loss) if objective is None else None
    it = _as_iterator(train_data, batch_size, shuffle=True, seed=opts.seed,
                      drop_remainder=drop_remainder, argname="train_data")
    monitor = _default_monitor(opts.monitor, val_data, opts.patience, metrics)
    Monitor(monitor or "loss", opts.mode, opts.min_delta, opts.patience)  # checks, early
    as_callbacks(opts.callbacks)
    optimizer, skipping = _guard(optimizer, params, opts.skip_nonfinite)
    optimizer = with_lr_scale(optimizer, opts.lr_scale, opts.epochs, it.num_batches(0))
    checked = [(d, n) for d, n in ((it, "train_data"), (val_data, "val_data"))
               if d is not None and isinstance(_data_dict(d), Mapping)]
    for data, name in checked:  # cheap checks first: labels need the model's output shape
        check_lengths(data, name)
        check_finite_data(data, name)
    for data, name in checked if objective is None else ():
        check_inputs(data, name, apply_fn, params)
        check_labels(data, name, apply_fn, params, loss_fn)

    # init_train_state copies params: the step donates the state's buffers, not the caller's.
    state = init_train_state(params, optimizer,
                             jax.random.key(opts.seed) if opts.key is None else opts.key)
    train_step = make_train_step(apply_fn, loss_fn, optimizer, metrics=metrics,
                                 objective=objective, donate=opts.donate,
                                 data_parallel=opts.data_parallel)
    validate = None
    if val_data is not None:
        eval_step = make_eval_step(apply_fn, loss_fn, metrics=metrics, objective=objective,
                                   data_parallel=opts.data_parallel)

        def validate(p):
            return evaluate_with(eval_step, p, _eval_batches(val_data, batch_size, "val_data"),
                                 metrics)

    return run_loop(PlainStepper(train_step), it, state, opts, metrics=metrics,
                    monitor=monitor, validate=validate, skipping=skipping, params=params)


__all__ = ["fit", "run_loop", "LoopOptions", "evaluate", "evaluate_with", "predict",
           "plot_history", "FitResult",
           "NonFiniteLossError", "snapshot", "check_lengths", "check_labels", "check_inputs",
           "check_finite", "check_finite_data", "with_lr_scale"]
