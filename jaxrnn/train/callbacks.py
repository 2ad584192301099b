"""What runs at the end of every epoch of :func:`~jaxrnn.train.fit` (and ``fit_stream``).

**Callback protocol**: an object with ``on_epoch_end(epoch, logs, state) -> bool | None``, or a
plain function of the same three arguments. ``epoch`` counts from 0 (as Keras' callbacks and
``FitResult.best_epoch``; the progress lines print ``epoch + 1``), ``logs`` is that epoch's
``{"loss", metrics..., "val_loss", ..., "epoch_time"}`` and ``state`` the current
:class:`~jaxrnn.train.TrainState` (valid during the call only: the next step donates its
buffers, so copy what you keep with :func:`~jaxrnn.train.loop.snapshot`). Returning True stops
training after this epoch (``FitResult.stopped_early`` is then True).

:class:`Monitor` is the early-stopping bookkeeping ``fit`` itself uses for ``monitor`` /
``patience``; its state is saved in checkpoints, so a resumed run stops where the uninterrupted
one would.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any, Protocol


class Callback(Protocol):
    def on_epoch_end(self, epoch: int, logs: dict, state: Any) -> bool | None: ...


def as_callbacks(callbacks) -> tuple[Callable[[int, dict, Any], bool | None], ...]:
    """``callbacks`` (None, one callback, or a sequence of them) as a tuple of functions."""
    if callbacks is None:
        return ()
    if hasattr(callbacks, "on_epoch_end") or callable(callbacks):
        callbacks = (callbacks,)
    if not isinstance(callbacks, Sequence) or isinstance(callbacks, str):
        raise TypeError(f"callbacks: expected None, a callback or a sequence of callbacks, got "
                        f"{type(callbacks).__name__}")
    out = []
    for i, cb in enumerate(callbacks):
        if hasattr(cb, "on_epoch_end"):
            out.append(cb.on_epoch_end)
        elif callable(cb):
            out.append(cb)
        else:
            raise TypeError(f"callbacks[{i}]: expected an object with on_epoch_end(epoch, logs, "
                            f"state) or a function of those arguments, got {type(cb).__name__}")
    return tuple(out)


class Monitor:
    """Early-stopping bookkeeping: best value, its epoch (0-based), epochs without improvement.

    Args:
      name: the monitored entry of the epoch's logs (e.g. ``"val_loss"``).
      mode: ``"min"``, ``"max"`` or ``"auto"`` (max for accuracy-like names).
      min_delta: smallest change that counts as an improvement.
      patience: stop after this many epochs in a row without improvement (None: never).
    """

    def __init__(self, name: str, mode: str = "auto", min_delta: float = 0.0,
                 patience: int | None = None):
        if mode == "auto":
            mode = "max" if any(s in name for s in ("acc", "auc", "f1")) else "min"
        if mode not in ("min", "max"):
            raise ValueError(f"mode: expected 'min', 'max' or 'auto', got {mode!r}")
        if patience is not None and (isinstance(patience, bool) or not isinstance(patience, int)
                                     or patience < 0):
            raise ValueError(f"patience: expected None or an int >= 0, got {patience!r}")
        if isinstance(min_delta, bool) or not isinstance(min_delta, numbers.Real) or \
                not math.isfinite(min_delta) or min_delta < 0:
            raise ValueError(f"min_delta: expected a finite number >= 0, got {min_delta!r}")
        self.name, self.mode, self.min_delta, self.patience = name, mode, float(min_delta), patience
        self.best, self.best_epoch, self.wait, self.stopped = None, None, 0, False

    def update(self, epoch: int, value: float | None) -> bool:
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

    def to_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait,
                "stopped": self.stopped}

    def load(self, d: dict) -> None:
        self.best, self.best_epoch = d["best"], d["best_epoch"]
        self.wait, self.stopped = d["wait"], d["stopped"]


__all__ = ["Callback", "Monitor", "as_callbacks"]
