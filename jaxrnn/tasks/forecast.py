r"""Multi-step forecasting of yearly sunspots and monthly El Nino sea temperatures.

The series (:mod:`jaxrnn.datasets.series`, shipped in statsmodels) are cut in time: the last
``--test-fraction`` of the steps are the test period, the ``--val-fraction`` before it validate
(early stopping), the rest train. The model reads a window of the last ``W`` values (standardised
with the training period's mean and deviation) and outputs the next ``H`` values at once (direct
multi-step forecasting): recurrent stack -> last output -> dense ``H``, trained by MSE.

Every test origin :math:`t` (the first forecast step; ``t`` from the start of the test period to
``N - H``) is forecast from ``y[t-W .. t-1]`` and scored against ``y[t .. t+H-1]``; the RMSE over
all origins and horizons is compared, in the series' own units, with the same windows'
forecasts by

* the untrained model (its initial parameters): a net that trains to no better has learnt
  nothing, however it compares with the rest;
* persistence: :math:`\hat y_{t+h} = y_{t-1}`;
* seasonal naive with period :math:`P` (11 years for sunspots, 12 months for El Nino):
  :math:`\hat y_{t+h} = y_{t+h-P}` (``H <= P``, so the value is always observed);
* an autoregression of the order of least AIC fitted before the test period
  (:mod:`jaxrnn.tasks.forecast_baselines`, statsmodels).

The printout says which of them the model beats and which it does not.

Short series: the validation period is widened to hold at least :data:`MIN_VAL_WINDOWS`
forecasts (early stopping on two windows keeps an epoch by chance) when training keeps
:data:`MIN_TRAIN_WINDOWS`; else there is no validation, and the model trains on every window
before the test period for ``--epochs``, keeping the epoch of least training loss. A series of
fewer than :data:`SMALL_DATA_WINDOWS` training windows is warned about. ``--scaling auto``
(the default for your own series) standardises each window by its own statistics only when the
training period's amplitude varies (:func:`choose_scaling`); a stationary series keeps its
level, which is what the forecast reverts to.

A PNG shows the test period's truth against the 1-step and ``H``-step forecasts and a few full
``H``-step trajectories.

Your own series: ``--csv FILE --column NAME`` (or ``--columns A,B,...``: every column is read
and forecast, the RMSE pools them), ``--time-column NAME`` for the plot's axis, ``--period P``
for the seasonal-naive baseline (default: detected from the training period's spectrum and
autocorrelation, :func:`jaxrnn.data.detect_period`; none found: that baseline is left out).
The file is read in chunks (:mod:`jaxrnn.data.csv_series`: memory linear in its rows, a
progress line for large files); a long series trains, validates and tests on at most
:data:`MAX_WINDOWS` evenly spaced windows each. The run writes one model directory
(``--model``, default ``OUT/model``: weights, architecture, scaler, metrics) and the test
forecasts (``OUT/predictions_test.csv``); ``jaxrnn predict --task forecast --model DIR --input
FILE --output FILE.csv`` forecasts every origin of a file with the same columns, including the
``H`` steps after its end; the ``origin`` column is the time of the first forecast step (the
``--time-column`` value, extrapolated by the last step for the row after the end; else the row
number).
"""

from __future__ import annotations

import os
import time
from typing import NamedTuple

import numpy as np

from jaxrnn.tasks.common import (
    add_patience,
    check_patience,
    clip_norm,
    fail,
    init_params,
    task_optimizer,
)

DESCRIPTION = ("sunspots (yearly) and El Nino (monthly) from statsmodels: multi-step forecasts, "
               "RMSE vs persistence and seasonal-naive baselines, PNG of forecast vs truth")
DEFAULTS = {"epochs": 300, "cell": "gru", "hidden": 32, "lr": 3e-3, "batch_size": 32}
PREDICTIONS_FILE = "predictions_test.csv"
SERIES = ("sunspots", "elnino")
# Window length W and horizon H per series (H = the seasonal period: one full cycle ahead).
# Both series' cycles change amplitude (sunspots' tallest come in the test period): each
# window is scaled by its own statistics.
SETTINGS = {"sunspots": {"window": 22, "horizon": 11, "scaling": "window"},
            "elnino": {"window": 36, "horizon": 12, "scaling": "window"}}
# Early stopping needs this many validation forecasts; training keeps at least this many.
MIN_VAL_WINDOWS = 10
MIN_TRAIN_WINDOWS = 20
# Fewer training windows than this: warn that a net has little to learn from.
SMALL_DATA_WINDOWS = 100
# At most this many windows per period (evenly spaced): memory stays bounded on long series.
MAX_WINDOWS = 100_000
# The forecast plot shows at most this many (the last) test origins.
PLOT_ORIGINS = 2_000
# Windows scaled or forecast at a time (float64 temporaries stay this size).
FORECAST_BLOCK = 16_384
# --scaling auto: per-window scaling when the training windows' deviations vary by this factor
# (90th over 10th percentile).
AMPLITUDE_RATIO = 1.75


