"""What a checkpoint holds, whatever store writes it: parameters, optimiser state, step, RNG key,
where the data iterator stands, and ``extra``.

The *body* is a dict ``{"format", "state": {params, opt_state, step, key_data}, "key_impl",
"data_position", "extra", "extra_kinds"}``. The PRNG key is stored as its raw ``key_data`` plus
the implementation name, since typed keys are not plain arrays.

``extra`` is encoded here, not by callers: each entry is either JSON-able Python (dicts, lists,
numbers, strings, None: stored as JSON text and returned as such) or a pytree of arrays (stored as
a state dict; returned raw, or restored against ``extra_target``). ``extra_kinds`` records which.

A train state is any ``NamedTuple`` with the fields ``(params, opt_state, step, key)``
(:class:`jaxrnn.train.TrainState`); it is restored as ``target._replace(...)``, so this module
needs nothing from the training code.
"""

from __future__ import annotations

import json
import os
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from jaxrnn.io.files import as_path

FORMAT = 1
STATE_FIELDS = ("params", "opt_state", "step", "key")


class CheckpointError(ValueError):
    """A checkpoint cannot be read, or does not match the state it is loaded into."""


class Checkpoint(NamedTuple):
    """What a store's ``load`` returns.

    Attributes:
      state: the restored train state (of ``target``'s type).
      data_position: ``{"epoch", "batch_index", "seed"}`` (or None if none was saved).
      extra: the ``extra`` dict saved with it: JSON-able entries as they were saved (tuples
        come back as lists), pytrees restored against ``extra_target`` when given (else raw
        state dicts of arrays), or ``{}``.
      path: the file or directory it was read from.
    """

    state: Any
    data_position: dict | None
    extra: dict
    path: str


# --------------------------------------------------------------------------- argument checks

def _serialization():
    """flax's state-dict conversion, imported on first use: a model directory (this module's
    other user) loads without it, so ``import jaxrnn`` stays light."""
    from flax import serialization

    return serialization


def check_state(state, argname: str = "state") -> None:
    if getattr(type(state), "_fields", None) != STATE_FIELDS:
        raise TypeError(
            f"{argname}: expected a TrainState (see jaxrnn.train.init_train_state), got "
            f"{type(state).__name__}"
        )


def check_dict(value, argname: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise TypeError(
            f"{argname}: expected None or a dict with str keys, got {type(value).__name__}"
        )
    return value


def check_directory(directory) -> str:
    directory = as_path(directory, "directory")
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise CheckpointError(f"directory: {directory!r} exists and is not a directory")
    return directory


def check_load_arguments(directory, target, extra_target) -> tuple[str, dict]:
    directory = as_path(directory, "directory")
    check_state(target, "target")
    extra_target = check_dict(extra_target, "extra_target")
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"checkpoint directory: {directory!r} does not exist or is not a "
                                f"directory")
    return directory, extra_target


# --------------------------------------------------------------------------- encoding

def state_dict(state) -> dict:
    check_state(state)
    return {
        "params": _serialization().to_state_dict(state.params),
        "opt_state": _serialization().to_state_dict(state.opt_state),
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


def encode_extra(extra: dict) -> tuple[dict, dict]:
    """``(encoded, kinds)``: JSON text for plain Python entries, state dicts for pytrees."""
    encoded, kinds = {}, {}
    for name, value in check_dict(extra, "extra").items():
        if _is_json(value):
            encoded[name], kinds[name] = json.dumps(value), "json"
        else:
            encoded[name], kinds[name] = _serialization().to_state_dict(value), "tree"
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


def encode_position(data_position) -> dict | None:
    if data_position is None:
        return None
    if not isinstance(data_position, dict) and not hasattr(data_position, "_asdict"):
        raise TypeError(
            f"data_position: expected None, a DataPosition or a dict {{epoch, batch_index, "
            f"seed}}, got {type(data_position).__name__}"
        )
    items = data_position._asdict() if hasattr(data_position, "_asdict") else data_position
    return {k: int(v) for k, v in dict(items).items()}


def body(state, data_position, extra) -> dict:
    """What a checkpoint holds, whatever the container."""
    encoded, kinds = encode_extra(extra)
    return {
        "format": FORMAT,
        "state": state_dict(state),
        "key_impl": str(jax.random.key_impl(state.key)),
        "data_position": encode_position(data_position),
        "extra": encoded,
        "extra_kinds": kinds,
    }


def check_format(body_: dict, path: str) -> dict:
    if not isinstance(body_, dict) or body_.get("format") != FORMAT:
        got = body_.get("format") if isinstance(body_, dict) else type(body_).__name__
        raise CheckpointError(f"{path}: unsupported checkpoint format {got!r}")
    return body_


# --------------------------------------------------------------------------- restoring

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


def check_match(expected: dict, got: dict, what: str, path: str) -> None:
    """``got`` (a saved state dict) has ``expected``'s entries, shapes and dtypes; else a
    CheckpointError naming the first difference."""
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


def restore_extra(body_: dict, extra_target: dict, path: str) -> dict:
    """The saved ``extra``: JSON entries as saved, pytrees restored against ``extra_target``."""
    extra = _decode_extra(body_)
    for name, tgt in extra_target.items():
        if name not in extra:
            raise CheckpointError(f"{path}: extra[{name!r}] was not saved")
        if extra[name] is None:  # saved as None (e.g. no best parameters yet)
            continue
        check_match(_serialization().to_state_dict(tgt), extra[name], f"extra[{name!r}]", path)
        extra[name] = jax.tree_util.tree_map(
            jnp.asarray, _serialization().from_state_dict(tgt, extra[name])
        )
    return extra


def restore(body_: dict, target, extra_target: dict, path: str) -> Checkpoint:
    """The :class:`Checkpoint` of a verified body, laid out like ``target``."""
    saved = body_["state"]
    check_match(state_dict(target), saved, "state", path)
    key = jax.random.wrap_key_data(jnp.asarray(saved["key_data"]), impl=body_["key_impl"])
    state = target._replace(
        params=_serialization().from_state_dict(target.params, saved["params"]),
        opt_state=_serialization().from_state_dict(target.opt_state, saved["opt_state"]),
        step=jnp.asarray(saved["step"]),
        key=key,
    )
    state = jax.tree_util.tree_map(
        lambda a: jnp.asarray(a) if isinstance(a, np.ndarray) else a, state
    )
    extra = restore_extra(body_, extra_target, path)
    return Checkpoint(state, body_.get("data_position"), extra, path)


__all__ = ["Checkpoint", "CheckpointError", "body", "restore", "check_match", "FORMAT"]
