"""grid — MaxViT's grid attention (CrossFormer's long-distance attention): the map is cut
into size×size groups of tokens spread evenly over the whole image, a stride of H/size
rows and W/size columns apart; each query sees the tokens of its group."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field

from ..errors import SpecError
from ..lang.component import Component, Int
from .base import ApplicationKind, Geometry, Selection, pair_offsets, register


class Grid(Component):
    """size×size groups spread over the whole map (MaxViT grid attention, CrossFormer LDA).

    For an H×W grid (H, W multiples of `size` = G; no padding), group (i, j),
    i < H/G, j < W/G, holds the G² tokens (a·H/G + i, b·W/G + j), a, b < G, in (a, b)
    order. Relative positions are over the in-group coordinates (a, b): a table of
    (2G−1)² offsets whatever the resolution (MaxViT's bias is indexed query − key:
    `rel_pos_orientation: i_minus_j`).
    """

    kind: Literal["grid"] = "grid"
    size: Int = Field(ge=1)


@dataclass(frozen=True, kw_only=True)
class GridGeometry(Geometry):
    group: int                     # G: tokens per side of a group
    groups: tuple[int, int]        # (H/G, W/G): the strides, and the groups per axis


class GridSelection(Selection):
    """Blocks (B, heads, (H/G)(W/G), G², c): block i·W/G + j is group (i, j), its tokens
    in (a, b) order."""

    def __init__(self, ctx):
        super().__init__(ctx)
        self.g = self.geo.group
        self.gh, self.gw = self.geo.groups

    def block_q(self, t):
        g, gh, gw = self.g, self.gh, self.gw
        # row a·gh + i, column b·gw + j → (B, a, i, b, j, heads, c)
        t = t.unflatten(1, (g, gh)).unflatten(3, (g, gw)).unflatten(-1, (self.bp.heads, -1))
        # → (B, heads, i, j, a, b, c) → (B, heads, gh·gw, g·g, c)
        return t.permute(0, 5, 2, 4, 1, 3, 6).flatten(4, 5).flatten(2, 3)

    block_k = block_v = block_q

    def unblock(self, y):
        g, gh, gw = self.g, self.gh, self.gw
        y = y.unflatten(3, (g, g)).unflatten(2, (gh, gw))           # (B, G, i, j, a, b, c)
        # → (B, a, i, b, j, G, c) → (B, H, W, G·c)
        y = y.permute(0, 4, 2, 5, 3, 1, 6).flatten(5).flatten(3, 4).flatten(1, 2)
        return y

    def offsets(self):
        ys, xs = torch.meshgrid(torch.arange(self.g), torch.arange(self.g), indexing="ij")
        return pair_offsets(ys.flatten(), xs.flatten())


@register
class GridKind(ApplicationKind):
    model = Grid
    doc = ("size×size groups spread evenly over the map, stride (H/size, W/size): token "
           "(a·H/size + i, b·W/size + j) is in group (i, j); rel-pos offsets over the "
           "in-group (a, b) (MaxViT grid attention, CrossFormer long-distance attention)")
    offsets = True

    def bind(self, app, where):
        H, W = where.grid
        g = app.size
        if H % g or W % g:
            valid = [s for s in range(1, min(H, W) + 1) if H % s == 0 and W % s == 0]
            raise SpecError(f"grid groups of {g}×{g} tokens need H and W to be multiples of "
                            f"{g}; the {H}x{W} grid is not (no padding in this kind); valid "
                            f"sizes here: {valid}", path=where.field("size"))
        gh, gw = H // g, W // g
        return GridGeometry(blocks=(gh * gw, g * g, g * g), map_grid=(H, W), kv_tokens=H * W,
                            offset_span=(g, g), taps=g, group=g, groups=(gh, gw))

    def rule(self, ctx):
        return GridSelection(ctx)

    def dynamic_resolution(self, bp):
        return ("the groups' stride is H/size, W/size, so H and W must be multiples of the "
                "group size, which a symbolic H, W does not promise")
