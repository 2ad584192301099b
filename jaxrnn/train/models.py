"""Models from command-line-style options: a cell by name, a recurrent stack, a classifier.

A :class:`Model` is the pair the training loop needs: ``init(key) -> params`` and
``apply(params, inputs, *, lengths=None, key=None, deterministic=True) -> outputs``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax

from jaxrnn.cells import registry
from jaxrnn.cells.base import Cell, check_positive_int
from jaxrnn.layers import Layer, bidirectional, dense, dropout, recurrent, stacked

# name -> factory of one width, from the cell registry (jaxrnn.cells.registry). Jordan and the
# fully recurrent net feed back an output of their own; here it is as wide as the hidden layer
# (all units visible), so every cell exposes ``hidden`` features to the next layer. ConvLSTM is
# listed (the command line offers it) but make_cell rejects it: every task feeds (B, T, F).
CELLS: dict[str, Callable[[int], Cell]] = {
    name: registry.REGISTRY[name].make for name in registry.names(cli=True)
}


class Model(NamedTuple):
    """``init(key) -> params``; ``apply(params, inputs, *, lengths=None, key=None,
    deterministic=True) -> outputs``."""

    init: Callable[[Any], Any]
    apply: Callable[..., Any]


def make_cell(name: str, hidden: int) -> Cell:
    """A cell of family ``name`` (a key of :data:`CELLS`) with ``hidden`` units; a cell that
    does not take ``(B, T, F)`` feature sequences (ConvLSTM) raises a ValueError naming
    ``cell``."""
    registry.get(name)  # the name first: its error lists the choices
    return registry.make(name, check_positive_int(hidden, "hidden"))


def recurrent_stack(
    cell: str,
    hidden: int,
    *,
    layers: int = 1,
    bidirectional_: bool = False,
    dropout_rate: float = 0.0,
    return_sequences: bool = True,
) -> Layer:
    """``layers`` recurrent layers of ``cell`` (each bidirectional, concatenated, if asked),
    with dropout ``dropout_rate`` on the outputs passed between layers.

    With ``return_sequences=False`` the output is the summary of each sequence ``(B, O)``: the
    last valid output; for a bidirectional stack, the forward direction's output at the last
    valid step concatenated with the backward direction's output at step 0 (where it has read
    the whole sequence), as Keras' ``Bidirectional`` does.
    """
    check_positive_int(layers, "layers")
    if not isinstance(dropout_rate, (int, float)) or not 0.0 <= dropout_rate < 1.0:
        raise ValueError(f"dropout: expected a float in [0, 1), got {dropout_rate!r}")
    make_cell(cell, hidden)  # validates the name before building
    stack = []
    for i in range(layers):
        # the last layer summarises (bidirectional: forward at the last valid step, backward
        # at step 0); the stack itself does for a one-direction stack
        summary = bidirectional_ and not return_sequences and i == layers - 1
        if bidirectional_:
            stack.append(bidirectional(make_cell(cell, hidden), return_sequences=not summary))
        else:
            stack.append(recurrent(make_cell(cell, hidden)))
    return stacked(stack, between_dropout=float(dropout_rate), return_sequences=return_sequences)


class ClassifierParams(NamedTuple):
    rnn: Any
    head: Any


def sequence_classifier(
    input_size: int,
    num_outputs: int,
    *,
    cell: str = "lstm",
    hidden: int = 64,
    layers: int = 1,
    bidirectional_: bool = False,
    dropout_rate: float = 0.0,
) -> Model:
    """Recurrent stack -> last valid output -> dropout -> dense ``num_outputs`` logits.

    ``apply`` maps inputs ``(B, T, input_size)`` (with optional ``lengths (B,)``) to logits
    ``(B, num_outputs)``. With ``bidirectional_`` the summary concatenates the forward
    direction's last valid output with the backward direction's output at step 0 (see
    :func:`recurrent_stack`).
    """
    check_positive_int(input_size, "input_size")
    check_positive_int(num_outputs, "num_outputs")
    rnn = recurrent_stack(cell, hidden, layers=layers, bidirectional_=bidirectional_,
                          dropout_rate=dropout_rate, return_sequences=False)
    head = dense(num_outputs)
    rate = float(dropout_rate)

    def init(key):
        k1, k2 = jax.random.split(key)
        return ClassifierParams(rnn.init(k1, input_size), head.init(k2, rnn.output_size))

    def apply(params, inputs, *, lengths=None, key=None, deterministic=True):
        k_rnn = k_out = None
        if key is not None:
            k_rnn, k_out = jax.random.split(key)
        h = rnn.apply(params.rnn, inputs, lengths=lengths, key=k_rnn,
                      deterministic=deterministic)
        h = dropout(h, rate, k_out, deterministic=deterministic)
        return head.apply(params.head, h)

    return Model(init, apply)


__all__ = ["CELLS", "Model", "make_cell", "recurrent_stack", "sequence_classifier",
           "ClassifierParams"]
