"""The epoch loop shared by :func:`~jaxrnn.train.fit` and :func:`~jaxrnn.train.fit_stream`.

:class:`EpochLoop` runs epochs of a compiled step over a resumable iterator (anything with
``epoch``, ``batch_index``, ``position``, ``set_position``, ``num_batches`` and ``__iter__`` over
the rest of the current epoch, as :class:`~jaxrnn.data.BatchIterator`), and owns, one method
each: resuming from a checkpoint, one epoch of updates (progress bar, running sums, periodic
checkpoints, Ctrl-C), the end of an epoch (validation, history, early stopping, callbacks),
saving, and the non-finite guard.

A *stepper* adapts a train step to the loop: ``stepper(state, batch) -> (state, logs)``, plus
``begin_epoch()`` (e.g. a fresh carry for a stream), ``extra()`` / ``extra_target()`` /
``load_extra(extra)`` for what it must checkpoint beyond the state.

Training ends after ``epochs``, or earlier for one of the :data:`STOP_REASONS`, recorded in
:attr:`FitResult.stop_reason`. ``max_steps``, a ``time_budget_s`` and ``on_step`` stop after the
current update, inside an epoch: the checkpoint then holds the position and the running sums,
so a resumed run finishes that very epoch; early stopping and the epoch callbacks stop at the
end of an epoch.

The loop never waits on the device inside an epoch except every half second (the progress
postfix and the non-finite check) and before writing a checkpoint.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from tqdm.auto import tqdm

from jaxrnn import io
from jaxrnn.data.batching import DataPosition
from jaxrnn.train.callbacks import Monitor
from jaxrnn.train.metrics import finalize
from jaxrnn.train.step import TrainState

PyTree = Any
REFRESH_SECONDS = 0.5
# Why a run ended: all its epochs; max_steps; the wall-clock budget; an epoch callback or an
# on_step function returned True; early stopping (the monitor's patience ran out).
STOP_REASONS = ("epochs", "max_steps", "time_budget", "callback", "early_stopping")

# Set by a SIGINT handler that also raises KeyboardInterrupt (jaxrnn.cli's): a KeyboardInterrupt
# raised inside a garbage-collection callback (JAX registers one) is printed and dropped, so the
# loop raises it again after the update it should have stopped.
INTERRUPT = threading.Event()
# Set while an epoch's updates run: a handler that sees it defers the first Ctrl-C to the end of
# the update in flight (the loop raises it there), so that the interrupt never lands inside a
# step call, after XLA took the state's donated buffers and before the new state came back,
# which lost the epoch's updates since the last checkpoint; a second Ctrl-C is not deferred.
IN_UPDATES = threading.Event()
# How the message after Ctrl-C says to continue (the command line sets "--resume").
RESUME_HINT = "resume=True"


class NonFiniteLossError(FloatingPointError, ValueError):
    """The loss or a gradient was NaN/inf and updates were not being skipped."""


class FitResult(NamedTuple):
    """What :func:`~jaxrnn.train.fit` returns.

    Attributes:
      params: final parameters (the best ones when early stopping restored them).
      state: the final :class:`~jaxrnn.train.TrainState` (its params are the last trained ones).
      history: ``{"loss": [...], "<metric>": [...], "val_loss": [...], "val_<metric>": [...],
        "epoch_time": [...]}``, one entry per epoch.
      best_epoch: the best epoch by the monitored quantity **counted from 0**: an index into
        the history lists (``history[monitor][best_epoch]`` is the best value), as Keras'
        callbacks count; the progress lines and the command line print it as
        ``best_epoch + 1`` ("epoch 3/10"). None without validation or monitoring.
      stopped_early: whether early stopping or an epoch callback ended the run (then a resumed
        run stays stopped); ``stop_reason`` says why any run ended.
      plot_path: the learning-curve PNG, or None.
      stop_reason: why training ended, one of :data:`STOP_REASONS` (``"epochs"``: all of
        them ran; ``"max_steps"`` / ``"time_budget"``: stopped inside an epoch, which a resumed
        run finishes; ``"callback"``; ``"early_stopping"``).
    """

    params: PyTree
    state: TrainState
    history: dict
    best_epoch: int | None
    stopped_early: bool
    plot_path: str | None
    stop_reason: str = "epochs"


# --------------------------------------------------------------------------- running sums

def _one(logs, step_index):
    finite = jnp.asarray(logs.get("finite", True))
    keep = lambda x: jnp.where(finite, jnp.asarray(x, jnp.float32), 0.0)  # noqa: E731
    return {
        "loss": keep(logs["loss"] * logs["weight"]),
        "weight": keep(logs["weight"]),
        "stats": jax.tree_util.tree_map(keep, logs["stats"]),
        "nonfinite": jnp.where(finite, 0, 1).astype(jnp.int32),
        "first_nonfinite": jnp.where(finite, -1, step_index).astype(jnp.int32),
    }


@jax.jit
def _add(acc, logs, step_index):
    new = _one(logs, step_index)
    out = jax.tree_util.tree_map(lambda a, b: a + b, acc, new)
    out["first_nonfinite"] = jnp.where(acc["first_nonfinite"] >= 0, acc["first_nonfinite"],
                                       new["first_nonfinite"])
    return out


_first = jax.jit(_one)


def accumulate(acc, logs, step_index: int):
    """Add one update's loss * weight, weight and metric sums into ``acc`` (on device, async;
    one compiled call per step).

    A non-finite update (``logs["finite"]`` False) adds nothing to the sums; it is counted in
    ``nonfinite`` and the first one's ``step_index`` kept in ``first_nonfinite`` (-1: none)."""
    logs = {k: logs[k] for k in ("loss", "weight", "stats", "finite") if k in logs}
    step_index = jnp.asarray(step_index, jnp.int32)
    return _first(logs, step_index) if acc is None else _add(acc, logs, step_index)


