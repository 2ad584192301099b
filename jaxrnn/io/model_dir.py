"""The model directory: a trained model's architecture, weights, preprocessing and metrics, in
one directory that any process can load, while another one saves, and that can be moved.

Layout (format ``jaxrnn.model/2``)::

    DIR/model.json        the header: format, the architecture config, the input size, the
                          caller's preprocessing and metrics (JSON), and the weights' table:
                          which version holds them, every file's size and SHA-256, and a SHA-256
                          of the arrays (every leaf's dtype, shape and bytes)
    DIR/v-000007/weights/ the params' leaves in order, written by Orbax (exact bits in each
                          dtype), never changed once a header names them

Saving writes a new version directory (under a temporary name, renamed when complete), then
replaces ``model.json`` atomically (``os.replace``): that rename is the commit. A reader reads
``model.json`` once and everything else from the version it names, so it sees the old model or
the new one, never a mix. The version before the current one is kept until the next save (a
reader that resolved it just before a save still finds it; one that loses the race reads the new
header and tries again). Writers take ``DIR/.lock``; only process 0 of a multi-process run
writes (the others return the path without touching the directory). A save that fails leaves
the directory as it was, minus its own temporary files.

Reading trusts nothing it has not checked: ``model.json`` must be a regular file of bounded
size; every weights file must be a regular file (a link to ``/dev/zero`` or a FIFO is refused at
once) of the size and SHA-256 in ``model.json`` before Orbax reads any of them, and no other file
may lie there. Paths in ``model.json`` are relative, and Orbax's record of the absolute path it
wrote to is scrubbed (:func:`jaxrnn.io.orbax_store.scrub_paths`): a directory is movable and
leaks nothing of the machine that wrote it.

This module stores configs and arrays; :func:`jaxrnn.models.save_model` and
:func:`jaxrnn.models.load_model` turn them into models.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import numpy as np

from jaxrnn.digest import sha256_arrays, sha256_file
from jaxrnn.io import orbax_store
from jaxrnn.io.files import (
    atomic_write,
    check_regular,
    fsync_dir,
    owner_pid,
    pid_alive,
    read_regular,
)

FORMAT = "jaxrnn.model/2"
LEGACY_FORMAT = "jaxrnn.model/1"  # read (checked before Orbax reads it), never written
HEADER = "model.json"
LOCK = ".lock"
WEIGHTS = "weights"
MAX_HEADER_BYTES = 64 << 20
_VERSION = re.compile(r"^v-(\d{6,})$")
_TMP_PREFIX = ".v-"  # a version being written: .v-<pid>-<random>.tmp
_HEADER_TMP = ".model-json-"
_RETRIES = 8  # reads that lost a race with as many saves in a row before giving up


class ModelFiles(NamedTuple):
    """What :func:`load` returns: the header's parts and the weights' arrays."""

    config: Any
    input_size: int | None
    arrays: dict  # {"a0": np.ndarray, ...} in leaf order
    preprocessing: dict | None
    metrics: dict | None
    directory: str


def check_path(directory) -> str:
    if not isinstance(directory, (str, os.PathLike)) or not os.fspath(directory):
        raise TypeError(f"directory: expected a path (str or os.PathLike), got {directory!r}")
    return os.path.abspath(os.fspath(directory))


def json_able(value, argname: str):
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise TypeError(f"{argname}: expected JSON-able values (str, numbers, bools, lists, "
                        f"dicts; dtypes by name, e.g. 'bfloat16'), got {value!r} ({e})") from None
    return value


def leaf_arrays(params) -> dict:
    """``{"a0": leaf, ...}``: the params' leaves in order, on the host."""
    return {f"a{i}": np.asarray(leaf)
            for i, leaf in enumerate(jax.tree_util.tree_leaves(jax.device_get(params)))}


# --------------------------------------------------------------------------- writing

def _versions(directory: str) -> list[str]:
    return sorted((n for n in os.listdir(directory) if _VERSION.match(n)),
                  key=lambda n: int(_VERSION.match(n).group(1)))


def _remove_stale(directory: str) -> None:
    """Temporary versions of writers that are gone."""
    for name in os.listdir(directory):
        if name.startswith(_TMP_PREFIX) and name.endswith(".tmp"):
            pid = owner_pid(name, _TMP_PREFIX)
            if pid is None or pid == os.getpid() or not pid_alive(pid):
                shutil.rmtree(os.path.join(directory, name), ignore_errors=True)


