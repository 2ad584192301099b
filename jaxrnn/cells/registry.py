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


def resolve(path: str):
    """The object at ``"module:attribute"`` (imported on first use)."""
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


class Variant(NamedTuple):
    """A published form of a registered cell that is only an option of its factory (an LSTM
    with peepholes, an Elman net with a readout): the tests run it beside its entry.

    Attributes:
      options: keyword arguments on top of the entry's :attr:`CellEntry.test_kwargs`.
      backends: the engine backends that compute it exactly (float32, on a CPU with the
        kernels built): an option the CPU kernel does not compute drops ``"kernel"``.
    """

    options: Mapping[str, Any]
    backends: frozenset[str]


class CellEntry(NamedTuple):
    """One registered cell.

    Attributes:
      name: the registry key (``--cell NAME`` on the command line).
      factory_path: ``"module:function"`` of the factory returning a :class:`~jaxrnn.Cell`.
      params_path, state_path: ``"module:Class"`` of the params NamedTuple its ``init`` returns
        and of the carry its ``initial_carry`` returns (both exported by ``jaxrnn``).
      sizes: ``"hidden"`` or ``"hidden_output"`` (see :data:`SIZES`).
      inputs: ``"features"`` or ``"frames"`` (see :data:`INPUTS`): only ``"features"`` cells run
        on plain ``(B, T, F)`` sequences (every task of the command line, the model builder).
      options: keyword arguments that define this entry (``gru_cho`` is ``gru`` with
        ``reset_after=False``); passed before the caller's.
      test_kwargs: a small, fast construction for the tests, its sizes first by keyword (the
        hidden width, then for ``"hidden_output"`` cells the output width; see
        :meth:`make_for_tests`), then any option that exercises more of the cell.
      cli: whether :func:`make` may build it for the command line and the model builder.
      doc: one line for ``--help`` and reports.
      width_defaults: ``width_defaults(hidden) -> kwargs``, defaults of :meth:`make` that
        depend on the width (a tiny reservoir needs a denser matrix), or None.
      kernel: the CPU kernel family that runs it (``jaxrnn/kernels/``: the FFI targets
        ``jaxrnn_{kernel}_forward`` / ``_backward``), or None: the ``kernel`` backend claims
        exactly the cells with one.
      fused: whether the cell exposes ``Cell.parts`` (a recurrent product plus an update), so
        that the ``fused`` backend's custom VJP computes it.
      parallel: whether :func:`jaxrnn.parallel_run` (the ``associative`` backend) computes it.
      class_name: its class in the front doors (``jaxrnn.nnx.LSTM``, ``jaxrnn.models.LSTM``),
        or None for an entry that is an option of another's factory (``gru_cho``).
      peer: the classic family the benchmarks compare it with (``"lstm"``, ``"gru"``,
        ``"rnn"``, ``"jordan"``) or None; ``peer_note`` says how close that peer is.
      peer_reference: this cell computes its peer family's own equations (one per family, see
        :func:`peer_references`): the benchmarks count a peer's FLOPs with it and compare the
        parallel cells with it.
      variants: test variants, ``name -> Variant`` (see :class:`Variant`).
      kernel_test_sizes: problems ``(B, T, F, H[, O])`` whose steps this cell's CPU kernel
        splits between threads when its team has 2 or more (by units, by rows, weights past the
        L2 bound; tests/test_kernels.py says which is which): the tests run each with teams of
        1, 2 and 3 threads.
    """

    name: str
    factory_path: str
    params_path: str
    state_path: str
    sizes: str
    inputs: str
    options: Mapping[str, Any]
    test_kwargs: Mapping[str, Any]
    cli: bool
    doc: str
    width_defaults: Callable[[int], dict] | None = None
    kernel: str | None = None
    fused: bool = False
    parallel: bool = False
    class_name: str | None = None
    peer: str | None = None
    peer_note: str = ""
    peer_reference: bool = False
    variants: Mapping[str, Variant] = MappingProxyType({})
    kernel_test_sizes: tuple[tuple[int, ...], ...] = ()

    @property
    def factory(self) -> Callable[..., Any]:
        return resolve(self.factory_path)

    @property
    def params_type(self) -> type:
        return resolve(self.params_path)

    @property
    def state_type(self) -> type:
        return resolve(self.state_path)

    @property
    def backends(self) -> frozenset[str]:
        """The engine backends that compute this entry exactly (float32, CPU, kernels built)."""
        flags = {"kernel": self.kernel is not None, "fused": self.fused,
                 "associative": self.parallel}
        return frozenset({"scan"} | {b for b, on in flags.items() if on})

    def make(self, hidden: int, **kwargs):
        """The cell with ``hidden`` units (and, for ``"hidden_output"`` cells, an output as wide
        as the hidden layer, so every cell exposes ``hidden`` features to the next layer)."""
        sizes = (hidden,) if self.sizes == "hidden" else (hidden, hidden)
        sized = {} if self.width_defaults is None else self.width_defaults(hidden)
        return self.factory(*sizes, **{**sized, **self.options, **kwargs})

    def make_for_tests(self, *, hidden: int | None = None, output: int | None = None,
                       **overrides):
        """The cell built from :attr:`test_kwargs` (small sizes, every term exercised), with
        the hidden width ``hidden`` and, for a ``"hidden_output"`` cell, the output width
        ``output`` instead of the test sizes when given."""
        keys = list(self.test_kwargs)
        sized = {} if hidden is None else {keys[0]: hidden}
        if output is not None and self.sizes == "hidden_output":
            sized[keys[1]] = output
        return self.factory(**{**self.options, **self.test_kwargs, **sized, **overrides})


