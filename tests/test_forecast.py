"""The forecaster on short and long series: the baselines printed beside the model (the
untrained model, seasonal naive, persistence, an AR model chosen by AIC), defaults that learn
on log10 Lynx and the built-in series, period detection that needs evidence, validation on
short series, predict's origin column, and a large CSV read in chunks within a few times its
size."""

import csv
import json
import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from jaxrnn import cli
from jaxrnn.data import detect_period
from jaxrnn.tasks import forecast

QUIET = ["--no-progress"]


def run_cli(argv):
    try:
        return cli.main(argv)
    except SystemExit as e:
        return e.code


def write_series(path, values, times=None, name="y", time_name="t"):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow([time_name, name] if times is not None else [name])
        for i, v in enumerate(values):
            w.writerow([times[i], repr(float(v))] if times is not None else [repr(float(v))])
    return path


def log_lynx():
    pytest.importorskip("sktime")
    from sktime.datasets import load_lynx

    y = load_lynx()
    return np.log10(y.to_numpy(np.float64)), [p.year for p in y.index]


def shampoo_sales():
    pytest.importorskip("sktime")
    from sktime.datasets import load_shampoo_sales

    y = load_shampoo_sales()
    return y.to_numpy(np.float64), [str(p) for p in y.index]


def scores_of(text: str) -> dict:
    """The numbers of the ``test RMSE`` line(s), by name, for each series printed."""
    out = {}
    for line in text.splitlines():
        m = re.match(r"(\S+): test RMSE over .*?: model ([0-9.]+) \| persistence ([0-9.]+) \| "
                     r"(?:seasonal naive \(period \d+\) ([0-9.]+)|seasonal naive: no period "
                     r"found) \| AR\((\d+)\) ([0-9.]+) \| untrained model ([0-9.]+)", line)
        if m:
            name, model, pers, seasonal, order, ar, untrained = m.groups()
            out[name] = {"model": float(model), "persistence": float(pers),
                         "seasonal_naive": None if seasonal is None else float(seasonal),
                         "ar_order": int(order), "ar": float(ar), "untrained": float(untrained)}
    return out


# --------------------------------------------------------------------------- baselines

def test_ar_baseline_is_statsmodels_autoreg_forecasting_recursively():
    from statsmodels.tsa.ar_model import AutoReg, ar_select_order

    from jaxrnn.tasks.forecast_baselines import autoregression_baseline, default_max_lag

    y, _ = log_lynx()
    fit_end, horizon = 91, 10
    pred, orders = autoregression_baseline(y, fit_end, np.array([fit_end, 100]), horizon)
    order = max(ar_select_order(y[:fit_end], maxlag=default_max_lag(fit_end), ic="aic",
                                trend="c").ar_lags)
    assert orders == [order]
    res = AutoReg(y[:fit_end], lags=order, trend="c").fit()
    # From the end of the fit: statsmodels' own out-of-sample forecast.
    np.testing.assert_allclose(pred[0], res.forecast(horizon), rtol=1e-10)
    # From a later origin the same coefficients run on the observed values (loop by hand).
    c, phi = res.params[0], res.params[1:]
    hist = list(y[:100])
    for _ in range(horizon):
        hist.append(c + sum(phi[i] * hist[-1 - i] for i in range(order)))
    np.testing.assert_allclose(pred[1], hist[100:], rtol=1e-10)


def test_verdict_never_reads_as_success_when_the_untrained_model_matches():
    # The numbers: untrained 1.391 vs trained 1.400, persistence worse than both.
    text = forecast.verdict({"model": 1.400, "untrained": 1.391, "persistence": 1.5,
                             "seasonal_naive": 1.2, "ar": 0.877}, "AR(11)")
    assert "did NOT learn" in text and "untrained model already beats persistence" in text
    assert "the model beats" not in text
    text = forecast.verdict({"model": 0.43, "untrained": 0.56, "persistence": 0.87,
                             "seasonal_naive": 0.58, "ar": 0.40}, "AR(11)")
    assert text.startswith("the model beats persistence (0.49x its RMSE), seasonal naive")
    assert "the model does NOT beat AR(11) (1.07x its RMSE)" in text


