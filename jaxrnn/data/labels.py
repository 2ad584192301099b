"""Label encoding: any labels (strings, integers, booleans) <-> class ids ``0 .. K-1``, saved.

Strings reach a jitted loss as a type error deep in tracing; the encoder turns them (and
integer labels that are not ``0 .. K-1``, such as ``{-1, 1}`` or ``{3, 7}``) into int32 class
ids before anything is traced, and maps predicted ids back. Classes are sorted, so the encoding
is a deterministic function of the set of labels seen.
"""

from __future__ import annotations

import numpy as np


def _python_label(v):
    """A NumPy scalar as its plain Python value (JSON-able, and equal to what a CSV reader
    gives back)."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    return v


class LabelEncoder:
    """``classes`` (in id order) <-> ids.

    Args:
      classes: the distinct labels, id ``k`` for ``classes[k]``.
    """

    def __init__(self, classes):
        classes = [_python_label(c) for c in classes]
        if len(set(classes)) != len(classes):
            raise ValueError(f"classes: expected distinct labels, got {classes!r}")
        for c in classes:
            if not isinstance(c, (str, int, float, bool)):
                raise TypeError(f"classes: expected strings or numbers, got "
                                f"{type(c).__name__} {c!r}")
        self.classes = classes
        self._index = {c: i for i, c in enumerate(classes)}

    @classmethod
    def fit(cls, labels, *, min_classes: int = 1, argname: str = "labels") -> LabelEncoder:
        """The sorted distinct values of ``labels`` (at least ``min_classes`` of them).

        Raises:
          ValueError: no labels, a missing label, or fewer than ``min_classes`` classes.
        """
        values = [_python_label(v) for v in np.asarray(labels, dtype=object).reshape(-1)]
        if not values:
            raise ValueError(f"{argname}: expected at least one label, got none")
        for i, v in enumerate(values):
            if v is None or (isinstance(v, float) and np.isnan(v)):
                raise ValueError(f"{argname}: missing label at position {i}")
        kinds = {type(v) is str for v in values}
        if len(kinds) > 1:
            raise ValueError(f"{argname}: expected all strings or all numbers, got a mix")
        classes = sorted(set(values))
        if len(classes) < min_classes:
            raise ValueError(
                f"{argname}: expected at least {min_classes} classes, got {len(classes)} "
                f"({', '.join(map(repr, classes))}): nothing to learn to tell apart"
            )
        return cls(classes)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def transform(self, labels, *, argname: str = "labels") -> np.ndarray:
        """Class ids ``int32`` of the shape of ``labels``.

        Raises:
          ValueError: a label that is not one of :attr:`classes`.
        """
        arr = np.asarray(labels, dtype=object)
        flat = [_python_label(v) for v in arr.reshape(-1)]
        out = np.empty(len(flat), np.int32)
        for i, v in enumerate(flat):
            k = self._index.get(v)
            if k is None:
                raise ValueError(f"{argname}: label {v!r} at position {i} is not one of the "
                                 f"{self.num_classes} classes seen in training "
                                 f"{self.classes[:10]!r}")
            out[i] = k
        return out.reshape(arr.shape)

    def inverse_transform(self, ids) -> list:
        """The labels of class ids (a flat list of Python values)."""
        ids = np.asarray(ids).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_classes):
            raise ValueError(f"ids: expected values in [0, {self.num_classes}), got "
                             f"[{ids.min()}, {ids.max()}]")
        return [self.classes[int(i)] for i in ids]

    def to_dict(self) -> dict:
        """A JSON-able description; :meth:`from_dict` rebuilds the same encoder."""
        return {"classes": list(self.classes)}

    @classmethod
    def from_dict(cls, d: dict) -> LabelEncoder:
        return cls(d["classes"])

    def __repr__(self) -> str:
        return f"LabelEncoder(classes={self.classes!r})"


__all__ = ["LabelEncoder"]
