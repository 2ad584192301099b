"""Sliding windows over a series for direct multi-step forecasting, and a saved scaler.

A forecast from origin ``t`` reads the ``window`` values before it, ``y[t-window .. t-1]``, and
predicts the next ``horizon`` values, ``y[t .. t+horizon-1]``, at once. :class:`WindowScaler`
standardises the windows in one of two ways and maps forecasts back to the series' units:

* ``"global"``: by the mean and deviation of each column over the training period only;
* ``"window"``: after the global step, each window by its own mean and deviation (at least
  ``floor``), applied to its targets too, so a cycle twice as tall as any seen in training looks
  the same to the net (reversible instance normalisation, Kim et al. 2022).

The scaler is a plain JSON-able dict (:meth:`WindowScaler.to_dict`), so a saved model carries it.
"""

from __future__ import annotations

import numpy as np

_MODES = ("global", "window")


def as_series(values, argname: str = "values") -> np.ndarray:
    """``values`` as float64 ``(N, F)``: a 1-D series becomes one column.

    Raises:
      ValueError: not 1-D/2-D, empty, or holding NaN/inf.
    """
    try:
        a = np.asarray(values, np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{argname}: expected numbers, got non-numeric values") from None
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2:
        raise ValueError(f"{argname}: expected a series of shape (N,) or (N, F), got {a.shape}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"{argname}: the series is empty (shape {a.shape})")
    if not np.isfinite(a).all():
        bad = int(np.flatnonzero(~np.isfinite(a).all(1))[0])
        raise ValueError(f"{argname}: missing or infinite value at row {bad}")
    return a


def sliding_windows(values, window: int, horizon: int, origins=None):
    """Inputs ``(n, window, F)`` = ``values[t-window : t]`` and targets ``(n, horizon, F)`` =
    ``values[t : t+horizon]`` for each origin ``t`` (default: every origin that fits).

    Raises:
      ValueError: a non-positive ``window``/``horizon``, or an origin without ``window`` values
        before it or ``horizon`` after it.
    """
    for name, v in (("window", window), ("horizon", horizon)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name}: expected a positive integer, got {v!r}")
    a = as_series(values)
    n = len(a)
    if origins is None:
        origins = np.arange(window, n - horizon + 1)
    origins = np.asarray(origins, np.int64)
    if origins.size and (origins.min() < window or origins.max() + horizon > n):
        raise ValueError(
            f"origins: need {window} <= t <= {n - horizon} for window {window} and horizon "
            f"{horizon} on {n} values, got [{origins.min()}, {origins.max()}]"
        )
    idx_in = origins[:, None] + np.arange(-window, 0)[None, :]
    idx_out = origins[:, None] + np.arange(horizon)[None, :]
    return a[idx_in], a[idx_out]


def standardise_windows(x, floor: float = 0.1):
    """Each window of ``x (n, W, F)`` by its own mean ``m`` and deviation ``s`` (at least
    ``floor``): ``((x - m) / s, m, s)`` with ``m, s`` of shape ``(n, 1, F)``; forecasts map
    back by ``y = m + s * y'``."""
    x = np.asarray(x)
    m = x.mean(axis=1, keepdims=True)
    s = np.maximum(x.std(axis=1, keepdims=True), floor)
    return (x - m) / s, m, s


class WindowScaler:
    """Standardise forecasting windows (``"global"`` or ``"window"`` scaling, see the module
    docstring) and map forecasts back.

    Args:
      mean, std: per-column global statistics ``(F,)`` (from :meth:`fit`).
      mode: ``"global"`` or ``"window"``.
      floor: smallest per-window deviation (in globally standardised units).
    """

    def __init__(self, mean, std, *, mode: str = "window", floor: float = 0.1):
        if mode not in _MODES:
            raise ValueError(f"mode: expected 'global' or 'window', got {mode!r}")
        self.mean = np.asarray(mean, np.float64).reshape(-1)
        self.std = np.asarray(std, np.float64).reshape(-1)
        if self.mean.shape != self.std.shape:
            raise ValueError(f"mean, std: expected equal shapes, got {self.mean.shape} and "
                             f"{self.std.shape}")
        if not (self.std > 0).all():
            raise ValueError("std: expected positive deviations (a constant column cannot be "
                             "standardised)")
        self.mode = mode
        self.floor = float(floor)

    @classmethod
    def fit(cls, train_values, *, mode: str = "window", floor: float = 0.1) -> WindowScaler:
        """Global statistics of ``train_values`` (``(N,)`` or ``(N, F)``); a constant column
        keeps deviation 1 so it is only centred."""
        a = as_series(train_values, "train_values")
        std = a.std(0)
        return cls(a.mean(0), np.where(std > 0, std, 1.0), mode=mode, floor=floor)

    @property
    def num_features(self) -> int:
        return len(self.mean)

    def _check(self, x, argname):
        x = np.asarray(x, np.float64)
        if x.shape[-1] != self.num_features:
            raise ValueError(f"{argname}: expected {self.num_features} feature(s) on the last "
                             f"axis, got shape {x.shape}")
        return x

    def transform(self, x, y=None):
        """Scale windows ``x (n, W, F)`` (and their targets ``y (n, H, F)``).

        Returns ``(x_scaled float32, y_scaled float32 or None, stats)``; ``stats`` is what
        :meth:`inverse` needs to map the forecasts of these windows back."""
        x = (self._check(x, "x") - self.mean) / self.std
        if self.mode == "window":
            xs, m, s = standardise_windows(x, self.floor)
        else:
            m = np.zeros((len(x), 1, self.num_features))
            s = np.ones_like(m)
            xs = x
        xs = xs.astype(np.float32)
        ys = None
        if y is not None:
            y = (self._check(y, "y") - self.mean) / self.std
            ys = ((y - m) / s).astype(np.float32)
        return xs, ys, (m, s)

    def inverse(self, pred, stats) -> np.ndarray:
        """Forecasts ``(n, H, F)`` in scaled units back to the series' units (float64)."""
        m, s = stats
        pred = self._check(pred, "pred")
        return (pred * s + m) * self.std + self.mean

    def to_dict(self) -> dict:
        """A JSON-able description; :meth:`from_dict` rebuilds the same scaler."""
        return {"mean": self.mean.tolist(), "std": self.std.tolist(), "mode": self.mode,
                "floor": self.floor}

    @classmethod
    def from_dict(cls, d: dict) -> WindowScaler:
        return cls(d["mean"], d["std"], mode=d["mode"], floor=d.get("floor", 0.1))

    def __repr__(self) -> str:
        return f"WindowScaler(mode={self.mode!r}, features={self.num_features})"


# Period detection reads at most this many of the last training values: the FFT is O(n log n),
# and a season that does not show within 100,000 steps is not one the baseline can use.
PERIOD_SAMPLE = 100_000


def _autocorrelation(z: np.ndarray, max_lag: int) -> np.ndarray:
    """``r[k]`` for ``k = 0 .. max_lag`` of a centred series, by FFT (zero-padded: no wrap)."""
    n = len(z)
    size = 1 << int(np.ceil(np.log2(2 * n)))
    f = np.fft.rfft(z, size)
    acov = np.fft.irfft(f.real ** 2 + f.imag ** 2, size)[:max_lag + 1]
    return acov / acov[0]


def detect_period(values, *, max_period: int | None = None, min_period: int = 2,
                  alpha: float = 0.01) -> int | None:
    """The seasonal period of a series, or None when the data show no evidence of one.

    A period is claimed only when two tests agree, on the series (first column if several,
    its last :data:`PERIOD_SAMPLE` values) with its least-squares line removed:

    * the periodogram has a significant peak: Fisher's g test (the largest ordinate's share of
      the total, p-value ``m (1 - g)^(m - 1)`` over ``m`` Fourier frequencies) below
      ``alpha``, at a period ``n / k`` within ``[min_period, max_period]``;
    * the autocorrelation has a local maximum near a multiple of that period (within 20 %)
      that is positive and above twice its Bartlett standard error,
      ``sqrt((1 + 2 sum_{j<L} r_j^2) / n)``: red noise (a random walk, AR(1)) also piles
      power into a low frequency, but its autocorrelation decays without a peak.

    The period is the shortest such lag whose autocorrelation is within 20 % of the highest
    (the fundamental, not a multiple of it). O(n log n) (FFT for both).
    """
    a = as_series(values)[:, 0][-PERIOD_SAMPLE:]
    n = len(a)
    if max_period is None:
        max_period = n // 2
    max_period = min(int(max_period), n // 2)
    if max_period < min_period or n < 8:
        return None
    t = np.arange(n, dtype=np.float64)
    basis = np.stack([np.ones(n), t], 1)
    z = a - basis @ np.linalg.lstsq(basis, a, rcond=None)[0]
    if not np.any(np.abs(z) > 1e-12 * max(1.0, float(np.abs(a).max()))):
        return None
    m = (n - 1) // 2
    power = np.abs(np.fft.rfft(z)[1:m + 1]) ** 2
    total = float(power.sum())
    if m < 2 or total <= 0.0:
        return None
    k = int(np.argmax(power)) + 1
    g = float(power[k - 1]) / total
    p_value = min(1.0, m * (1.0 - g) ** (m - 1))
    if p_value >= alpha or not min_period <= n / k <= max_period:
        return None
    guess = n / k
    # The strongest frequency may be a harmonic (a weekly pattern often peaks at 7/2 steps):
    # candidates are the autocorrelation peaks near any multiple of it.
    r = _autocorrelation(z, max_period + 1)
    lags = np.arange(min_period, max_period + 1)
    peak = (r[lags] > r[lags - 1]) & (r[lags] >= r[lags + 1]) & (r[lags] > 0)
    se = np.sqrt((1.0 + 2.0 * np.concatenate([[0.0], np.cumsum(r[1:] ** 2)])) / n)
    multiple = np.maximum(1.0, np.round(lags / guess))
    near = np.abs(lags - multiple * guess) <= np.maximum(1.0, 0.2 * guess)
    ok = peak & near & (r[lags] > 2.0 * se[lags - 1])
    if not ok.any():
        return None
    # The fundamental, not a multiple of it: the shortest lag almost as correlated as the best.
    good = lags[ok][r[lags[ok]] >= 0.8 * r[lags[ok]].max()]
    return int(good[0])


__all__ = ["as_series", "sliding_windows", "standardise_windows", "WindowScaler",
           "detect_period", "PERIOD_SAMPLE"]
