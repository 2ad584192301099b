"""Recurrent cells, one module per family; each factory returns a :class:`Cell`.

The package exports, for every cell of the registry (:mod:`jaxrnn.cells.registry`) that lives
here, its factory, its params type and its state type (``lstm``, ``LSTMParams``,
``LSTMState``, ...): a cell added to the registry is exported with no line here.
"""

from jaxrnn.cells import registry as _registry
from jaxrnn.cells.base import Cell, resolve_activation


def _registered_exports() -> dict:
    out = {}
    for entry in _registry.REGISTRY.values():
        for path in (entry.factory_path, entry.params_path, entry.state_path):
            module, _, attr = path.partition(":")
            if module.startswith(f"{__name__}."):  # the reservoir lives in jaxrnn.classic
                out[attr] = _registry.resolve(path)
    return out


_EXPORTS = _registered_exports()
globals().update(_EXPORTS)

__all__ = ["Cell", "resolve_activation", *_EXPORTS]
