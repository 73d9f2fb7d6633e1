"""The logit terms of the additive parameterization, one module per term.

Adding a term is adding a module here that defines its spec component and a `LogitTerm`
decorated with `@register` (attndsl/terms/base.py says what each part is); every module of
the package is imported below, and the spec's `terms` list accepts every registered term.
"""
from __future__ import annotations

import importlib
import pkgutil

from .base import TERMS, LogitTerm, TermWhere, register, term_of

_HELPERS = {"base"}
for _module in sorted(pkgutil.iter_modules(__path__), key=lambda info: info.name):
    if _module.name not in _HELPERS:
        importlib.import_module(f"{__name__}.{_module.name}")


def models() -> tuple[type, ...]:
    return tuple(term.model for term in TERMS.values())


__all__ = ["TERMS", "LogitTerm", "TermWhere", "register", "term_of", "models"]
