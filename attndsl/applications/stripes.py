"""stripes — CSWin's cross-shaped windows: each query sees the stripe it lies in, of the
full height and `width` columns (vertical) or the full width and `width` rows (horizontal);
CSWin gives half the heads each orientation (two branches)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from pydantic import Field

from ..errors import SpecError
from ..lang.component import Component, Int
from .base import ApplicationKind, Geometry, Selection, fits_grid, pair_offsets, register


class Stripes(Component):
    """Stripes of the full height and `width` columns (vertical), or of the full width and
    `width` rows (horizontal); a grid the width does not divide is an error (CSWin)."""

    kind: Literal["stripes"] = "stripes"
    orientation: Literal["vertical", "horizontal"]
    width: Int = Field(ge=1)


@dataclass(frozen=True, kw_only=True)
class StripeGeometry(Geometry):
    tile: tuple[int, int]      # (rows, columns) of one stripe


class StripeSelection(Selection):
    """Stripes as row-major tiles of the map: blocks (B, G, nb, th·tw, c), nb stripes."""

    def __init__(self, ctx):
        super().__init__(ctx)
        self.th, self.tw = self.geo.tile
        self.nh, self.nw = self.H // self.th, self.W // self.tw

    def to_tiles(self, t):
        """(B, H, W, c) → (B·nb, th, tw, c)."""
        t = t.unflatten(1, (self.nh, self.th)).unflatten(3, (self.nw, self.tw))
        return t.permute(0, 1, 3, 2, 4, 5).flatten(0, 2)       # (B·nh·nw, th, tw, c)

    def from_tiles(self, t):
        t = t.unflatten(0, (-1, self.nh, self.nw)).permute(0, 1, 3, 2, 4, 5)
        return t.flatten(3, 4).flatten(1, 2)

    def block_q(self, t):
        tiles = self.to_tiles(t).flatten(1, 2).unflatten(-1, (self.bp.heads, -1))
        # (B·nb, L, G, c) → (B, G, nb, L, c)
        return tiles.unflatten(0, (-1, self.nh * self.nw)).permute(0, 3, 1, 2, 4)

    block_k = block_v = block_q

    def unblock(self, y):
        tiles = y.permute(0, 2, 3, 1, 4).flatten(3)               # (B, nb, L, G·c)
        tiles = tiles.flatten(0, 1).unflatten(1, (self.th, self.tw))
        return self.from_tiles(tiles)

    def offsets(self):
        ys, xs = torch.meshgrid(torch.arange(self.th), torch.arange(self.tw), indexing="ij")
        return pair_offsets(ys.flatten(), xs.flatten())


@register
class StripesKind(ApplicationKind):
    model = Stripes
    doc = ("the stripe holding the query: full height × `width` columns (vertical) or "
           "`width` rows × full width (horizontal) (CSWin's cross-shaped windows)")
    offsets = True
    tiles = True

    def bind(self, app, where):
        H, W = where.grid
        across = W if app.orientation == "vertical" else H
        fits_grid(app.width, where.grid, where.field("width"), "a stripe width of")
        if across % app.width:
            valid = [w for w in range(1, across + 1) if across % w == 0]
            raise SpecError(f"{app.orientation} stripes of width {app.width} do not tile the "
                            f"{H}x{W} grid ({across} {'columns' if app.orientation == 'vertical' else 'rows'}); "
                            f"valid widths: {valid}", path=where.field("width"))
        tile = (H, app.width) if app.orientation == "vertical" else (app.width, W)
        n = tile[0] * tile[1]
        return StripeGeometry(blocks=(H * W // n, n, n), map_grid=(H, W), kv_tokens=H * W,
                              offset_span=tile, tile=tile)

    def rule(self, ctx):
        return StripeSelection(ctx)

    def dynamic_resolution(self, bp):
        return "the stripes span the grid's full height or width"
