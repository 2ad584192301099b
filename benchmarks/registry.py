"""Which jaxrnn cells the harness measures, and which peer cell each one is compared with.

Everything comes from the one cell registry (:mod:`jaxrnn.cells.registry`): every registered
cell that takes ``(B, T, F)`` feature sequences is measured, sized by its entry (``make(H)``),
against the peer family its entry names (``peer``, ``peer_note``); a cell that
:func:`jaxrnn.parallel_run` computes is measured a second time through it
(``min_gru_parallel``). A cell added to the registry is measured with no line here.
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


def _measured(spec) -> Entry:
    note = spec.peer_note or ("" if spec.peer else "registered; no peer")
    return Entry(spec.name, spec.make, spec.peer, note)


def registry() -> list[Entry]:
    """The measured cells: each registered feature cell (not an option of another's factory),
    then the parallel forms, in registry order."""
    specs = [s for s in cell_registry.REGISTRY.values()
             if not s.options and s.inputs == "features"]
    parallel = [Entry(f"{s.name}_parallel", s.make, s.peer,
                      f"{s.name} by parallel prefix scan", jaxrnn.parallel_run)
                for s in specs if s.parallel]
    return [_measured(s) for s in specs] + parallel


def skipped() -> list[str]:
    """One note per registered cell the harness does not measure here, and why."""
    notes = []
    for name, spec in cell_registry.REGISTRY.items():
        if spec.options:  # another form of a measured factory (gru_cho): not a new cell
            notes.append(f"cell {name!r}: {spec.doc}; not measured (a variant of "
                         f"{spec.factory_path.split(':')[1]!r})")
        elif spec.inputs != "features":  # frames, not plain sequences: its own section
            notes.append(f"cell {name!r}: takes {spec.inputs}; measured in its own section")
    return notes


def all_cells() -> tuple[list[Entry], list[str]]:
    """(measured entries, notes on the registered cells not measured)."""
    return registry(), skipped()