def add_arguments(parser) -> None:
    g = parser.add_argument_group("forecast task")
    g.add_argument("--csv", metavar="FILE", help="your own series: a CSV file with a header "
                   "row (then --column or --columns)")
    g.add_argument("--column", metavar="NAME", help="--csv: the column to forecast")
    g.add_argument("--columns", metavar="A,B,...", help="--csv: several columns, forecast "
                   "together (multivariate)")
    g.add_argument("--time-column", metavar="NAME", help="--csv: time stamps for the plot "
                   "(numbers or dates; default the row number)")
    g.add_argument("--period", type=int, default=None, help="--csv: seasonal period in steps "
                   "for the seasonal-naive baseline (default: detected)")
    g.add_argument("--series", choices=(*SERIES, "both"), default="both",
                   help="which series (default both, one model each)")
    g.add_argument("--window", type=int, default=None,
                   help="input window W (default: 22 years / 36 months; --csv: two periods, "
                        "or 24 steps)")
    g.add_argument("--horizon", type=int, default=None,
                   help="forecast horizon H <= the seasonal period (default 11 / 12; --csv: "
                        "the period, or 1)")
    g.add_argument("--test-fraction", type=float, default=0.2,
                   help="last fraction of the series used as the test period (default 0.2)")
    g.add_argument("--val-fraction", type=float, default=0.1,
                   help="fraction before the test period used for validation (default 0.1)")
    g.add_argument("--scaling", choices=("auto", "window", "global"), default=None,
                   help="window: each input window is standardised by its own mean and "
                        "deviation, and the forecast scaled back (amplitude-invariant); "
                        "global: by the training period's only; auto: window when the "
                        "training period's amplitude varies, else global (default: window "
                        "for the built-in series, auto for --csv)")
    add_patience(g, 40)


# --------------------------------------------------------------------------- data

def make_windows(values: np.ndarray, window: int, horizon: int, origins) -> tuple:
    """Inputs ``(n, window, 1)`` = ``values[t-window : t]`` and targets ``(n, horizon)`` =
    ``values[t : t+horizon]`` for each origin ``t``.

    Raises:
      ValueError: an origin without ``window`` values before it or ``horizon`` after it.
    """
    values = np.asarray(values, np.float32)
    origins = np.asarray(origins, np.int64)
    if origins.size and (origins.min() < window or origins.max() + horizon > len(values)):
        raise ValueError(
            f"origins: need {window} <= t <= {len(values) - horizon} for window {window} and "
            f"horizon {horizon} on {len(values)} values, got [{origins.min()}, {origins.max()}]"
        )
    idx_in = origins[:, None] + np.arange(-window, 0)[None, :]
    idx_out = origins[:, None] + np.arange(horizon)[None, :]
    return values[idx_in][..., None], values[idx_out]


def split_points(n: int, test_fraction: float, val_fraction: float) -> tuple[int, int]:
    """``(val_start, test_start)``: the first steps of the validation and test periods."""
    for name, v in (("test_fraction", test_fraction), ("val_fraction", val_fraction)):
        if not 0.0 < v < 1.0:
            raise ValueError(f"{name}: expected a float in (0, 1), got {v!r}")
    if test_fraction + val_fraction >= 0.8:
        raise ValueError(f"test_fraction + val_fraction: expected < 0.8, got "
                         f"{test_fraction + val_fraction}")
    test_start = n - int(round(test_fraction * n))
    val_start = test_start - int(round(val_fraction * n))
    return val_start, test_start


def persistence_forecast(values: np.ndarray, origins, horizon: int) -> np.ndarray:
    """``(n, horizon)``: the last observed value ``y[t-1]`` repeated."""
    values = np.asarray(values)
    return np.repeat(values[np.asarray(origins) - 1][:, None], horizon, axis=1)


def seasonal_naive_forecast(values: np.ndarray, origins, horizon: int, period: int
                            ) -> np.ndarray:
    """``(n, horizon)``: ``y[t+h-period]``, the value one period before each target."""
    if horizon > period:
        raise ValueError(f"horizon: expected <= period {period}, got {horizon}")
    values = np.asarray(values)
    idx = np.asarray(origins)[:, None] + np.arange(horizon)[None, :] - period
    if idx.min() < 0:
        raise ValueError(f"origins: need t >= {period} for the seasonal-naive baseline")
    return values[idx]


def rmse(pred, truth) -> float:
    return float(np.sqrt(np.mean((np.asarray(pred, np.float64) - truth) ** 2)))


def window_scale(x: np.ndarray, floor: float = 0.1):
    """Standardise each window ``(n, W, 1)`` by its own mean ``m`` and deviation ``s`` (at
    least ``floor``): returns ``((x - m) / s, m, s)`` with ``m, s`` of shape ``(n, 1)``. The
    targets of a window are scaled by the same ``m, s`` and forecasts mapped back by
    ``y = m + s * y'``, so a cycle twice as tall as any in training looks the same to the net
    (the idea of reversible instance normalisation, Kim et al. 2022)."""
    from jaxrnn.data.windows import standardise_windows

    xs, m, s = standardise_windows(x, floor)
    return xs, m[:, 0], s[:, 0]


# --------------------------------------------------------------------------- model

def architecture(config):
    """The built-in series' model (registered: :func:`jaxrnn.models.architecture` rebuilds it
    from its model directory ``OUT/NAME_model``)."""
    from jaxrnn.train.models import sequence_classifier

    return sequence_classifier(
        1, config["horizon"], cell=config["cell"], hidden=config["hidden"],
        layers=config["layers"], bidirectional_=config["bidirectional"],
        dropout_rate=config["dropout"],
    )


