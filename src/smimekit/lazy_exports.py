"""PEP 562 exports: a package names its public API without importing it up front.

``smimekit`` and ``smimekit.cms`` re-export names from heavy modules; a command that needs one
of them pays for that module only then (docs/benchmarks.md, start-up).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any


def lazy_exports(namespace: dict[str, Any], package: str, table: Mapping[str, str],
                 names: Iterable[str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """A module's ``__getattr__`` and ``__dir__``: ``table`` maps each lazy name to the module
    that defines it; a name is imported on first use and then kept in ``namespace``."""
    public = tuple(names)

    def getattr_(name: str) -> Any:
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def dir_() -> list[str]:
        return sorted({*namespace, *public})

    return getattr_, dir_