def _file_table(root: str) -> dict:
    """``{relative path: {"size", "sha256"}}`` of every file under ``root`` (each fsync-ed:
    the table is only written once the files are on disk)."""
    table = {}
    for folder, _, files in os.walk(root):
        for f in files:
            full = os.path.join(folder, f)
            with open(full, "rb") as fh:
                os.fsync(fh.fileno())
            table[os.path.relpath(full, root).replace(os.sep, "/")] = {
                "size": os.path.getsize(full), "sha256": sha256_file(full)}
        fsync_dir(folder)
    return dict(sorted(table.items()))


def _lock(directory: str):
    import fcntl

    fd = os.open(os.path.join(directory, LOCK), os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def _unlock(fd) -> None:
    import fcntl

    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def _write_weights(path: str, arrays: dict) -> None:
    """Write the leaves into the new directory ``path`` (a hook the tests break)."""
    orbax_store.write_arrays(path, arrays)


def save(directory, *, config, input_size, arrays: dict, preprocessing: Mapping | None = None,
         metrics: Mapping | None = None) -> str:
    """Write a new version of the model directory ``directory``; returns its absolute path.

    ``config``: the JSON-able architecture; ``arrays``: :func:`leaf_arrays` of the params;
    ``preprocessing`` and ``metrics``: JSON dicts or None. An existing directory is updated
    only if it holds a saved model (a ``model.json``) or is empty. In a multi-process run only
    process 0 writes; the others return the path at once."""
    target = check_path(directory)
    for argname, value in (("preprocessing", preprocessing), ("metrics", metrics)):
        if value is not None:
            if not isinstance(value, Mapping):
                raise TypeError(f"{argname}: expected a dict or None, got "
                                f"{type(value).__name__}")
            json_able(dict(value), argname)
    json_able(config, "config")
    if jax.process_index() != 0:
        return target  # process 0 writes the one directory of the run
    if os.path.lexists(target) and not (
        os.path.isdir(target)
        and (os.path.lexists(os.path.join(target, HEADER))
             or not [n for n in os.listdir(target) if n != LOCK])
    ):
        raise ValueError(f"directory: {target!r} exists and is not a saved model (no "
                         f"{HEADER}); refusing to replace it")
    os.makedirs(target, exist_ok=True)
    lock = _lock(target)
    try:
        _remove_stale(target)
        versions = _versions(target)
        version = f"v-{(int(_VERSION.match(versions[-1]).group(1)) + 1) if versions else 1:06d}"
        tmp = tempfile.mkdtemp(prefix=f"{_TMP_PREFIX}{os.getpid()}-", suffix=".tmp", dir=target)
        try:
            _write_weights(os.path.join(tmp, WEIGHTS), arrays)
            files = _file_table(os.path.join(tmp, WEIGHTS))
            os.rename(tmp, os.path.join(target, version))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        fsync_dir(target)
        header = {
            "format": FORMAT,
            "config": config,
            "input_size": input_size,
            "preprocessing": None if preprocessing is None else dict(preprocessing),
            "metrics": None if metrics is None else dict(metrics),
            "weights": {"store": "orbax", "path": f"{version}/{WEIGHTS}", "files": files,
                        "sha256": sha256_arrays(arrays)},
        }
        try:
            old = _read_header(target)[0]
        except (OSError, ValueError):
            old = None
        try:
            previous = old["weights"]["path"].split("/")[0]
        except (KeyError, TypeError, AttributeError):
            previous = None
        try:
            atomic_write(os.path.join(target, HEADER),
                         json.dumps(header, indent=1).encode(), prefix=_HEADER_TMP)
        except BaseException:
            shutil.rmtree(os.path.join(target, version), ignore_errors=True)
            raise
        # the commit is done: keep the new version and the one before it (a reader may be on it)
        for name in _versions(target):
            if name not in (version, previous):
                shutil.rmtree(os.path.join(target, name), ignore_errors=True)
        if isinstance(old, dict) and old.get("format") == LEGACY_FORMAT:
            for name in (WEIGHTS, "weights.msgpack", "preprocessing.json", "metrics.json"):
                path = os.path.join(target, name)
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path, ignore_errors=True)
                elif os.path.lexists(path):
                    os.unlink(path)
    finally:
        _unlock(lock)
    return target


