"""Classify labelled sequences of different lengths (sine, square, sawtooth waves made here).

Run: python examples/classify_waves.py
"""
import numpy as np

from jaxrnn import keras
from jaxrnn import models as M

rng = np.random.default_rng(0)


def wave(kind, n):
    t = np.arange(n) * rng.uniform(0.2, 0.6) + rng.uniform(0, 6)
    clean = {"sine": np.sin(t), "square": np.sign(np.sin(t)), "saw": (t / np.pi) % 2 - 1}
    return (clean[kind] + 0.3 * rng.normal(size=n))[:, None]  # (n, 1): one feature per step


labels = rng.choice(["sine", "square", "saw"], 600)  # string labels, encoded inside fit
sequences = [wave(k, rng.integers(10, 40)) for k in labels]  # lengths 10..39, masked inside
with open("waves.csv", "w") as f:  # the same sequences in long format, for the command line
    f.write("id,t,value,label\n" + "".join(f"{i},{t},{v:.5f},{k}\n" for i, (s, k) in
                                           enumerate(zip(sequences, labels, strict=True))
                                           for t, v in enumerate(s[:, 0])))
model = M.sequential([M.LSTM(32), M.Dense(3)])
params, history = keras.fit(model, sequences[:500], labels[:500], epochs=30, lr=3e-3,
                            validation_split=0.1, callbacks=[keras.EarlyStopping(patience=5)])
logits = keras.predict(model, params, sequences[500:])
predicted = history.label_encoder.inverse_transform(logits.argmax(-1))
majority = max(np.mean(labels[500:] == k) for k in ("sine", "square", "saw"))
print(f"held-out accuracy {np.mean(np.array(predicted) == labels[500:]):.3f} on 100 waves "
      f"(majority class {majority:.3f}; best epoch {history.best_epoch})")