def build_model(config):
    """A model of your own series: recurrent stack -> last output -> ``H * F`` values."""
    from jaxrnn.tasks.modeldir import recurrent_model

    return recurrent_model(cell=config["cell"], hidden=config["hidden"],
                           layers=config["layers"], bidirectional=config["bidirectional"],
                           dropout=config["dropout"],
                           outputs=int(config["horizon"]) * int(config["features"]))


def _settings(name: str, args) -> tuple[int, int]:
    window = args.window or SETTINGS[name]["window"]
    horizon = args.horizon or SETTINGS[name]["horizon"]
    if window < 1 or horizon < 1:
        raise ValueError(f"--window/--horizon: expected positive integers, got {window}, "
                         f"{horizon}")
    return window, horizon


def choose_scaling(train_values, window: int) -> tuple[str, float]:
    """``("window" or "global", ratio)`` for ``--scaling auto``: ``ratio`` is the 90th over
    the 10th percentile of the deviations of the training period's windows (the largest over
    columns, on at most the last :data:`MAX_WINDOWS` steps); per-window scaling when it is at
    least :data:`AMPLITUDE_RATIO` (the amplitude changes: the net should see every cycle
    alike), global when the amplitude stays (the level the series reverts to is information).
    """
    from jaxrnn.data import as_series

    a = as_series(train_values, "train_values")[-MAX_WINDOWS:]
    if len(a) < window + 2:
        return "window", float("nan")
    # Rolling mean and mean square by cumulative sums: O(n) for any window.
    c1 = np.cumsum(np.vstack([np.zeros((1, a.shape[1])), a - a.mean(0)]), axis=0)
    c2 = np.cumsum(np.vstack([np.zeros((1, a.shape[1])), (a - a.mean(0)) ** 2]), axis=0)
    mean = (c1[window:] - c1[:-window]) / window
    var = np.maximum((c2[window:] - c2[:-window]) / window - mean ** 2, 0.0)
    lo, hi = np.percentile(np.sqrt(var), [10, 90], axis=0)
    ratio = float(np.max(hi / np.maximum(lo, 1e-12 * np.maximum(hi, 1e-300))))
    return ("window" if ratio >= AMPLITUDE_RATIO else "global"), ratio


def spaced(origins, limit: int = MAX_WINDOWS) -> np.ndarray:
    """At most ``limit`` of ``origins``, evenly spaced, the first and last kept."""
    origins = np.asarray(origins, np.int64)
    if len(origins) <= limit:
        return origins
    return origins[np.unique(np.linspace(0, len(origins) - 1, limit).round().astype(np.int64))]


def prepare(series, window: int, horizon: int, test_fraction: float, val_fraction: float,
            scaling: str = "window", *, min_val_windows: int = MIN_VAL_WINDOWS,
            max_windows: int = MAX_WINDOWS):
    """Scaled train/val windows (:class:`~jaxrnn.data.WindowScaler` fitted on the training
    period: global, then per window with ``scaling="window"``), targets flattened to
    ``(n, horizon * F)``, the raw test origins and the scaler. ``series.values`` is ``(N,)``
    or ``(N, F)``; ``series.period`` may be None (no seasonal-naive baseline).

    Fewer than ``min_val_windows`` validation forecasts: the validation period is widened to
    hold that many, taken from training, when training keeps :data:`MIN_TRAIN_WINDOWS`; else
    ``"val"`` is None and training reads every window before the test period (``"val_note"``
    says which). Each period holds at most ``max_windows`` evenly spaced windows."""
    from jaxrnn.data import WindowScaler, sliding_windows

    if scaling not in ("window", "global"):
        raise ValueError(f"scaling: expected 'window' or 'global', got {scaling!r}")
    y = np.asarray(series.values, np.float64)
    period = series.period
    if period is not None and horizon > period:
        raise ValueError(f"--horizon: expected <= the seasonal period {period} of "
                         f"{series.name}, got {horizon}")
    val_start, test_start = split_points(len(y), test_fraction, val_fraction)
    first = max(window, period or 0)
    n_val = test_start - horizon + 1 - val_start
    val_note = None
    if n_val < min_val_windows:
        widened = test_start - horizon + 1 - min_val_windows
        if widened - horizon + 1 - first >= MIN_TRAIN_WINDOWS:
            val_note = (f"validation widened to the {test_start - widened} steps before the "
                        f"test period ({min_val_windows} forecasts; --val-fraction "
                        f"{val_fraction} gave {max(n_val, 0)})")
            val_start = widened
        else:
            val_note = (f"no validation: {max(n_val, 0)} validation forecasts are too few "
                        f"to stop early on; training reads every window before the test "
                        f"period for --epochs and keeps the epoch of least training loss")
            val_start = test_start
    if val_start - horizon <= window:
        raise ValueError(f"--window: {window} is too long for the {val_start} training steps")
    scaler = WindowScaler.fit(y[:val_start], mode=scaling)
    # Train targets end inside the training period; validation targets inside validation.
    train_origins = np.arange(first, val_start - horizon + 1)
    val_origins = np.arange(val_start, test_start - horizon + 1)
    test_origins = np.arange(test_start, len(y) - horizon + 1)
    no_val = val_start == test_start
    if len(train_origins) < 1 or (len(val_origins) < 1 and not no_val) or \
            len(test_origins) < 1:
        raise ValueError(
            f"--window/--horizon: {len(y)} steps leave {len(train_origins)} training, "
            f"{len(val_origins)} validation and {len(test_origins)} test forecasts with window "
            f"{window} and horizon {horizon} (expected at least one of each; use a shorter "
            f"window, a smaller --val-fraction/--test-fraction, or a longer series)")
    split = {"val": None}
    for name, origins in (("train", train_origins), ("val", val_origins)):
        if name == "val" and no_val:
            continue
        origins = spaced(origins, max_windows)
        features = scaler.num_features
        xs = np.empty((len(origins), window, features), np.float32)
        ts = np.empty((len(origins), horizon * features), np.float32)
        # Block by block: the float64 temporaries of scaling stay a block's size.
        for i in range(0, len(origins), FORECAST_BLOCK):
            block = origins[i:i + FORECAST_BLOCK]
            x, t = sliding_windows(y, window, horizon, block)
            bx, bt, _ = scaler.transform(x, t)
            xs[i:i + len(block)], ts[i:i + len(block)] = bx, bt.reshape(len(block), -1)
        split[name] = {"inputs": xs, "targets": ts}
    return {
        **split,
        "test_origins": spaced(test_origins, max_windows), "scaler": scaler,
        "mean": float(scaler.mean[0]) if scaler.num_features == 1 else scaler.mean.tolist(),
        "std": float(scaler.std[0]) if scaler.num_features == 1 else scaler.std.tolist(),
        "val_start": val_start, "test_start": test_start, "scaling": scaling,
        "val_note": val_note, "n_train_windows": len(train_origins),
    }


