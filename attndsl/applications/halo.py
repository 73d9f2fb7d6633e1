"""halo — HaloNet's blocked local attention (Vaswani et al., "Scaling Local Self-Attention for
Parameter Efficient Visual Backbones", CVPR 2021): queries in non-overlapping block×block
blocks, each block's keys and values the (block + 2·halo)² window around it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from ..errors import SpecError
from ..lang.component import Component, Int
from .base import ApplicationKind, Geometry, Selection, register


class Halo(Component):
    """Blocked local attention with a halo (HaloNet; timm's HaloAttn with stride 1).

    Queries: non-overlapping block×block blocks (H and W multiples of `block`, as timm
    asserts). Keys/values of block (I, J): the (block + 2·halo)² window of the projected
    k/v maps zero-padded by `halo` on every side AFTER the projections, starting at padded
    (I·block, J·block). Padded keys and values are zero vectors (not the projection bias)
    and are not masked: they take part in Norm with the logits of the other terms alone
    (timm's semantics). Offsets j − i span |dy|, |dx| < block + halo.
    """

    kind: Literal["halo"] = "halo"
    block: Int = Field(ge=1)
    halo: Int = Field(ge=0)


@dataclass(frozen=True, kw_only=True)
class HaloGeometry(Geometry):
    block: int                     # b: query block side
    halo: int                      # a: zero halo around each block
    window: int                    # b + 2a: key/value window side
    block_grid: tuple[int, int]    # (H/b, W/b)


def halo_windows(t, axis: int, n: int, b: int, a: int, win: int):
    """Along `axis` of length n·b (already zero-padded by `a` in front and by enough at the
    back, to (n + e)·b with e = ceil(2a/b)): the n windows of length `win`, window I
    starting at padded position I·b → the axis becomes (n, win).

    Written as e + 1 shifted slices of the map cut into b-long chunks (window I is chunks
    I … I + e, cut to win), not Tensor.unfold: the backward is slices and pads only (no
    scatter-add; applications/views.py says why that matters under inductor on the CPU)."""
    e = -(-2 * a // b)
    chunks = t.unflatten(axis, (n + e, b))                      # (…, n + e, b, …)
    parts = [chunks.narrow(axis, s, n) for s in range(e + 1)]
    win_all = parts[0] if len(parts) == 1 else torch.cat(parts, dim=axis + 1)
    return win_all.narrow(axis + 1, 0, win) if (e + 1) * b != win else win_all


class HaloSelection(Selection):
    """Blocks (B, G, nb, b², c) for queries, (B, G, nb, win², c) for keys/values, nb =
    (H/b)(W/b) in row-major block order; a window's keys in row-major window order."""

    def __init__(self, ctx):
        super().__init__(ctx)
        self.b, self.a, self.win = self.geo.block, self.geo.halo, self.geo.window
        self.nh, self.nw = self.H // self.b, self.W // self.b

    def block_q(self, t):
        b, nh, nw = self.b, self.nh, self.nw
        t = t.unflatten(1, (nh, b)).unflatten(3, (nw, b)).unflatten(-1, (self.bp.heads, -1))
        # (B, nh, b, nw, b, G, c) → (B, G, nh·nw, b·b, c)
        return t.permute(0, 5, 1, 3, 2, 4, 6).flatten(4, 5).flatten(2, 3)

    def block_k(self, t):
        b, a, win, nh, nw = self.b, self.a, self.win, self.nh, self.nw
        e = -(-2 * a // b)
        # zero halo (after the projection: padded keys/values are zeros), plus the extra
        # rows/columns the chunked windows read past it (never part of a window)
        t = F.pad(t, (0, 0, a, (nw + e) * b - self.W - a, a, (nh + e) * b - self.H - a))
        t = halo_windows(t, 1, nh, b, a, win)                   # (B, nh, win, Wp, G·c)
        t = halo_windows(t, 3, nw, b, a, win)                   # (B, nh, win, nw, win, G·c)
        t = t.unflatten(-1, (self.bp.heads, -1))                # (B, nh, u, nw, t, G, c)
        return t.permute(0, 5, 1, 3, 2, 4, 6).flatten(4, 5).flatten(2, 3)

    block_v = block_k

    def unblock(self, y):
        b = self.b
        y = y.unflatten(3, (b, b)).unflatten(2, (self.nh, self.nw))
        # (B, G, nh, nw, b, b, c) → (B, nh, b, nw, b, G, c) → (B, H, W, G·c)
        return y.permute(0, 2, 4, 3, 5, 1, 6).flatten(5).flatten(3, 4).flatten(1, 2)

    def offsets(self):
        """(dy, dx) = key − query in grid steps, the same for every block: (1, b², win²)."""
        b, a, win = self.b, self.a, self.win
        qy, qx = torch.meshgrid(torch.arange(b), torch.arange(b), indexing="ij")
        ky, kx = torch.meshgrid(torch.arange(win) - a, torch.arange(win) - a, indexing="ij")
        dy = ky.flatten()[None, :] - qy.flatten()[:, None]
        dx = kx.flatten()[None, :] - qx.flatten()[:, None]
        return dy[None], dx[None]


@register
class HaloKind(ApplicationKind):
    model = Halo
    doc = ("non-overlapping block×block query blocks, each seeing the (block + 2·halo)² "
           "window around it on the zero-padded k/v maps (padded keys not masked) "
           "(HaloNet)")
    offsets = True

    def bind(self, app, where):
        H, W = where.grid
        b, a = app.block, app.halo
        if H % b or W % b:
            valid = [s for s in range(1, min(H, W) + 1) if H % s == 0 and W % s == 0]
            raise SpecError(f"halo blocks of {b}×{b} queries need H and W to be multiples of "
                            f"{b}; the {H}x{W} grid is not (HaloNet has no padding policy: "
                            f"timm asserts divisibility); valid blocks here: {valid}",
                            path=where.field("block"))
        limit = 2 * max(H, W) - 1
        if a > limit:
            raise SpecError(f"a halo of {a} at the {H}x{W} grid: beyond {limit} "
                            "(2·max(H, W) − 1) every extra key of every block is zero "
                            f"padding (and a window of {b + 2 * a}² keys would be allocated); "
                            f"valid: 0..{limit}", path=where.field("halo"))
        win = b + 2 * a
        nh, nw = H // b, W // b
        return HaloGeometry(blocks=(nh * nw, b * b, win * win), map_grid=(H, W),
                            kv_tokens=H * W, offset_span=(b + a, b + a), taps=win,
                            block=b, halo=a, window=win, block_grid=(nh, nw))

    def rule(self, ctx):
        return HaloSelection(ctx)

    def dynamic_resolution(self, bp):
        return ("query blocks need H and W to be multiples of the block, which a symbolic "
                "H, W does not promise (timm asserts it per input)")
