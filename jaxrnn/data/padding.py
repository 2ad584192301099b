"""Padding and masks for variable-length sequences.

One convention end to end: jaxrnn's scan engine reads ``lengths`` as "the first ``lengths[b]``
steps are valid", i.e. **post**-padding, so :func:`pad_sequences` pads at the END by default
(unlike ``keras.utils.pad_sequences``, whose default ``"pre"`` puts the valid steps last: a
masked run over such a batch would read the padding and drop the data, silently).
``pad_sequences(..., return_lengths=True)`` also returns the lengths the engine expects;
``padding="pre"`` stays available for models that read no lengths, but asking for lengths with
it is refused. :func:`mask_from_lengths` can still describe a pre-padded batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_SIDES = ("pre", "post")


def pad_sequences(
    sequences: Sequence,
    maxlen: int | None = None,
    dtype="int32",
    padding: str = "post",
    truncating: str = "pre",
    value=0.0,
    *,
    return_lengths: bool = False,
):
    """Pad (and truncate) a list of sequences to one array.

    Args:
      sequences: a sequence of ``N`` sequences; each is array-like of shape ``(L_i, *S)`` with
        the same trailing shape ``S`` (scalars per step, or feature vectors).
      maxlen: output length ``T``; None means the longest ``L_i``.
      dtype: output dtype.
      padding: ``"post"`` (default) pads at the end, so the valid steps come first as the
        engine's ``lengths`` mean; ``"pre"`` pads at the start (Keras' default).
      truncating: ``"pre"`` drops the first ``L_i - T`` steps of a long sequence, ``"post"`` the
        last ones.
      value: the padding value.
      return_lengths: also return each sequence's length after truncation (only with
        ``padding="post"``: lengths mean "valid steps at the start").

    Returns:
      ``padded`` of shape ``(N, T, *S)``; with ``return_lengths``, ``(padded, lengths)`` with
      ``lengths`` int32 ``(N,)`` holding ``min(L_i, T)``.

    Raises:
      ValueError: ``return_lengths=True`` with ``padding="pre"``.
    """
    if padding not in _SIDES:
        raise ValueError(f"padding: expected 'pre' or 'post', got {padding!r}")
    if truncating not in _SIDES:
        raise ValueError(f"truncating: expected 'pre' or 'post', got {truncating!r}")
    try:
        dtype = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype: expected a NumPy dtype or its name ('int32', 'float32', ...), "
                        f"got {dtype!r}") from None
    if return_lengths and padding == "pre":
        raise ValueError(
            "return_lengths: jaxrnn's lengths mean 'the first lengths[b] steps are valid' "
            "(post-padding), so they cannot describe padding='pre'; use padding='post' (the "
            "default), or keep 'pre' without lengths and build a mask with "
            "mask_from_lengths(..., padding='pre')"
        )
    if isinstance(sequences, (str, bytes)) or not hasattr(sequences, "__len__"):
        raise TypeError(
            f"sequences: expected a list of sequences, got {type(sequences).__name__}"
        )
    if maxlen is not None and (
        isinstance(maxlen, bool) or not isinstance(maxlen, (int, np.integer)) or maxlen < 0
    ):
        raise ValueError(f"maxlen: expected None or an int >= 0, got {maxlen!r}")
    arrays = []
    for i, s in enumerate(sequences):
        try:
            a = np.asarray(s)
        except Exception as e:  # ragged inner lists and the like
            raise ValueError(f"sequences[{i}]: not array-like ({e})") from None
        if a.ndim == 0:
            raise ValueError(f"sequences[{i}]: expected a sequence, got a scalar {s!r}")
        if a.dtype == object:
            raise ValueError(f"sequences[{i}]: steps have unequal shapes")
        arrays.append(a)
    trailing = {a.shape[1:] for a in arrays if len(a)}
    if len(trailing) > 1:
        raise ValueError(
            f"sequences: every step must have the same shape, got step shapes {sorted(trailing)}"
        )
    step_shape = trailing.pop() if trailing else ()
    T = max((len(a) for a in arrays), default=0) if maxlen is None else int(maxlen)
    if np.issubdtype(dtype, np.integer) and isinstance(value, float) and not value.is_integer():
        raise ValueError(f"value: {value!r} cannot be stored in integer dtype {dtype}")
    out = np.full((len(arrays), T, *step_shape), value, dtype=dtype)
    lengths = np.zeros((len(arrays),), np.int32)
    for i, a in enumerate(arrays):
        if not len(a) or T == 0:
            continue
        kept = a[-T:] if truncating == "pre" else a[:T]
        n = len(kept)
        lengths[i] = n
        if padding == "post":
            out[i, :n] = kept
        else:
            out[i, T - n :] = kept
    return (out, lengths) if return_lengths else out


def mask_from_lengths(lengths, maxlen: int, padding: str = "post") -> np.ndarray:
    """Boolean ``(N..., T)`` mask, true on valid steps: the first ``lengths`` steps for
    ``padding="post"``, the last ``lengths`` for ``"pre"``."""
    if padding not in _SIDES:
        raise ValueError(f"padding: expected 'pre' or 'post', got {padding!r}")
    lengths = np.asarray(lengths)
    if not np.issubdtype(lengths.dtype, np.integer):
        raise TypeError(f"lengths: expected integers, got dtype {lengths.dtype}")
    if lengths.size and (lengths.min() < 0 or lengths.max() > maxlen):
        raise ValueError(
            f"lengths: values must lie in [0, maxlen={maxlen}], got min {lengths.min()} "
            f"max {lengths.max()}"
        )
    t = np.arange(maxlen)
    if padding == "post":
        return t < lengths[..., None]
    return t >= (maxlen - lengths)[..., None]


def lengths_from_mask(mask) -> np.ndarray:
    """Number of valid steps per row of a boolean ``(N..., T)`` mask, int32 ``(N...)``."""
    return np.asarray(mask).astype(bool).sum(-1).astype(np.int32)


__all__ = ["pad_sequences", "mask_from_lengths", "lengths_from_mask"]