def test_report_prints_every_baseline_and_each_horizon_once(capsys):
    series = forecast.UserSeries("y", np.zeros(5), None, None, "u", "row")
    scores = {"model": 1.0, "untrained": 2.0, "persistence": 3.0, "seasonal_naive": None,
              "ar": 0.5, "model_by_h": [1.0]}
    forecast._report(series, scores, 1, 7, "AR(2)")
    text = capsys.readouterr().out
    assert "| AR(2) 0.500 | untrained model 2.000" in text
    assert text.count("h=1") == 1
    assert forecast.horizon_summary([1.0, 2.0, 3.0, 4.0]) == "h=1 1.000, h=2 2.000, h=4 4.000"
    assert "does NOT beat AR(2)" in text


# --------------------------------------------------------------------------- period detection

def test_period_detection_needs_a_significant_peak():
    for seed in range(4):
        rng = np.random.default_rng(seed)
        noise = rng.normal(size=240)
        walk = np.cumsum(rng.normal(size=240))
        ar1 = np.convolve(rng.normal(size=300), 0.8 ** np.arange(40))[:240]
        for name, y in (("white noise", noise), ("random walk", walk), ("AR(1)", ar1)):
            assert detect_period(y, max_period=80) is None, (name, seed)
    sales, _ = shampoo_sales()  # monthly, a trend and noise: no evidence of any season
    assert detect_period(sales[:25], max_period=8) is None
    t = np.arange(240)
    rng = np.random.default_rng(5)
    assert detect_period(np.sin(2 * np.pi * t / 12) + rng.normal(size=240)) == 12
    # The strongest frequency is a harmonic (7/2 steps): the period is still 7.
    weekly = np.tile([1.0, 3.0, 2.0, 8.0, 1.0, 0.0, 4.0], 20) + 0.1 * rng.normal(size=140)
    assert detect_period(weekly) == 7
    lynx, _ = log_lynx()
    assert detect_period(lynx[:80], max_period=26) == 10


def test_period_detection_reads_a_bounded_sample_of_a_long_series():
    from jaxrnn.data.windows import PERIOD_SAMPLE

    t = np.arange(3 * PERIOD_SAMPLE)
    rng = np.random.default_rng(0)
    y = np.sin(2 * np.pi * t / 24) + rng.normal(size=len(t))
    y[:-PERIOD_SAMPLE] = rng.normal(size=len(t) - PERIOD_SAMPLE)  # no season before the end
    assert detect_period(y) == 24 == detect_period(y[-PERIOD_SAMPLE:])


# --------------------------------------------------------------------------- short series

def test_short_series_widen_validation_or_train_without_it():
    y, _ = log_lynx()
    s = forecast.UserSeries("lynx", y, None, 10, "", "row")
    p = forecast.prepare(s, 20, 10, 0.2, 0.1, "global")
    # 0.1 of 114 steps holds 2 validation forecasts of 10 steps; widened to 10.
    assert len(p["val"]["targets"]) == forecast.MIN_VAL_WINDOWS
    assert p["test_start"] == 91 and p["val_start"] == 91 - 10 + 1 - 10
    assert p["val_note"].startswith("validation widened")
    assert len(p["train"]["targets"]) == p["val_start"] - 10 + 1 - 20
    short = forecast.UserSeries("s", y[:40], None, None, "", "row")
    p = forecast.prepare(short, 6, 1, 0.2, 0.1, "global")
    assert p["val"] is None and p["val_note"].startswith("no validation")
    # Training then reads every window whose target ends before the test period.
    assert len(p["train"]["targets"]) == p["test_start"] - 6


def test_auto_scaling_keeps_the_level_of_a_stationary_cycle():
    from jaxrnn.datasets.series import load_series

    y, _ = log_lynx()
    assert forecast.choose_scaling(y[:80], 20)[0] == "global"
    sunspots = load_series("sunspots").values
    assert forecast.choose_scaling(sunspots[:216], 22)[0] == "window"


