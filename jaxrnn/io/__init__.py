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

from jaxrnn.io import model_dir
from jaxrnn.io.checkpoint import Checkpoint, CheckpointError
from jaxrnn.io.files import remove_stale_temporaries
from jaxrnn.io.msgpack_store import (
    LATEST,
    PREVIOUS,
    MsgpackStore,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from jaxrnn.io.orbax_store import OrbaxStore
from jaxrnn.io.sharded_store import ShardedOrbaxStore
from jaxrnn.io.store import Store
from jaxrnn.io.store import get as get_store
from jaxrnn.io.store import names as store_names
from jaxrnn.io.store import register as register_store

__all__ = [
    "Store", "get_store", "store_names", "register_store", "MsgpackStore", "OrbaxStore",
    "ShardedOrbaxStore", "Checkpoint", "CheckpointError", "save_checkpoint", "load_checkpoint",
    "latest_checkpoint", "remove_stale_temporaries", "LATEST", "PREVIOUS", "model_dir",
]
