"""Lazy package exports (PEP 562): a package lists ``name -> defining module`` and each name is imported
on first access, so importing the package stays cheap (no torch or MONAI until a heavy name is used).

Standard library only, so every floor may use it.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Mapping, MutableMapping

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, namespace: MutableMapping[str, Any], exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``(__getattr__, __dir__)`` for package ``package`` whose globals are ``namespace``.

    ``exports`` maps each lazily exported name to the module that defines it; a loaded name is
    stored in ``namespace``, so later lookups skip ``__getattr__``.
    """

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
