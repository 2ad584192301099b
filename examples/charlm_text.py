"""A character language model of a text, then sampling: scikit-learn's dataset descriptions.

Run: python examples/charlm_text.py
"""
import glob
import math
import os

import numpy as np
import sklearn

from jaxrnn import keras
from jaxrnn import models as M
from jaxrnn.data import char_vocab, encode_chars

folder = os.path.join(os.path.dirname(sklearn.__file__), "datasets", "descr")
text = "\n".join(open(f, encoding="utf-8").read() for f in sorted(glob.glob(folder + "/*.rst")))
open("descr.txt", "w", encoding="utf-8").write(text)  # the same text, for the command line
cut = int(0.9 * len(text))
vocab = char_vocab([text[:cut]])
ids = encode_chars(text, vocab)
T = 64  # windows of 64 characters; targets: the next character at every step
starts = np.arange(0, len(ids) - T - 1, T // 2)
x, y = np.stack([ids[s:s + T] for s in starts]), np.stack([ids[s + 1:s + T + 1] for s in starts])
train, held = starts + T < cut, starts >= cut
model = M.sequential([M.Embedding(len(vocab), 32), M.LSTM(128, return_sequences=True),
                      M.Dense(len(vocab))])
params, _ = keras.fit(model, x[train], y[train], epochs=8, lr=3e-3, batch_size=32)
nats = keras.evaluate(model, params, x[held], y[held])["loss"]
counts = np.bincount(ids[:cut], minlength=len(vocab)) + 1.0
unigram = -np.mean(np.log2(counts / counts.sum())[ids[cut:]])
print(f"held-out bits per character {nats / math.log(2):.3f} (unigram {unigram:.3f})")
print(keras.sample(model, params, vocab, "The dataset ", 120, temperature=0.7, top_k=10))