def test_shampoo_sales_warns_of_small_data_and_finds_no_period(tmp_path, capsys):
    sales, months = shampoo_sales()
    data = write_series(tmp_path / "shampoo.csv", sales, months, "sales", "month")
    assert run_cli(["train", "--task", "forecast", "--csv", str(data), "--column", "sales",
                    "--time-column", "month", "--epochs", "2", "--hidden", "4",
                    "--out", str(tmp_path / "run"), *QUIET]) == 0
    text = capsys.readouterr().out
    assert "warning: only 23 training windows in 36 steps" in text
    assert "no seasonal period found" in text and "period 2" not in text
    assert "no validation" in text
    assert "sales" in scores_of(text)


# --------------------------------------------------------------------------- origin column

def test_origin_is_the_time_of_the_first_forecast_step():
    assert forecast.origin_labels([3, 5], None, None, 5) == [3, 5]
    years = np.array([1990.0, 1991.0, 1992.0])
    assert forecast.origin_labels([1, 2, 3], years, None, 3) == [1991, 1992, 1993]
    months = np.array(["2019-10-01", "2019-11-01", "2019-12-01"], "datetime64[ns]")
    assert forecast.origin_labels([2, 3], months, "%Y-%m", 3) == ["2019-12", "2020-01"]


def test_predict_writes_the_time_column_as_origin(tmp_path, capsys):
    t = np.arange(120)
    y = np.sin(2 * np.pi * t / 12) + 0.01 * t
    data = write_series(tmp_path / "s.csv", y, [1900 + i for i in t], "v", "year")
    out = tmp_path / "run"
    assert run_cli(["train", "--task", "forecast", "--csv", str(data), "--column", "v",
                    "--time-column", "year", "--period", "12", "--horizon", "2", "--window", "24",
                    "--epochs", "1", "--hidden", "4", "--out", str(out), *QUIET]) == 0
    pred = tmp_path / "pred.csv"
    assert run_cli(["predict", "--task", "forecast", "--model", str(out / "model"),
                    "--input", str(data), "--output", str(pred)]) == 0
    with open(pred) as f:
        rows = list(csv.reader(f))
    assert [r[0] for r in rows[1:3]] == ["1924", "1925"]  # the first origin is row 24
    assert rows[-1][0] == "2020"  # the year after the file's last, 2019


# --------------------------------------------------------------------------- large files

def test_chunked_reader_gives_the_values_of_a_plain_read(tmp_path, capsys):
    import pandas as pd

    from jaxrnn.data.csv_series import read_numeric_columns

    rng = np.random.default_rng(0)
    path = tmp_path / "s.csv"
    with open(path, "w") as f:
        f.write("day,a,b\n")
        for i in range(53):
            f.write(f"2020-01-{i % 28 + 1:02d},{rng.normal()!r},{rng.normal() * 1e6:.3f}\n")
    plain = pd.read_csv(path)
    got = read_numeric_columns(path, ["a", "b"], chunk_rows=7, time_column="day", progress=True)
    np.testing.assert_array_equal(got.values, plain[["a", "b"]].to_numpy(np.float64))
    np.testing.assert_array_equal(got.times, pd.to_datetime(plain["day"]).to_numpy())
    assert got.time_format == "%Y-%m-%d"
    assert "100% (53 rows)" in capsys.readouterr().err
    lines = path.read_text().splitlines()
    for cell, shown in (("x1", "'x1'"), ("", "nan (an empty cell)"), ("inf", "'inf'")):
        bad = lines[:]
        bad[40] = bad[40].split(",")[0] + f",{cell}," + bad[40].split(",")[2]
        (tmp_path / "bad.csv").write_text("\n".join(bad) + "\n")
        with pytest.raises(ValueError, match=rf"^--csv: column 'a' of .* row 41 holds "
                                             rf"{re.escape(shown)} \(expected a number\)"):
            read_numeric_columns(tmp_path / "bad.csv", ["a"], chunk_rows=7)