def _entry(name, module, factory, params, *, sizes="hidden", inputs="features", options=None,
           test_kwargs, cli=True, doc, width_defaults=None, kernel=None, fused=False,
           parallel=False, class_name=None, peer=None, peer_note="", peer_reference=False,
           variants=None, kernel_test_sizes=()):
    assert sizes in SIZES and inputs in INPUTS, (name, sizes, inputs)
    assert peer or not peer_reference, name
    assert kernel or not kernel_test_sizes, name
    variants = {k: Variant(MappingProxyType(dict(o)), frozenset(b))
                for k, (o, b) in (variants or {}).items()}
    return CellEntry(name, f"{module}:{factory}", f"{module}:{params}",
                     f"{module}:{params.removesuffix('Params')}State", sizes, inputs,
                     MappingProxyType(dict(options or {})), MappingProxyType(dict(test_kwargs)),
                     cli, doc, width_defaults, kernel, fused, parallel, class_name, peer,
                     peer_note, peer_reference, MappingProxyType(variants),
                     tuple(map(tuple, kernel_test_sizes)))


_C = "jaxrnn.cells"
_FUSED = frozenset({"fused", "scan"})
_ENTRIES = [
    _entry("lstm", f"{_C}.lstm", "lstm", "LSTMParams", test_kwargs={"hidden_size": 4},
           doc="long short-term memory (forget gate)", kernel="lstm", fused=True,
           class_name="LSTM", peer="lstm", peer_reference=True,
           kernel_test_sizes=((9, 6, 5, 160), (5, 6, 5, 160), (32, 9, 4, 200)),
           variants={"lstm_peephole": ({"peephole": True}, _FUSED),
                     "lstm_relu": ({"activation": "relu"}, _FUSED)}),
    _entry("gru", f"{_C}.gru", "gru", "GRUParams", test_kwargs={"hidden_size": 4},
           doc="gated recurrent unit, reset after (cuDNN form)", kernel="gru", fused=True,
           class_name="GRU", peer="gru", peer_reference=True,
           kernel_test_sizes=((9, 6, 5, 160), (5, 6, 5, 160), (32, 9, 4, 232))),
    # Cho's form has a second, reset-dependent recurrent product: no StepParts, no kernel
    _entry("gru_cho", f"{_C}.gru", "gru", "GRUParams", options={"reset_after": False},
           test_kwargs={"hidden_size": 4}, doc="gated recurrent unit as Cho et al. 2014"),
    _entry("elman", f"{_C}.elman", "elman", "ElmanParams", test_kwargs={"hidden_size": 5},
           doc="simple recurrent network (Elman 1990)", kernel="elman", fused=True,
           class_name="Elman", peer="rnn", peer_reference=True,
           kernel_test_sizes=((32, 6, 5, 64),),
           variants={"elman_readout": ({"output_size": 3, "output_activation": "sigmoid"},
                                       _FUSED)}),
    _entry("jordan", f"{_C}.jordan", "jordan", "JordanParams", sizes="hidden_output",
           test_kwargs={"hidden_size": 5, "output_size": 3},
           doc="output fed back as context (Jordan 1986)", kernel="jordan", fused=True,
           class_name="Jordan", peer="jordan", peer_reference=True,
           kernel_test_sizes=((12, 7, 5, 160, 48), (32, 6, 8, 96, 64)),
           # Flax has no Jordan cell: its peer is the same equations written as a Flax cell
           peer_note="peer: the same equations as a Flax nn.RNNCellBase (Flax has no Jordan "
                     "cell)",
           variants={"jordan_sigmoid": ({"output_activation": "sigmoid"}, _FUSED)}),
    _entry("fully_recurrent", f"{_C}.fully_recurrent", "fully_recurrent",
           "FullyRecurrentParams", sizes="hidden_output",
           test_kwargs={"num_units": 6, "output_size": 2},
           doc="one pool of units, all connected (Williams & Zipser 1989)", kernel="elman",
           fused=True, class_name="FullyRecurrent", peer="rnn",
           peer_note="same equations as a simple RNN"),
    _entry("min_gru", f"{_C}.minimal", "min_gru", "MinGRUParams",
           test_kwargs={"hidden_size": 4}, doc="minGRU, linear in its state (Feng et al. 2024)",
           kernel="min", parallel=True, class_name="MinGRU", peer="gru",
           peer_note="closest peer: GRU"),
    _entry("min_lstm", f"{_C}.minimal", "min_lstm", "MinLSTMParams",
           test_kwargs={"hidden_size": 4}, doc="minLSTM, linear in its state (Feng et al. 2024)",
           kernel="min", parallel=True, class_name="MinLSTM", peer="lstm",
           peer_note="closest peer: LSTM"),
    # the reservoir's weights are meant to stay fixed (ridge readout, jaxrnn.classic.esn); built
    # from the command line it is trained end to end like any other cell
    _entry("reservoir", "jaxrnn.classic.esn", "reservoir", "ReservoirParams",
           test_kwargs={"hidden_size": 6, "density": 0.5, "leak_rate": 0.6},
           doc="echo-state reservoir, leaky tanh (Jaeger 2001)",
           # about 8 non-zero entries per row at least: a sparser small matrix may have
           # spectral radius 0 and cannot be rescaled
           width_defaults=lambda h: {"density": min(1.0, max(0.1, 8.0 / h))},
           kernel="elman", fused=True, class_name="Reservoir", peer="rnn",
           peer_note="echo-state reservoir; closest peer: simple RNN"),
    _entry("mgu", f"{_C}.mgu", "mgu", "MGUParams", test_kwargs={"hidden_size": 4},
           doc="minimal gated unit, one gate (Zhou et al. 2016)", class_name="MGU"),
    _entry("convlstm", f"{_C}.convlstm", "convlstm", "ConvLSTMParams", inputs="frames",
           test_kwargs={"channels": 3, "kernel_size": 3},
           doc="convolutional LSTM on image frames (Shi et al. 2015)", class_name="ConvLSTM"),
]

