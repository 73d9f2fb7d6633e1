"""Foreign attention classes attndsl can replace exactly, one module per class.

Adding one is adding a module here that defines a `ForeignKind` decorated with `@register`
(attndsl/foreign/base.py says what each part is); every module of the package is imported
below, and `attndsl.patch(model)` recognizes the new class with no other change.
"""
from __future__ import annotations

import importlib
import pkgutil

from .base import FOREIGN, Call, Equivalent, ForeignKind, Unsupported, recognize, register

_HELPERS = {"base", "conventions"}
for _module in sorted(pkgutil.iter_modules(__path__), key=lambda info: info.name):
    if _module.name not in _HELPERS:
        importlib.import_module(f"{__name__}.{_module.name}")


def foreign_table() -> str:
    """The markdown table of every foreign class (docs embed it; a test keeps it in sync)."""
    rows = ["| layout | classes | what it is | called as | module |", "|---|---|---|---|---|"]
    for name, kind in FOREIGN.items():
        module = type(kind).__module__.replace(".", "/") + ".py"
        rows.append(f"| `{name}` | {', '.join(kind.classes)} | {kind.doc} | "
                    f"`{kind.convention}` | `{module}` |")
    return "\n".join(rows)


__all__ = ["FOREIGN", "Call", "Equivalent", "ForeignKind", "Unsupported", "recognize",
           "register", "foreign_table"]