# --------------------------------------------------------------------------- reading

def _read_header(source: str) -> tuple[dict, bytes]:
    path = os.path.join(source, HEADER)
    if not os.path.lexists(path):
        raise FileNotFoundError(f"directory: {source!r} has no {HEADER}; not a jaxrnn "
                                f"saved model (jaxrnn.models.save_model writes one)")
    blob = read_regular(path, max_size=MAX_HEADER_BYTES, what=f"directory: {HEADER} in")
    try:
        header = json.loads(blob.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"directory: {HEADER} in {source!r} is corrupt ({e})") from None
    return header, blob


def _legacy(header: dict, source: str) -> dict:
    """A ``jaxrnn.model/1`` header as this format's: the Orbax ``weights/`` of that version,
    whose ``weights_files`` table (SHA-256 by file) lets every file be checked before Orbax
    reads it. Its other layouts (``weights.msgpack``, or ``weights/`` without a table) are
    refused by name: nothing could check them before a reader touches them."""
    where = f"directory: {HEADER} in {source!r}"
    files = header.get("weights_files")
    if header.get("weights") != WEIGHTS or not isinstance(files, dict):
        raise ValueError(f"{where} is an early {LEGACY_FORMAT!r} directory (weights.msgpack, or "
                         f"weights/ without the SHA-256 of each file) that cannot be checked "
                         f"before it is read; train or save the model again")
    table = {}
    for rel, digest in files.items():
        path = os.path.join(source, WEIGHTS, *str(rel).split("/"))
        size = os.stat(path).st_size if os.path.isfile(path) else -1
        table[rel] = {"size": size, "sha256": digest}
    extras = {}
    for key in ("preprocessing", "metrics"):
        path = os.path.join(source, f"{key}.json")
        extras[key] = None
        if os.path.lexists(path):
            blob = read_regular(path, max_size=MAX_HEADER_BYTES, what=f"directory: {key}.json in")
            try:
                extras[key] = json.loads(blob.decode("utf-8"))
            except (ValueError, UnicodeDecodeError) as e:
                raise ValueError(f"directory: {key}.json in {source!r} is corrupt ({e})") from None
    return {**header, **extras, "format": FORMAT,
            "weights": {"store": "orbax", "path": WEIGHTS, "files": table,
                        "sha256": header.get("weights_sha256")}}