REGISTRY: Mapping[str, CellEntry] = MappingProxyType({e.name: e for e in _ENTRIES})


def names(*, inputs: str | None = None, cli: bool | None = None,
          kernel: bool | None = None) -> tuple[str, ...]:
    """Registered names in registry order, optionally only those with the given ``inputs``
    kind or ``cli`` flag, or with (``kernel=True``) or without a CPU kernel."""
    return tuple(n for n, e in REGISTRY.items()
                 if (inputs is None or e.inputs == inputs) and (cli is None or e.cli == cli)
                 and (kernel is None or (e.kernel is not None) == kernel))


def variants(*, inputs: str | None = "features") -> dict[str, tuple[CellEntry, Variant | None]]:
    """Every registered cell and every test variant (:class:`Variant`), ``name -> (entry,
    variant or None)``, in registry order, each variant after its entry: what the tests
    parametrise over. ``inputs=None`` includes the frame cells."""
    out = {}
    for n in names(inputs=inputs):
        out[n] = (REGISTRY[n], None)
        out.update({v: (REGISTRY[n], var) for v, var in REGISTRY[n].variants.items()})
    return out


def make_variant(name: str, **overrides):
    """The test construction of entry or variant ``name`` (see :func:`variants`)."""
    entry, variant = variants(inputs=None)[name]
    return entry.make_for_tests(**{**({} if variant is None else variant.options), **overrides})


def backends_of(name: str) -> frozenset[str]:
    """The engine backends that compute entry or variant ``name`` exactly."""
    entry, variant = variants(inputs=None)[name]
    return entry.backends if variant is None else variant.backends


def peer_references() -> dict[str, CellEntry]:
    """``{peer family: the entry computing its own equations}`` (:attr:`CellEntry.peer_reference`),
    in registry order."""
    return {e.peer: e for e in REGISTRY.values() if e.peer_reference}


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

__all__ = ["REGISTRY", "CellEntry", "Variant", "SIZES", "INPUTS", "names", "variants", "get",
           "make", "make_variant", "backends_of", "peer_references", "resolve"]
