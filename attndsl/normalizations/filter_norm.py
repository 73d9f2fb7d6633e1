"""filter_norm — DDF's filter normalization: (w − mean_j w) / (std_j w + 1e-10) · gain / K
over a K×K window or neighbourhood (unbiased std; DDF uses gain √2)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..errors import SpecError
from ..lang.component import Component, Float
from .base import KEY_AXIS, NormalizationKind, NormWhere, register


class FilterNorm(Component):
    """(w − mean_j w) / (std_j w + 1e-10) · gain / K, unbiased std (DDF uses gain √2)."""

    kind: Literal["filter_norm"] = "filter_norm"
    gain: Float = Field(default=1.0, ge=-1e6, le=1e6)


@register
class FilterNormalization(NormalizationKind):
    model = FilterNorm
    doc = "(w − mean_j w) / (std_j w + 1e-10) · gain / K over K×K keys (DDF)"

    def check(self, where: NormWhere) -> None:
        if not where.geometry.taps:
            raise SpecError("filter_norm divides by the kernel size K and needs keys that are "
                            "a K×K window or neighbourhood, got "
                            f"'{where.branch.application.kind}'", path=where.path)

    def lower(self, ctx, norm, w):
        centred = w - w.mean(KEY_AXIS, keepdim=True)
        return centred / (w.std(KEY_AXIS, keepdim=True) + 1e-10) * (norm.gain / ctx.bp.window)