def summarise(acc, metrics, prefix="") -> dict[str, float]:
    if acc is None:
        return {}
    acc = jax.device_get(acc)
    w = float(acc["weight"])
    out = {prefix + "loss": float(acc["loss"]) / w if w > 0 else float("nan")}
    for k, v in finalize(metrics, acc["stats"]).items():
        out[prefix + k] = v
    return out


def restore_acc(raw):
    """Running sums from their checkpointed state dict (tuples were saved as ``{"0": ...}``)."""
    if not raw:
        return None
    stats = {name: tuple(jnp.asarray(d[str(i)]) for i in range(len(d)))
             for name, d in (raw.get("stats") or {}).items()}
    acc = {"loss": jnp.asarray(raw["loss"]), "weight": jnp.asarray(raw["weight"]),
           "stats": stats}
    acc["nonfinite"] = jnp.asarray(raw.get("nonfinite", 0), jnp.int32)
    acc["first_nonfinite"] = jnp.asarray(raw.get("first_nonfinite", -1), jnp.int32)
    return acc


def fmt(logs: dict) -> str:
    return "  ".join(f"{k} {v:.4g}" for k, v in logs.items())


def snapshot(tree):
    """A copy of a pytree of arrays that survives the donation of the original's buffers."""
    return jax.tree_util.tree_map(lambda a: jnp.array(a, copy=True), tree)


# --------------------------------------------------------------------------- checkpoint formats

def checkpoint_store(checkpoint_format: str) -> io.Store:
    """The store registered as ``checkpoint_format`` (:mod:`jaxrnn.io.store`: ``"msgpack"``,
    one file; ``"orbax"``, Orbax step directories; ``"orbax-sharded"``, written by every
    process); ValueError naming ``checkpoint_format`` for any other name."""
    return io.get_store(checkpoint_format, "checkpoint_format")


# --------------------------------------------------------------------------- steppers

def step_count(state: TrainState) -> int:
    """The updates ``state`` holds. A stacked state (an ensemble: one step counter per member,
    :mod:`jaxrnn.train.ensemble`) counts its members' common step."""
    return int(jnp.ravel(state.step)[0])



class PlainStepper:
    """A ``step(state, batch) -> (state, logs)`` as a stepper (nothing beyond the state)."""

    def __init__(self, step: Callable):
        self.step = step

    def __call__(self, state, batch):
        return self.step(state, batch)

    def begin_epoch(self) -> None:
        pass

    def extra(self) -> dict:
        return {}

    def extra_target(self) -> dict:
        return {}

    def load_extra(self, extra: dict) -> None:
        pass


# --------------------------------------------------------------------------- the loop

