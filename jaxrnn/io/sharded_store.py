"""The ``orbax-sharded`` store: checkpoints of a train state placed over devices and processes.

The single-file store fetches every array to the host of the process that writes; this one
writes a state that lives on a device mesh -- replicated (data parallel) or sharded -- from
*every* process at once with ``orbax.checkpoint``: each array is written once (by the processes
that hold its shards; a replicated array by one replica), the processes agree on when a step is
complete, and a step directory appears only when it is whole.

    save_state(directory, state)                        # every process calls it, same state
    state = restore_state(directory, target, mesh=mesh)  # back onto the mesh (bit-exact)
    state = restore_state(directory, target)             # into one process, on one device

``target`` is a :class:`~jaxrnn.train.TrainState` of the right structure, shapes and dtypes (e.g.
the freshly initialised state); its values are not used. The PRNG key is stored as its
``key_data`` with the implementation's name, since typed keys are not plain arrays. Steps are
kept in ``directory/<step>`` (the state's ``step``), the newest ``max_to_keep`` of them.

As a registered store (:class:`ShardedOrbaxStore`, every process calls ``save``), the data
position and ``extra`` go beside the state: JSON entries in the step's metadata, pytrees (on
the host: small, replicated things such as the best parameters) as a second Orbax item. Its
``latest`` is the newest *complete* step (Orbax commits a step by renaming it whole); unlike the
other stores it holds no digest of the arrays, which no single process holds whole.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, SingleDeviceSharding
from jax.sharding import PartitionSpec as P

from jaxrnn.io import checkpoint as content
from jaxrnn.io.checkpoint import Checkpoint, CheckpointError
from jaxrnn.io.files import as_path
from jaxrnn.io.orbax_store import _join, _split, scrub_paths
from jaxrnn.io.store import register

PyTree = Any


def _manager(directory, max_to_keep: int | None = 3):
    import orbax.checkpoint as ocp

    if directory is None or not isinstance(directory, (str, os.PathLike)):
        raise TypeError(f"directory: expected a path, got {directory!r}")
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True)
    return ocp.CheckpointManager(os.path.abspath(os.fspath(directory)), options=options)


def _as_tree(state) -> dict:
    content.check_state(state)
    return {"params": state.params, "opt_state": state.opt_state, "step": state.step,
            "key_data": jax.random.key_data(state.key)}


def _replicated_scalar(x):
    # A replicated global scalar is readable on every process through its local shard.
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        return x.addressable_data(0)
    return x


def _scrub(directory: str, step: int) -> None:
    if jax.process_index() == 0:
        scrub_paths(os.path.join(os.fspath(directory), str(step)))


def save_state(directory: str | os.PathLike, state, *, max_to_keep: int | None = 3,
               metadata: dict | None = None, step: int | None = None,
               extra_arrays: dict | None = None) -> int:
    """Write ``state`` as step ``step`` (default ``state.step``) under ``directory``; returns
    that step.

    In a multi-process run every process must call it with its (global) state; it returns once
    the checkpoint is complete on disk. ``metadata``: JSON-able values stored alongside (e.g. a
    data position); ``extra_arrays``: a dict of host arrays stored as a second item."""
    import orbax.checkpoint as ocp

    tree = _as_tree(state)
    if step is None:
        step = int(np.asarray(jax.device_get(_replicated_scalar(state.step))))
    meta = {"key_impl": str(jax.random.key_impl(state.key)), "metadata": metadata or {}}
    items = {"state": ocp.args.StandardSave(tree), "meta": ocp.args.JsonSave(meta)}
    if extra_arrays:
        items["extra"] = ocp.args.StandardSave(extra_arrays)
    with _manager(directory, max_to_keep) as mngr:
        mngr.save(step, args=ocp.args.Composite(**items))
        mngr.wait_until_finished()
    _scrub(directory, step)
    return step


def latest_step(directory: str | os.PathLike) -> int | None:
    """The newest complete step under ``directory`` (None when there is none)."""
    if not os.path.isdir(directory):
        return None
    with _manager(directory, None) as mngr:
        return mngr.latest_step()


def _target_sharding(leaf, mesh: Mesh | None):
    if mesh is not None:
        return NamedSharding(mesh, P())
    sharding = getattr(leaf, "sharding", None)
    if isinstance(sharding, (NamedSharding, SingleDeviceSharding)) and \
            sharding.is_fully_addressable:
        return sharding
    return SingleDeviceSharding(jax.local_devices()[0])


def _restore(directory, target, *, mesh, step, shardings, extra: bool):
    import orbax.checkpoint as ocp

    tree = _as_tree(target)
    if step is None:
        step = latest_step(directory)
        if step is None:
            raise FileNotFoundError(f"directory: no checkpoint in {os.fspath(directory)!r}")
    if shardings is None:
        shardings = jax.tree_util.tree_map(lambda leaf: _target_sharding(leaf, mesh), tree)
    abstract = jax.tree_util.tree_map(
        lambda leaf, s: jax.ShapeDtypeStruct(np.shape(leaf), leaf.dtype, sharding=s),
        tree, shardings)
    with _manager(directory, None) as mngr:
        if step not in mngr.all_steps():
            raise FileNotFoundError(f"step: no step {step} in {os.fspath(directory)!r}; saved "
                                    f"steps: {sorted(mngr.all_steps())}")
        _check_matches(os.path.join(os.fspath(directory), str(step), "state"), abstract)
        items = {"state": ocp.args.StandardRestore(abstract), "meta": ocp.args.JsonRestore()}
        if extra and os.path.isdir(os.path.join(os.fspath(directory), str(step), "extra")):
            items["extra"] = ocp.args.StandardRestore()
        try:
            out = mngr.restore(step, args=ocp.args.Composite(**items))
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"target: the checkpoint at step {step} in {os.fspath(directory)!r} "
                             f"does not match the target state ({e})") from e
    got = out["state"]
    key = jax.random.wrap_key_data(got["key_data"], impl=out["meta"]["key_impl"])
    state = target._replace(params=got["params"], opt_state=got["opt_state"], step=got["step"],
                            key=key)
    arrays = dict(out["extra"]) if "extra" in items else {}
    return state, out["meta"]["metadata"], arrays, step


def restore_state(directory: str | os.PathLike, target, *, mesh: Mesh | None = None,
                  step: int | None = None, shardings: PyTree | None = None):
    """The state saved under ``directory`` (step ``step``, default the newest) laid out like
    ``target``.

    Placement: ``shardings`` (a pytree of ``jax.sharding.Sharding`` matching the saved tree
    ``{"params", "opt_state", "step", "key_data"}``) if given; else replicated over ``mesh``;
    else on this process's first device (a checkpoint written by many processes restores into
    one). Raises FileNotFoundError when there is no checkpoint, ValueError when the saved
    structure, shapes or dtypes do not match ``target``.
    """
    return _restore(directory, target, mesh=mesh, step=step, shardings=shardings,
                    extra=False)[0]


def _leaf_name(path) -> str:
    # Orbax names a leaf by its key path joined with dots (dict keys, sequence indices,
    # named-tuple fields).
    parts = []
    for k in path:
        for attr in ("key", "idx", "name"):
            if hasattr(k, attr):
                parts.append(str(getattr(k, attr)))
                break
    return ".".join(parts)


def _check_matches(state_dir: str, abstract) -> None:
    """Compare the saved arrays' names, shapes and dtypes with the target before reading (a
    mismatch found by the reader itself surfaces as a storm of asynchronous errors)."""
    import orbax.checkpoint as ocp

    with ocp.StandardCheckpointer() as reader:
        saved_tree = reader.metadata(state_dir)
    saved_tree = getattr(saved_tree, "item_metadata", saved_tree)
    saved = {m.name: (tuple(m.shape), np.dtype(m.dtype))
             for m in jax.tree_util.tree_leaves(saved_tree) if hasattr(m, "shape")}
    want = {_leaf_name(path): (tuple(leaf.shape), np.dtype(leaf.dtype))
            for path, leaf in jax.tree_util.tree_leaves_with_path(abstract)}
    if set(saved) != set(want):
        raise ValueError(
            f"target: the checkpoint in {state_dir!r} holds other arrays than the target "
            f"state; only saved: {sorted(set(saved) - set(want))[:5]}, only in the target: "
            f"{sorted(set(want) - set(saved))[:5]}")
    for name, (shape, dtype) in want.items():
        if saved[name] != (shape, dtype):
            raise ValueError(f"target: {name} is {shape} {dtype} in the target but "
                             f"{saved[name][0]} {saved[name][1]} in {state_dir!r}")


def restore_metadata(directory: str | os.PathLike, step: int | None = None) -> dict:
    """The ``metadata`` dict saved with step ``step`` (default the newest)."""
    import orbax.checkpoint as ocp

    step = latest_step(directory) if step is None else step
    if step is None:
        raise FileNotFoundError(f"directory: no checkpoint in {os.fspath(directory)!r}")
    with _manager(directory, None) as mngr:
        out = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return out["meta"]["metadata"]


def _host(x):
    """A host copy of a (possibly global, replicated) array."""
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        x = x.addressable_data(0)
    return np.asarray(jax.device_get(x))


@register
class ShardedOrbaxStore:
    """Orbax steps written by every process of a run; see the module."""

    name = "orbax-sharded"
    keep = 2

    def save(self, directory, state, *, data_position=None, extra=None) -> str:
        """Every process calls it with the same (global) state; returns the step directory."""
        directory = content.check_directory(directory)
        encoded, kinds = content.encode_extra(extra)
        encoded = jax.tree_util.tree_map(lambda x: _host(x) if hasattr(x, "shape") else x,
                                         encoded)
        skeleton, arrays = _split({"extra": encoded})
        newest = latest_step(directory)
        step = 0 if newest is None else newest + 1
        metadata = {"format": content.FORMAT, "rest": skeleton, "extra_kinds": kinds,
                    "data_position": content.encode_position(data_position)}
        save_state(directory, state, max_to_keep=self.keep, metadata=metadata, step=step,
                   extra_arrays=arrays)
        return os.path.join(directory, str(step))

    def latest(self, directory) -> str | None:
        """The newest complete step directory, or None."""
        directory = as_path(directory, "directory")
        step = latest_step(directory)
        return None if step is None else os.path.join(directory, str(step))

    def load(self, directory, target, *, extra_target=None, mesh: Mesh | None = None
             ) -> Checkpoint:
        """The newest step, the state laid out like ``target`` (or replicated over ``mesh``)."""
        directory, extra_target = content.check_load_arguments(directory, target, extra_target)
        try:
            state, metadata, arrays, step = _restore(directory, target, mesh=mesh, step=None,
                                                     shardings=None, extra=True)
        except ValueError as e:
            raise CheckpointError(str(e)) from None
        path = os.path.join(directory, str(step))
        if metadata.get("format") != content.FORMAT:
            warnings.warn(f"{path}: written by save_state, not by this store: no extra",
                          stacklevel=2)
            return Checkpoint(state, None, {}, path)
        rest = _join(metadata["rest"], {k: np.asarray(v) for k, v in arrays.items()})
        body = {"extra": rest["extra"], "extra_kinds": metadata["extra_kinds"]}
        extra = content.restore_extra(body, extra_target, path)
        return Checkpoint(state, metadata.get("data_position"), extra, path)


__all__ = ["ShardedOrbaxStore", "save_state", "restore_state", "restore_metadata",
           "latest_step"]
