"""The options of the one training loop, written once.

:func:`~jaxrnn.train.fit` (batches of a dataset), :func:`~jaxrnn.train.fit_stream` (chunks of
streams, truncated BPTT) and :func:`jaxrnn.keras.fit` run the same
:class:`~jaxrnn.train.epochs.EpochLoop`; what the loop does (epochs, early stopping,
checkpoints and resume, progress, the non-finite guard, callbacks, schedules, sharding) is one
:class:`LoopOptions`, passed as ``options=`` or as keywords of the same names, and checked
here, so a new loop option is added in one place and every entry point has it.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import os
from collections.abc import Mapping
from typing import Any


@dataclasses.dataclass(frozen=True)
class LoopOptions:
    """What the epoch loop does, for every entry point that trains.

    Attributes:
      epochs: number of passes over the data.
      metrics: metric names or :class:`~jaxrnn.train.metrics.Metric` s.
      seed: shuffling seed (for a dict of arrays) and, without ``key``, the PRNG seed.
      key: base PRNG key for dropout (default ``jax.random.key(seed)``).
      monitor: quantity for early stopping and best-parameter tracking (default
        ``"val_loss"`` with validation data, else ``"loss"`` when ``patience`` is set, else
        none).
      mode: ``"min"``, ``"max"`` or ``"auto"`` (max for accuracy-like names).
      patience: stop after this many epochs without improvement (None: never stop early).
      min_delta: smallest change that counts as an improvement.
      restore_best: return the parameters of the best epoch by ``monitor``.
      checkpoint_dir: save a checkpoint here after every epoch (and every
        ``checkpoint_every`` steps); an existing file there is an error before anything
        trains.
      checkpoint_every: also checkpoint every this many steps inside an epoch.
      resume: continue from the checkpoint in ``checkpoint_dir`` if there is one (bit-exact).
      checkpoint_format: a store of :mod:`jaxrnn.io.store`: ``"msgpack"`` (one file) or
        ``"orbax"`` (Orbax step directories), with the same guarantees (atomic, bit-exact
        resume, the last readable one kept).
      max_steps: stop after this many optimiser steps in total (tests and smoke runs).
      time_budget_s: stop after the update during which this many seconds of wall time have
        passed since training started (None: no limit); a resumed run finishes the epoch.
      on_step: a function ``(step, logs) -> bool | None`` called after every update (its
        1-based step; logs are device arrays); True stops after this update.
      progress: show a tqdm progress bar; ``verbose`` prints one line per epoch.
      plot_path: save the learning curves here as PNG at the end.
      donate: donate the state's buffers to the train step.
      data_parallel: split every batch over devices, parameters replicated: True (all
        devices), a device count or a ``jax.sharding.Mesh`` (see :mod:`jaxrnn.parallel`).
      skip_nonfinite: True: skip an update whose loss or gradient is NaN/inf
        (``optax.apply_if_finite``), count it, and stop only if a whole epoch was skipped.
        False: stop at the first such update with
        :class:`~jaxrnn.train.epochs.NonFiniteLossError` naming its epoch and step. None: True
        when the optimiser already skips (``make_optimizer(..., skip_nonfinite=True)``).
      callbacks: a callback or a list of them, called after every epoch
        (:mod:`jaxrnn.train.callbacks`): ``on_epoch_end(epoch, logs, state)`` returning True
        stops training.
      lr_scale: a per-epoch learning-rate schedule: a function ``epoch -> factor`` (0-based)
        or a list of factors; every update of epoch ``e`` is multiplied by it.
    """

    epochs: int = 1
    metrics: Any = ()
    seed: int = 0
    key: Any = None
    monitor: str | None = None
    mode: str = "auto"
    patience: int | None = None
    min_delta: float = 0.0
    restore_best: bool = True
    checkpoint_dir: Any = None
    checkpoint_every: int | None = None
    resume: bool = False
    checkpoint_format: str = "msgpack"
    max_steps: int | None = None
    time_budget_s: float | None = None
    on_step: Any = None
    progress: bool = True
    verbose: bool = True
    plot_path: Any = None
    donate: bool = True
    data_parallel: Any = None
    skip_nonfinite: bool | None = None
    callbacks: Any = None
    lr_scale: Any = None


OPTION_NAMES = tuple(f.name for f in dataclasses.fields(LoopOptions))


def loop_options(options: LoopOptions | None, overrides: Mapping, caller: str) -> LoopOptions:
    """``options`` (default: the defaults) with ``overrides`` (keywords of the same names)
    applied, checked (:func:`check_options`). An unknown keyword is a TypeError naming it."""
    if options is not None and not isinstance(options, LoopOptions):
        raise TypeError(f"options: expected None or a jaxrnn.train.LoopOptions, got "
                        f"{type(options).__name__}")
    unknown = sorted(set(overrides) - set(OPTION_NAMES))
    if unknown:
        raise TypeError(f"{caller}: unexpected keyword argument {unknown[0]!r} (the loop's "
                        f"options: {', '.join(OPTION_NAMES)})")
    base = LoopOptions() if options is None else options
    return check_options(dataclasses.replace(base, **overrides))


def _check_int(value, argname: str, minimum: int, *, optional: bool = False) -> None:
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{argname}: expected {'None or ' if optional else ''}an int >= "
                         f"{minimum}, got {value!r}")


def _check_checkpoint_dir(checkpoint_dir):
    if checkpoint_dir is None:
        return None
    if not isinstance(checkpoint_dir, (str, os.PathLike)):
        raise TypeError(f"checkpoint_dir: expected None or a path, got "
                        f"{type(checkpoint_dir).__name__}")
    path = os.fspath(checkpoint_dir)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"checkpoint_dir: {path!r} exists and is not a directory")
    return path


def check_options(opts: LoopOptions) -> LoopOptions:
    """Every option's type and range, before anything is traced; returns ``opts`` with the
    checkpoint directory as a plain path."""
    from jaxrnn.train.epochs import checkpoint_store

    _check_int(opts.epochs, "epochs", 0)
    _check_int(opts.checkpoint_every, "checkpoint_every", 1, optional=True)
    _check_int(opts.max_steps, "max_steps", 1, optional=True)
    t = opts.time_budget_s
    if t is not None and (isinstance(t, bool) or not isinstance(t, numbers.Real)
                          or not math.isfinite(t) or t <= 0):
        raise ValueError(f"time_budget_s: expected None or a positive finite number of seconds, "
                         f"got {t!r}")
    if opts.on_step is not None and not callable(opts.on_step):
        raise TypeError(f"on_step: expected None or a function (step, logs) -> bool | None, got "
                        f"{type(opts.on_step).__name__}")
    checkpoint_dir = _check_checkpoint_dir(opts.checkpoint_dir)
    if opts.resume and checkpoint_dir is None:
        raise ValueError("resume: needs checkpoint_dir, got checkpoint_dir=None")
    checkpoint_store(opts.checkpoint_format)
    return dataclasses.replace(opts, checkpoint_dir=checkpoint_dir)


__all__ = ["LoopOptions", "OPTION_NAMES", "loop_options", "check_options"]