RSS_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    import numpy as np
    from jaxrnn.tasks import forecast
    from jaxrnn.data import detect_period
    import pandas  # imported before measuring: what counts is what grows with the file
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    values, times, _ = forecast.read_series(sys.argv[1], ["y"], None)
    vs, _ = forecast.split_points(len(values), 0.2, 0.1)
    found = detect_period(values[:vs, 0], max_period=vs // 3)
    s = forecast.UserSeries("y", values[:, 0], times, 12, "", "row")
    scaling, _ = forecast.choose_scaling(values[:vs], 24)
    checked = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    p = forecast.prepare(s, 24, 12, 0.2, 0.1, scaling)  # what --period 12 trains on
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"read_kib": checked - before, "windows_kib": after - checked,
                      "n": len(values), "period": found, "train": len(p["train"]["targets"])}))
""")


@pytest.mark.slow
def test_large_one_column_csv_is_read_within_a_few_times_its_size(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "big.csv"
    n = 2_000_000
    t = np.arange(n)
    y = 10 * np.sin(2 * np.pi * t / 12) + rng.normal(size=n)
    with open(path, "w") as f:
        f.write("y\n")
        np.savetxt(f, y, fmt="%.6f")
    size = os.path.getsize(path)
    assert size > 18e6
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [os.path.dirname(os.path.dirname(os.path.abspath(forecast.__file__)))] +
        os.environ.get("PYTHONPATH", "").split(os.pathsep))}
    done = subprocess.run([sys.executable, "-c", RSS_SCRIPT, str(path)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout.splitlines()[-1])
    assert got["n"] == n and got["period"] == 12
    assert got["train"] == forecast.MAX_WINDOWS  # evenly spaced, bounded
    # Read, checked, period detected and scaling chosen within 4x the file's size; the
    # windows of --period 12 are bounded by MAX_WINDOWS whatever the length (2 periods of
    # 100,000 windows of 24 + 12 float32: 29 MB, plus one block's float64 temporaries).
    assert got["read_kib"] * 1024 < 4 * size, (got["read_kib"] / 1024, size / 2 ** 20)
    assert got["windows_kib"] < 64 * 1024, got["windows_kib"] / 1024
    assert "reading" in done.stderr and "100%" in done.stderr  # a progress line


# --------------------------------------------------------------------------- defaults learn

@pytest.mark.slow
def test_default_beats_seasonal_naive_on_log_lynx(tmp_path, capsys):
    y, years = log_lynx()
    data = write_series(tmp_path / "lynx.csv", y, years, "lynx", "year")
    assert run_cli(["train", "--task", "forecast", "--csv", str(data), "--column", "lynx",
                    "--time-column", "year", "--out", str(tmp_path / "run"), *QUIET]) == 0
    text = capsys.readouterr().out
    got = scores_of(text)["lynx"]
    assert "period 10 (detected)" in text
    assert got["model"] < got["seasonal_naive"] < got["persistence"]
    assert got["model"] < forecast.LEARNT * got["untrained"]


def test_fewer_epochs_beat_seasonal_naive_on_log_lynx(tmp_path, capsys):
    """The fast variant of the test above: the default settings, a smaller net, 60 epochs."""
    y, years = log_lynx()
    data = write_series(tmp_path / "lynx.csv", y, years, "lynx", "year")
    assert run_cli(["train", "--task", "forecast", "--csv", str(data), "--column", "lynx",
                    "--epochs", "60", "--hidden", "16", "--out", str(tmp_path / "run"),
                    *QUIET]) == 0
    got = scores_of(capsys.readouterr().out)["lynx"]
    assert got["model"] < got["seasonal_naive"]


@pytest.mark.slow
def test_defaults_beat_seasonal_naive_on_the_built_in_series(tmp_path, capsys):
    assert run_cli(["train", "--task", "forecast", "--out", str(tmp_path / "run"),
                    *QUIET]) == 0
    got = scores_of(capsys.readouterr().out)
    for name in ("sunspots", "elnino"):
        assert got[name]["model"] < got[name]["seasonal_naive"], (name, got[name])
