"""Names a package imports on first use (PEP 562), so that importing the package stays cheap:
:mod:`jaxrnn.io` and :mod:`jaxrnn.train` defer Orbax, optax and tqdm this way."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping


def lazy_exports(package: str, table: Mapping[str, tuple[str, str]],
                 namespace: dict) -> tuple[Callable, Callable]:
    """``(__getattr__, __dir__)`` for the package ``package`` whose names in ``table``
    (``name -> (module, attribute)``; ``(package, sub)`` is the submodule ``package.sub``) are
    imported when first read, then kept in ``namespace`` (the package's ``globals()``)."""

    def __getattr__(name):
        if name not in table:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, attr = table[name]
        if module == package:
            value = importlib.import_module(f"{module}.{attr}")
        else:
            value = getattr(importlib.import_module(module), attr)
        namespace[name] = value
        return value

    def __dir__():
        return sorted(set(namespace) | set(table))

    return __getattr__, __dir__


__all__ = ["lazy_exports"]
