"""Checkpoints: parameters, optimiser state, step, RNG key and data position, written atomically.

Format: one file, ``checkpoint.msgpack`` in a directory, holding a small header
(``MAGIC`` + SHA-256 of the body) and a body serialised with ``flax.serialization`` (msgpack):
``{"format", "state": {params, opt_state, step, key_data}, "key_impl", "data_position",
"extra", "extra_kinds"}``. The PRNG key is stored as its raw ``key_data`` plus the
implementation name, since typed keys are not plain arrays.

``extra`` is encoded here, not by callers: each entry is either JSON-able Python (dicts, lists,
numbers, strings, None: stored as JSON text and returned as such) or a pytree of arrays (stored as
a state dict; returned raw, or restored against ``extra_target``). ``extra_kinds`` records which.

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
4, ``checkpoint.prev.msgpack`` holds the last good state and :func:`load_checkpoint` (and
:func:`latest_checkpoint`) fall back to it, as they do when the newest file fails its checksum.
"""

from __future__ import annotations

import glob
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
TMP_PREFIXES = (".checkpoint-", ".params-")


class CheckpointError(ValueError):
    """A checkpoint cannot be read, or does not match the state it is loaded into."""


class Checkpoint(NamedTuple):
    """What :func:`load_checkpoint` returns.

    Attributes:
      state: the restored :class:`~jaxrnn.train.TrainState`.
      data_position: ``{"epoch", "batch_index", "seed"}`` (or None if none was saved).
      extra: the ``extra`` dict saved with it: JSON-able entries as they were saved (tuples
        come back as lists), pytrees restored against ``extra_target`` when given (else raw
        state dicts of arrays), or ``{}``.
      path: the file it was read from.
    """

    state: TrainState
    data_position: dict | None
    extra: dict
    path: str


# --------------------------------------------------------------------------- argument checks

def _as_path(value, argname: str) -> str:
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(
            f"{argname}: expected a path (str or os.PathLike), got {type(value).__name__}"
        )
    return os.fspath(value)


def _check_state(state, argname: str = "state") -> None:
    if not isinstance(state, TrainState):
        raise TypeError(
            f"{argname}: expected a TrainState (see jaxrnn.train.init_train_state), got "
            f"{type(state).__name__}"
        )


