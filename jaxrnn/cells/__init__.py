"""Recurrent cells, one module per family; each factory returns a :class:`Cell`."""

from jaxrnn.cells.base import Cell, resolve_activation
from jaxrnn.cells.convlstm import ConvLSTMParams, ConvLSTMState, convlstm
from jaxrnn.cells.elman import ElmanParams, ElmanState, elman
from jaxrnn.cells.fully_recurrent import (
    FullyRecurrentParams,
    FullyRecurrentState,
    fully_recurrent,
)
from jaxrnn.cells.gru import GRUParams, GRUState, gru
from jaxrnn.cells.jordan import JordanParams, JordanState, jordan
from jaxrnn.cells.lstm import LSTMParams, LSTMState, lstm

__all__ = [
    "convlstm",
    "ConvLSTMParams",
    "ConvLSTMState",
    "Cell",
    "resolve_activation",
    "elman",
    "ElmanParams",
    "ElmanState",
    "jordan",
    "JordanParams",
    "JordanState",
    "lstm",
    "LSTMParams",
    "LSTMState",
    "gru",
    "GRUParams",
    "GRUState",
    "fully_recurrent",
    "FullyRecurrentParams",
    "FullyRecurrentState",
]
