"""A seeded, resumable, shuffling batch iterator over a dict of arrays, with optional bucketing.

The order of epoch ``e`` is a pure function of ``(seed, e)``: a permutation drawn from
``numpy.random.default_rng([seed, e])``. The iterator's whole state is therefore its
:class:`DataPosition` ``(epoch, batch_index, seed)``; saving it in a checkpoint and restoring it
resumes on exactly the batch that would have come next.

Bucketing (``bucket_boundaries``) groups examples of similar length so little compute is spent on
padding: an example of length ``L`` goes to the first bucket whose boundary is ``>= L``, batches
are drawn within a bucket, and the time axis of each batch is cut to its bucket's boundary (a
fixed set of shapes, so a jitted step compiles once per bucket, not once per batch). Data must be
post-padded (valid steps first), as :func:`jaxrnn.data.pad_sequences` gives with
``padding="post"``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import NamedTuple

import numpy as np


class DataPosition(NamedTuple):
    """Where an iterator stands: the next batch is batch ``batch_index`` of epoch ``epoch``."""

    epoch: int
    batch_index: int
    seed: int


def _check_data(data) -> int:
    if not isinstance(data, Mapping) or not data:
        raise TypeError(
            f"data: expected a non-empty dict of arrays sharing their leading axis, got "
            f"{type(data).__name__}"
        )
    sizes = {k: np.shape(v)[0] if np.ndim(v) else None for k, v in data.items()}
    if None in sizes.values() or len(set(sizes.values())) != 1:
        raise ValueError(f"data: every array must have the same leading size N, got {sizes}")
    return next(iter(sizes.values()))


def _check_int(value, argname: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{argname}: expected an int >= {minimum}, got {value!r}")
    return int(value)


class BatchIterator:
    """Batches of a dict of arrays ``{key: (N, ...)}``, reshuffled each epoch.

    Args:
      data: e.g. ``{"inputs": (N, T, F), "targets": (N,), "lengths": (N,)}``.
      batch_size: examples per batch.
      shuffle: draw a new order each epoch (False: the stored order, e.g. for evaluation).
      seed: seed of the shuffling.
      drop_remainder: drop each epoch's last incomplete batch (one shape, one compilation).
      bucket_boundaries: increasing maximum lengths of the buckets; requires
        ``data[length_key]``; the last boundary must be ``>=`` every length.
      length_key: the key holding each example's length (for bucketing).
      time_keys: keys whose axis 1 is time and gets cut to the bucket boundary; default: every
        array of rank >= 2 whose axis 1 equals that of ``data["inputs"]``.

    Iterating yields the batches from the current position to the end of the current epoch
    and advances the position (so ``for batch in it`` is one epoch). :meth:`epoch_batches`
    gives any epoch's batches without touching the position.
    """

    def __init__(
        self,
        data: Mapping[str, np.ndarray],
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        drop_remainder: bool = False,
        bucket_boundaries: Sequence[int] | None = None,
        length_key: str = "lengths",
        time_keys: Sequence[str] | None = None,
    ):
        n = _check_data(data)
        self.data = {k: np.asarray(v) for k, v in data.items()}
        self.size = n
        self.batch_size = _check_int(batch_size, "batch_size", 1)
        self.shuffle = bool(shuffle)
        self.seed = _check_int(seed, "seed", 0)
        self.drop_remainder = bool(drop_remainder)
        self.buckets = None
        if bucket_boundaries is not None:
            b = [_check_int(x, "bucket_boundaries[i]", 1) for x in bucket_boundaries]
            if not b or any(x >= y for x, y in zip(b[:-1], b[1:], strict=True)):
                raise ValueError(
                    f"bucket_boundaries: expected a non-empty increasing list, got {list(b)}"
                )
            if length_key not in self.data:
                raise ValueError(
                    f"length_key: bucketing needs data[{length_key!r}], got keys {sorted(data)}"
                )
            lengths = self.data[length_key]
            if lengths.size and lengths.max() > b[-1]:
                raise ValueError(
                    f"bucket_boundaries: the last boundary {b[-1]} is below the longest "
                    f"sequence ({lengths.max()})"
                )
            if time_keys is None:
                if "inputs" not in self.data or self.data["inputs"].ndim < 2:
                    raise ValueError(
                        "time_keys: cannot infer them without data['inputs'] of rank >= 2; "
                        "pass time_keys"
                    )
                T = self.data["inputs"].shape[1]
                time_keys = [k for k, v in self.data.items() if v.ndim >= 2 and v.shape[1] == T]
            for k in time_keys:
                if k not in self.data or self.data[k].ndim < 2:
                    raise ValueError(f"time_keys: {k!r} is not an array of rank >= 2 in data")
            self.buckets = np.asarray(b)
            self.bucket_of = np.searchsorted(self.buckets, lengths, side="left")
            self.time_keys = tuple(time_keys)
        self.epoch = 0
        self.batch_index = 0
        if self.num_batches(0) == 0:
            raise ValueError(
                f"batch_size: {batch_size} with drop_remainder leaves no batch from {n} examples"
            )

    # ------------------------------------------------------------------ order

    def _plan(self, epoch: int) -> list[tuple[np.ndarray, int | None]]:
        """The batches of ``epoch`` as ``(indices, time_cut)`` pairs."""
        rng = np.random.default_rng([self.seed, epoch])
        bs = self.batch_size
        if self.buckets is None:
            order = rng.permutation(self.size) if self.shuffle else np.arange(self.size)
            stop = self.size - self.size % bs if self.drop_remainder else self.size
            return [(order[i : i + bs], None) for i in range(0, stop, bs)]
        plan = []
        for b, boundary in enumerate(self.buckets):
            idx = np.flatnonzero(self.bucket_of == b)
            if self.shuffle:
                idx = rng.permutation(idx)
            stop = len(idx) - len(idx) % bs if self.drop_remainder else len(idx)
            plan += [(idx[i : i + bs], int(boundary)) for i in range(0, stop, bs)]
        if self.shuffle:
            plan = [plan[i] for i in rng.permutation(len(plan))]
        return plan

    def num_batches(self, epoch: int | None = None) -> int:
        """Batches in ``epoch`` (default: the current one)."""
        return len(self._plan(self.epoch if epoch is None else epoch))

    def _gather(self, idx: np.ndarray, cut: int | None) -> dict[str, np.ndarray]:
        out = {}
        for k, v in self.data.items():
            a = v[idx]
            if cut is not None and k in self.time_keys:
                a = a[:, :cut]
            out[k] = a
        return out

    def epoch_batches(self, epoch: int, start: int = 0) -> Iterator[dict[str, np.ndarray]]:
        """The batches of ``epoch`` from batch ``start`` on; does not move the position."""
        for idx, cut in self._plan(epoch)[start:]:
            yield self._gather(idx, cut)

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        plan = self._plan(self.epoch)
        while self.batch_index < len(plan):
            idx, cut = plan[self.batch_index]
            self.batch_index += 1
            yield self._gather(idx, cut)
        self.epoch += 1
        self.batch_index = 0

    def __len__(self) -> int:
        return self.num_batches()

    # ------------------------------------------------------------------ position

    @property
    def position(self) -> DataPosition:
        return DataPosition(self.epoch, self.batch_index, self.seed)

    def set_position(self, position) -> None:
        """Restore a :class:`DataPosition` (or a dict/tuple with the same fields)."""
        if isinstance(position, Mapping):
            position = DataPosition(**{k: int(position[k]) for k in DataPosition._fields})
        position = DataPosition(*(int(x) for x in position))
        if position.seed != self.seed:
            raise ValueError(
                f"position: saved with seed {position.seed}, but this iterator has seed "
                f"{self.seed}"
            )
        if position.epoch < 0 or not 0 <= position.batch_index <= self.num_batches(
            position.epoch
        ):
            raise ValueError(f"position: out of range for this data set, got {position}")
        self.epoch, self.batch_index = position.epoch, position.batch_index


def iterate_in_order(data: Mapping[str, np.ndarray], batch_size: int):
    """Batches in stored order, the last one possibly smaller (for evaluation and prediction)."""
    return BatchIterator(data, batch_size, shuffle=False).epoch_batches(0)


__all__ = ["BatchIterator", "DataPosition", "iterate_in_order"]
