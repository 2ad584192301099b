"""The ``orbax`` store: checkpoints in Orbax's format, with the promises of every store.

The content of :mod:`jaxrnn.io.checkpoint` (state, key, data position, extra), stored by an
``orbax.checkpoint.CheckpointManager`` as numbered step directories ``DIR/<n>/`` (``n`` counts
saves, not optimiser steps, so saving twice at one step is fine): the arrays as an Orbax
``StandardSave`` item, everything else as JSON with a SHA-256 of every array (dtype, shape and
bytes), since Orbax itself checks no content.

Promises, as for the msgpack file:
  * atomic: Orbax writes a step into a temporary directory and renames it when complete (a save
    that dies leaves the earlier steps untouched; its temporary directory is removed by the next
    save);
  * the last readable checkpoint is never discarded: before a save the newest step is verified
    (read back, checksum compared) and deleted if unreadable, and Orbax deletes the oldest of
    the two kept steps only after the new one is committed;
  * ``load`` and ``latest`` take the newest step that reads and verifies, falling back (with a
    warning) to the one before;
  * resume is bit-exact (arrays stored in their dtype, restored exactly);
  * no absolute path: Orbax writes the directory it committed to into ``commit_success.txt``;
    :func:`scrub_paths` rewrites it without the path, so a checkpoint or model directory can be
    moved and tells nothing about the machine that wrote it.

Orbax is imported only when these functions are called (it takes seconds to import).
"""

from __future__ import annotations

import os
import warnings

import numpy as np

from jaxrnn.digest import sha256_arrays
from jaxrnn.io import checkpoint as content
from jaxrnn.io.checkpoint import Checkpoint, CheckpointError
from jaxrnn.io.files import as_path
from jaxrnn.io.store import register

KEEP = 2  # steps kept: the newest and the last one before it
COMMIT_FILE = "commit_success.txt"


def _ocp():
    import orbax.checkpoint as ocp

    return ocp


def scrub_paths(root: str) -> None:
    """Rewrite every ``commit_success.txt`` under ``root`` without the absolute path Orbax put
    in it (Orbax only checks that the file exists)."""
    for folder, _, files in os.walk(root):
        if COMMIT_FILE in files:
            with open(os.path.join(folder, COMMIT_FILE), "w", encoding="utf-8") as f:
                f.write("Checkpoint commit was successful.\n")
                f.flush()
                os.fsync(f.fileno())


# --------------------------------------------------------------------------- one tree of arrays

def _checkpointer():
    # Synchronous (no background thread outlives the save), and this process alone: a model
    # directory is written by process 0 only and read by any process on its own, so Orbax's
    # barriers across the processes of a run (which would wait for the others) are off.
    import jax

    ocp = _ocp()
    me = jax.process_index()
    alone = ocp.options.MultiprocessingOptions(primary_host=me, active_processes={me})
    handler = ocp.StandardCheckpointHandler(multiprocessing_options=alone)
    return ocp, ocp.Checkpointer(handler, multiprocessing_options=alone)


def write_arrays(path: str, arrays: dict) -> None:
    """Write ``{"a0": array, ...}`` to the new directory ``path`` with Orbax (exact bits in
    each dtype), with no absolute path left in it."""
    ocp, ckptr = _checkpointer()
    try:
        ckptr.save(os.path.abspath(path), args=ocp.args.StandardSave(arrays))
    finally:
        ckptr.close()
    scrub_paths(path)


def read_arrays(path: str) -> dict:
    """The arrays :func:`write_arrays` wrote to ``path``, as NumPy arrays."""
    ocp, ckptr = _checkpointer()
    try:
        restored = ckptr.restore(os.path.abspath(path), args=ocp.args.StandardRestore())
    finally:
        ckptr.close()
    return {str(k): np.asarray(v) for k, v in dict(restored).items()}


# --------------------------------------------------------------------------- the store

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
    if sha256_arrays(arrays) != meta["sha256"]:
        raise CheckpointError(f"{path}: checksum mismatch (truncated or corrupted arrays)")
    return content.check_format(_join(meta["body"], arrays), path)


def _readable(manager, directory, step) -> bool:
    try:
        _read(manager, directory, step)
    except CheckpointError:
        return False
    return True


def _steps(directory: str):
    if not os.path.isdir(directory):
        return None, []
    manager = _manager(directory)
    return manager, sorted(manager.all_steps(), reverse=True)


@register
class OrbaxStore:
    """Orbax step directories ``DIR/<n>/``; see the module."""

    name = "orbax"

    def save(self, directory, state, *, data_position=None, extra=None) -> str:
        """As :meth:`jaxrnn.io.msgpack_store.MsgpackStore.save`, in Orbax's format; returns
        the new step directory."""
        directory = content.check_directory(directory)
        skeleton, arrays = _split(content.body(state, data_position, extra))
        ocp = _ocp()
        manager = _manager(directory)
        try:
            steps = sorted(manager.all_steps())
            if steps and not _readable(manager, directory, steps[-1]):
                warnings.warn(f"{_step_path(directory, steps[-1])} is unreadable; it is "
                              f"deleted and the step before it is kept", stacklevel=2)
                manager.delete(steps[-1])
                steps = steps[:-1]
            step = steps[-1] + 1 if steps else 0
            manager.save(step, args=ocp.args.Composite(
                arrays=ocp.args.StandardSave(arrays),
                meta=ocp.args.JsonSave({"body": skeleton, "sha256": sha256_arrays(arrays)})))
            manager.wait_until_finished()
        finally:
            manager.close()
        scrub_paths(_step_path(directory, step))
        return _step_path(directory, step)

    def latest(self, directory) -> str | None:
        """The newest step directory that reads and verifies, or None."""
        directory = as_path(directory, "directory")
        manager, steps = _steps(directory)
        try:
            for step in steps:
                if _readable(manager, directory, step):
                    return _step_path(directory, step)
            return None
        finally:
            if manager is not None:
                manager.close()

    def load(self, directory, target, *, extra_target=None) -> Checkpoint:
        """As :meth:`jaxrnn.io.msgpack_store.MsgpackStore.load`, from Orbax's format."""
        directory, extra_target = content.check_load_arguments(directory, target, extra_target)
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
                return content.restore(body, target, extra_target, _step_path(directory, step))
            raise CheckpointError("no readable checkpoint: " + "; ".join(errors))
        finally:
            manager.close()


_STORE = OrbaxStore()
save_checkpoint = _STORE.save
load_checkpoint = _STORE.load
latest_checkpoint = _STORE.latest

__all__ = ["OrbaxStore", "save_checkpoint", "load_checkpoint", "latest_checkpoint",
           "write_arrays", "read_arrays", "scrub_paths"]