def forecast(model, params, values, origins, window, horizon, scaler) -> np.ndarray:
    """Forecasts ``(n, horizon)`` (univariate) or ``(n, horizon, F)`` in the series' units
    from each origin ``t`` (``window <= t <= len(values)``: ``t = len(values)`` forecasts the
    steps after the end)."""
    from jaxrnn.data import as_series
    from jaxrnn.train import predict

    a = as_series(values)
    origins = np.asarray(origins, np.int64)
    if origins.size and (origins.min() < window or origins.max() > len(a)):
        raise ValueError(f"origins: expected {window} <= t <= {len(a)}, got "
                         f"[{origins.min()}, {origins.max()}]")
    pred = np.empty((len(origins), horizon, a.shape[1]))
    for i in range(0, len(origins), FORECAST_BLOCK):
        block = origins[i:i + FORECAST_BLOCK]
        x = a[block[:, None] + np.arange(-window, 0)[None, :]]
        xs, _, stats = scaler.transform(x)
        out = np.asarray(predict(model.apply, params, xs), np.float64)
        pred[i:i + len(block)] = scaler.inverse(out.reshape(len(out), horizon, a.shape[1]),
                                                stats)
    return pred[..., 0] if np.ndim(values) == 1 else pred


def plot_forecasts(series, origins, pred, horizon, path, scores):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    y = np.asarray(series.values)
    if y.ndim == 2:  # several columns: plot the first
        y, pred = y[:, 0], pred[..., 0]
    period = series.period or horizon
    # A long test period: the last PLOT_ORIGINS origins (a readable plot, bounded memory).
    origins, pred = np.asarray(origins)[-PLOT_ORIGINS:], np.asarray(pred)[-PLOT_ORIGINS:]
    start = max(0, origins[0] - 3 * period)
    t = np.arange(start, len(y)) if series.times is None else series.times[start:]
    y, origins = y[start:], origins - start
    seasonal = scores.get("seasonal_naive")
    seasonal = "n/a" if seasonal is None else f"{seasonal:.2f}"
    fig = Figure(figsize=(11, 6.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(2, 1, 1)
    ax.plot(t, y, "k-", lw=1.2, label="truth")
    ax.plot(t[origins], pred[:, 0], "-", label="1 step ahead")
    ax.plot(t[origins + horizon - 1], pred[:, -1], "-", label=f"{horizon} steps ahead")
    ax.axvline(t[origins[0]], color="grey", ls=":")
    others = "".join(f", {label} {scores[key]:.2f}" for key, label in
                     (("ar", "AR"), ("untrained", "untrained")) if scores.get(key) is not None)
    ax.set_title(f"{series.name}: test RMSE model {scores['model']:.2f}, persistence "
                 f"{scores['persistence']:.2f}, seasonal naive {seasonal}{others}")
    ax.set_ylabel(series.unit)
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    ax = fig.add_subplot(2, 1, 2)
    ax.plot(t, y, "k-", lw=1.2, label="truth")
    picks = np.linspace(0, len(origins) - 1, 5).round().astype(int)
    for i, k in enumerate(picks):
        o = origins[k]
        ax.plot(t[o:o + horizon], pred[k], "o-", ms=3,
                label=f"{horizon}-step forecasts from 5 origins" if i == 0 else None)
    ax.set_xlabel(getattr(series, "time_label", None) or "year")
    ax.set_ylabel(series.unit)
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


# --------------------------------------------------------------------------- commands

def _series_directory(args, name: str, names) -> str:
    """A built-in series' model directory: ``--model`` for one series, else ``OUT/NAME_model``
    (one directory per series)."""
    if getattr(args, "model", None) and len(names) == 1:
        return args.model
    return os.path.join(args.out, f"{name}_model")


def _config(args, name, window, horizon, features: int = 1) -> dict:
    return {"series": name, "cell": args.cell, "hidden": args.hidden, "layers": args.layers,
            "bidirectional": bool(args.bidirectional), "dropout": args.dropout,
            "window": window, "horizon": horizon, "test_fraction": args.test_fraction,
            "val_fraction": args.val_fraction, "scaling": args.scaling, "features": features}


def _score(series, origins, preds: dict, horizon) -> dict:
    """RMSE of each forecast in ``preds`` (``{"model": ..., "untrained": ..., ...}``) and of
    persistence and seasonal naive, on the windows of ``origins``; the model's by horizon."""
    values = np.asarray(series.values)
    truth = values[origins[:, None] + np.arange(horizon)[None, :]]
    scores = {name: rmse(p, truth) for name, p in preds.items() if p is not None}
    scores["persistence"] = rmse(persistence_forecast(values, origins, horizon), truth)
    scores["seasonal_naive"] = None if series.period is None else \
        rmse(seasonal_naive_forecast(values, origins, horizon, series.period), truth)
    err = (preds["model"] - truth) ** 2
    scores["model_by_h"] = np.sqrt(err.reshape(len(err), horizon, -1).mean(axis=(0, 2))
                                   ).tolist()
    return scores


def statistical_baseline(series, fit_end: int, origins, horizon: int):
    """``(forecasts, label)`` of the AR-by-AIC baseline fitted on ``values[:fit_end]``."""
    from jaxrnn.tasks.forecast_baselines import autoregression_baseline

    pred, orders = autoregression_baseline(series.values, fit_end, origins, horizon,
                                           series.period)
    label = f"AR({orders[0]})" if len(set(orders)) == 1 else \
        "AR(" + ",".join(map(str, orders)) + ")"
    return pred, label


def horizon_summary(by_h) -> str:
    """``h=1 x, h=mid y, h=H z``, each horizon once."""
    horizon = len(by_h)
    steps = sorted({1, max(1, horizon // 2), horizon})
    return ", ".join(f"h={h} {by_h[h - 1]:.3f}" for h in steps)


# The trained model must do at least this much better than its untrained self to count as
# having learnt something.
LEARNT = 0.95


def verdict(scores, ar_label: str | None = None) -> str:
    """What the scores say, plainly: which baselines the model beats and which it does not."""
    model = scores["model"]
    untrained = scores.get("untrained")
    names = [("persistence", "persistence"), ("seasonal_naive", "seasonal naive"),
             ("ar", ar_label or "the AR baseline")]
    if untrained is not None and not model < LEARNT * untrained:
        also = [label for key, label in names
                if scores.get(key) is not None and untrained < scores[key]]
        tail = (f"; the untrained model already beats {', '.join(also)}" if also else "")
        return (f"the model did NOT learn: its RMSE {model:.3f} is {model / untrained:.2f}x "
                f"the untrained model's {untrained:.3f}{tail}")
    beats, loses = [], []
    for key, label in names + [("untrained", "the untrained model")]:
        v = scores.get(key)
        if v is None:
            continue
        (beats if model < v else loses).append(f"{label} ({model / v:.2f}x its RMSE)")
    parts = []
    if beats:
        parts.append("the model beats " + ", ".join(beats))
    if loses:
        parts.append("the model does NOT beat " + ", ".join(loses))
    return "; ".join(parts)


def _report(series, scores, horizon, n, ar_label=None):
    steps = {"sunspots": "years", "elnino": "months"}.get(series.name, "steps")
    seasonal = scores["seasonal_naive"]
    seasonal_text = ("seasonal naive: no period found" if seasonal is None else
                     f"seasonal naive (period {series.period}) {seasonal:.3f}")
    extra = ""
    if scores.get("ar") is not None:
        extra += f" | {ar_label} {scores['ar']:.3f}"
    if scores.get("untrained") is not None:
        extra += f" | untrained model {scores['untrained']:.3f}"
    print(f"{series.name}: test RMSE over {n} origins x {horizon} {steps} ahead: "
          f"model {scores['model']:.3f} | persistence {scores['persistence']:.3f} | "
          f"{seasonal_text}{extra} [{series.unit}]; model by horizon: "
          f"{horizon_summary(scores['model_by_h'])}")
    print(f"{series.name}: {verdict(scores, ar_label)}")


def _fit(args, model, prep, params, checkpoint_dir, plot_path):
    from jaxrnn.train import fit

    return fit(
        model.apply, params, "mse", task_optimizer(args),
        prep["train"], val_data=prep["val"], epochs=args.epochs,
        batch_size=min(args.batch_size, len(prep["train"]["targets"])), seed=args.seed,
        patience=args.patience, checkpoint_dir=checkpoint_dir, resume=args.resume,
        progress=args.progress, verbose=False, plot_path=plot_path,
        data_parallel=getattr(args, "data_parallel", None),
    )


def _notes(name, prep, n_steps):
    """The warnings a short series earns (printed before training)."""
    if prep["n_train_windows"] < SMALL_DATA_WINDOWS:
        print(f"{name}: warning: only {prep['n_train_windows']} training windows in "
              f"{n_steps} steps; a recurrent net has little to learn from, so read its score "
              f"beside the untrained model's and the baselines'")
    if prep["val_note"]:
        print(f"{name}: {prep['val_note']}")
    elif len(prep["train"]["targets"]) < prep["n_train_windows"]:
        print(f"{name}: training on {len(prep['train']['targets']):,} evenly spaced of "
              f"{prep['n_train_windows']:,} windows")


def _train_and_score(args, series, model, prep, window, horizon, checkpoint_dir, plot_path):
    """Train, then score the model, its untrained self and the baselines on the test windows;
    returns ``(fit result, forecasts, scores, AR label)``."""
    params0 = init_params(model, args.seed, prep["train"]["inputs"])
    result = _fit(args, model, prep, params0, checkpoint_dir, plot_path)
    origins = prep["test_origins"]
    pred = forecast(model, result.params, series.values, origins, window, horizon,
                    prep["scaler"])
    untrained = forecast(model, params0, series.values, origins, window, horizon,
                         prep["scaler"])
    ar, ar_label = statistical_baseline(series, prep["test_start"], origins, horizon)
    scores = _score(series, origins, {"model": pred, "untrained": untrained, "ar": ar},
                    horizon)
    return result, pred, scores, ar_label


def train(args) -> dict:
    clip_norm(args)  # validated before any data is read
    check_patience(args)
    if args.csv is not None:
        return train_csv(args)
    for option in ("column", "columns", "time_column", "period"):
        if getattr(args, option) is not None:
            fail("--" + option.replace("_", "-"), "only applies to your own series: add "
                 "--csv FILE")
    if args.scaling == "auto":
        fail("--scaling", "auto applies to your own series (--csv); the built-in series "
             "take window or global")
    from jaxrnn.datasets.series import load_series
    from jaxrnn.tasks import modeldir

    t0 = time.perf_counter()
    names = SERIES if args.series == "both" else (args.series,)
    out = {}
    for name in names:
        series = load_series(name)
        window, horizon = _settings(name, args)
        scaling = args.scaling or SETTINGS[name]["scaling"]
        prep = prepare(series, window, horizon, args.test_fraction, args.val_fraction,
                       scaling)
        config = _config(args, name, window, horizon)
        config["scaling"] = scaling
        model = architecture(config)
        n_val = 0 if prep["val"] is None else len(prep["val"]["targets"])
        print(f"{name}: {len(series.values)} values; train {len(prep['train']['targets'])} / "
              f"val {n_val} windows, test from "
              f"{series.times[prep['test_start']]:.0f}; window {window}, horizon {horizon}, "
              f"{scaling} scaling; {args.cell} hidden {args.hidden}")
        _notes(name, prep, len(series.values))
        result, pred, scores, ar_label = _train_and_score(
            args, series, model, prep, window, horizon, os.path.join(args.checkpoint_dir, name),
            os.path.join(args.out, f"{name}_curves.png"))
        _report(series, scores, horizon, len(prep["test_origins"]), ar_label)
        plot = plot_forecasts(series, prep["test_origins"], pred, horizon,
                              os.path.join(args.out, f"{name}_forecast.png"), scores)
        config.update(mean=prep["mean"], std=prep["std"])
        scores["ar_label"] = ar_label
        path = modeldir.save_task(args, task="forecast", config=config, params=result.params,
                                  metrics=scores, directory=_series_directory(args, name, names))
        print(f"{name}: forecast plot {plot}; learning curves {result.plot_path}; "
              f"best epoch {None if result.best_epoch is None else result.best_epoch + 1}")
        out[name] = {**scores, "plot": plot, "model": path}
    print(f"total {time.perf_counter() - t0:.0f} s")
    return out


# --------------------------------------------------------------------------- your own series

def read_series(path, columns, time_column, option="--csv", time_option="--time-column"):
    """``(values (N, F) float64, times (N,) or None, time format or None)`` of the named
    columns of a CSV, read in chunks (:func:`jaxrnn.data.csv_series.read_numeric_columns`);
    every failure names ``option`` (or ``time_option``) and what was expected."""
    from jaxrnn.data.csv_series import read_numeric_columns

    got = read_numeric_columns(path, columns, option=option, time_column=time_column,
                               time_option=time_option)
    return got.values, got.times, got.time_format


def origin_labels(origins, times, time_format, n: int) -> list:
    """The ``origin`` column: the time of each origin's first forecast step (``times[t]``;
    ``t = n``, past the end, extrapolated by the last step), or ``t`` without times."""
    origins = np.asarray(origins, np.int64)
    if times is None:
        return [int(o) for o in origins]
    after = times[-1] + (times[-1] - times[-2]) if n >= 2 else times[-1]
    if np.issubdtype(times.dtype, np.datetime64):
        import pandas as pd

        # Calendar steps (months, years) are not fixed durations: the stamps' own frequency.
        freq = pd.infer_freq(pd.DatetimeIndex(times[-8:])) if n >= 3 else None
        if freq is not None:
            after = (pd.Timestamp(times[-1]) + pd.tseries.frequencies.to_offset(freq)
                     ).to_datetime64()
        stamps = pd.DatetimeIndex([times[o] if o < n else after for o in origins])
        return (list(stamps.strftime(time_format)) if time_format else
                [s.isoformat() for s in stamps])
    picked = np.where(origins < n, times[np.minimum(origins, n - 1)], after)
    if np.all(picked == np.round(picked)) and np.all(np.abs(picked) < 2 ** 53):
        return [int(v) for v in picked]
    return [float(v) for v in picked]


def _columns(args) -> list[str]:
    from jaxrnn.tasks.common import column_names

    if args.column is not None and args.columns is not None:
        fail("--columns", "give --column NAME or --columns A,B,..., not both")
    if args.column is None and args.columns is None:
        fail("--column", "expected the name of the column of --csv to forecast (or --columns "
             "A,B,... for several)")
    return [args.column] if args.column is not None else column_names(args.columns,
                                                                      "--columns")


def _csv_settings(args, n: int, period):
    """``(window, horizon)``: two periods (or 24 steps) and one period (or 1 step) by default,
    the window shortened to a quarter of the training steps on a short series (at least one
    period) so that windows remain to learn from."""
    val_start, _ = split_points(n, args.test_fraction, args.val_fraction)
    if period is not None:
        horizon = args.horizon or period
        window = args.window or min(2 * period, max(period, val_start // 4))
    else:
        horizon = args.horizon or 1
        window = args.window or min(24, max(2, val_start // 4))
    for option, v in (("--window", window), ("--horizon", horizon)):
        if v < 1:
            fail(option, f"expected a positive integer, got {v}")
    return window, horizon


class UserSeries(NamedTuple):
    """A series read from the user's CSV (the fields the plots and scores read)."""

    name: str
    values: np.ndarray  # (N,) one column, or (N, F)
    times: np.ndarray | None  # None: the row numbers
    period: int | None
    unit: str
    time_label: str


def train_csv(args) -> dict:
    from jaxrnn.data import detect_period
    from jaxrnn.tasks import modeldir
    from jaxrnn.tasks.common import write_csv

    columns = _columns(args)
    if args.period is not None and args.period < 1:
        fail("--period", f"expected a positive integer, got {args.period}")
    t0 = time.perf_counter()
    values, times, time_format = read_series(args.csv, columns, args.time_column)
    n = len(values)
    if n < 20:
        fail("--csv", f"{args.csv!r} has {n} rows; a forecast needs at least 20 (a window, a "
                      f"horizon, and training, validation and test periods)")
    val_start, _ = split_points(n, args.test_fraction, args.val_fraction)
    period = args.period
    detected = period is None
    if detected:
        period = detect_period(values[:val_start, 0], max_period=val_start // 3)
    window, horizon = _csv_settings(args, n, period)
    if period is not None and horizon > period:
        if detected:
            period = None  # the detected season is shorter than the horizon: no such baseline
        else:
            fail("--horizon", f"expected <= --period {period}, got {horizon}")
    scaling, ratio = args.scaling or "auto", None
    if scaling == "auto":
        scaling, ratio = choose_scaling(values[:val_start], window)
    name = ",".join(columns)
    series = UserSeries(name, values[:, 0] if len(columns) == 1 else values, times, period,
                        name, args.time_column or "row")
    prep = prepare(series, window, horizon, args.test_fraction, args.val_fraction, scaling)
    config = _config(args, name, window, horizon, features=len(columns))
    config["scaling"] = scaling
    model = build_model(config)
    season = (f"period {period} ({'detected' if detected else 'given'})" if period
              else "no seasonal period found (no significant peak in the spectrum and "
                   "autocorrelation)")
    how = scaling if ratio is None else (
        f"{scaling} (auto: window deviations vary {ratio:.2f}x)")
    n_val = 0 if prep["val"] is None else len(prep["val"]["targets"])
    print(f"forecast: {n} steps of {name} from {args.csv}; {season}; train "
          f"{len(prep['train']['targets'])} / val {n_val} windows, "
          f"{len(prep['test_origins'])} test origins; window {window}, horizon {horizon}, "
          f"{how} scaling; {args.cell} hidden {args.hidden}")
    _notes("forecast", prep, n)
    result, pred, scores, ar_label = _train_and_score(
        args, series, model, prep, window, horizon, args.checkpoint_dir,
        os.path.join(args.out, "forecast_curves.png"))
    origins = prep["test_origins"]
    _report(series, scores, horizon, len(origins), ar_label)
    plot = plot_forecasts(series, origins, pred, horizon,
                          os.path.join(args.out, "forecast.png"), scores)
    header, rows = prediction_rows(origin_labels(origins, times, time_format, n), pred,
                                   columns, horizon)
    pred_path = write_csv(os.path.join(args.out, PREDICTIONS_FILE), header, rows)
    prep_saved = {"columns": columns, "window": window, "horizon": horizon, "period": period,
                  "scaler": prep["scaler"].to_dict(), "time_column": args.time_column,
                  "test_fraction": args.test_fraction, "val_fraction": args.val_fraction}
    metrics = {"test_rmse": scores["model"], "persistence_rmse": scores["persistence"],
               "seasonal_naive_rmse": scores["seasonal_naive"],
               "untrained_rmse": scores["untrained"], "ar_rmse": scores["ar"],
               "ar_baseline": ar_label,
               "rmse_by_horizon": scores["model_by_h"], "n_test_origins": int(len(origins))}
    model_dir = modeldir.save(args.model, task="forecast", model=model, params=result.params,
                              preprocessing=prep_saved, metrics=metrics)
    print(f"test forecasts: {pred_path}")
    print(f"forecast plot: {plot}; learning curves {result.plot_path}")
    print(f"model: {model_dir}; {time.perf_counter() - t0:.0f} s")
    return {**scores, "plot": plot, "model": model_dir, "predictions": pred_path}


def prediction_rows(origins, pred, columns, horizon) -> tuple[list[str], list]:
    """CSV header ``origin, <col>_h1 .. <col>_hH ...`` and one row per origin (the time, or
    the row index, of the first forecast step: :func:`origin_labels`)."""
    pred = np.asarray(pred).reshape(len(origins), horizon, len(columns))
    header = ["origin"] + [f"{c}_h{h + 1}" for c in columns for h in range(horizon)]
    rows = [[o, *pred[i].T.reshape(-1).tolist()] for i, o in enumerate(origins)]
    return header, rows


def predict(args) -> dict:
    """Forecasts from every origin of ``--input`` (the ``H`` steps after each window,
    including those after the file's end)."""
    from jaxrnn.data import WindowScaler
    from jaxrnn.tasks import modeldir
    from jaxrnn.tasks.common import write_csv

    saved = modeldir.require_own_data(modeldir.load(args.model, task="forecast"))
    prep = saved.preprocessing
    time_column = prep.get("time_column")
    values, times, time_format = read_series(args.input, prep["columns"], time_column,
                                             option="--input", time_option="--input")
    window, horizon = prep["window"], prep["horizon"]
    if len(values) < window:
        fail("--input", f"{args.input!r} has {len(values)} rows; the model reads windows of "
                        f"{window}")
    origins = np.arange(window, len(values) + 1)
    pred = forecast(saved.model, saved.params, values, origins, window, horizon,
                    WindowScaler.from_dict(prep["scaler"]))
    header, rows = prediction_rows(origin_labels(origins, times, time_format, len(values)),
                                   pred, prep["columns"], horizon)
    path = write_csv(args.output, header, rows)
    print(f"predictions: {len(rows)} origins x {horizon} steps -> {path} (the last row "
          f"forecasts the {horizon} step(s) after the end of {args.input}; origin: "
          f"{'the ' + repr(time_column) + ' of' if time_column else 'the row of'} the first "
          f"forecast step)")
    return {"predictions": path, "n": len(rows)}


def evaluate(args) -> dict:
    if args.csv is not None:
        return evaluate_csv(args)
    from jaxrnn.data import WindowScaler
    from jaxrnn.datasets.series import load_series
    from jaxrnn.tasks import modeldir

    names = SERIES if args.series == "both" else (args.series,)
    out = {}
    for name in names:
        saved = modeldir.load_task(args, task="forecast",
                                   directory=_series_directory(args, name, names))
        config, model, params = modeldir.config_of(saved), saved.model, saved.params
        series = load_series(name)
        prep = prepare(series, config["window"], config["horizon"], config["test_fraction"],
                       config["val_fraction"], config["scaling"])
        scaler = WindowScaler([config["mean"]], [config["std"]], mode=config["scaling"])
        origins = prep["test_origins"]
        pred = forecast(model, params, series.values, origins, config["window"],
                        config["horizon"], scaler)
        ar, ar_label = statistical_baseline(series, prep["test_start"], origins,
                                            config["horizon"])
        scores = _score(series, origins, {"model": pred, "ar": ar}, config["horizon"])
        _report(series, scores, config["horizon"], len(origins), ar_label)
        out[name] = scores
    return out


def evaluate_csv(args) -> dict:
    """The saved model's test RMSE on the test period of ``--csv`` (cut as in training)."""
    from jaxrnn.data import WindowScaler
    from jaxrnn.tasks import modeldir

    saved = modeldir.require_own_data(modeldir.load(args.model, task="forecast"))
    prep = saved.preprocessing
    values, times, _ = read_series(args.csv, prep["columns"], None)
    columns = prep["columns"]
    series = UserSeries(",".join(columns), values[:, 0] if len(columns) == 1 else values,
                        times, prep["period"], ",".join(columns), "row")
    _, test_start = split_points(len(values), prep["test_fraction"], prep["val_fraction"])
    origins = spaced(np.arange(max(test_start, prep["window"]),
                               len(values) - prep["horizon"] + 1))
    if len(origins) < 1:
        fail("--csv", f"{args.csv!r} is too short for one test forecast")
    pred = forecast(saved.model, saved.params, series.values, origins, prep["window"],
                    prep["horizon"], WindowScaler.from_dict(prep["scaler"]))
    ar, ar_label = statistical_baseline(series, test_start, origins, prep["horizon"])
    scores = _score(series, origins, {"model": pred, "ar": ar}, prep["horizon"])
    _report(series, scores, prep["horizon"], len(origins), ar_label)
    return scores
