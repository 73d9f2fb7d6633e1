"""Checks of the Python API's arguments, before anything is built from them.

Python would take `dim=96.5` as 96, `dim=True` as 1 and `resolution="14"` as (1, 4)
through int() and iteration; these checks take only what the argument means and say what
is valid otherwise.
"""
from __future__ import annotations

import numbers

from ..errors import ArgumentError

MAX_DIM = 65536          # channels; a transformer stage beyond this is a typo
MAX_SIDE = 8192          # tokens per grid side (the memory estimate at bind is the real bound)


def integer(value, argument: str, *, low: int = 1, high: int | None = None,
            label: str | None = None) -> int:
    """A Python or NumPy integer (not a bool, not a float, not a string) in [low, high].
    `label` names a part of the argument in the message ("resolution H")."""
    label = label or argument
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ArgumentError(f"{label} must be an integer, got {value!r} "
                            f"({type(value).__name__})", argument=argument)
    value = int(value)
    if value < low or (high is not None and value > high):
        bound = ("a positive integer" if low == 1 else f"an integer ≥ {low}") + (
            f" (at most {high:,})" if high is not None else "")
        raise ArgumentError(f"{label} must be {bound}, got {value}", argument=argument)
    return value


def resolution(value, argument: str = "resolution", square_ok: bool = True) -> tuple[int, int]:
    """(H, W) as two integers (a tuple, list or torch.Size); one integer for a square grid
    where `square_ok`."""
    if square_ok and isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = (value, value)
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 2:
        square = " (or one for a square grid)" if square_ok else ""
        raise ArgumentError(f"{argument} must be (H, W): two positive integers{square}, "
                            f"got {value!r}", argument=argument)
    H, W = value
    try:
        return (integer(H, argument, high=MAX_SIDE, label=f"{argument} H"),
                integer(W, argument, high=MAX_SIDE, label=f"{argument} W"))
    except ArgumentError as exc:
        raise ArgumentError(f"{exc.detail}, in {argument} {tuple(value)!r}",
                            argument=argument) from None


def dim(value) -> int:
    return integer(value, "dim", high=MAX_DIM)


def passes(value, valid: list[str]) -> list[str] | None:
    """None (the whole pipeline) or a list of pass names (in any order; [] runs none)."""
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise ArgumentError(f"passes must be a list of pass names (or None for all), got "
                            f"{value!r}; valid names: {valid}", argument="passes")
    unknown = [p for p in value if p not in valid]
    if unknown:
        raise ArgumentError(f"unknown pass(es) {unknown}; valid: {valid}", argument="passes")
    return list(value)


def heads(value) -> int | str | None:
    """None (the spec's), a positive integer, or "channels" (one head per channel)."""
    if value is None or value == "channels":
        return value
    return integer(value, "heads", high=MAX_DIM)
