"""Optional dataset packages: import them, or fail with a message that says how to install."""

from __future__ import annotations

import importlib


class MissingDependencyError(ImportError):
    """An optional package a task needs is not installed; the message says how to install it."""


def require(module: str, *, pip_name: str | None = None, extra: str = "data", purpose: str = ""):
    """Import ``module`` or raise :class:`MissingDependencyError` naming the pip command.

    Args:
      module: the import name (``"sklearn"``).
      pip_name: the distribution name on PyPI (``"scikit-learn"``); defaults to ``module``.
      extra: the jaxrnn extra that pulls it in.
      purpose: what needs it, for the message (``"the digits task"``).
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        who = f"{purpose} needs" if purpose else "this needs"
        raise MissingDependencyError(
            f"{who} the package {pip_name or module!r}, which is not installed ({e}). "
            f'Install it with: pip install "jaxrnn[{extra}]"  '
            f"(or: pip install {pip_name or module})"
        ) from None


__all__ = ["MissingDependencyError", "require"]
