"""Forecast a monthly series a year ahead: Mauna Loa CO2 (statsmodels), a GRU over 24 months.

Run: python examples/forecast_co2.py
"""
import numpy as np
import statsmodels.api as sm

from jaxrnn import keras
from jaxrnn import models as M
from jaxrnn.data import WindowScaler, sliding_windows

co2 = sm.datasets.co2.load_pandas().data["co2"].resample("MS").mean().interpolate().to_numpy()
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
rmse = np.sqrt(np.mean((pred - y[test, :, 0]) ** 2))
persistence = np.sqrt(np.mean((co2[origins[test] - 1, None] - y[test, :, 0]) ** 2))
seasonal = np.sqrt(np.mean((x[test, -12:, 0] - y[test, :, 0]) ** 2))  # same month last year
print(f"CO2, 12 months ahead: test RMSE {rmse:.3f} ppm (persistence {persistence:.3f}, "
      f"seasonal naive {seasonal:.3f})")
M.save_model("runs/co2-model", model, params, preprocessing={"scaler": scaler.to_dict()})
