"""One exception hierarchy for everything attndsl reports to a user.

Errors are raised once, at the boundary where the user's input is known (the spec path,
the YAML line, the shapes), so that a CLI can print them without a traceback.
"""
from __future__ import annotations


class AttndslError(Exception):
    """Base class of every error attndsl raises on purpose."""


class SpecError(AttndslError, ValueError):
    """A spec is invalid: names the field path, the YAML line when known, the bad value and
    what would be valid."""

    def __init__(self, message: str, *, path: str = "", line: int | None = None,
                 source: str | None = None):
        self.path = path
        self.line = line
        self.source = source
        self.detail = message
        where = []
        if source:
            where.append(str(source) + (f":{line}" if line else ""))
        elif line:
            where.append(f"line {line}")
        if path:
            where.append(f"at '{path}'")
        prefix = " ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class LoweringError(AttndslError):
    """A valid spec could not be lowered (a bug or an unsupported combination)."""


class ShapeError(AttndslError, ValueError):
    """The input given to a compiled module does not match what it was built for."""


class ArgumentError(SpecError, TypeError):
    """An argument of the Python API (dim, resolution, heads, dtype, device, a size given
    to forward_tokens, …) is invalid: names the argument, the value and what is valid.
    A SpecError (the spec is bound with these arguments) and a TypeError."""

    def __init__(self, message: str, *, argument: str):
        super().__init__(message, path=argument)
        self.argument = argument
