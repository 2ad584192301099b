"""The one list of recurrent cells: a name -> factory map, read by everything that picks a cell
by name (the command line, :mod:`jaxrnn.models`, :mod:`jaxrnn.train.models`, :mod:`jaxrnn.nnx`,
the benchmark harness and the tests' parametrisation).

Adding a cell is one :class:`CellEntry` in :data:`REGISTRY` (see README, "Adding a cell").
Factories are named by import path and imported on first use, so reading the registry imports
no cell module (the reservoir lives in :mod:`jaxrnn.classic`, which ``import jaxrnn`` loads
lazily).

    >>> from jaxrnn.cells import registry
    >>> cell = registry.make("gru", 32)          # the CLI's way: one width
    >>> registry.get("jordan").factory(32, 8)   # the factory itself
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

# Sizes a factory takes positionally: ``"hidden"`` -> ``factory(H)``; ``"hidden_output"`` ->
# ``factory(H, O)`` (Jordan and the fully recurrent net feed back an output of their own).
SIZES = ("hidden", "hidden_output")
# What a cell's ``init(key, input_size)`` and steps take: ``"features"`` -> ``(B..., F)`` vectors
# with ``input_size = F``; ``"frames"`` -> images ``(B..., height, width, channels)`` with
# ``input_size = channels`` (ConvLSTM).
INPUTS = ("features", "frames")


def _resolve(path: str):
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


class CellEntry(NamedTuple):
    """One registered cell.

    Attributes:
      name: the registry key (``--cell NAME`` on the command line).
      factory_path: ``"module:function"`` of the factory returning a :class:`~jaxrnn.Cell`.
      params_path: ``"module:Class"`` of the params NamedTuple its ``init`` returns.
      sizes: ``"hidden"`` or ``"hidden_output"`` (see :data:`SIZES`).
      inputs: ``"features"`` or ``"frames"`` (see :data:`INPUTS`): only ``"features"`` cells run
        on plain ``(B, T, F)`` sequences (every task of the command line, the model builder).
      options: keyword arguments that define this entry (``gru_cho`` is ``gru`` with
        ``reset_after=False``); passed before the caller's.
      test_kwargs: a small, fast construction for the tests (sizes by keyword included).
      cli: whether :func:`make` may build it for the command line and the model builder.
      doc: one line for ``--help`` and reports.
      width_defaults: ``width_defaults(hidden) -> kwargs``, defaults of :meth:`make` that
        depend on the width (a tiny reservoir needs a denser matrix), or None.
    """

    name: str
    factory_path: str
    params_path: str
    sizes: str
    inputs: str
    options: Mapping[str, Any]
    test_kwargs: Mapping[str, Any]
    cli: bool
    doc: str
    width_defaults: Callable[[int], dict] | None = None

    @property
    def factory(self) -> Callable[..., Any]:
        return _resolve(self.factory_path)

    @property
    def params_type(self) -> type:
        return _resolve(self.params_path)

    def make(self, hidden: int, **kwargs):
        """The cell with ``hidden`` units (and, for ``"hidden_output"`` cells, an output as wide
        as the hidden layer, so every cell exposes ``hidden`` features to the next layer)."""
        sizes = (hidden,) if self.sizes == "hidden" else (hidden, hidden)
        sized = {} if self.width_defaults is None else self.width_defaults(hidden)
        return self.factory(*sizes, **{**sized, **self.options, **kwargs})

    def make_for_tests(self, **overrides):
        """The cell built from :attr:`test_kwargs` (small sizes, every term exercised)."""
        return self.factory(**{**self.options, **self.test_kwargs, **overrides})


def _entry(name, factory_path, params_path, *, sizes="hidden", inputs="features", options=None,
           test_kwargs, cli=True, doc, width_defaults=None):
    assert sizes in SIZES and inputs in INPUTS, (name, sizes, inputs)
    return CellEntry(name, factory_path, params_path, sizes, inputs,
                     MappingProxyType(dict(options or {})), MappingProxyType(dict(test_kwargs)),
                     cli, doc, width_defaults)


_C = "jaxrnn.cells"
_ENTRIES = [
    _entry("lstm", f"{_C}.lstm:lstm", f"{_C}.lstm:LSTMParams",
           test_kwargs={"hidden_size": 4}, doc="long short-term memory (forget gate)"),
    _entry("gru", f"{_C}.gru:gru", f"{_C}.gru:GRUParams",
           test_kwargs={"hidden_size": 4}, doc="gated recurrent unit, reset after (cuDNN form)"),
    _entry("gru_cho", f"{_C}.gru:gru", f"{_C}.gru:GRUParams", options={"reset_after": False},
           test_kwargs={"hidden_size": 4}, doc="gated recurrent unit as Cho et al. 2014"),
    _entry("elman", f"{_C}.elman:elman", f"{_C}.elman:ElmanParams",
           test_kwargs={"hidden_size": 5}, doc="simple recurrent network (Elman 1990)"),
    _entry("jordan", f"{_C}.jordan:jordan", f"{_C}.jordan:JordanParams", sizes="hidden_output",
           test_kwargs={"hidden_size": 5, "output_size": 3},
           doc="output fed back as context (Jordan 1986)"),
    _entry("fully_recurrent", f"{_C}.fully_recurrent:fully_recurrent",
           f"{_C}.fully_recurrent:FullyRecurrentParams", sizes="hidden_output",
           test_kwargs={"num_units": 6, "output_size": 2},
           doc="one pool of units, all connected (Williams & Zipser 1989)"),
    _entry("min_gru", f"{_C}.minimal:min_gru", f"{_C}.minimal:MinGRUParams",
           test_kwargs={"hidden_size": 4}, doc="minGRU, linear in its state (Feng et al. 2024)"),
    _entry("min_lstm", f"{_C}.minimal:min_lstm", f"{_C}.minimal:MinLSTMParams",
           test_kwargs={"hidden_size": 4}, doc="minLSTM, linear in its state (Feng et al. 2024)"),
    # the reservoir's weights are meant to stay fixed (ridge readout, jaxrnn.classic.esn); built
    # from the command line it is trained end to end like any other cell
    _entry("reservoir", "jaxrnn.classic.esn:reservoir", "jaxrnn.classic.esn:ReservoirParams",
           test_kwargs={"hidden_size": 6, "density": 0.5, "leak_rate": 0.6},
           doc="echo-state reservoir, leaky tanh (Jaeger 2001)",
           # about 8 non-zero entries per row at least: a sparser small matrix may have
           # spectral radius 0 and cannot be rescaled
           width_defaults=lambda h: {"density": min(1.0, max(0.1, 8.0 / h))}),
    _entry("mgu", f"{_C}.mgu:mgu", f"{_C}.mgu:MGUParams",
           test_kwargs={"hidden_size": 4}, doc="minimal gated unit, one gate (Zhou et al. 2016)"),
    _entry("convlstm", f"{_C}.convlstm:convlstm", f"{_C}.convlstm:ConvLSTMParams",
           inputs="frames", test_kwargs={"channels": 3, "kernel_size": 3},
           doc="convolutional LSTM on image frames (Shi et al. 2015)"),
]

REGISTRY: Mapping[str, CellEntry] = MappingProxyType({e.name: e for e in _ENTRIES})


def names(*, inputs: str | None = None, cli: bool | None = None) -> tuple[str, ...]:
    """Registered names in registry order, optionally only those with the given ``inputs``
    kind or ``cli`` flag."""
    return tuple(n for n, e in REGISTRY.items()
                 if (inputs is None or e.inputs == inputs) and (cli is None or e.cli == cli))


def get(name: str) -> CellEntry:
    """The entry called ``name``; a ValueError naming ``cell`` lists the choices otherwise."""
    if not isinstance(name, str) or name not in REGISTRY:
        raise ValueError(f"cell: expected one of {list(REGISTRY)}, got {name!r}")
    return REGISTRY[name]


def make(name: str, hidden: int, *, inputs: str = "features", **kwargs):
    """The cell ``name`` with ``hidden`` units for callers that know only a width (the command
    line, the model builder). ``inputs`` is what the caller feeds: a ``"frames"`` cell asked for
    ``"features"`` (ConvLSTM on a plain sequence task) raises a ValueError naming ``cell``."""
    entry = get(name)
    if not entry.cli:
        raise ValueError(f"cell: {name!r} cannot be built from a width alone; use "
                         f"{entry.factory_path.replace(':', '.')} directly")
    if entry.inputs != inputs:
        raise ValueError(
            f"cell: {name!r} takes {entry.inputs} ({_INPUT_SHAPES[entry.inputs]}) but this model "
            f"feeds {inputs} ({_INPUT_SHAPES[inputs]}); choose one of {list(names(inputs=inputs))}"
        )
    return entry.make(hidden, **kwargs)


_INPUT_SHAPES = {"features": "(B, T, F) vectors", "frames": "(B, T, height, width, channels) "
                 "images"}

__all__ = ["REGISTRY", "CellEntry", "SIZES", "INPUTS", "names", "get", "make"]
