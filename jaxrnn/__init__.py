"""jaxrnn: every classic recurrent network as pure JAX functions.

    >>> import jax, jax.numpy as jnp, jaxrnn
    >>> cell = jaxrnn.lstm(32)
    >>> params = cell.init(jax.random.key(0), 8)
    >>> carry, ys = jaxrnn.run(cell, params, jnp.ones((4, 10, 8)))
    >>> ys.shape
    (4, 10, 32)
"""

import importlib as _importlib

from jaxrnn import engine, models
from jaxrnn.cells import *  # noqa: F403
from jaxrnn.cells import __all__ as _cells_all
from jaxrnn.cells import registry
from jaxrnn.engine import last_valid, parallel_run, reverse_padded, run, sequence_mask
from jaxrnn.layers import (
    BidirectionalParams,
    Dense,
    DenseParams,
    Layer,
    bidirectional,
    dense,
    dropout,
    dropout_layer,
    embedding,
    recurrent,
    stacked,
    with_recurrent_mask,
)

# Imported on first use (PEP 562), so ``import jaxrnn`` loads the cells, the engine, the layers
# and the model builder only, not optax, tqdm or the classics.
_LAZY_MODULES = ("classic", "data", "interop", "nnx", "parallel", "seq2seq", "train")
# Registered cells outside jaxrnn.cells (the reservoir, in jaxrnn.classic): factory, params and
# state type, also imported on first use. Every registered cell is exported (test_registry).
_LAZY_NAMES = {
    attr: module
    for entry in registry.REGISTRY.values()
    for module, _, attr in (p.partition(":") for p in (entry.factory_path, entry.params_path,
                                                        entry.state_path))
    if not module.startswith("jaxrnn.cells.")
}


def __getattr__(name):
    if name in _LAZY_MODULES:
        return _importlib.import_module(f"jaxrnn.{name}")
    if name in _LAZY_NAMES:
        return getattr(_importlib.import_module(_LAZY_NAMES[name]), name)
    raise AttributeError(f"module 'jaxrnn' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_LAZY_MODULES, *_LAZY_NAMES])


__version__ = "0.1.0"


__all__ = [
    *_cells_all,
    "run",
    "registry",
    "last_valid",
    "reverse_padded",
    "sequence_mask",
    "Layer",
    "recurrent",
    "bidirectional",
    "BidirectionalParams",
    "stacked",
    "dropout",
    "dropout_layer",
    "with_recurrent_mask",
    "dense",
    "Dense",
    "DenseParams",
    "embedding",
    "parallel_run",
    "engine",
    "models",
    *_LAZY_MODULES,
    *_LAZY_NAMES,
]
