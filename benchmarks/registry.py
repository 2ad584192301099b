"""Which jaxrnn cells the harness measures, and which peer cell each one is compared with.

One line per cell in ``REGISTRY``. Cells that other people add to ``jaxrnn.cells`` later are
also discovered automatically (:func:`discover`): any public lowercase factory in
``jaxrnn.cells`` that returns a :class:`jaxrnn.Cell` from ``factory(hidden)`` or
``factory(hidden, hidden)`` and runs on a ``(B, T, F)`` sequence is measured, with no peer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jaxrnn


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


_HOMES = ("jaxrnn", "jaxrnn.cells", "jaxrnn.cells.minimal", "jaxrnn.classic")


def _factory(name):
    """``jaxrnn.<name>`` (or in the cell and classic packages), or None while it does not
    exist in this checkout."""
    import importlib

    for home in _HOMES:
        try:
            f = getattr(importlib.import_module(home), name, None)
        except ImportError:
            continue
        if f is not None:
            return f
    return None


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
    # cells being written by others; measured as soon as the factory exists
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
    """Cell factories in ``jaxrnn.cells`` not in the registry; returns (entries, skip notes)."""
    import jax
    import jax.numpy as jnp

    entries, notes = [], []
    for name in getattr(jaxrnn.cells, "__all__", []):
        f = getattr(jaxrnn.cells, name, None)
        if name in already or not callable(f) or not name[:1].islower() or isinstance(f, type):
            continue
        if name in ("resolve_activation",):
            continue
        if name == "convlstm":  # frames, not plain sequences: its own section (extras.py)
            notes.append("cell 'convlstm': measured on video frames in its own section")
            continue
        cell = None
        for args in ((8,), (8, 8)):
            try:
                c = f(*args)
            except Exception:  # noqa: BLE001 - any failure means "not a plain cell factory"
                continue
            if isinstance(c, jaxrnn.Cell):
                cell, nargs = c, len(args)
                break
        if cell is None:
            continue
        try:  # it must run on a (B, T, F) feature sequence
            p = cell.init(jax.random.key(0), 4)
            jaxrnn.run(cell, p, jnp.zeros((2, 3, 4)))
        except Exception as e:  # noqa: BLE001
            notes.append(f"cell {name!r} skipped: does not run on (B, T, F) features ({e!s:.80})")
            continue
        make = (lambda H, f=f: f(H)) if nargs == 1 else (lambda H, f=f: f(H, H))
        entries.append(Entry(name, make, None, "discovered; no peer"))
    return entries, notes


def all_cells() -> tuple[list[Entry], list[str]]:
    reg = registry()
    known = {n for n, *_ in _SPECS} | {spec[4] for spec in _SPECS}
    extra, notes = discover({e.name for e in reg} | known)
    return reg + extra, notes
