"""adaptive_pooled — keys and values from the input adaptive-average-pooled to a fixed
size×size grid (PVT-v2's linear spatial-reduction attention, "Linear SRA": Wang et al.,
"PVT v2: Improved Baselines with Pyramid Vision Transformer", CVMJ 2022)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch.nn.functional as F
from pydantic import Field
from torch import nn

from ..errors import SpecError
from ..lang.component import Component, Float, Int
from .base import (ApplicationKind, Geometry, PooledKeysSelection, Selection, norm_and_activation,
                   register, require_q_kv, to_nchw, to_nhwc)


class AdaptivePooled(Component):
    """Keys and values from AdaptiveAvgPool2d(size)(x) → 1×1 conv (with bias; `conv`) →
    `norm` → `activation` (exact GELU), projected by the `kv` part of layout q_kv (PVT-v2
    linear SRA: size 7, conv, layernorm, gelu — the defaults).

    The pooling is F.adaptive_avg_pool2d: bin i of n positions covers
    [floor(i·n/size), ceil((i+1)·n/size)), so bins overlap when size does not divide the
    grid and repeat tokens when the grid is smaller than size. Always size² keys.
    """

    kind: Literal["adaptive_pooled"] = "adaptive_pooled"
    size: Int = Field(ge=1)
    norm: Literal["layernorm", "none"] = "layernorm"
    norm_eps: Float = Field(default=1e-5, ge=1e-12, le=1.0)
    activation: Literal["gelu", "none"] = "gelu"
    conv: bool = True


@dataclass(frozen=True, kw_only=True)
class AdaptivePooledGeometry(Geometry):
    pooled_grid: tuple[int, int]


class AdaptivePooledSelection(PooledKeysSelection, Selection):
    """One block of every query against the size² pooled keys; every size except the
    pooled grid is read from the context's grid, so the rule runs at a symbolic H, W."""

    def inputs(self, x):
        app, p = self.app, self.ctx.p
        pooled = to_nhwc(F.adaptive_avg_pool2d(to_nchw(x), app.size))   # (B, P, P, C)
        if app.conv:
            # the 1×1 conv on channels-last tokens (timm pools first, then convolves)
            conv = p.pool.conv
            pooled = F.linear(pooled, conv.weight.flatten(1), conv.bias)
        return x, norm_and_activation(pooled, app, p)


@register
class AdaptivePooledKind(ApplicationKind):
    model = AdaptivePooled
    doc = ("keys and values from the input adaptive-average-pooled to size×size (always "
           "size² keys, any grid), then an optional 1×1 conv, LayerNorm and GELU (PVT-v2 "
           "linear SRA)")
    grid_keys = False

    def bind(self, app, where):
        H, W = where.grid
        P = app.size
        limit = 2 * max(H, W) - 1
        if P > limit:
            raise SpecError(f"adaptive pooling to {P}×{P} at the {H}x{W} grid: beyond {limit} "
                            "(2·max(H, W) − 1) bins only repeat tokens (and "
                            f"{P * P} keys would be made); valid: 1..{limit}",
                            path=where.field("size"))
        require_q_kv(where, "adaptive-pooled")
        kv = P * P
        return AdaptivePooledGeometry(blocks=(1, H * W, kv), map_grid=(H, W), kv_tokens=kv,
                                      pooled_grid=(P, P))

    def parameters(self, app, bp, dim):
        if not app.conv and app.norm == "none":
            return {}
        pool = nn.Module()
        if app.conv:
            pool.conv = nn.Conv2d(dim, dim, 1)
        if app.norm == "layernorm":
            pool.norm = nn.LayerNorm(dim, eps=app.norm_eps)
        return {"pool": pool}

    def rule(self, ctx):
        return AdaptivePooledSelection(ctx)
