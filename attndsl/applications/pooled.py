"""pooled — keys and values from a pooled copy of the input (PVT's SRA, Twins GSA,
HiLo Lo-Fi)."""
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


class Pooled(Component):
    """Keys and values from a pooled copy of the input (PVT SRA, Twins GSA, HiLo Lo-Fi).

    op: avg  -- AvgPool2d(ratio) (leftover rows/cols dropped);
        conv -- Conv2d(C, C, kernel=stride=ratio) (leftover dropped), then `norm`, then
                `activation` (Shunted's GELU).
    """

    kind: Literal["pooled"] = "pooled"
    op: Literal["avg", "conv"] = "avg"
    ratio: Int = Field(ge=1)
    norm: Literal["layernorm", "none"] = "none"
    norm_eps: Float = Field(default=1e-5, ge=1e-12, le=1.0)
    activation: Literal["none", "gelu"] = "none"


@dataclass(frozen=True, kw_only=True)
class PooledGeometry(Geometry):
    pooled_grid: tuple[int, int]


class PooledSelection(PooledKeysSelection, Selection):
    """Keys and values from AvgPool2d(r)(x) or LN(Conv2d_r,r(x)); leftover rows dropped."""

    def inputs(self, x):
        app, p = self.app, self.ctx.p
        if app.op == "avg":
            pooled = to_nhwc(F.avg_pool2d(to_nchw(x), app.ratio))
        else:
            pooled = norm_and_activation(to_nhwc(p.pool.conv(to_nchw(x))), app, p)
        return x, pooled


@register
class PooledKind(ApplicationKind):
    model = Pooled
    doc = ("keys and values from the input average-pooled, or strided-conv'd (+ LayerNorm), "
           "by `ratio` (PVT SRA, Twins GSA, HiLo Lo-Fi)")
    grid_keys = False

    def bind(self, app, where):
        H, W = where.grid
        r = app.ratio
        if r > min(H, W):
            raise SpecError(f"pooling ratio {r} is larger than the {H}x{W} grid; valid: 1.."
                            f"{min(H, W)}", path=where.field("ratio"))
        require_q_kv(where, "pooled")
        if app.op == "avg" and app.norm != "none":
            raise SpecError("application.norm applies to op 'conv' (strided conv + LN); with "
                            "op 'avg' use norm 'none'", path=where.field("norm"))
        if app.op == "avg" and app.activation != "none":
            raise SpecError("application.activation follows the strided conv (op 'conv'); "
                            "with op 'avg' use activation 'none'",
                            path=where.field("activation"))
        pooled = (H // r, W // r)
        kv = pooled[0] * pooled[1]
        return PooledGeometry(blocks=(1, H * W, kv), map_grid=(H, W), kv_tokens=kv,
                              pooled_grid=pooled)

    def parameters(self, app, bp, dim):
        if app.op != "conv":
            return {}
        pool = nn.Module()
        pool.conv = nn.Conv2d(dim, dim, app.ratio, stride=app.ratio)
        if app.norm == "layernorm":
            pool.norm = nn.LayerNorm(dim, eps=app.norm_eps)
        return {"pool": pool}

    def rule(self, ctx):
        return PooledSelection(ctx)
