r"""A statistical baseline for the forecaster: an autoregression chosen by AIC (statsmodels).

A recurrent net that loses to a linear model fitted in milliseconds has learnt nothing worth
keeping, so the forecast task scores this model on the same test windows as the net:

.. math:: y_t = c + \sum_{i=1}^{p} \phi_i y_{t-i} + \varepsilon_t

fitted by least squares (``statsmodels.tsa.ar_model.AutoReg``) on the steps before the test
period, the order ``p`` chosen by AIC among ``0 .. max_lag``
(``statsmodels.tsa.ar_model.ar_select_order``). The default ``max_lag`` is Schwert's
``12 (n / 100)^{1/4}``, at least the seasonal period (so a seasonal lag can be chosen), at most
``n / 4`` and :data:`MAX_LAG`. From each origin ``t`` the model forecasts ``y[t], ...,
y[t+H-1]`` recursively from the observed ``y[t-p .. t-1]``, its own forecasts feeding the later
steps (the coefficients stay those fitted before the test period: nothing of it is seen).
"""

from __future__ import annotations

import warnings
from typing import NamedTuple

import numpy as np

from jaxrnn.data.deps import require

MAX_LAG = 60
# The fit reads at most this many of the last steps before the test period (a long series
# gains nothing from more, and the order search stays fast).
AR_SAMPLE = 20_000


class AutoRegression(NamedTuple):
    """``y_t = const + sum_i coefs[i] * y_{t-1-i}``; ``order = len(coefs)``."""

    const: float
    coefs: np.ndarray  # (p,), coefs[i] multiplies y[t-1-i]

    @property
    def order(self) -> int:
        return len(self.coefs)


def default_max_lag(n: int, period: int | None = None) -> int:
    lag = int(12 * (n / 100.0) ** 0.25)
    if period is not None:
        lag = max(lag, int(period) + 1)
    return max(0, min(lag, n // 4, MAX_LAG))


def fit_autoregression(history, *, max_lag: int | None = None, period: int | None = None
                       ) -> AutoRegression:
    """The AR model of ``history`` (1-D) with the order of least AIC."""
    require("statsmodels", purpose="the forecast task's autoregressive baseline")
    from statsmodels.tsa.ar_model import AutoReg, ar_select_order

    y = np.asarray(history, np.float64).reshape(-1)[-AR_SAMPLE:]
    if max_lag is None:
        max_lag = default_max_lag(len(y), period)
    if max_lag < 1 or len(y) < 3 * max_lag + 2:
        return AutoRegression(float(y.mean()), np.zeros(0))
    from statsmodels.tools.sm_exceptions import SingularMatrixWarning

    with warnings.catch_warnings():
        # An exactly periodic (noiseless) series makes the lags collinear; least squares by
        # the pseudo-inverse still forecasts it, and a baseline must not warn about it.
        warnings.simplefilter("ignore", SingularMatrixWarning)
        lags = ar_select_order(y, maxlag=int(max_lag), ic="aic", trend="c").ar_lags
        if not lags:
            return AutoRegression(float(y.mean()), np.zeros(0))
        p = int(max(lags))
        params = AutoReg(y, lags=p, trend="c").fit().params
    return AutoRegression(float(params[0]), np.asarray(params[1:], np.float64))


def autoregression_forecast(model: AutoRegression, values, origins, horizon: int
                            ) -> np.ndarray:
    """``(n, horizon)`` recursive forecasts from each origin ``t`` (``t >= model.order``)."""
    values = np.asarray(values, np.float64).reshape(-1)
    origins = np.asarray(origins, np.int64)
    p = model.order
    if origins.size and origins.min() < p:
        raise ValueError(f"origins: the AR({p}) baseline needs t >= {p}, got {origins.min()}")
    # state[:, i] = y[t-1-i]: the most recent value first, as the coefficients are ordered.
    state = values[origins[:, None] - 1 - np.arange(p)[None, :]] if p else \
        np.zeros((len(origins), 0))
    out = np.empty((len(origins), horizon))
    for h in range(horizon):
        out[:, h] = model.const + state @ model.coefs
        if p:
            state = np.concatenate([out[:, h:h + 1], state[:, :-1]], axis=1)
    return out


def autoregression_baseline(values, fit_end: int, origins, horizon: int,
                            period: int | None = None):
    """Forecasts ``(n, horizon)`` (``(n, horizon, F)`` for ``(N, F)`` values: one AR model
    per column) by AR models fitted on ``values[:fit_end]``, and their orders."""
    a = np.asarray(values, np.float64)
    cols = a[:, None] if a.ndim == 1 else a
    preds, orders = [], []
    for j in range(cols.shape[1]):
        model = fit_autoregression(cols[:fit_end, j], period=period)
        preds.append(autoregression_forecast(model, cols[:, j], origins, horizon))
        orders.append(model.order)
    pred = np.stack(preds, axis=-1)
    return (pred[..., 0] if a.ndim == 1 else pred), orders


__all__ = ["AutoRegression", "fit_autoregression", "autoregression_forecast",
           "autoregression_baseline", "default_max_lag", "MAX_LAG", "AR_SAMPLE"]
