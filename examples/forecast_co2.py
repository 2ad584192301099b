"""Forecast a monthly series a year ahead: Mauna Loa CO2 (statsmodels), a GRU over 24 months.

Run: python examples/forecast_co2.py
"""
import numpy as np
import statsmodels.api as sm

from jaxrnn import keras
from jaxrnn import models as M
from jaxrnn.data import WindowScaler, sliding_windows

monthly = sm.datasets.co2.load_pandas().data["co2"].resample("MS").mean().interpolate()
monthly.rename_axis("month").to_csv("co2.csv")  # the same series for the command line
co2 = monthly.to_numpy()
window, horizon, cut = 24, 12, int(0.8 * len(co2))  # the last 20% of the months are the test
x, y = sliding_windows(co2, window, horizon)  # x (n, 24, 1), y (n, 12, 1), origins 24..N-12
origins = np.arange(window, len(co2) - horizon + 1)
train, test = origins + horizon <= cut, origins >= cut
scaler = WindowScaler.fit(co2[:cut], mode="window")  # each window by its own mean and scale
x_tr, y_tr, _ = scaler.transform(x[train], y[train])
x_te, _, stats = scaler.transform(x[test])

model = M.sequential([M.GRU(32), M.Dense(horizon)])
params, history = keras.fit(model, x_tr, y_tr, loss="mse", epochs=60, lr=3e-3,
                            validation_split=0.1, callbacks=[keras.EarlyStopping(patience=10)])
pred = scaler.inverse(keras.predict(model, params, x_te)[..., None], stats)[..., 0]
rmse = lambda forecast: np.sqrt(np.mean((forecast - y[test, :, 0]) ** 2))  # noqa: E731
# baselines: the last value seen (persistence), the same month a year before (seasonal naive)
print(f"CO2, 12 months ahead: test RMSE {rmse(pred):.3f} ppm (persistence "
      f"{rmse(x[test, -1:, 0]):.3f}, seasonal naive {rmse(x[test, -12:, 0]):.3f})")
M.save_model("co2-model", model, params, preprocessing={"scaler": scaler.to_dict()})
