"""The base of every spec component, and number fields that take numbers only.

Kept apart from `models` so that the modules of the application kinds
(attndsl/applications/) can define their spec components without importing the axes
that are built from them.
"""
from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict


class Component(BaseModel):
    """Base of every spec component: frozen, and unknown keys are errors."""

    # NaN / inf are never meaningful in a spec, and NaN would break load(dump(s)) == s
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


def _numbers_only(kind: str):
    """pydantic's lax mode reads `size: true` as 1 and `size: "7"` as 7: a number field
    takes numbers only (YAML's true/false and quoted strings are errors)."""
    def check(value):
        if isinstance(value, bool):
            raise ValueError(f"input should be a valid {kind}, got {value!r} (a YAML boolean)")
        if isinstance(value, str):
            raise ValueError(f"input should be a valid {kind}, got the string {value!r}")
        return value
    return BeforeValidator(check)


Int = Annotated[int, _numbers_only("integer")]
Float = Annotated[float, _numbers_only("number")]
