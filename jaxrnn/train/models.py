"""The one :class:`Model` type, and models from command-line-style options: a cell by name, a
recurrent stack, a classifier.

Every builder of the package returns a :class:`Model` (:func:`jaxrnn.models.sequential`, the
registered task architectures, :func:`sequence_classifier`, the ensembles' classifier): the
training loop, :mod:`jaxrnn.keras` and the model directory read one protocol, ``init(key,
input_spec=None) -> params`` and ``apply(params, inputs, *, lengths=None, key=None,
deterministic=True) -> outputs``, and nobody needs to guess which kind of model it holds.
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
    """A built model.

    Attributes:
      init: ``init(key, input_spec=None) -> params``. ``input_spec`` is the feature size ``F``
        (or an input shape ending with it, e.g. ``(T, F)``) for a model whose first layer
        takes its size from the data (:func:`jaxrnn.models.sequential`); a model whose
        config fixes every shape accepts None or its own size (and raises naming
        ``input_spec`` otherwise, where it knows it).
      apply: ``apply(params, x, *, lengths=None, key=None, deterministic=True) -> outputs``
        (``stateful``: ``apply(params, ids, *, carry=None, ...) -> (carry, outputs)``).
      config: the architecture as a JSON-able dict (:func:`jaxrnn.models.from_config`
        rebuilds models of layer specs and registered architectures), or None.
      layer: the underlying :mod:`jaxrnn.layers` layer of a model of layer specs.
      specs: its layer specs (empty for other models).
      takes_ids: whether it reads integer token ids (None: the builder does not say).
      built: what a registered architecture's builder made (task-specific functions:
        decoding, sampling, ...).
      preprocessing: what training learnt about the data beyond the weights, kept with the
        model as a Keras model keeps it: :func:`jaxrnn.keras.fit` puts its label encoder
        here (``"label_encoder"``), :func:`jaxrnn.keras.evaluate` reads it back. A dict of its
        own per built model, not part of ``config``.
      stateful: ``apply`` takes and returns a carry (truncated-BPTT language models).
    """

    init: Callable[..., Any]
    apply: Callable[..., Any]
    config: dict | None = None
    layer: Layer | None = None
    specs: tuple = ()
    takes_ids: bool | None = None
    built: Any = None
    preprocessing: dict | None = None
    stateful: bool = False

    @property
    def output_size(self) -> int | None:
        return None if self.layer is None else self.layer.output_size

    @property
    def returns_sequences(self) -> bool | None:
        return None if self.layer is None else not self.layer.summarises


def fixed_shape_model(init, apply, *, config: dict | None = None, built: Any = None,
                      stateful: bool = False) -> Model:
    """A :class:`Model` of ``init(key) -> params`` whose config fixes every shape: its
    ``init(key, input_spec=None)`` leaves ``input_spec`` to the config."""

    def init_model(key, input_spec=None):
        del input_spec  # the builder's config fixed the shapes
        return init(key)

    return Model(init_model, apply, config, built=built, preprocessing={}, stateful=stateful)


def check_input_spec(input_spec, input_size: int) -> None:
    """``input_spec`` (None, a feature size or a shape ending with it) must agree with the
    model's fixed ``input_size``."""
    size = input_spec[-1] if isinstance(input_spec, (tuple, list)) and input_spec else \
        input_spec
    if size is not None and size != input_size:
        raise ValueError(f"input_spec: this model reads {input_size} features per step, got "
                         f"{input_spec!r}")


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

    def init(key, input_spec=None):
        check_input_spec(input_spec, input_size)
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

    config = {"builder": "sequence_classifier", "input_size": input_size,
              "num_outputs": num_outputs, "cell": cell, "hidden": hidden, "layers": layers,
              "bidirectional": bool(bidirectional_), "dropout": rate}
    return Model(init, apply, config, takes_ids=False, preprocessing={})


__all__ = ["CELLS", "Model", "fixed_shape_model", "check_input_spec", "make_cell",
           "recurrent_stack", "sequence_classifier", "ClassifierParams"]
