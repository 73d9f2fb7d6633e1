"""cpb — Swin-V2's continuous position bias: a small MLP over log-spaced relative
coordinates gives every offset a bias per head, 16·sigmoid(MLP(coords))[j − i].

For a table spanning |dy| < sy, |dx| < sx, the coordinates of offset (dy, dx) are
    c = dy / (n_y − 1) · 8  (likewise dx),  c ← sign(c)·log2(|c| + 1) / log2(8),
with n = the pretrained window when given, else the span (the window). MLP: Linear(2, hidden)
→ ReLU → Linear(hidden, heads, no bias) (timm's `cpb_mlp.0` / `cpb_mlp.2`).
"""
from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import Field
from torch import nn

from ..lang.component import Component, Float, Int, Shift, per_axis
from .base import LogitTerm, offset_coordinates, per_head_bias, register


class ContinuousPositionBias(Component):
    """16·sigmoid(MLP(log-spaced coordinates of j − i)) per head (Swin-V2)."""

    kind: Literal["cpb"] = "cpb"
    hidden: Int = Field(default=512, ge=1, le=65536)
    pretrained_window: Shift = 0     # [rows, columns] or one for both; 0: the bound span
    scale: Float = Field(default=16.0, gt=0, le=1e6)   # the sigmoid's range


def log_spaced_coordinates(span: tuple[int, int],
                           pretrained: int | tuple[int, int]) -> torch.Tensor:
    """((2sy−1)(2sx−1), 2) coordinates, rows in the order of the offset tables (dy-major,
    dy = −(sy−1) … sy−1)."""
    divisors = torch.tensor([max((p if p > 0 else s) - 1, 0)
                             for s, p in zip(span, per_axis(pretrained))], dtype=torch.float64)
    # an axis of span 1 (one row of keys) has the single coordinate 0
    grid = offset_coordinates(span) / divisors.clamp_min(1) * 8
    return torch.sign(grid) * torch.log2(grid.abs() + 1.0) / math.log2(8)


@register
class ContinuousPositionBiasTerm(LogitTerm):
    model = ContinuousPositionBias
    doc = "16·sigmoid(MLP(log-spaced coordinates of j−i)) per head (Swin-V2's continuous position bias)"
    offsets = True
    signed = True

    def parameters(self, term, bp):
        mlp = nn.Sequential(nn.Linear(2, term.hidden, bias=True), nn.ReLU(inplace=False),
                            nn.Linear(term.hidden, bp.heads, bias=False))
        return {"cpb_mlp": mlp}

    def lower(self, ctx, sel, term, q, k, scale):
        coords = ctx.constant("cpb_coords", log_spaced_coordinates(
            ctx.bp.geometry.offset_span, term.pretrained_window).to(ctx.dtype))
        mlp = ctx.p.cpb_mlp
        table = term.scale * torch.sigmoid(mlp[2](torch.relu(mlp[0](coords))))   # (T, G)
        return per_head_bias(ctx, sel, table)
