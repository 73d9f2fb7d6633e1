"""The application axis: which keys S(i) each query sees, one module per kind.

Adding a kind is adding a module here that defines its spec component, its geometry and
an `ApplicationKind` decorated with `@register` (attndsl/applications/base.py says what
each part is). Every module of this package is imported below, so a new file is found
without editing a list; the spec's `application` axis is built from `KINDS`.
"""
from __future__ import annotations

import importlib
import pkgutil

from .base import (KINDS, ApplicationKind, Geometry, Selection, Where, fits_grid, kind_of,
                   register)

_HELPERS = {"base", "views"}      # modules of this package that define no kind
for _module in sorted(pkgutil.iter_modules(__path__), key=lambda info: info.name):
    if _module.name not in _HELPERS:
        importlib.import_module(f"{__name__}.{_module.name}")


def models() -> tuple[type, ...]:
    """The spec components of every kind, in a stable order (registration order)."""
    return tuple(kind.model for kind in KINDS.values())


def kinds_table() -> str:
    """The markdown table of every kind (docs/mechanisms.md embeds it; a test keeps it in
    sync): name, what S(i) is, the facts other axes check, the module."""
    rows = ["| kind | which keys each query sees | offsets (rel-pos) | keys on the grid | "
            "module |", "|---|---|---|---|---|"]
    for name, kind in sorted(KINDS.items()):
        module = type(kind).__module__.replace(".", "/") + ".py"
        rows.append(f"| `{name}` | {kind.doc} | {'yes' if kind.offsets else 'no'} | "
                    f"{'yes' if kind.grid_keys else 'no'} | `{module}` |")
    return "\n".join(rows)


__all__ = ["kinds_table", "KINDS", "ApplicationKind", "Geometry", "Selection", "Where", "fits_grid",
           "kind_of", "register", "models"]
