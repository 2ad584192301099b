"""Univariate time series from ``statsmodels.datasets``, for forecasting.

* ``sunspots``: yearly mean sunspot numbers 1700-2008 (309 values), the classic series of Yule
  (1927); the solar cycle is about 11 years, so the seasonal-naive period is 11.
* ``elnino``: monthly Pacific sea-surface temperatures (Nino 1+2 region) 1950-2010, 732
  values in deg C; the seasonal-naive period is 12.

The data files ship inside statsmodels; nothing is downloaded.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from jaxrnn.data.deps import require


class Series(NamedTuple):
    name: str
    values: np.ndarray  # (N,) float64
    times: np.ndarray  # (N,) float64, decimal years
    period: int  # seasonal-naive lag in steps
    unit: str


def _statsmodels_datasets():
    require("statsmodels", purpose="the forecast task")
    import statsmodels.datasets as smd

    return smd


def load_sunspots() -> Series:
    """Yearly sunspot numbers, 1700-2008."""
    df = _statsmodels_datasets().sunspots.load_pandas().data
    return Series(
        "sunspots",
        df["SUNACTIVITY"].to_numpy(np.float64),
        df["YEAR"].to_numpy(np.float64),
        11,
        "sunspot number",
    )


def load_elnino() -> Series:
    """Monthly sea-surface temperature, 1950-2010, flattened year by year."""
    df = _statsmodels_datasets().elnino.load_pandas().data
    years = df["YEAR"].to_numpy(np.float64)
    months = df.drop(columns=["YEAR"]).to_numpy(np.float64)  # (years, 12)
    times = (years[:, None] + np.arange(12)[None, :] / 12.0).reshape(-1)
    return Series("elnino", months.reshape(-1), times, 12, "deg C")


LOADERS = {"sunspots": load_sunspots, "elnino": load_elnino}


def load_series(name: str) -> Series:
    """One of :data:`LOADERS` by name."""
    if name not in LOADERS:
        raise ValueError(f"name: expected one of {sorted(LOADERS)}, got {name!r}")
    return LOADERS[name]()


__all__ = ["Series", "load_sunspots", "load_elnino", "load_series", "LOADERS"]