class EpochLoop:
    """Epochs of ``stepper`` over ``iterator`` from ``state``; see the module docstring.

    ``validate(params) -> {"loss", metrics...}`` (or None) runs after every epoch;
    ``monitor`` (a :class:`~jaxrnn.train.callbacks.Monitor`, None: no monitoring) tracks the best
    epoch; ``callbacks`` come from :func:`~jaxrnn.train.callbacks.as_callbacks`.
    ``on_step`` are functions ``(step, logs) -> bool | None`` called after every update with
    its 1-based global step and its logs (device arrays: keeping them does not wait for the
    device); True stops training after this update. ``time_budget_s`` (seconds of wall time
    from the start of :meth:`run`, None: no limit) stops training after the update during which
    it ran out (arguments are checked by the callers).
    """

    def __init__(self, stepper, iterator, state: TrainState, *, epochs: int, metrics,
                 monitor: Monitor | None, restore_best: bool, validate=None, callbacks=(),
                 checkpoint_dir: str | None = None, checkpoint_every: int | None = None,
                 max_steps: int | None = None, skip_nonfinite: bool = False,
                 progress: bool = True, verbose: bool = True, params_template=None,
                 checkpoint_format: str = "msgpack", on_step=(),
                 time_budget_s: float | None = None):
        self.stepper, self.it, self.state = stepper, iterator, state
        self.epochs, self.metrics, self.monitor = epochs, metrics, monitor
        self.restore_best, self.validate, self.callbacks = restore_best, validate, callbacks
        self.checkpoint_dir, self.checkpoint_every = checkpoint_dir, checkpoint_every
        self.max_steps, self.skip_nonfinite = max_steps, skip_nonfinite
        self.progress, self.verbose = progress, verbose
        self.store = checkpoint_store(checkpoint_format)
        self.params_template = state.params if params_template is None else params_template
        self.history: dict[str, list] = {}
        self.best_params = None
        self.acc = None  # running sums of the current epoch
        self.stopped = False  # by early stopping or a callback
        self.stop_reason = None  # one of STOP_REASONS once the run ended
        self.on_step, self.time_budget_s = tuple(on_step), time_budget_s
        self.deadline = None  # perf_counter() value where the time budget runs out
        self.global_step = step_count(state)  # host-side: the loop never waits to count

    # ------------------------------------------------------------------ checkpoints

    def save(self, position=None) -> None:
        if self.checkpoint_dir is None:
            return
        self.check_finite()  # never checkpoint a state a non-finite update produced
        extra = {"history": self.history,
                 "monitor": None if self.monitor is None else self.monitor.to_dict(),
                 "stopped": self.stopped, "stop_reason": self.stop_reason, "acc": self.acc,
                 "best_params": self.best_params, **self.stepper.extra()}
        self.store.save(self.checkpoint_dir, self.state, extra=extra,
                        data_position=self.it.position if position is None
                                   else position)

    def resume(self) -> None:
        """Continue from the newest readable checkpoint in ``checkpoint_dir``, if any."""
        if self.store.latest(self.checkpoint_dir) is None:
            if self.verbose:
                print(f"no checkpoint in {self.checkpoint_dir}; starting fresh")
            return
        ck = self.store.load(self.checkpoint_dir, self.state,
                             extra_target={"best_params": self.params_template,
                                                      **self.stepper.extra_target()})
        self.state = ck.state
        self.global_step = step_count(self.state)
        if ck.data_position is not None:
            self.it.set_position(ck.data_position)
        extra = {k: json.loads(v) if k in ("history", "monitor") and isinstance(v, str) else v
                 for k, v in ck.extra.items()}  # JSON text: a checkpoint of an older fit
        self.history = extra["history"]
        if self.monitor is not None and extra.get("monitor"):
            self.monitor.load(extra["monitor"])
        self.stopped = bool(extra.get("stopped", False))
        if self.stopped:  # a finished run stays finished, for the reason it had
            self.stop_reason = extra.get("stop_reason") or (
                "early_stopping" if self.monitor is not None and self.monitor.stopped
                else "callback")
        self.acc = restore_acc(extra.get("acc"))
        self.best_params = extra["best_params"]
        self.stepper.load_extra(extra)
        if self.verbose:
            print(f"resumed from {ck.path} at step {self.global_step} "
                  f"(epoch {self.it.epoch + 1}, batch {self.it.batch_index})")

    # ------------------------------------------------------------------ non-finite guard

    def check_finite(self) -> None:
        """Raise :class:`NonFiniteLossError` if an update of the current epoch was not finite
        and updates are not being skipped (waits for the device)."""
        if self.acc is None or self.skip_nonfinite:
            return
        bad, first = (int(v) for v in jax.device_get(
            (self.acc["nonfinite"], self.acc["first_nonfinite"])))
        if bad:
            raise NonFiniteLossError(
                f"loss: not finite (NaN/inf loss or gradient) at update {first + 1} (epoch "
                f"{self._epoch + 1}, batch {first - self._epoch_first_step + 1}); training "
                f"stopped before any checkpoint of it. "
                f"With finite data (fit checks dict data for NaN/inf before training), lower "
                f"the learning rate, clip "
                f"gradients (clip_norm), or pass skip_nonfinite=True to fit (jaxrnn.train.fit "
                f"or jaxrnn.keras.fit; on the command line it is the default, --skip-nonfinite) "
                f"to skip such updates"
            )

    # ------------------------------------------------------------------ one epoch

    def train_epoch(self) -> str | None:
        """The remaining batches of the current epoch; the stop reason (``"max_steps"``,
        ``"time_budget"``, ``"callback"``) when training stopped inside it, else None."""
        it, epoch = self.it, self.it.epoch
        n_batches = it.num_batches(epoch)
        if it.batch_index == 0:
            self.stepper.begin_epoch()
        bar = tqdm(total=n_batches, initial=it.batch_index,
                   desc=f"epoch {epoch + 1}/{self.epochs}", disable=not self.progress,
                   leave=False, dynamic_ncols=True)
        start_batch, start_step, acc_steps, step_logs = it.batch_index, self.global_step, 0, None
        self._epoch, self._epoch_first_step = epoch, start_step - start_batch
        last_refresh = time.perf_counter()
        IN_UPDATES.set()
        try:
            for batch in it:
                self.state, step_logs = self.stepper(self.state, batch)
                # One statement: the sums and their count never disagree, even on Ctrl-C.
                self.acc, acc_steps = accumulate(self.acc, step_logs, self.global_step), \
                    acc_steps + 1
                self.global_step += 1
                bar.update(1)
                if INTERRUPT.is_set():
                    raise KeyboardInterrupt
                now = time.perf_counter()
                if now - last_refresh > REFRESH_SECONDS:
                    self.check_finite()
                    if self.progress:
                        bar.set_postfix_str(fmt(summarise(self.acc, self.metrics)))
                    last_refresh = now
                if self.checkpoint_every and self.global_step % self.checkpoint_every == 0 \
                        and it.batch_index < n_batches:
                    self.save()
                reason = self._stop_after_step(step_logs)
                if reason is not None:
                    bar.close()
                    return reason
            if INTERRUPT.is_set():  # deferred (IN_UPDATES) after the last update's look
                raise KeyboardInterrupt
        except KeyboardInterrupt:
            IN_UPDATES.clear()
            bar.close()
            self._save_on_interrupt(step_logs, acc_steps, start_batch, start_step, epoch)
            raise
        except BaseException:
            bar.close()
            raise
        finally:
            IN_UPDATES.clear()
        bar.close()
        return None

    def _stop_after_step(self, step_logs) -> str | None:
        """Why training must stop after the update just made (None: it goes on). Every
        ``on_step`` function sees every update, even when an earlier one asks to stop."""
        asked = [bool(fn(self.global_step, step_logs)) for fn in self.on_step]
        if self.max_steps is not None and self.global_step >= self.max_steps:
            return "max_steps"
        if any(asked):
            return "callback"
        if self.deadline is not None and time.perf_counter() >= self.deadline:
            return "time_budget"
        return None

    def _save_on_interrupt(self, last_logs, acc_steps, start_batch, start_step, epoch) -> None:
        """Ctrl-C inside an epoch: checkpoint exactly the batches whose update the state holds,
        so a resume continues bit-for-bit. If the interrupt consumed the state mid-step (its
        buffers donated, the result lost), the last checkpoint stays the resume point."""
        if self.checkpoint_dir is None:
            return
        # A Ctrl-C that lands inside the step call, after XLA took the donated buffers and
        # before the new state came back, leaves arrays that are deleted: nothing to save.
        consumed = any(getattr(leaf, "is_deleted", lambda: False)()
                       for leaf in jax.tree_util.tree_leaves(self.state))
        try:
            if consumed:
                raise RuntimeError("the state's buffers were donated to an unfinished step")
            applied = step_count(self.state) - start_step
        except RuntimeError:
            tqdm.write(f"interrupted mid-step; resume from the last checkpoint in "
                       f"{self.checkpoint_dir}")
            return
        if acc_steps == applied - 1 and last_logs is not None:
            # the update landed, its sums did not
            self.acc = accumulate(self.acc, last_logs, start_step + applied - 1)
        position = DataPosition(epoch, start_batch + applied, self.it.seed)
        self.save(position)
        tqdm.write(f"interrupted: checkpoint saved at step {step_count(self.state)} (epoch "
                   f"{epoch + 1}, batch {position.batch_index}) in {self.checkpoint_dir}; "
                   f"continue with {RESUME_HINT}")

    # ------------------------------------------------------------------ end of an epoch

    def end_epoch(self, epoch: int, seconds: float) -> None:
        """Summarise the epoch, validate, record history, track the best epoch, run the
        callbacks and checkpoint."""
        self.check_finite()
        skipped = 0 if self.acc is None else int(self.acc["nonfinite"])
        steps = self.global_step - self._epoch_first_step
        if skipped and skipped >= steps:
            raise NonFiniteLossError(
                f"loss: every update of epoch {epoch + 1} ({steps}) had a non-finite loss or "
                f"gradient and was skipped; nothing is being learnt (lower the learning rate)")
        logs = summarise(self.acc, self.metrics)
        self.acc = None
        if self.validate is not None:
            logs.update({f"val_{k}": v for k, v in self.validate(self.state.params).items()})
        logs["epoch_time"] = seconds
        for k, v in logs.items():
            self.history.setdefault(k, []).append(v)
        if self.monitor is not None and self.monitor.update(epoch, logs.get(self.monitor.name)) \
                and self.restore_best:
            self.best_params = snapshot(self.state.params)
        if self.verbose:
            note = f"  (skipped {skipped} non-finite updates)" if skipped else ""
            tqdm.write(f"epoch {epoch + 1}/{self.epochs}  {fmt(logs)}{note}")
        for cb in self.callbacks:
            if cb(epoch, dict(logs), self.state):
                self.stopped, self.stop_reason = True, "callback"
        if self.monitor is not None and self.monitor.stopped:
            self.stopped = True
            self.stop_reason = self.stop_reason or "early_stopping"
        self.save()

    # ------------------------------------------------------------------ the run

    def run(self) -> None:
        self._epoch, self._epoch_first_step = self.it.epoch, self.global_step
        if self.time_budget_s is not None:
            self.deadline = time.perf_counter() + self.time_budget_s
        while self.it.epoch < self.epochs and not self.stopped:
            epoch, t0 = self.it.epoch, time.perf_counter()
            reason = self.train_epoch()
            if reason is not None:
                # Stopped inside an epoch (the iterator has not closed it): save the position
                # mid-epoch with the running sums, so a resume finishes this very epoch. Not
                # ``stopped``: a resumed run goes on.
                self.stop_reason = reason
                self.save()
                if self.verbose and reason != "max_steps":
                    tqdm.write(f"stopped by {reason.replace('_', ' ')} after update "
                               f"{self.global_step} (epoch {epoch + 1}, batch "
                               f"{self.it.batch_index}/{self.it.num_batches(epoch)})")
                return
            self.end_epoch(epoch, time.perf_counter() - t0)
        if self.stop_reason is None:
            self.stop_reason = "epochs"
        m = self.monitor
        if m is not None and m.stopped and self.verbose:
            tqdm.write(f"early stopping: no improvement of {m.name} for {m.wait} epochs; "
                       f"best epoch {m.best_epoch + 1}")

    def result(self, plot_path=None, plot=None) -> FitResult:
        """The :class:`FitResult`; the learning curves go to ``plot_path`` via ``plot``."""
        best_epoch = None if self.monitor is None else self.monitor.best_epoch
        plot_file = None
        if plot_path is not None and self.history:
            plot_file = plot(self.history, os.fspath(plot_path), best_epoch=best_epoch)
        final = self.best_params if (self.restore_best and self.best_params is not None) \
            else self.state.params
        return FitResult(final, self.state, self.history, best_epoch, self.stopped, plot_file,
                         self.stop_reason or "epochs")


__all__ = ["EpochLoop", "FitResult", "NonFiniteLossError", "PlainStepper", "STOP_REASONS",
           "accumulate", "summarise", "snapshot"]
