"""The Japanese vowels speaker-recognition set (Kudo, Toyama & Shimbo 1999), via sktime.

Nine male speakers uttered the vowels /ae/; each utterance is a sequence of 7-29 frames of 12
LPC cepstrum coefficients. 270 utterances train (30 per speaker), 370 test. The data ship inside
``sktime`` (``sktime.datasets.load_japanese_vowels``); nothing is downloaded. sktime was chosen
over aeon as the lighter install here (aeon pulls numba and would pin numpy down).

Reference: M. Kudo, J. Toyama, M. Shimbo, "Multidimensional curve classification using
passing-through regions", Pattern Recognition Letters 20 (1999).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

from jaxrnn.data.deps import require


class SequenceSplit(NamedTuple):
    sequences: list[np.ndarray]  # N arrays (T_i, F) float32
    labels: np.ndarray  # (N,) int32 class ids 0..C-1


class SequenceData(NamedTuple):
    name: str
    train: SequenceSplit
    test: SequenceSplit
    classes: tuple[str, ...]


def stack_channels(rows: Sequence[Sequence[Sequence[float]]]) -> list[np.ndarray]:
    """Turn ``rows[i][c]`` (sample ``i``, channel ``c``: a 1-D series) into arrays ``(T_i, C)``.

    Raises:
      ValueError: the channels of one sample differ in length.
    """
    out = []
    for i, channels in enumerate(rows):
        series = [np.asarray(c, np.float32).reshape(-1) for c in channels]
        lengths = {len(s) for s in series}
        if len(lengths) != 1:
            raise ValueError(f"rows[{i}]: channels must have equal lengths, got {sorted(lengths)}")
        out.append(np.stack(series, axis=-1))
    return out


def encode_labels(train_labels, test_labels) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    """Map label strings to ids 0..C-1, classes sorted (numerically where they are numbers)."""
    names = sorted({str(v) for v in list(train_labels) + list(test_labels)},
                   key=lambda s: (0, int(s), s) if s.isdigit() else (1, 0, s))
    index = {n: i for i, n in enumerate(names)}
    enc = lambda ys: np.asarray([index[str(v)] for v in ys], np.int32)
    return enc(train_labels), enc(test_labels), tuple(names)


def load_japanese_vowels() -> SequenceData:
    """The official 270/370 split, sequences ``(T_i, 12)`` with ``T_i`` in 7..29."""
    require("sktime", purpose="the speech task (Japanese vowels)")
    from sktime.datasets import load_japanese_vowels as _load

    parts = {}
    for split in ("train", "test"):
        frame, y = _load(split=split, return_X_y=True)  # nested frame: one Series per cell
        rows = [[frame.iloc[i, c] for c in range(frame.shape[1])] for i in range(frame.shape[0])]
        parts[split] = (stack_channels(rows), list(y))
    ytr, yte, classes = encode_labels(parts["train"][1], parts["test"][1])
    return SequenceData(
        "japanese-vowels",
        SequenceSplit(parts["train"][0], ytr),
        SequenceSplit(parts["test"][0], yte),
        classes,
    )


__all__ = ["SequenceSplit", "SequenceData", "stack_channels", "encode_labels",
           "load_japanese_vowels"]
