r"""Multi-step forecasting of yearly sunspots and monthly El Nino sea temperatures.

The series (:mod:`jaxrnn.datasets.series`, shipped in statsmodels) are cut in time: the last
``--test-fraction`` of the steps are the test period, the ``--val-fraction`` before it validate
(early stopping), the rest train. The model reads a window of the last ``W`` values (standardised
with the training period's mean and deviation) and outputs the next ``H`` values at once (direct
multi-step forecasting): recurrent stack -> last output -> dense ``H``, trained by MSE.

Every test origin :math:`t` (the first forecast step; ``t`` from the start of the test period to
``N - H``) is forecast from ``y[t-W .. t-1]`` and scored against ``y[t .. t+H-1]``; the RMSE over
all origins and horizons is compared, in the series' own units, with two baselines:

* persistence: :math:`\hat y_{t+h} = y_{t-1}`;
* seasonal naive with period :math:`P` (11 years for sunspots, 12 months for El Nino):
  :math:`\hat y_{t+h} = y_{t+h-P}` (``H <= P``, so the value is always observed).

A PNG shows the test period's truth against the 1-step and ``H``-step forecasts and a few full
``H``-step trajectories.
"""

from __future__ import annotations

import os
import time

import jax
import numpy as np

from jaxrnn.tasks.common import clip_norm

DESCRIPTION = ("sunspots (yearly) and El Nino (monthly) from statsmodels: multi-step forecasts, "
               "RMSE vs persistence and seasonal-naive baselines, PNG of forecast vs truth")
DEFAULTS = {"epochs": 300, "cell": "gru", "hidden": 32, "lr": 3e-3, "batch_size": 32}
SERIES = ("sunspots", "elnino")
# Window length W and horizon H per series (H = the seasonal period: one full cycle ahead).
SETTINGS = {"sunspots": {"window": 22, "horizon": 11}, "elnino": {"window": 36, "horizon": 12}}


def add_arguments(parser) -> None:
    g = parser.add_argument_group("forecast task")
    g.add_argument("--series", choices=(*SERIES, "both"), default="both",
                   help="which series (default both, one model each)")
    g.add_argument("--window", type=int, default=None,
                   help="input window W (default: 22 years / 36 months)")
    g.add_argument("--horizon", type=int, default=None,
                   help="forecast horizon H <= the seasonal period (default 11 / 12)")
    g.add_argument("--test-fraction", type=float, default=0.2,
                   help="last fraction of the series used as the test period (default 0.2)")
    g.add_argument("--val-fraction", type=float, default=0.1,
                   help="fraction before the test period used for validation (default 0.1)")
    g.add_argument("--scaling", choices=("window", "global"), default="window",
                   help="window: each input window is standardised by its own mean and "
                        "deviation, and the forecast scaled back (amplitude-invariant); "
                        "global: by the training period's only (default window)")
    g.add_argument("--patience", type=int, default=40,
                   help="early stopping: epochs without validation improvement (default 40)")


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
    m = x.mean(axis=1)
    s = np.maximum(x.std(axis=1), floor)
    return (x - m[:, None, :]) / s[:, None, :], m, s


# --------------------------------------------------------------------------- model

def _model(config):
    from jaxrnn.train.models import sequence_classifier

    return sequence_classifier(
        1, config["horizon"], cell=config["cell"], hidden=config["hidden"],
        layers=config["layers"], bidirectional_=config["bidirectional"],
        dropout_rate=config["dropout"],
    )


def _settings(name: str, args) -> tuple[int, int]:
    window = args.window or SETTINGS[name]["window"]
    horizon = args.horizon or SETTINGS[name]["horizon"]
    if window < 1 or horizon < 1:
        raise ValueError(f"--window/--horizon: expected positive integers, got {window}, "
                         f"{horizon}")
    return window, horizon