def _check_header(header, source: str) -> dict:
    where = f"directory: {HEADER} in {source!r}"
    if not isinstance(header, dict):
        raise ValueError(f"{where} is not a JSON object (got {type(header).__name__})")
    if header.get("format") == LEGACY_FORMAT:
        header = _legacy(header, source)
    if header.get("format") != FORMAT:
        raise ValueError(f"{where} is format {header.get('format')!r}; this version reads "
                         f"{FORMAT!r} and {LEGACY_FORMAT!r}")
    weights = header.get("weights")
    files = weights.get("files") if isinstance(weights, dict) else None
    rel = weights.get("path") if isinstance(weights, dict) else None
    if not (isinstance(rel, str) and isinstance(files, dict) and weights.get("store") == "orbax"
            and isinstance(weights.get("sha256"), str)):
        raise ValueError(f"{where}: 'weights' must be {{'store': 'orbax', 'path', 'files', "
                         f"'sha256'}}, got {weights!r:.200}")
    for name in [rel, *files]:
        parts = name.split("/")
        if os.path.isabs(name) or ".." in parts or "" in parts or not isinstance(name, str):
            raise ValueError(f"{where}: {name!r} is not a path inside the directory")
    for name, entry in files.items():
        if not (isinstance(entry, dict) and isinstance(entry.get("size"), int)
                and isinstance(entry.get("sha256"), str)):
            raise ValueError(f"{where}: weights file {name!r} needs {{'size': int, 'sha256': "
                             f"str}}, got {entry!r:.200}")
    for key in ("preprocessing", "metrics"):
        if header.get(key) is not None and not isinstance(header[key], dict):
            raise ValueError(f"{where}: {key!r} must be a JSON object or null, got "
                             f"{type(header[key]).__name__}")
    size = header.get("input_size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 1):
        raise ValueError(f"{where}: 'input_size' must be a positive int or null, got {size!r}")
    return header


def _verify_files(source: str, weights: dict) -> str:
    """The weights directory, after every file in it matched its size and SHA-256."""
    wdir = os.path.join(source, *weights["path"].split("/"))
    label = f"directory: {WEIGHTS}/ in {source!r}"
    if not os.path.isdir(wdir):
        raise FileNotFoundError(f"directory: {source!r} has no {weights['path']}/ (the "
                                f"weights {HEADER} names)")
    found = set()
    for folder, _, names in os.walk(wdir):
        for n in names:
            found.add(os.path.relpath(os.path.join(folder, n), wdir).replace(os.sep, "/"))
    unknown = sorted(found - set(weights["files"]))
    if unknown:
        raise ValueError(f"{label} is corrupt (its file {unknown[0]} is not in {HEADER})")
    for rel, entry in weights["files"].items():
        path = os.path.join(wdir, *rel.split("/"))
        if rel not in found and not os.path.lexists(path):
            raise ValueError(f"{label} is corrupt (its file {rel} is missing)")
        try:
            check_regular(path, size=entry["size"], what=f"{label}: file {rel}")
        except FileNotFoundError:
            raise ValueError(f"{label} is corrupt (its file {rel} is missing)") from None
        if sha256_file(path, limit=entry["size"]) != entry["sha256"]:
            raise ValueError(f"{label} is corrupt (its file {rel} differs from its SHA-256 in "
                             f"{HEADER})")
    return wdir


def _read_arrays(source: str, weights: dict) -> dict:
    wdir = _verify_files(source, weights)
    try:
        arrays = orbax_store.read_arrays(wdir)
    except Exception as e:  # noqa: BLE001 - Orbax/TensorStore raise many kinds when damaged
        raise ValueError(f"directory: {WEIGHTS}/ in {source!r} is corrupt or incomplete "
                         f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
                         ) from None
    if sha256_arrays(arrays) != weights["sha256"]:
        raise ValueError(f"directory: {WEIGHTS}/ in {source!r} is corrupt (its SHA-256 "
                         f"differs from the one in {HEADER})")
    return arrays


def read_header(directory) -> dict:
    """The checked header of the model directory ``directory`` (no weights read)."""
    source = check_path(directory)
    return _check_header(_read_header(source)[0], source)


def load(directory) -> ModelFiles:
    """The config, arrays, preprocessing and metrics saved by :func:`save` in ``directory``,
    all of one save (see the module docstring)."""
    source = check_path(directory)
    if not os.path.isdir(source):
        raise FileNotFoundError(f"directory: no saved model at {source!r} "
                                f"({'not a directory' if os.path.exists(source) else 'missing'})")
    for attempt in range(_RETRIES):
        header, blob = _read_header(source)
        header = _check_header(header, source)
        try:
            arrays = _read_arrays(source, header["weights"])
        except (OSError, ValueError):
            # A save that committed meanwhile may have removed the version this header named:
            # the error is real only if model.json is still the one read.
            try:
                now = _read_header(source)[1]
            except (OSError, ValueError):
                now = None
            if now == blob or attempt == _RETRIES - 1:
                raise
            continue
        return ModelFiles(header["config"], header.get("input_size"), arrays,
                          header.get("preprocessing"), header.get("metrics"), source)
    raise AssertionError("unreachable")


def unflatten(arrays: dict, template, directory: str):
    """The params of ``template``'s structure from :func:`leaf_arrays`' dict, checked leaf by
    leaf (count, shape, dtype)."""
    import jax.numpy as jnp

    leaves = jax.tree_util.tree_leaves(template)
    if len(arrays) != len(leaves):
        raise ValueError(f"directory: {WEIGHTS}/ in {directory!r} holds {len(arrays)} arrays "
                         f"where the saved architecture has {len(leaves)}")
    out = []
    for i, t in enumerate(leaves):
        v = arrays.get(f"a{i}")
        if v is None or v.shape != t.shape or np.dtype(v.dtype) != np.dtype(t.dtype):
            got = "nothing" if v is None else f"{v.dtype}{list(v.shape)}"
            raise ValueError(f"directory: {WEIGHTS}/ in {directory!r} holds {got} for leaf {i} "
                             f"where the architecture has {t.dtype}{list(t.shape)}")
        out.append(jnp.asarray(v))
    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(template), out)


__all__ = ["save", "load", "read_header", "unflatten", "leaf_arrays", "ModelFiles", "FORMAT",
           "HEADER"]
