"""grid — MaxViT's grid attention (CrossFormer's long-distance attention): the map is cut
into size×size groups of tokens spread evenly over the whole image, a stride of H/size
rows and W/size columns apart; each query sees the tokens of its group."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from ..errors import SpecError
from ..lang.component import Component, Size, per_axis
from .base import ApplicationKind, Geometry, Selection, pair_offsets, register


class Grid(Component):
    """size×size groups spread over the whole map (MaxViT grid attention, CrossFormer LDA).

    For an H×W grid (H, W multiples of `size` = (Gh, Gw), one integer for both or [rows,
    columns]; no padding), group (i, j), i < H/Gh, j < W/Gw, holds the Gh·Gw tokens
    (a·H/Gh + i, b·W/Gw + j), a < Gh, b < Gw, in (a, b) order. Relative positions are over
    the in-group coordinates (a, b): a table of (2Gh−1)(2Gw−1) offsets whatever the
    resolution (MaxViT's bias is indexed query − key: `rel_pos_orientation: i_minus_j`).
    """

    kind: Literal["grid"] = "grid"
    size: Size


@dataclass(frozen=True, kw_only=True)
class GridGeometry(Geometry):
    group: tuple[int, int]         # (Gh, Gw): tokens per group along each axis
    groups: tuple[int, int]        # (H/Gh, W/Gw): the strides, and the groups per axis


class GridSelection(Selection):
    """Blocks (B, heads, (H/G)(W/G), G², c): block i·W/G + j is group (i, j), its tokens
    in (a, b) order."""

    def __init__(self, ctx):
        super().__init__(ctx)
        self.ga, self.gb = self.geo.group
        self.gh, self.gw = self.geo.groups

    def block_q(self, t):
        ga, gb, gh, gw = self.ga, self.gb, self.gh, self.gw
        # row a·gh + i, column b·gw + j → (B, a, i, b, j, heads, c)
        t = t.unflatten(1, (ga, gh)).unflatten(3, (gb, gw)).unflatten(-1, (self.bp.heads, -1))
        # → (B, heads, i, j, a, b, c) → (B, heads, gh·gw, ga·gb, c)
        return t.permute(0, 5, 2, 4, 1, 3, 6).flatten(4, 5).flatten(2, 3)

    block_k = block_v = block_q

    def unblock(self, y):
        y = y.unflatten(3, (self.ga, self.gb)).unflatten(2, (self.gh, self.gw))
        # (B, G, i, j, a, b, c) → (B, a, i, b, j, G, c) → (B, H, W, G·c)
        y = y.permute(0, 4, 2, 5, 3, 1, 6).flatten(5).flatten(3, 4).flatten(1, 2)
        return y

    def offsets(self):
        ys, xs = torch.meshgrid(torch.arange(self.ga), torch.arange(self.gb), indexing="ij")
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
        ga, gb = per_axis(app.size)
        if H % ga or W % gb:
            need = (f"H and W to be multiples of {ga}" if ga == gb
                    else f"H to be a multiple of {ga} and W of {gb}")
            valid = [s for s in range(1, min(H, W) + 1) if H % s == 0 and W % s == 0]
            raise SpecError(f"grid groups of {ga}×{gb} tokens need {need}; the {H}x{W} grid "
                            f"is not (no padding in this kind); valid sizes here: {valid} "
                            "(or [rows, columns]: rows dividing H, columns dividing W)",
                            path=where.field("size"))
        gh, gw = H // ga, W // gb
        return GridGeometry(blocks=(gh * gw, ga * gb, ga * gb), map_grid=(H, W),
                            kv_tokens=H * W, offset_span=(ga, gb), taps=ga if ga == gb else 0,
                            group=(ga, gb), groups=(gh, gw))

    def rule(self, ctx):
        return GridSelection(ctx)

    def dynamic_resolution(self, bp):
        return ("the groups' stride is H/size, W/size, so H and W must be multiples of the "
                "group size, which a symbolic H, W does not promise")
