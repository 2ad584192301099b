"""``fit`` / ``evaluate`` / ``predict``: the Keras-style loop over the functional pieces.

:func:`fit` runs epochs of the compiled train step over a seeded
:class:`~jaxrnn.data.BatchIterator`, shows a tqdm progress bar with the running loss and metrics,
validates after every epoch, stops early when the monitored quantity stops improving (optionally
restoring the best parameters), checkpoints (state, data position, history and early-stopping
record) so a resumed run continues bit-for-bit, and returns the history as a dict of lists; the
learning curves go to a PNG.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

from jaxrnn.data.batching import BatchIterator, DataPosition
from jaxrnn.train.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from jaxrnn.train.metrics import finalize, get_metrics
from jaxrnn.train.step import (
    TrainState,
    init_train_state,
    make_eval_step,
    make_train_step,
)

PyTree = Any


class FitResult(NamedTuple):
    """What :func:`fit` returns.

    Attributes:
      params: final parameters (the best ones when early stopping restored them).
      state: the final :class:`~jaxrnn.train.TrainState` (its params are the last trained ones).
      history: ``{"loss": [...], "<metric>": [...], "val_loss": [...], "val_<metric>": [...],
        "epoch_time": [...]}``, one entry per epoch.
      best_epoch: index of the best epoch by the monitored quantity (None without validation
        or monitoring).
      stopped_early: whether early stopping ended the run.
      plot_path: the learning-curve PNG, or None.
    """

    params: PyTree
    state: TrainState
    history: dict
    best_epoch: int | None
    stopped_early: bool
    plot_path: str | None


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


def _accumulate(acc, logs):
    """Add one step's loss*weight, weight and metric sums into ``acc`` (on device, async)."""
    new = {
        "loss": logs["loss"] * logs["weight"],
        "weight": logs["weight"],
        "stats": logs["stats"],
    }
    if acc is None:
        return jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float32), new)
    return jax.tree_util.tree_map(lambda a, b: a + b, acc, new)


def _summarise(acc, metrics, prefix="") -> dict[str, float]:
    if acc is None:
        return {}
    acc = jax.device_get(acc)
    w = float(acc["weight"])
    out = {prefix + "loss": float(acc["loss"]) / w if w > 0 else float("nan")}
    for k, v in finalize(metrics, acc["stats"]).items():
        out[prefix + k] = v
    return out


def snapshot(tree):
    """A copy of a pytree of arrays that survives the donation of the original's buffers."""
    return jax.tree_util.tree_map(lambda a: jnp.array(a, copy=True), tree)


def _restore_acc(raw):
    """Running sums from their checkpointed state dict (tuples were saved as ``{"0": ...}``)."""
    if not raw:
        return None
    stats = {name: tuple(jnp.asarray(d[str(i)]) for i in range(len(d)))
             for name, d in (raw.get("stats") or {}).items()}
    return {"loss": jnp.asarray(raw["loss"]), "weight": jnp.asarray(raw["weight"]),
            "stats": stats}


def _fmt(logs: dict) -> str:
    return "  ".join(f"{k} {v:.4g}" for k, v in logs.items())