def prepare(series, window: int, horizon: int, test_fraction: float, val_fraction: float,
            scaling: str = "window"):
    """Standardised train/val windows (then scaled per window with ``scaling="window"``),
    the raw test origins and the global scaling."""
    if scaling not in ("window", "global"):
        raise ValueError(f"scaling: expected 'window' or 'global', got {scaling!r}")
    y = series.values
    if horizon > series.period:
        raise ValueError(f"--horizon: expected <= the seasonal period {series.period} of "
                         f"{series.name}, got {horizon}")
    val_start, test_start = split_points(len(y), test_fraction, val_fraction)
    if val_start - horizon <= window:
        raise ValueError(f"--window {window}: too long for the {val_start} training steps")
    mean, std = y[:val_start].mean(), y[:val_start].std()
    z = (y - mean) / std
    first = max(window, series.period)
    # Train targets end inside the training period; validation targets inside validation.
    train_origins = np.arange(first, val_start - horizon + 1)
    val_origins = np.arange(val_start, test_start - horizon + 1)
    test_origins = np.arange(test_start, len(y) - horizon + 1)
    x_tr, t_tr = make_windows(z, window, horizon, train_origins)
    x_va, t_va = make_windows(z, window, horizon, val_origins)
    if scaling == "window":
        (x_tr, m_tr, s_tr), (x_va, m_va, s_va) = window_scale(x_tr), window_scale(x_va)
        t_tr, t_va = (t_tr - m_tr) / s_tr, (t_va - m_va) / s_va
    return {
        "train": {"inputs": x_tr, "targets": t_tr},
        "val": {"inputs": x_va, "targets": t_va},
        "test_origins": test_origins,
        "z": z, "mean": float(mean), "std": float(std),
        "val_start": val_start, "test_start": test_start, "scaling": scaling,
    }


def forecast(model, params, z, origins, window, horizon, mean, std, scaling="window"
             ) -> np.ndarray:
    """Forecasts ``(n, horizon)`` in the series' units for each origin."""
    from jaxrnn.train import predict

    x, _ = make_windows(z, window, horizon, origins)
    m, s = 0.0, 1.0
    if scaling == "window":
        x, m, s = window_scale(x)
    pred_z = np.asarray(predict(model.apply, params, x), np.float64) * s + m
    return pred_z * std + mean


