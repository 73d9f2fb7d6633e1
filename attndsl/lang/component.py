"""The base of every spec component, and number fields that take numbers only.

Kept apart from `models` so that the modules of the application kinds
(attndsl/applications/) can define their spec components without importing the axes
that are built from them.
"""
from __future__ import annotations

from typing import Annotated, Union

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field


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


def int_or_pair(minimum: int):
    """A size per axis: one integer for both (7), or [rows, columns] ([7, 10]: MaxViT's
    partitions at a 224×320 image, timm's windows shrunk per axis). A pair of equal values
    is that integer, so that [7, 7] and 7 are one spec (one design hash, one dump)."""
    def check(value):
        is_int = isinstance(value, int) and not isinstance(value, bool)
        pair = (isinstance(value, (list, tuple)) and len(value) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) for v in value))
        if not (is_int or pair):
            raise ValueError("input should be a valid integer or [rows, columns] (two "
                             "integers)")
        values = tuple(value) if pair else (value,)
        for v in values:
            if v < minimum:
                raise ValueError(f"input should be greater than or equal to {minimum}"
                                 + (f" (got {v} in [rows, columns])" if pair else ""))
        return values[0] if values[0] == values[-1] else values
    return BeforeValidator(check)


def per_axis(value) -> tuple[int, int]:
    """(rows, columns) of a size written as int_or_pair."""
    return tuple(value) if isinstance(value, tuple) else (value, value)


def _at_least(minimum: int):
    # the bounds again, for the JSON Schema (the validator above checks first)
    one = Annotated[int, Field(ge=minimum)]
    return Annotated[Union[one, tuple[one, one]], int_or_pair(minimum)]


Size = _at_least(1)
Shift = _at_least(0)
