"""dpb — CrossFormer's dynamic position bias: an MLP over the raw offsets (Δy, Δx) of the
table gives every offset a bias per head, MLP(j − i or i − j).

MLP (the official DynamicPosBias, residual=False): Linear(2, P) → [LayerNorm(P) → ReLU →
Linear(P, P)] × 2 → LayerNorm(P) → ReLU → Linear(P, heads); with residual=True the two
middle stages are added to their input. P = `hidden` (CrossFormer: dim // 16). Parameters
mirror the official names under `dpb`: pos_proj, pos1, pos2, pos3 (Sequential indices 0
and 2 hold the LayerNorm and the Linear).
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field
from torch import nn

from ..lang.component import Component, Int
from .base import LogitTerm, offset_coordinates, per_head_bias, register


class DynamicPositionBias(Component):
    """MLP(Δy, Δx) per head over the table's offsets (CrossFormer)."""

    kind: Literal["dpb"] = "dpb"
    hidden: Int | None = Field(default=None, ge=1, le=65536)   # None: dim // 16
    residual: bool = False


@register
class DynamicPositionBiasTerm(LogitTerm):
    model = DynamicPositionBias
    doc = "MLP(Δy, Δx) per head over the offsets (CrossFormer's dynamic position bias)"
    offsets = True
    signed = True

    def parameters(self, term, bp):
        P = term.hidden or max(bp.reads // 16, 1)

        def stage(n_out):
            return nn.Sequential(nn.LayerNorm(P), nn.ReLU(), nn.Linear(P, n_out))
        dpb = nn.Module()
        dpb.pos_proj = nn.Linear(2, P)
        dpb.pos1, dpb.pos2, dpb.pos3 = stage(P), stage(P), stage(bp.heads)
        return {"dpb": dpb}

    def lower(self, ctx, sel, term, q, k, scale):
        dpb = ctx.p.dpb
        offsets = ctx.constant("dpb_offsets", offset_coordinates(
            ctx.bp.geometry.offset_span).to(ctx.dtype))
        pos = dpb.pos_proj(offsets)
        if term.residual:
            pos = pos + dpb.pos1(pos)
            pos = dpb.pos3(pos + dpb.pos2(pos))
        else:
            pos = dpb.pos3(dpb.pos2(dpb.pos1(pos)))                 # (T, G)
        return per_head_bias(ctx, sel, pos)