def plot_forecasts(series, origins, pred, horizon, path, scores):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    t, y = series.times, series.values
    fig = Figure(figsize=(11, 6.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(2, 1, 1)
    lo = max(0, origins[0] - 3 * series.period)
    ax.plot(t[lo:], y[lo:], "k-", lw=1.2, label="truth")
    ax.plot(t[origins], pred[:, 0], "-", label="1 step ahead")
    ax.plot(t[origins + horizon - 1], pred[:, -1], "-", label=f"{horizon} steps ahead")
    ax.axvline(t[origins[0]], color="grey", ls=":")
    ax.set_title(f"{series.name}: test RMSE model {scores['model']:.2f}, persistence "
                 f"{scores['persistence']:.2f}, seasonal naive {scores['seasonal_naive']:.2f}")
    ax.set_ylabel(series.unit)
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    ax = fig.add_subplot(2, 1, 2)
    ax.plot(t[lo:], y[lo:], "k-", lw=1.2, label="truth")
    picks = np.linspace(0, len(origins) - 1, 5).round().astype(int)
    for i, k in enumerate(picks):
        o = origins[k]
        ax.plot(t[o:o + horizon], pred[k], "o-", ms=3,
                label=f"{horizon}-step forecasts from 5 origins" if i == 0 else None)
    ax.set_xlabel("year")
    ax.set_ylabel(series.unit)
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    return path


# --------------------------------------------------------------------------- commands

def _config(args, name, window, horizon) -> dict:
    return {"series": name, "cell": args.cell, "hidden": args.hidden, "layers": args.layers,
            "bidirectional": bool(args.bidirectional), "dropout": args.dropout,
            "window": window, "horizon": horizon, "test_fraction": args.test_fraction,
            "val_fraction": args.val_fraction, "scaling": args.scaling}


def _score(series, prep, pred, horizon) -> dict:
    origins = prep["test_origins"]
    truth = series.values[origins[:, None] + np.arange(horizon)[None, :]]
    return {
        "model": rmse(pred, truth),
        "persistence": rmse(persistence_forecast(series.values, origins, horizon), truth),
        "seasonal_naive": rmse(seasonal_naive_forecast(series.values, origins, horizon,
                                                       series.period), truth),
        "model_by_h": np.sqrt(np.mean((pred - truth) ** 2, axis=0)).tolist(),
    }


def _report(series, scores, horizon, n):
    years = "years" if series.name == "sunspots" else "months"
    by_h = scores["model_by_h"]
    print(f"{series.name}: test RMSE over {n} origins x {horizon} {years} ahead: "
          f"model {scores['model']:.3f} | persistence {scores['persistence']:.3f} | "
          f"seasonal naive (period {series.period}) {scores['seasonal_naive']:.3f} "
          f"[{series.unit}]; model by horizon: h=1 {by_h[0]:.2f}, h={horizon // 2} "
          f"{by_h[horizon // 2 - 1]:.2f}, h={horizon} {by_h[-1]:.2f}")
    verdict = "beats" if scores["model"] < scores["persistence"] else "does NOT beat"
    print(f"{series.name}: model {verdict} persistence "
          f"({scores['model'] / scores['persistence']:.2f}x its RMSE) and is "
          f"{scores['model'] / scores['seasonal_naive']:.2f}x the seasonal-naive RMSE")


def train(args) -> dict:
    from jaxrnn.datasets.series import load_series
    from jaxrnn.train import fit, make_optimizer
    from jaxrnn.train.checkpoint import save_params

    clip_norm(args)  # validated before any data is read
    t0 = time.perf_counter()
    names = SERIES if args.series == "both" else (args.series,)
    out = {}
    for name in names:
        series = load_series(name)
        window, horizon = _settings(name, args)
        prep = prepare(series, window, horizon, args.test_fraction, args.val_fraction,
                       args.scaling)
        config = _config(args, name, window, horizon)
        model = _model(config)
        print(f"{name}: {len(series.values)} values; train {len(prep['train']['targets'])} / "
              f"val {len(prep['val']['targets'])} windows, test from "
              f"{series.times[prep['test_start']]:.0f}; window {window}, horizon {horizon}; "
              f"{args.cell} hidden {args.hidden}")
        result = fit(
            model.apply, model.init(jax.random.key(args.seed)), "mse",
            make_optimizer(args.lr, clip_norm=clip_norm(args)), prep["train"],
            val_data=prep["val"], epochs=args.epochs,
            batch_size=min(args.batch_size, len(prep["train"]["targets"])), seed=args.seed,
            patience=args.patience, checkpoint_dir=os.path.join(args.checkpoint_dir, name),
            resume=args.resume, progress=args.progress, verbose=False,
            plot_path=os.path.join(args.out, f"{name}_curves.png"),
        )
        pred = forecast(model, result.params, prep["z"], prep["test_origins"], window, horizon,
                        prep["mean"], prep["std"], args.scaling)
        scores = _score(series, prep, pred, horizon)
        _report(series, scores, horizon, len(prep["test_origins"]))
        plot = plot_forecasts(series, prep["test_origins"], pred, horizon,
                              os.path.join(args.out, f"{name}_forecast.png"), scores)
        config.update(mean=prep["mean"], std=prep["std"])
        path = save_params(os.path.join(args.out, f"{name}_model.msgpack"), result.params,
                           config)
        print(f"{name}: forecast plot {plot}; learning curves {result.plot_path}; "
              f"best epoch {None if result.best_epoch is None else result.best_epoch + 1}")
        out[name] = {**scores, "plot": plot, "model": path}
    print(f"total {time.perf_counter() - t0:.0f} s")
    return out


def evaluate(args) -> dict:
    from jaxrnn.datasets.series import load_series
    from jaxrnn.train.checkpoint import load_params, read_params_config

    names = SERIES if args.series == "both" else (args.series,)
    out = {}
    for name in names:
        path = os.path.join(args.out, f"{name}_model.msgpack")
        config = read_params_config(path)
        model = _model(config)
        params = load_params(path, model.init(jax.random.key(0)))
        series = load_series(name)
        prep = prepare(series, config["window"], config["horizon"], config["test_fraction"],
                       config["val_fraction"], config["scaling"])
        pred = forecast(model, params, prep["z"], prep["test_origins"], config["window"],
                        config["horizon"], config["mean"], config["std"], config["scaling"])
        scores = _score(series, prep, pred, config["horizon"])
        _report(series, scores, config["horizon"], len(prep["test_origins"]))
        out[name] = scores
    return out
