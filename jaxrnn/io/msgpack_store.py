"""The ``msgpack`` store: one file per checkpoint, written atomically, the previous one kept.

Format: ``checkpoint.msgpack`` in a directory, holding a small header (``MAGIC`` + SHA-256 of
the body) and the body of :mod:`jaxrnn.io.checkpoint` serialised with ``flax.serialization``.

Writing (a crash at any moment leaves the last readable checkpoint loadable):
  1. stale temporary files of saves that were killed are removed (their writer's process is
     gone; the writer's pid is part of the name);
  2. the new file is written to a temporary file in the same directory, flushed and fsync-ed;
  3. the current ``checkpoint.msgpack`` is *verified* (header and checksum); only a readable one
     is renamed to ``checkpoint.prev.msgpack`` with ``os.replace``. An unreadable newest file is
     never rotated over the previous one: the previous one stays the last good state;
  4. the temporary file is renamed to ``checkpoint.msgpack`` with ``os.replace``, and the
     directory is fsync-ed.
Each rename is atomic on POSIX. A failure before 3 leaves the old files untouched; between 3 and
4, ``checkpoint.prev.msgpack`` holds the last good state and ``load`` (and ``latest``) fall back
to it, as they do when the newest file fails its checksum.
"""

from __future__ import annotations

import os
import warnings

from flax import serialization

from jaxrnn.digest import sha256_bytes
from jaxrnn.io import checkpoint as content
from jaxrnn.io.checkpoint import Checkpoint, CheckpointError
from jaxrnn.io.files import as_path, atomic_write, read_regular, remove_stale_temporaries
from jaxrnn.io.store import register

LATEST = "checkpoint.msgpack"
PREVIOUS = "checkpoint.prev.msgpack"
MAGIC = b"JAXRNN-CKPT-1\n"
TMP_PREFIX = ".checkpoint-"

_atomic_write = atomic_write  # the writer (a test kills a process inside it)


def _frame(body: dict) -> bytes:
    """Header (magic, SHA-256 of the payload) + msgpack payload: the one file format."""
    payload = serialization.msgpack_serialize(body)
    return MAGIC + sha256_bytes(payload).encode() + b"\n" + payload


def _decode(blob: bytes, path: str) -> dict:
    if not blob.startswith(MAGIC):
        raise CheckpointError(f"{path}: not a jaxrnn checkpoint (bad header)")
    digest, sep, payload = blob[len(MAGIC):].partition(b"\n")
    if not sep or sha256_bytes(payload).encode() != digest:
        raise CheckpointError(f"{path}: checksum mismatch (truncated or corrupted file)")
    return content.check_format(serialization.msgpack_restore(payload), path)


def _read(path: str) -> dict:
    """The decoded body of ``path``; CheckpointError when it cannot be read or verified."""
    try:
        blob = read_regular(path, what="checkpoint")
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot be read ({e})") from e
    try:
        return _decode(blob, path)
    except CheckpointError:
        raise
    except Exception as e:  # msgpack errors on a body whose checksum matched (foreign file)
        raise CheckpointError(f"{path}: unreadable body ({type(e).__name__}: {e})") from e


def _readable(path: str) -> bool:
    try:
        _read(path)
    except CheckpointError:
        return False
    return True


def _rotate(directory: str) -> None:
    """Keep the current newest checkpoint as the previous one, but only if it reads: an
    unreadable newest file must never replace a good previous one."""
    latest = os.path.join(directory, LATEST)
    if not os.path.exists(latest):
        return
    if _readable(latest):
        os.replace(latest, os.path.join(directory, PREVIOUS))
    else:
        warnings.warn(f"{latest} is unreadable; it is overwritten and {PREVIOUS} is kept",
                      stacklevel=4)


@register
class MsgpackStore:
    """One file, ``checkpoint.msgpack`` (and ``checkpoint.prev.msgpack``); see the module."""

    name = "msgpack"

    def save(self, directory, state, *, data_position=None, extra=None) -> str:
        """Save ``state`` (and where the data iterator stands, and ``extra``) atomically.

        Args:
          directory: created if missing.
          state: a :class:`~jaxrnn.train.TrainState`.
          data_position: a :class:`~jaxrnn.data.DataPosition` or dict
            ``{epoch, batch_index, seed}``.
          extra: a dict of JSON-able values (history, counters, None) or pytrees of arrays
            (the best parameters for early stopping, a carry); see :mod:`jaxrnn.io.checkpoint`.

        Returns:
          The path of the new checkpoint file.
        """
        directory = content.check_directory(directory)
        os.makedirs(directory, exist_ok=True)
        blob = _frame(content.body(state, data_position, extra))
        remove_stale_temporaries(directory)
        path = os.path.join(directory, LATEST)
        _atomic_write(path, blob, prefix=TMP_PREFIX, before_replace=lambda: _rotate(directory))
        return path

    def latest(self, directory) -> str | None:
        """The newest *readable* checkpoint file in ``directory`` (header and checksum
        verified), or None when there is none."""
        directory = as_path(directory, "directory")
        for name in (LATEST, PREVIOUS):
            p = os.path.join(directory, name)
            if os.path.isfile(p) and _readable(p):
                return p
        return None

    def load(self, directory, target, *, extra_target=None) -> Checkpoint:
        """Load the newest readable checkpoint in ``directory`` into the structure of
        ``target``.

        Args:
          directory: where :meth:`save` wrote.
          target: a :class:`~jaxrnn.train.TrainState` of the same structure (e.g. a fresh
            ``init_train_state``); its values are not used.
          extra_target: ``{name: pytree}`` for entries of ``extra`` to restore as pytrees (an
            entry saved as None stays None).

        Falls back (with a warning) to the previous checkpoint when the newest one is
        unreadable.

        Raises:
          TypeError: ``directory`` is not a path, ``target`` not a TrainState, ``extra_target``
            not a dict.
          FileNotFoundError: no checkpoint in ``directory``.
          CheckpointError: unreadable files, or a structure/shape/dtype mismatch with
            ``target`` (naming the first differing entry).
        """
        directory, extra_target = content.check_load_arguments(directory, target, extra_target)
        candidates = [os.path.join(directory, n) for n in (LATEST, PREVIOUS)]
        candidates = [p for p in candidates if os.path.lexists(p)]
        if not candidates:
            raise FileNotFoundError(
                f"checkpoint directory: no checkpoint in {directory!r} (expected {LATEST})"
            )
        errors = []
        for p in candidates:
            try:
                body = _read(p)
            except CheckpointError as e:
                errors.append(str(e))
                continue
            if errors:
                warnings.warn(f"newest checkpoint unreadable ({errors[0]}); loaded {p}",
                              stacklevel=2)
            return content.restore(body, target, extra_target, p)
        raise CheckpointError("no readable checkpoint: " + "; ".join(errors))


_STORE = MsgpackStore()
save_checkpoint = _STORE.save
load_checkpoint = _STORE.load
latest_checkpoint = _STORE.latest

__all__ = ["MsgpackStore", "save_checkpoint", "load_checkpoint", "latest_checkpoint",
           "LATEST", "PREVIOUS"]
