"""The store protocol: how a training run saves, finds and loads its checkpoints, whatever the
format.

A store is one class with a ``name`` and three methods::

    save(directory, state, *, data_position=None, extra=None) -> path
    load(directory, target, *, extra_target=None) -> Checkpoint
    latest(directory) -> path or None        # the newest checkpoint that reads and verifies

registered with :func:`register`; ``fit(..., checkpoint_format=NAME)`` and
``--checkpoint-format`` find it by name (:func:`get`). What the checkpoint holds is the same
for every store (:mod:`jaxrnn.io.checkpoint`); a store decides only how it lies on disk, and
promises: a save is atomic (a crash at any moment leaves the last readable checkpoint
loadable), ``load``/``latest`` skip an unreadable newest checkpoint for the one before, and a
resume is bit-exact. The built-in stores: ``msgpack`` (:mod:`jaxrnn.io.msgpack_store`, one
file), ``orbax`` (:mod:`jaxrnn.io.orbax_store`, Orbax step directories) and ``orbax-sharded``
(:mod:`jaxrnn.io.sharded_store`, a state placed over devices and processes, written by every
process).
"""

from __future__ import annotations

import os
from typing import Any, ClassVar, Protocol, runtime_checkable

from jaxrnn.io.checkpoint import Checkpoint


@runtime_checkable
class Store(Protocol):
    """See the module docstring."""

    name: ClassVar[str]

    def save(self, directory: str | os.PathLike, state: Any, *, data_position=None,
             extra: dict | None = None) -> str: ...

    def load(self, directory: str | os.PathLike, target: Any, *,
             extra_target: dict | None = None) -> Checkpoint: ...

    def latest(self, directory: str | os.PathLike) -> str | None: ...


_STORES: dict[str, type] = {}
# The formats that ship with jaxrnn register themselves when their module is imported; the
# package imports them on first use (jaxrnn.io is lazy), so the registry asks for them here.
_BUILT_IN = ("jaxrnn.io.msgpack_store", "jaxrnn.io.orbax_store", "jaxrnn.io.sharded_store")


def _with_built_ins() -> dict[str, type]:
    import importlib

    for module in _BUILT_IN:
        importlib.import_module(module)
    return _STORES


def register(cls: type) -> type:
    """Class decorator: make ``cls`` (a :class:`Store` with a class attribute ``name``) the
    store of that name."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"store: {cls!r} needs a class attribute name (a non-empty str)")
    missing = [m for m in ("save", "load", "latest") if not callable(getattr(cls, m, None))]
    if missing:
        raise TypeError(f"store: {cls.__name__} lacks {missing} (a store has save, load, latest)")
    _STORES[name] = cls
    return cls


def names() -> tuple[str, ...]:
    """The registered stores' names."""
    return tuple(sorted(_with_built_ins()))


def get(name: str, argname: str = "checkpoint_format") -> Store:
    """The store registered as ``name``; ValueError naming ``argname`` otherwise."""
    if not isinstance(name, str) or name not in _with_built_ins():
        raise ValueError(f"{argname}: expected one of {names()}, got {name!r}")
    return _STORES[name]()


__all__ = ["Store", "register", "get", "names"]
