"""Which jaxrnn cells the harness measures, and which peer cell each one is compared with.

The cells themselves come from the one cell registry (:mod:`jaxrnn.cells.registry`); this file
adds only what the harness needs on top: how to size each one, its peer family and the run
function. A cell added to the cell registry later is measured automatically (:func:`discover`),
with no peer, as soon as it takes ``(B, T, F)`` feature sequences.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jaxrnn
from jaxrnn.cells import registry as cell_registry


class Entry(NamedTuple):
    """``make(hidden) -> Cell``; ``peer``: the peer family it is compared with (``"lstm"``,
    ``"gru"``, ``"rnn"``, ``"jordan"``) or ``None``; ``note`` says when the peer is only the
    closest match; ``run``: the function that runs it over a sequence (``jaxrnn.run`` unless
    given)."""

    name: str
    make: Callable[[int], jaxrnn.Cell]
    peer: str | None
    note: str = ""
    run: Callable | None = None


def _factory(name):
    """The factory of registered cell ``name``, or a run function exported by ``jaxrnn``
    (``parallel_run``); None while it does not exist in this checkout."""
    if name in cell_registry.REGISTRY:
        return cell_registry.REGISTRY[name].factory
    return getattr(jaxrnn, name, None)


def _entry(name, build, peer, note="", factory=None, run=None):
    return (name, build, peer, note, factory or name, run)


# name, how to build it from the factory, peer family, note
_SPECS = [
    _entry("elman", lambda f, H: f(H), "rnn"),
    # Flax has no Jordan cell: its peer is the same equations written as a Flax cell
    # (competitors._flax_jordan_cell); no other peer library has one.
    _entry("jordan", lambda f, H: f(H, H), "jordan",
           "peer: the same equations as a Flax nn.RNNCellBase (Flax has no Jordan cell)"),
    _entry("lstm", lambda f, H: f(H), "lstm"),
    _entry("gru", lambda f, H: f(H), "gru"),
    _entry("fully_recurrent", lambda f, H: f(H, H), "rnn", "same equations as a simple RNN"),
    # (tiny reservoirs need a denser matrix to have a non-zero spectral radius)
    _entry("reservoir", lambda f, H: f(H, density=min(1.0, max(0.1, 8.0 / H))), "rnn",
           "echo-state reservoir; closest peer: simple RNN"),
    _entry("min_gru", lambda f, H: f(H), "gru", "closest peer: GRU"),
    _entry("min_lstm", lambda f, H: f(H), "lstm", "closest peer: LSTM"),
    _entry("min_gru_parallel", lambda f, H: f(H), "gru", "min_gru by parallel prefix scan",
           factory="min_gru", run="parallel_run"),
    _entry("min_lstm_parallel", lambda f, H: f(H), "lstm", "min_lstm by parallel prefix scan",
           factory="min_lstm", run="parallel_run"),
]


def registry() -> list[Entry]:
    """The registered cells whose factories exist in this checkout."""
    out = []
    for name, build, peer, note, factory, run in _SPECS:
        f = _factory(factory)
        run_fn = None if run is None else _factory(run)
        if f is not None and (run is None or run_fn is not None):
            out.append(Entry(name, (lambda H, f=f, build=build: build(f, H)), peer, note, run_fn))
    return out


def discover(already: set[str]) -> tuple[list[Entry], list[str]]:
    """Registered cells (:mod:`jaxrnn.cells.registry`) without a line here; returns
    (entries, skip notes)."""
    entries, notes = [], []
    for name, spec in cell_registry.REGISTRY.items():
        if name in already:
            continue
        if spec.options:  # another form of a measured factory (gru_cho): not a new cell
            notes.append(f"cell {name!r}: {spec.doc}; not measured (a variant of "
                         f"{spec.factory_path.split(':')[1]!r})")
            continue
        if spec.inputs != "features":  # frames, not plain sequences: its own section (extras.py)
            notes.append(f"cell {name!r}: takes {spec.inputs}; measured in its own section")
            continue
        entries.append(Entry(name, spec.make, None, "registered; no peer"))
    return entries, notes


def all_cells() -> tuple[list[Entry], list[str]]:
    reg = registry()
    known = {n for n, *_ in _SPECS} | {spec[4] for spec in _SPECS}
    extra, notes = discover({e.name for e in reg} | known)
    return reg + extra, notes
