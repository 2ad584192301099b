"""jaxrnn: every classic recurrent network as pure JAX functions.

    >>> import jax, jax.numpy as jnp, jaxrnn
    >>> cell = jaxrnn.lstm(32)
    >>> params = cell.init(jax.random.key(0), 8)
    >>> carry, ys = jaxrnn.run(cell, params, jnp.ones((4, 10, 8)))
    >>> ys.shape
    (4, 10, 32)
"""

from jaxrnn import classic, data, engine, parallel, seq2seq, train  # subpackages
from jaxrnn.cells import *  # noqa: F403
from jaxrnn.cells import __all__ as _cells_all
from jaxrnn.cells.minimal import (
    MinGRUParams,
    MinGRUState,
    MinLSTMParams,
    MinLSTMState,
    min_gru,
    min_lstm,
)
from jaxrnn.classic.esn import reservoir
from jaxrnn.engine import last_valid, parallel_run, reverse_padded, run, sequence_mask
from jaxrnn.layers import (
    BidirectionalParams,
    Dense,
    DenseParams,
    Layer,
    bidirectional,
    dense,
    dropout,
    embedding,
    recurrent,
    stacked,
    with_recurrent_mask,
)

__version__ = "0.1.0"


__all__ = [
    *_cells_all,
    "run",
    "last_valid",
    "reverse_padded",
    "sequence_mask",
    "Layer",
    "recurrent",
    "bidirectional",
    "BidirectionalParams",
    "stacked",
    "dropout",
    "with_recurrent_mask",
    "dense",
    "Dense",
    "DenseParams",
    "embedding",
    "min_gru",
    "min_lstm",
    "MinGRUParams",
    "MinGRUState",
    "MinLSTMParams",
    "MinLSTMState",
    "parallel_run",
    "reservoir",
    "classic",
    "data",
    "engine",
    "parallel",
    "seq2seq",
    "train",
]
