"""Checkpoints: parameters, optimiser state, step, RNG key and data position, written atomically.

Format: one file, ``checkpoint.msgpack`` in a directory, holding a small header
(``MAGIC`` + SHA-256 of the body) and a body serialised with ``flax.serialization`` (msgpack):
``{"format", "state": {params, opt_state, step, key_data}, "key_impl", "data_position",
"extra"}``. The PRNG key is stored as its raw ``key_data`` plus the implementation name, since
typed keys are not plain arrays.

Atomicity (a crash at any moment leaves a loadable checkpoint):
  1. the new file is written to a temporary file in the same directory, flushed and fsync-ed;
  2. the current ``checkpoint.msgpack`` (the last good one) is renamed to
     ``checkpoint.prev.msgpack`` with ``os.replace``;
  3. the temporary file is renamed to ``checkpoint.msgpack`` with ``os.replace``, and the
     directory is fsync-ed.
Each rename is atomic on POSIX. If a failure happens before 2, the old files are untouched; between
2 and 3, ``checkpoint.prev.msgpack`` holds the last good state and :func:`load_checkpoint` falls
back to it (as it does when the newest file fails its checksum).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import serialization

from jaxrnn.train.step import TrainState

LATEST = "checkpoint.msgpack"
PREVIOUS = "checkpoint.prev.msgpack"
MAGIC = b"JAXRNN-CKPT-1\n"
FORMAT = 1


class CheckpointError(ValueError):
    """A checkpoint cannot be read, or does not match the state it is loaded into."""


class Checkpoint(NamedTuple):
    """What :func:`load_checkpoint` returns.

    Attributes:
      state: the restored :class:`~jaxrnn.train.TrainState`.
      data_position: ``{"epoch", "batch_index", "seed"}`` (or None if none was saved).
      extra: the ``extra`` dict saved with it (JSON-able values and pytrees restored against
        ``extra_target`` when given), or ``{}``.
      path: the file it was read from.
    """

    state: TrainState
    data_position: dict | None
    extra: dict
    path: str


def _state_dict(state: TrainState) -> dict:
    if not isinstance(state, TrainState):
        raise TypeError(f"state: expected a TrainState, got {type(state).__name__}")
    return {
        "params": serialization.to_state_dict(state.params),
        "opt_state": serialization.to_state_dict(state.opt_state),
        "step": np.asarray(state.step),
        "key_data": np.asarray(jax.random.key_data(state.key)),
    }


def _encode(state: TrainState, data_position, extra) -> bytes:
    body = {
        "format": FORMAT,
        "state": _state_dict(state),
        "key_impl": str(jax.random.key_impl(state.key)),
        "data_position": None if data_position is None else {
            k: int(v) for k, v in dict(data_position._asdict() if hasattr(
                data_position, "_asdict") else data_position).items()
        },
        "extra": serialization.to_state_dict(extra or {}),
    }
    payload = serialization.msgpack_serialize(body)
    return MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload


def _decode(blob: bytes, path: str) -> dict:
    if not blob.startswith(MAGIC):
        raise CheckpointError(f"{path}: not a jaxrnn checkpoint (bad header)")
    rest = blob[len(MAGIC) :]
    digest, sep, payload = rest.partition(b"\n")
    if not sep or hashlib.sha256(payload).hexdigest().encode() != digest:
        raise CheckpointError(f"{path}: checksum mismatch (truncated or corrupted file)")
    body = serialization.msgpack_restore(payload)
    if body.get("format") != FORMAT:
        raise CheckpointError(f"{path}: unsupported checkpoint format {body.get('format')!r}")
    return body


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # e.g. platforms without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _write_file(path: str, data: bytes) -> None:
    """Write ``data`` to a fresh temporary file next to ``path`` and fsync it; then keep the
    current checkpoint as the previous one and move the new file into place. On any failure
    before the renames the temporary file is removed and the existing files are untouched."""
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".checkpoint-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        latest = os.path.join(directory, LATEST)
        if os.path.exists(latest):
            os.replace(latest, os.path.join(directory, PREVIOUS))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)


def save_checkpoint(
    directory: str | os.PathLike,
    state: TrainState,
    *,
    data_position=None,
    extra: dict | None = None,
) -> str:
    """Save ``state`` (and where the data iterator stands, and ``extra``) atomically.

    Args:
      directory: created if missing.
      state: a :class:`~jaxrnn.train.TrainState`.
      data_position: a :class:`~jaxrnn.data.DataPosition` or dict ``{epoch, batch_index, seed}``.
      extra: a dict of msgpack-able values or pytrees of arrays (e.g. history as a JSON string,
        the best parameters for early stopping).

    Returns:
      The path of the new checkpoint file.
    """
    directory = os.fspath(directory)
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise CheckpointError(f"directory: {directory!r} exists and is not a directory")
    os.makedirs(directory, exist_ok=True)
    blob = _encode(state, data_position, extra)
    path = os.path.join(directory, LATEST)
    _write_file(path, blob)
    return path


def latest_checkpoint(directory: str | os.PathLike) -> str | None:
    """The newest checkpoint file in ``directory``, or None."""
    directory = os.fspath(directory)
    for name in (LATEST, PREVIOUS):
        p = os.path.join(directory, name)
        if os.path.isfile(p):
            return p
    return None


def _flat(tree, prefix=""):
    """``{path: leaf}`` of a nested state dict; empty dicts and None are leaves too."""
    if isinstance(tree, dict) and tree:
        out = {}
        for k, v in tree.items():
            out.update(_flat(v, f"{prefix}/{k}"))
        return out
    return {prefix or "/": tree}


def _describe(leaf) -> str:
    if leaf is None:
        return "None"
    if isinstance(leaf, dict):
        return "{}"
    if not (hasattr(leaf, "shape") and hasattr(leaf, "dtype")):  # e.g. jax.ShapeDtypeStruct
        leaf = np.asarray(leaf)
    return f"{np.dtype(leaf.dtype)}{list(leaf.shape)}"


def _check_match(expected: dict, got: dict, what: str, path: str) -> None:
    fe, fg = _flat(expected), _flat(got)
    missing = sorted(set(fe) - set(fg))
    unexpected = sorted(set(fg) - set(fe))
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: the saved {what} does not match the target structure; "
            f"missing in checkpoint: {missing[:8]}, not in target: {unexpected[:8]}"
        )
    for k in fe:
        de, dg = _describe(fe[k]), _describe(fg[k])
        if de != dg:
            raise CheckpointError(
                f"{path}: {what}{k}: expected {de} (from the target), got {dg} in the checkpoint"
            )


def _restore(body: dict, target: TrainState, extra_target, path: str) -> Checkpoint:
    saved = body["state"]
    expected = _state_dict(target)
    _check_match(expected, saved, "state", path)
    key = jax.random.wrap_key_data(jnp.asarray(saved["key_data"]), impl=body["key_impl"])
    state = TrainState(
        params=serialization.from_state_dict(target.params, saved["params"]),
        opt_state=serialization.from_state_dict(target.opt_state, saved["opt_state"]),
        step=jnp.asarray(saved["step"]),
        key=key,
    )
    state = jax.tree_util.tree_map(
        lambda a: jnp.asarray(a) if isinstance(a, np.ndarray) else a, state
    )
    extra = body.get("extra") or {}
    if extra_target is not None:
        restored = dict(extra)
        for name, tgt in extra_target.items():
            if name not in extra:
                raise CheckpointError(f"{path}: extra[{name!r}] was not saved")
            _check_match(serialization.to_state_dict(tgt), extra[name], f"extra[{name!r}]", path)
            restored[name] = jax.tree_util.tree_map(
                jnp.asarray, serialization.from_state_dict(tgt, extra[name])
            )
        extra = restored
    return Checkpoint(state, body.get("data_position"), extra, path)


def load_checkpoint(
    directory: str | os.PathLike,
    target: TrainState,
    *,
    extra_target: dict[str, Any] | None = None,
) -> Checkpoint:
    """Load the newest readable checkpoint in ``directory`` into the structure of ``target``.

    Args:
      directory: where :func:`save_checkpoint` wrote.
      target: a :class:`~jaxrnn.train.TrainState` of the same structure (e.g. a fresh
        ``init_train_state``); its values are not used.
      extra_target: ``{name: pytree}`` for entries of ``extra`` to restore as pytrees.

    Falls back (with a warning) to the previous checkpoint when the newest one is unreadable.

    Raises:
      FileNotFoundError: no checkpoint in ``directory``.
      CheckpointError: unreadable files, or a structure/shape/dtype mismatch with ``target``
        (naming the first differing entry).
    """
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"checkpoint directory: {directory!r} does not exist or is not a "
                                f"directory")
    candidates = [os.path.join(directory, n) for n in (LATEST, PREVIOUS)]
    candidates = [p for p in candidates if os.path.isfile(p)]
    if not candidates:
        raise FileNotFoundError(
            f"checkpoint directory: no checkpoint in {directory!r} (expected {LATEST})"
        )
    errors = []
    for p in candidates:
        try:
            with open(p, "rb") as f:
                body = _decode(f.read(), p)
        except (CheckpointError, ValueError, OSError) as e:
            errors.append(str(e))
            continue
        if errors:
            warnings.warn(f"newest checkpoint unreadable ({errors[0]}); loaded {p}", stacklevel=2)
        return _restore(body, target, extra_target, p)
    raise CheckpointError("no readable checkpoint: " + "; ".join(errors))




# --------------------------------------------------------------------------- trained models

def save_params(path: str | os.PathLike, params, config: dict | None = None) -> str:
    """Save trained parameters and a JSON-able ``config`` (how to rebuild the model) to one
    file, atomically (temporary file, fsync, ``os.replace``). Returns the path."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    body = {"format": FORMAT, "config": json.dumps(config or {}),
            "params": serialization.to_state_dict(params)}
    payload = serialization.msgpack_serialize(body)
    blob = MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".params-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)
    return path


def read_params_config(path: str | os.PathLike) -> dict:
    """The ``config`` stored by :func:`save_params` (to rebuild the model before loading)."""
    return json.loads(_read_params_body(path)["config"])


def _read_params_body(path) -> dict:
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"model file: {path!r} does not exist (train first)")
    with open(path, "rb") as f:
        return _decode(f.read(), path)


def load_params(path: str | os.PathLike, target):
    """Parameters saved by :func:`save_params`, restored into the structure of ``target``
    (checked leaf by leaf, as :func:`load_checkpoint` does). ``target`` may hold
    ``jax.ShapeDtypeStruct`` leaves (``jax.eval_shape(model.init, key)``)."""
    body = _read_params_body(path)
    _check_match(serialization.to_state_dict(target), body["params"], "params", os.fspath(path))
    return jax.tree_util.tree_map(jnp.asarray,
                                  serialization.from_state_dict(target, body["params"]))


__all__ = [
    "Checkpoint",
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "latest_checkpoint",
    "save_params",
    "load_params",
    "read_params_config",
    "LATEST",
    "PREVIOUS",
]