def evaluate_with(eval_step, params, batches, metrics, *, progress=False, desc="eval") -> dict:
    """Run a compiled ``eval_step`` (from :func:`make_eval_step`) over ``batches``; exact
    (weighted) loss and metrics over the whole set."""
    acc = None
    for batch in tqdm(batches, desc=desc, disable=not progress, leave=False):
        acc = _accumulate(acc, eval_step(params, batch))
    if acc is None:
        raise ValueError("data: no batches to evaluate")
    return _summarise(acc, metrics)


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
    deterministically; returns a NumPy array with leading axis ``N``."""
    inputs = np.asarray(inputs)
    data = {"inputs": inputs}
    if lengths is not None:
        lengths = np.asarray(lengths)
        if lengths.shape != inputs.shape[:1]:
            raise ValueError(
                f"lengths: expected shape {inputs.shape[:1]} (one per input), got {lengths.shape}"
            )
        data["lengths"] = lengths
    fn = jax.jit(
        lambda p, x, n: apply_fn(p, x, lengths=n, key=None, deterministic=True)
    )
    outs = [
        np.asarray(fn(params, b["inputs"], b.get("lengths")))
        for b in BatchIterator(data, batch_size, shuffle=False).epoch_batches(0)
    ]
    return np.concatenate(outs, axis=0)


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


# --------------------------------------------------------------------------- fit

class _Monitor:
    """Early-stopping bookkeeping: best value, its epoch, epochs without improvement."""

    def __init__(self, name, mode, min_delta, patience):
        if mode == "auto":
            mode = "max" if any(s in name for s in ("acc", "auc", "f1")) else "min"
        if mode not in ("min", "max"):
            raise ValueError(f"mode: expected 'min', 'max' or 'auto', got {mode!r}")
        if patience is not None and (not isinstance(patience, int) or patience < 0):
            raise ValueError(f"patience: expected None or an int >= 0, got {patience!r}")
        self.name, self.mode, self.min_delta, self.patience = name, mode, float(min_delta), patience
        self.best, self.best_epoch, self.wait, self.stopped = None, None, 0, False

    def update(self, epoch: int, value: float) -> bool:
        """Record ``value``; True when it is a new best."""
        if value is None or math.isnan(value):
            improved = False
        elif self.best is None:
            improved = True
        elif self.mode == "min":
            improved = value < self.best - self.min_delta
        else:
            improved = value > self.best + self.min_delta
        if improved:
            self.best, self.best_epoch, self.wait = float(value), epoch, 0
        else:
            self.wait += 1
            # As Keras: stop once ``patience`` epochs in a row brought no improvement.
            if self.patience is not None and self.wait >= self.patience:
                self.stopped = True
        return improved

    def to_dict(self):
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait,
                "stopped": self.stopped}

    def load(self, d):
        self.best, self.best_epoch = d["best"], d["best_epoch"]
        self.wait, self.stopped = d["wait"], d["stopped"]


def fit(
    apply_fn: Callable | None,
    params: PyTree,
    loss,
    optimizer: optax.GradientTransformation,
    train_data,
    *,
    epochs: int = 1,
    batch_size: int = 32,
    val_data=None,
    metrics=(),
    seed: int = 0,
    key=None,
    monitor: str | None = None,
    mode: str = "auto",
    patience: int | None = None,
    min_delta: float = 0.0,
    restore_best: bool = True,
    checkpoint_dir: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    max_steps: int | None = None,
    progress: bool = True,
    verbose: bool = True,
    plot_path: str | os.PathLike | None = None,
    objective: Callable | None = None,
    donate: bool = True,
    data_parallel=None,
) -> FitResult:
    """Train ``params`` with the compiled step of :func:`~jaxrnn.train.make_train_step`.

    Args:
      apply_fn: the model, ``apply(params, inputs, *, lengths=None, key=None,
        deterministic=True) -> outputs`` (None when ``objective`` is given).
      params: initial parameters.
      loss: ``loss(outputs, targets, mask) -> scalar`` or a loss name.
      optimizer: any ``optax.GradientTransformation`` (see :func:`make_optimizer`).
      train_data: a dict of arrays (batched by a shuffling :class:`~jaxrnn.data.BatchIterator`
        with ``batch_size``, ``seed`` and ``drop_remainder=True``, so one shape compiles once) or
        a ``BatchIterator``.
      epochs: number of passes over ``train_data``.
      val_data: dict of arrays or BatchIterator, evaluated after each epoch.
      metrics: metric names or :class:`~jaxrnn.train.metrics.Metric` s.
      seed: shuffling seed (for a dict ``train_data``) and, without ``key``, the PRNG seed.
      key: base PRNG key for dropout (default ``jax.random.key(seed)``).
      monitor: quantity for early stopping and best-parameter tracking (default ``"val_loss"``
        with validation data, else ``"loss"`` when ``patience`` is set, else none).
      mode: ``"min"``, ``"max"`` or ``"auto"`` (max for accuracy-like names).
      patience: stop after this many epochs without improvement (None: never stop early).
      min_delta: smallest change that counts as an improvement.
      restore_best: return the parameters of the best epoch by ``monitor``.
      checkpoint_dir: save a checkpoint here after every epoch (and every ``checkpoint_every``
        steps); see :mod:`jaxrnn.train.checkpoint`.
      resume: continue from the checkpoint in ``checkpoint_dir`` if there is one.
      max_steps: stop after this many optimiser steps in total (for tests and smoke runs).
      progress: show a tqdm progress bar; ``verbose`` prints one line per epoch.
      plot_path: save the learning curves here as PNG at the end.
      objective: a full objective instead of ``apply_fn``/``loss`` (see ``make_train_step``).
      donate: donate state buffers in the train step.
      data_parallel: split every batch over devices, parameters replicated: True (all
        devices), a device count or a ``jax.sharding.Mesh`` (see :mod:`jaxrnn.parallel`;
        ``batch_size`` should divide by the device count).

    Returns:
      A :class:`FitResult`.
    """
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 0:
        raise ValueError(f"epochs: expected an int >= 0, got {epochs!r}")
    if checkpoint_every is not None and (not isinstance(checkpoint_every, int)
                                         or checkpoint_every < 1):
        raise ValueError(
            f"checkpoint_every: expected None or an int >= 1, got {checkpoint_every!r}"
        )
    if resume and checkpoint_dir is None:
        raise ValueError("resume: needs checkpoint_dir, got checkpoint_dir=None")
    metrics = get_metrics(metrics)
    it = _as_iterator(train_data, batch_size, shuffle=True, seed=seed, drop_remainder=True,
                      argname="train_data")
    if monitor is None and val_data is not None:
        monitor = "val_loss"
    elif monitor is None and patience is not None:
        monitor = "loss"  # early stopping without validation data watches the training loss
    valid_names = {"loss", *(m.name for m in metrics)}
    if val_data is not None:
        valid_names |= {"val_" + n for n in list(valid_names)}
    if monitor is not None and monitor not in valid_names:
        raise ValueError(f"monitor: expected one of {sorted(valid_names)}, got {monitor!r}")
    tracker = _Monitor(monitor or "loss", mode, min_delta, patience)

    # init_train_state copies params: the step donates the state's buffers, not the caller's.
    state = init_train_state(params, optimizer,
                             jax.random.key(seed) if key is None else key)
    train_step = make_train_step(apply_fn, loss, optimizer, metrics=metrics, objective=objective,
                                 donate=donate, data_parallel=data_parallel)
    eval_step = make_eval_step(apply_fn, loss, metrics=metrics, objective=objective,
                               data_parallel=data_parallel) if val_data is not None else None
    history: dict[str, list] = {}
    best_params = None
    acc = None  # running sums of the current epoch

    def save(position=None):
        extra = {"history": history, "monitor": tracker.to_dict(), "acc": acc,
                 "best_params": best_params}
        save_checkpoint(checkpoint_dir, state, extra=extra,
                        data_position=it.position if position is None else position)

    def _save_on_interrupt(state_now, last_logs, acc_now, acc_count, start_batch, start_step,
                           epoch):
        """Ctrl-C inside an epoch: checkpoint exactly the batches whose update the state holds,
        so a resume continues bit-for-bit. If the interrupt consumed the state mid-step (its
        buffers donated, the result lost), the last checkpoint stays the resume point."""
        nonlocal acc
        try:
            applied = int(state_now.step) - start_step
        except RuntimeError:
            tqdm.write(f"interrupted mid-step; resume from the last checkpoint in "
                       f"{checkpoint_dir}")
            return
        if acc_count == applied - 1 and last_logs is not None:
            acc_now = _accumulate(acc_now, last_logs)  # the update landed, its sums did not
        acc = acc_now
        position = DataPosition(epoch, start_batch + applied, it.seed)
        save(position)
        tqdm.write(f"interrupted: checkpoint saved at step {int(state_now.step)} (epoch "
                   f"{epoch + 1}, batch {position.batch_index}) in {checkpoint_dir}; continue "
                   f"with resume=True")

    if resume and latest_checkpoint(checkpoint_dir) is not None:
        ck = load_checkpoint(checkpoint_dir, state, extra_target={"best_params": params})
        state = ck.state
        if ck.data_position is not None:
            it.set_position(ck.data_position)
        history = ck.extra["history"]
        tracker.load(ck.extra["monitor"])
        acc = _restore_acc(ck.extra.get("acc"))
        best_params = ck.extra["best_params"]
        if verbose:
            print(f"resumed from {ck.path} at step {int(state.step)} "
                  f"(epoch {it.epoch + 1}, batch {it.batch_index})")
    elif resume and verbose:
        print(f"no checkpoint in {checkpoint_dir}; starting fresh")

    plot_file = None
    global_step = int(state.step)  # a host-side count, so the loop never waits on the device
    while it.epoch < epochs and not tracker.stopped:
        epoch = it.epoch
        n_batches = it.num_batches(epoch)
        t0 = time.perf_counter()
        bar = tqdm(total=n_batches, initial=it.batch_index, desc=f"epoch {epoch + 1}/{epochs}",
                   disable=not progress, leave=False, dynamic_ncols=True)
        last_refresh = 0.0
        hit_max = False
        start_batch, start_step, acc_steps, step_logs = it.batch_index, global_step, 0, None
        try:
            for batch in it:
                state, step_logs = train_step(state, batch)
                global_step += 1
                # One statement: the sums and their count never disagree, even on Ctrl-C.
                acc, acc_steps = _accumulate(acc, step_logs), acc_steps + 1
                bar.update(1)
                now = time.perf_counter()
                if progress and now - last_refresh > 0.5:
                    bar.set_postfix_str(_fmt(_summarise(acc, metrics)))
                    last_refresh = now
                if checkpoint_dir is not None and checkpoint_every and \
                        global_step % checkpoint_every == 0 and it.batch_index < n_batches:
                    save()
                if max_steps is not None and global_step >= max_steps:
                    hit_max = True
                    break
        except KeyboardInterrupt:
            bar.close()
            if checkpoint_dir is not None:
                _save_on_interrupt(state, step_logs, acc, acc_steps, start_batch, start_step,
                                   epoch)
            raise
        bar.close()
        if hit_max:
            # Stopped inside an epoch (the iterator has not closed it): save the position
            # mid-epoch with the running sums, so a resume finishes this very epoch.
            if checkpoint_dir is not None:
                save()
            break
        logs = _summarise(acc, metrics)
        acc = None
        if eval_step is not None:
            logs.update({f"val_{k}": v for k, v in evaluate_with(
                eval_step, state.params, _eval_batches(val_data, batch_size, "val_data"),
                metrics).items()})
        logs["epoch_time"] = time.perf_counter() - t0
        for k, v in logs.items():
            history.setdefault(k, []).append(v)
        if monitor is not None and tracker.update(epoch, logs.get(monitor)) and restore_best:
            best_params = snapshot(state.params)
        if verbose:
            tqdm.write(f"epoch {epoch + 1}/{epochs}  {_fmt(logs)}")
        if checkpoint_dir is not None:
            save()
    stopped_early = tracker.stopped
    if stopped_early and verbose:
        tqdm.write(f"early stopping: no improvement of {monitor} for {tracker.wait} epochs; "
                   f"best epoch {tracker.best_epoch + 1}")
    if plot_path is not None and history:
        plot_file = plot_history(history, plot_path, best_epoch=tracker.best_epoch)
    final_params = best_params if (restore_best and best_params is not None) else state.params
    return FitResult(final_params, state, history, tracker.best_epoch, stopped_early, plot_file)


__all__ = ["fit", "evaluate", "evaluate_with", "predict", "plot_history", "FitResult"]
