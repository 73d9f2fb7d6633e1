"""The normalization axis: the Norm over j ∈ S(i), one module per kind.

Adding a normalization is adding a module here that defines its spec component and a
`NormalizationKind` decorated with `@register` (attndsl/normalizations/base.py says what
each part is); every module of the package is imported below (softmax, the default,
first: error messages list the kinds in this order), and the spec's `normalization` axis
accepts every registered kind.
"""
from __future__ import annotations

import importlib
import pkgutil

from .base import KEY_AXIS, NORMALIZATIONS, NormalizationKind, NormWhere, normalization_of, register

_HELPERS = {"base"}
importlib.import_module(f"{__name__}.softmax")
for _module in sorted(pkgutil.iter_modules(__path__), key=lambda info: info.name):
    if _module.name not in _HELPERS:
        importlib.import_module(f"{__name__}.{_module.name}")


def models() -> tuple[type, ...]:
    """The spec components of every kind, in registration order."""
    return tuple(kind.model for kind in NORMALIZATIONS.values())


def normalizations_table() -> str:
    """The markdown table of every normalization (docs/mechanisms.md embeds it; a test
    keeps it in sync)."""
    rows = ["| kind | Norm over the keys j ∈ S(i) | module |", "|---|---|---|"]
    for name, kind in NORMALIZATIONS.items():
        module = type(kind).__module__.replace(".", "/") + ".py"
        rows.append(f"| `{name}` | {kind.doc} | `{module}` |")
    return "\n".join(rows)


__all__ = ["KEY_AXIS", "NORMALIZATIONS", "NormalizationKind", "NormWhere", "normalization_of",
           "register", "models", "normalizations_table"]
