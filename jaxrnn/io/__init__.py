"""Persistence: one store protocol for checkpoints, one digest, and the model directory.

* :mod:`jaxrnn.io.store`: the protocol (``save``, ``load``, ``latest``) and the registry of
  formats; :func:`get_store` finds one by name (``fit(..., checkpoint_format=NAME)``).
  Registered: ``msgpack`` (:mod:`~jaxrnn.io.msgpack_store`, one file, the default), ``orbax``
  (:mod:`~jaxrnn.io.orbax_store`, Orbax step directories) and ``orbax-sharded``
  (:mod:`~jaxrnn.io.sharded_store`, a state over devices and processes). A new format is one
  class registered with :func:`register_store`.
* :mod:`jaxrnn.io.checkpoint`: what every checkpoint holds (state, data position, extra).
* :mod:`jaxrnn.io.digest`: the package's SHA-256 (bytes, files, arrays).
* :mod:`jaxrnn.io.files`: atomic writes, stale temporaries, reading only regular files.
* :mod:`jaxrnn.io.model_dir`: a trained model's directory (``jaxrnn.models.save_model`` /
  ``load_model`` build on it): versioned, committed by one atomic rename, movable.

Orbax is imported only when an Orbax format is used (it takes seconds to import).
"""

from jaxrnn.lazy import lazy_exports

# Loaded on first use (PEP 562): `import jaxrnn` builds models without paying for
# optax, tqdm, flax serialization or Orbax; `from jaxrnn.io import save_checkpoint` still works.
_LAZY = {
    'model_dir': ('jaxrnn.io', 'model_dir'),
    'Checkpoint': ('jaxrnn.io.checkpoint', 'Checkpoint'),
    'CheckpointError': ('jaxrnn.io.checkpoint', 'CheckpointError'),
    'remove_stale_temporaries': ('jaxrnn.io.files', 'remove_stale_temporaries'),
    'LATEST': ('jaxrnn.io.msgpack_store', 'LATEST'),
    'PREVIOUS': ('jaxrnn.io.msgpack_store', 'PREVIOUS'),
    'MsgpackStore': ('jaxrnn.io.msgpack_store', 'MsgpackStore'),
    'latest_checkpoint': ('jaxrnn.io.msgpack_store', 'latest_checkpoint'),
    'load_checkpoint': ('jaxrnn.io.msgpack_store', 'load_checkpoint'),
    'save_checkpoint': ('jaxrnn.io.msgpack_store', 'save_checkpoint'),
    'OrbaxStore': ('jaxrnn.io.orbax_store', 'OrbaxStore'),
    'ShardedOrbaxStore': ('jaxrnn.io.sharded_store', 'ShardedOrbaxStore'),
    'Store': ('jaxrnn.io.store', 'Store'),
    'get_store': ('jaxrnn.io.store', 'get'),
    'store_names': ('jaxrnn.io.store', 'names'),
    'register_store': ('jaxrnn.io.store', 'register'),
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())


__all__ = [
    "Store", "get_store", "store_names", "register_store", "MsgpackStore", "OrbaxStore",
    "ShardedOrbaxStore", "Checkpoint", "CheckpointError", "save_checkpoint", "load_checkpoint",
    "latest_checkpoint", "remove_stale_temporaries", "LATEST", "PREVIOUS", "model_dir",
]
