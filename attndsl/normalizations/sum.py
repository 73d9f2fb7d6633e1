"""sum — w / (Σ_j w + eps): linear attention's normaliser (Katharopoulos et al. 2020). With
only a query_key term over shared keys autoplan runs it in the associative form (the
"linear" engine, codegen/rules.py linear_aggregate), never building the N×N weights."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..lang.component import Component, Float
from .base import KEY_AXIS, NormalizationKind, register


class Sum(Component):
    """w / (Σ_j w + eps): linear attention's normaliser (Katharopoulos et al. 2020). With
    only a query_key term over shared keys it runs in the associative form
    φ(q)(φ(k)ᵀv) / (φ(q)·Σ_j φ(k_j) + eps), never building the N×N weights."""

    kind: Literal["sum"] = "sum"
    eps: Float = Field(default=1e-6, ge=0, le=1.0)


@register
class SumNormalization(NormalizationKind):
    model = Sum
    doc = "w / (Σ_j w + eps): linear attention (associative form over shared keys)"

    def lower(self, ctx, norm, w):
        return w / (w.sum(KEY_AXIS, keepdim=True) + norm.eps)
