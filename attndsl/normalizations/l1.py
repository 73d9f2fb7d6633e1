"""l1 — w / max(Σ_j |w_j|, eps)."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..lang.component import Component, Float
from .base import KEY_AXIS, NormalizationKind, register


class L1(Component):
    """w / max(Σ_j |w_j|, eps)."""

    kind: Literal["l1"] = "l1"
    eps: Float = Field(default=1e-12, ge=1e-12, le=1.0)


@register
class L1Normalization(NormalizationKind):
    model = L1
    doc = "w / max(Σ_j \\|w_j\\|, eps)"

    def lower(self, ctx, norm, w):
        return w / w.abs().sum(KEY_AXIS, keepdim=True).clamp_min(norm.eps)
