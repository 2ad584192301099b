"""The one digest of the package: SHA-256, of bytes, of a file, of a set of arrays.

Every file this package writes and later trusts is checked against a digest from here (the
checkpoint header, the model directory's file table, the arrays of an Orbax checkpoint, the
fingerprint processes compare before a multi-process resume), and the kernels' build cache is
keyed by one, so there is one definition of what is hashed and how. It imports nothing of the
package: the lowest floor (the kernels) may use it; :mod:`jaxrnn.io.digest` re-exports it.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np

_BLOCK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    """Hex SHA-256 of ``data``."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, *, limit: int | None = None) -> str:
    """Hex SHA-256 of the file at ``path``, read in blocks; at most ``limit`` bytes are read
    (the size a table promised: a file that grew, or a device that never ends, costs no more)."""
    h = hashlib.sha256()
    left = limit
    with open(path, "rb") as f:
        while left is None or left > 0:
            block = f.read(_BLOCK if left is None else min(_BLOCK, left))
            if not block:
                break
            h.update(block)
            if left is not None:
                left -= len(block)
    return h.hexdigest()


def sha256_arrays(arrays: dict) -> str:
    """Hex SHA-256 over ``{"a0": array, "a1": ...}`` in index order: each array's name, dtype
    (``str`` and ``name``: ``bfloat16``'s ``dtype.str`` alone is ambiguous), shape and bytes."""
    h = hashlib.sha256()
    for name in sorted(arrays, key=lambda n: int(n[1:])):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{a.dtype.str}:{a.dtype.name}:{a.shape};".encode())
        h.update(a.tobytes())
    return h.hexdigest()


__all__ = ["sha256_bytes", "sha256_file", "sha256_arrays"]
