"""Checkpoints in Orbax's format, with the guarantees of :mod:`jaxrnn.train.checkpoint`.

The same three functions (``save_checkpoint``, ``load_checkpoint``, ``latest_checkpoint``) and
the same content (the body of :mod:`jaxrnn.train.checkpoint`: state, key, data position, extra),
stored by an ``orbax.checkpoint.CheckpointManager`` as numbered step directories
``DIR/<n>/`` (``n`` counts saves, not optimiser steps, so saving twice at one step is fine): the
arrays as an Orbax ``StandardSave`` item, everything else as JSON with a SHA-256 of every array
(dtype, shape and bytes), since Orbax itself checks no content.

Guarantees, as for the msgpack file:
  * atomic: Orbax writes a step into a temporary directory and renames it when complete (a save
    that dies leaves the earlier steps untouched; its temporary directory is removed by the next
    save);
  * the last readable checkpoint is never discarded: before a save the newest step is verified
    (read back, checksum compared) and deleted if unreadable, and Orbax deletes the oldest of
    the two kept steps only after the new one is committed;
  * :func:`load_checkpoint` and :func:`latest_checkpoint` take the newest step that reads and
    verifies, falling back (with a warning) to the one before;
  * resume is bit-exact (arrays stored in their dtype, restored exactly).

Orbax is imported only when these functions are called (it takes seconds to import).
"""

from __future__ import annotations

import hashlib
import os
import warnings

import numpy as np

from jaxrnn.train import checkpoint as _ck
from jaxrnn.train.checkpoint import Checkpoint, CheckpointError

KEEP = 2  # steps kept: the newest and the last one before it


def _ocp():
    import orbax.checkpoint as ocp

    return ocp


def _manager(directory: str):
    ocp = _ocp()
    options = ocp.CheckpointManagerOptions(max_to_keep=KEEP, create=True,
                                           enable_async_checkpointing=False,
                                           cleanup_tmp_directories=True)
    return ocp.CheckpointManager(os.path.abspath(directory), options=options)


def _is_array(x) -> bool:
    return isinstance(x, (np.ndarray, np.generic)) or (hasattr(x, "shape") and
                                                        hasattr(x, "dtype"))


def _split(body: dict) -> tuple[dict, dict]:
    """``(skeleton, arrays)``: the body with every array replaced by ``{"__array__": i}`` (JSON),
    and ``{"a<i>": array}`` (for Orbax)."""
    arrays = {}

    def walk(tree):
        if isinstance(tree, dict):
            return {str(k): walk(v) for k, v in tree.items()}
        if _is_array(tree):
            name = f"a{len(arrays)}"
            arrays[name] = np.asarray(tree)
            return {"__array__": name}
        return tree

    return walk(body), arrays


def _join(skeleton, arrays: dict):
    if isinstance(skeleton, dict):
        if set(skeleton) == {"__array__"}:
            return np.asarray(arrays[skeleton["__array__"]])
        return {k: _join(v, arrays) for k, v in skeleton.items()}
    return skeleton


def _digest(arrays: dict) -> str:
    h = hashlib.sha256()
    for name in sorted(arrays, key=lambda n: int(n[1:])):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{a.dtype.str}:{a.shape};".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def _step_path(directory: str, step: int) -> str:
    return os.path.join(directory, str(step))


def _read(manager, directory: str, step: int) -> dict:
    """The verified body of ``step``; CheckpointError if it cannot be read or fails its
    checksum."""
    ocp = _ocp()
    path = _step_path(directory, step)
    try:
        meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        arrays = manager.restore(step, args=ocp.args.Composite(
            arrays=ocp.args.StandardRestore()))["arrays"]
    except Exception as e:  # Orbax/TensorStore raise many kinds for a damaged directory
        raise CheckpointError(f"{path}: unreadable ({type(e).__name__}: {e})") from e
    arrays = {k: np.asarray(v) for k, v in dict(arrays).items()}
    if not isinstance(meta, dict) or "sha256" not in meta or "body" not in meta:
        raise CheckpointError(f"{path}: not a jaxrnn checkpoint (no checksum in its metadata)")
    if _digest(arrays) != meta["sha256"]:
        raise CheckpointError(f"{path}: checksum mismatch (truncated or corrupted arrays)")
    body = _join(meta["body"], arrays)
    if body.get("format") != _ck.FORMAT:
        raise CheckpointError(f"{path}: unsupported checkpoint format {body.get('format')!r}")
    return body


def _readable(manager, directory, step) -> bool:
    try:
        _read(manager, directory, step)
    except CheckpointError:
        return False
    return True


def save_checkpoint(directory, state, *, data_position=None, extra=None) -> str:
    """As :func:`jaxrnn.train.checkpoint.save_checkpoint`, in Orbax's format; returns the new
    step directory."""
    directory = _ck._check_directory(directory)
    body = _ck._body(state, data_position, extra)
    skeleton, arrays = _split(body)
    ocp = _ocp()
    manager = _manager(directory)
    try:
        steps = sorted(manager.all_steps())
        if steps and not _readable(manager, directory, steps[-1]):
            warnings.warn(f"{_step_path(directory, steps[-1])} is unreadable; it is deleted "
                          f"and the step before it is kept", stacklevel=2)
            manager.delete(steps[-1])
            steps = steps[:-1]
        step = steps[-1] + 1 if steps else 0
        manager.save(step, args=ocp.args.Composite(
            arrays=ocp.args.StandardSave(arrays),
            meta=ocp.args.JsonSave({"body": skeleton, "sha256": _digest(arrays)})))
        manager.wait_until_finished()
    finally:
        manager.close()
    return _step_path(directory, step)


def _steps(directory: str):
    if not os.path.isdir(directory):
        return None, []
    manager = _manager(directory)
    return manager, sorted(manager.all_steps(), reverse=True)


def latest_checkpoint(directory) -> str | None:
    """The newest step directory that reads and verifies, or None."""
    directory = _ck._as_path(directory, "directory")
    manager, steps = _steps(directory)
    try:
        for step in steps:
            if _readable(manager, directory, step):
                return _step_path(directory, step)
        return None
    finally:
        if manager is not None:
            manager.close()


def load_checkpoint(directory, target, *, extra_target=None) -> Checkpoint:
    """As :func:`jaxrnn.train.checkpoint.load_checkpoint`, from Orbax's format."""
    directory = _ck._as_path(directory, "directory")
    _ck._check_state(target, "target")
    extra_target = _ck._check_dict(extra_target, "extra_target")
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"checkpoint directory: {directory!r} does not exist or is not a "
                                f"directory")
    manager, steps = _steps(directory)
    try:
        if not steps:
            raise FileNotFoundError(f"checkpoint directory: no checkpoint in {directory!r} "
                                    f"(expected Orbax step directories)")
        errors = []
        for step in steps:
            try:
                body = _read(manager, directory, step)
            except CheckpointError as e:
                errors.append(str(e))
                continue
            if errors:
                warnings.warn(f"newest checkpoint unreadable ({errors[0]}); loaded "
                              f"{_step_path(directory, step)}", stacklevel=2)
            return _ck._restore(body, target, extra_target, _step_path(directory, step))
        raise CheckpointError("no readable checkpoint: " + "; ".join(errors))
    finally:
        manager.close()


__all__ = ["save_checkpoint", "load_checkpoint", "latest_checkpoint"]