def _check_dict(value, argname: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise TypeError(
            f"{argname}: expected None or a dict with str keys, got {type(value).__name__}"
        )
    return value


# --------------------------------------------------------------------------- encoding

def _state_dict(state: TrainState) -> dict:
    _check_state(state)
    return {
        "params": serialization.to_state_dict(state.params),
        "opt_state": serialization.to_state_dict(state.opt_state),
        "step": np.asarray(state.step),
        "key_data": np.asarray(jax.random.key_data(state.key)),
    }


def _is_json(value) -> bool:
    """Plain Python data that JSON round-trips (tuples come back as lists)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_json(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _is_json(v) for k, v in value.items())
    return False


def _encode_extra(extra: dict) -> tuple[dict, dict]:
    """``(encoded, kinds)``: JSON text for plain Python entries, state dicts for pytrees."""
    encoded, kinds = {}, {}
    for name, value in _check_dict(extra, "extra").items():
        if _is_json(value):
            encoded[name], kinds[name] = json.dumps(value), "json"
        else:
            encoded[name], kinds[name] = serialization.to_state_dict(value), "tree"
    return encoded, kinds


def _decode_extra(body: dict) -> dict:
    extra = body.get("extra") or {}
    kinds = body.get("extra_kinds")
    if kinds is None:
        # Written before extra had kinds: raw state dicts, where fit stored "nothing" as {}
        # and its history and monitor as JSON text (fit's resume reads both).
        return {name: None if isinstance(v, dict) and not v else v for name, v in extra.items()}
    return {name: json.loads(value) if kinds.get(name) == "json" else value
            for name, value in extra.items()}


def _frame(body: dict) -> bytes:
    """Header (magic, SHA-256 of the payload) + msgpack payload: the one file format."""
    payload = serialization.msgpack_serialize(body)
    return MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload


def _encode(state: TrainState, data_position, extra) -> bytes:
    return _frame(_body(state, data_position, extra))


def _body(state: TrainState, data_position, extra) -> dict:
    """What a checkpoint holds, whatever the container (this module's file, or Orbax's
    directory in :mod:`jaxrnn.train.orbax_checkpoint`)."""
    encoded, kinds = _encode_extra(extra)
    if data_position is not None and not isinstance(data_position, dict) and not hasattr(
            data_position, "_asdict"):
        raise TypeError(
            f"data_position: expected None, a DataPosition or a dict {{epoch, batch_index, "
            f"seed}}, got {type(data_position).__name__}"
        )
    body = {
        "format": FORMAT,
        "state": _state_dict(state),
        "key_impl": str(jax.random.key_impl(state.key)),
        "data_position": None if data_position is None else {
            k: int(v) for k, v in dict(data_position._asdict() if hasattr(
                data_position, "_asdict") else data_position).items()
        },
        "extra": encoded,
        "extra_kinds": kinds,
    }
    return body


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


def _read(path: str) -> dict:
    """The decoded body of ``path``; CheckpointError when it cannot be read or verified."""
    try:
        with open(path, "rb") as f:
            blob = f.read()
    except OSError as e:
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


# --------------------------------------------------------------------------- atomic write

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


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists, owned by someone else
    return True


def remove_stale_temporaries(directory: str | os.PathLike) -> list[str]:
    """Delete the temporary files of saves whose process was killed mid-write.

    A temporary file is named ``.checkpoint-<pid>-<random>.tmp`` (or ``.params-...``); it is
    stale when process ``<pid>`` no longer exists (a live writer's file is left alone). Files
    of the older naming without a pid are stale by definition (written before this scheme).
    Returns the removed paths."""
    directory = _as_path(directory, "directory")
    removed = []
    for prefix in TMP_PREFIXES:
        for path in glob.glob(os.path.join(glob.escape(directory), prefix + "*.tmp")):
            head = os.path.basename(path)[len(prefix):].split("-", 1)[0]
            if head.isdigit() and _pid_alive(int(head)) and int(head) != os.getpid():
                continue
            try:
                os.unlink(path)
                removed.append(path)
            except FileNotFoundError:  # another cleaner was first
                pass
    return removed


def _atomic_write(path: str, data: bytes, *, prefix: str, before_replace=None) -> None:
    """Write ``data`` to a temporary file next to ``path``, fsync it, call ``before_replace()``
    (the rotation), then move it into place with ``os.replace`` and fsync the directory. On any
    failure the temporary file is removed and ``path`` is untouched."""
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f"{prefix}{os.getpid()}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(directory)


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
                      stacklevel=3)


def _check_directory(directory) -> str:
    directory = _as_path(directory, "directory")
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise CheckpointError(f"directory: {directory!r} exists and is not a directory")
    return directory


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
      extra: a dict of JSON-able values (history, counters, None) or pytrees of arrays (the
        best parameters for early stopping, a carry); encoded by this module (see the module
        docstring).

    Returns:
      The path of the new checkpoint file.
    """
    directory = _check_directory(directory)
    os.makedirs(directory, exist_ok=True)
    blob = _encode(state, data_position, extra)
    remove_stale_temporaries(directory)
    path = os.path.join(directory, LATEST)
    _atomic_write(path, blob, prefix=TMP_PREFIXES[0], before_replace=lambda: _rotate(directory))
    return path


def latest_checkpoint(directory: str | os.PathLike) -> str | None:
    """The newest *readable* checkpoint file in ``directory`` (header and checksum verified),
    or None when there is none."""
    directory = _as_path(directory, "directory")
    for name in (LATEST, PREVIOUS):
        p = os.path.join(directory, name)
        if os.path.isfile(p) and _readable(p):
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


def _restore(body: dict, target: TrainState, extra_target: dict, path: str) -> Checkpoint:
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
    extra = _decode_extra(body)
    for name, tgt in extra_target.items():
        if name not in extra:
            raise CheckpointError(f"{path}: extra[{name!r}] was not saved")
        if extra[name] is None:  # saved as None (e.g. no best parameters yet)
            continue
        _check_match(serialization.to_state_dict(tgt), extra[name], f"extra[{name!r}]", path)
        extra[name] = jax.tree_util.tree_map(
            jnp.asarray, serialization.from_state_dict(tgt, extra[name])
        )
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
      extra_target: ``{name: pytree}`` for entries of ``extra`` to restore as pytrees (an
        entry saved as None stays None).

    Falls back (with a warning) to the previous checkpoint when the newest one is unreadable.

    Raises:
      TypeError: ``directory`` is not a path, ``target`` not a TrainState, ``extra_target`` not
        a dict.
      FileNotFoundError: no checkpoint in ``directory``.
      CheckpointError: unreadable files, or a structure/shape/dtype mismatch with ``target``
        (naming the first differing entry).
    """
    directory = _as_path(directory, "directory")
    _check_state(target, "target")
    extra_target = _check_dict(extra_target, "extra_target")
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
            body = _read(p)
        except CheckpointError as e:
            errors.append(str(e))
            continue
        if errors:
            warnings.warn(f"newest checkpoint unreadable ({errors[0]}); loaded {p}", stacklevel=2)
        return _restore(body, target, extra_target, p)
    raise CheckpointError("no readable checkpoint: " + "; ".join(errors))


# --------------------------------------------------------------------------- trained models

def save_params(path: str | os.PathLike, params, config: dict | None = None) -> str:
    """Save trained parameters and a JSON-able ``config`` (how to rebuild the model) to one
    file, atomically (the same temporary file, fsync, ``os.replace`` as checkpoints).
    Returns the path."""
    path = os.path.abspath(_as_path(path, "path"))
    directory = os.path.dirname(path)
    os.makedirs(directory, exist_ok=True)
    blob = _frame({"format": FORMAT, "config": json.dumps(config or {}),
                   "params": serialization.to_state_dict(params)})
    remove_stale_temporaries(directory)
    _atomic_write(path, blob, prefix=TMP_PREFIXES[1])
    return path


def read_params_config(path: str | os.PathLike) -> dict:
    """The ``config`` stored by :func:`save_params` (to rebuild the model before loading)."""
    return json.loads(_read_params_body(path)["config"])


def _read_params_body(path) -> dict:
    path = _as_path(path, "path")
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
    "remove_stale_temporaries",
    "LATEST",
    "PREVIOUS",
]
