"""gated_positional — ConViT's gated positional self-attention (d'Ascoli et al., ICML 2021,
arXiv:2103.10697): per head, a learned gate mixes the softmax of the content logits with the
softmax of positional logits of the (query, key) offset,

    W = (1 − σ(λ_g))·softmax_j(logits) + σ(λ_g)·softmax_j(v_g · r_ij),
    r_ij = (Δx, Δy, Δx² + Δy²),   (Δy, Δx) = key − query,

then renormalized over the keys (the mix of two distributions already sums to one; ConViT
divides by the sum anyway, and so does this). v_g is row g of a Linear(3, G) (timm's
`pos_proj`, with a bias that the softmax cancels), λ the per-head `gating_param` (timm starts
it at 1). The positional logits need offsets from the application (global, windows, …).
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from ..errors import SpecError
from ..lang.component import Component
from .base import KEY_AXIS, NormalizationKind, NormWhere, register


class GatedPositional(Component):
    kind: Literal["gated_positional"] = "gated_positional"


def offset_features(dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """(…, 3) features (Δx, Δy, Δx² + Δy²) of the offsets, in float64."""
    dx, dy = dx.to(torch.float64), dy.to(torch.float64)
    return torch.stack([dx, dy, dx * dx + dy * dy], dim=-1)


@register
class GatedPositionalNormalization(NormalizationKind):
    model = GatedPositional
    doc = ("(1 − σ(λ))·softmax(w) + σ(λ)·softmax(v·r_ij), r = (Δx, Δy, Δx² + Δy²): a learned "
           "gate per head mixes content and positional attention (ConViT's GPSA)")

    def check(self, where: NormWhere) -> None:
        if not where.kind.offsets:
            raise SpecError(f"gated_positional's positional logits read the (query, key) "
                            f"offsets, which application '{where.kind.name}' has none of",
                            path=where.path)
        if where.geometry.masked:
            raise SpecError("gated_positional mixes two softmaxes; a logits mask (shifted "
                            "windows' regions, masked padding) would mask only the first: use "
                            "an application without a mask", path=where.path)
        if where.branch.kernel.type == "depthwise":
            raise SpecError("gated_positional weighs one weight per head and key; a depthwise "
                            "kernel has one per channel: use kernel.type standard",
                            path=where.path)

    def parameters(self, norm, bp) -> dict:
        return {"gated.gate": nn.Parameter(torch.ones(bp.heads)),     # ConViT starts λ at 1
                "gated.position": nn.Linear(3, bp.heads)}

    def lower(self, ctx, norm, w):
        dy, dx = ctx.sel.offsets()                                 # (nb, Lq, Lk) each
        features = ctx.constant("position_features",
                                offset_features(dy, dx).to(ctx.dtype))
        positional = ctx.p.gated.position(features).permute(3, 0, 1, 2)[None]   # (1,G,nb,Lq,Lk)
        g = torch.sigmoid(ctx.p.gated.gate).reshape(1, -1, 1, 1, 1)
        mixed = (1 - g) * torch.softmax(w, dim=KEY_AXIS) \
            + g * torch.softmax(positional, dim=KEY_AXIS)
        return mixed / mixed.sum(dim=KEY_AXIS, keepdim=True)
