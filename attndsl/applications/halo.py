"""halo — HaloNet's blocked local attention (Vaswani et al., "Scaling Local Self-Attention for
Parameter Efficient Visual Backbones", CVPR 2021): queries in non-overlapping block×block
blocks (every stride-th of them in HaloNet's downsampling blocks), each block's keys and
values the (block + 2·halo)² window around it."""
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
    """Blocked local attention with a halo (HaloNet; timm's HaloAttn).

    Queries: non-overlapping block×block blocks (H and W multiples of `block`, as timm
    asserts). Keys/values of block (I, J): the (block + 2·halo)² window of the projected
    k/v maps zero-padded by `halo` on every side AFTER the projections, starting at padded
    (I·block, J·block). Padded keys and values are zero vectors (not the projection bias)
    and are not masked: they take part in Norm with the logits of the other terms alone
    (timm's semantics). Offsets j − i span |dy|, |dx| < block + halo.

    stride s (HaloNet's downsampling blocks, timm's HaloAttn(stride=2)): the queries are
    the tokens (s·i, s·j) only — (block/s)² per block, the query projection a stride-s 1×1
    conv — and the output is (H/s)×(W/s); keys and values as for stride 1. A query's
    position in the relative logits is its index in the strided block (timm's
    PosEmbedRel(block_size // stride)), so offsets are key − that index.
    """

    kind: Literal["halo"] = "halo"
    block: Int = Field(ge=1)
    halo: Int = Field(ge=0)
    stride: Int = Field(default=1, ge=1)


@dataclass(frozen=True, kw_only=True)
class HaloGeometry(Geometry):
    block: int                     # b: block side on the input grid
    halo: int                      # a: zero halo around each block
    stride: int                    # s: queries every s-th row and column (b/s per block side)
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
        self.s = self.geo.stride
        self.nh, self.nw = self.H // self.b, self.W // self.b

    def block_q(self, t):
        # the strided queries: tokens (s·i, s·j), as timm's stride-s 1×1 q conv samples them
        bq, nh, nw = self.b // self.s, self.nh, self.nw
        if self.s > 1:
            t = t[:, ::self.s, ::self.s]
        t = t.unflatten(1, (nh, bq)).unflatten(3, (nw, bq)).unflatten(-1, (self.bp.heads, -1))
        # (B, nh, bq, nw, bq, G, c) → (B, G, nh·nw, bq·bq, c)
        return t.permute(0, 5, 1, 3, 2, 4, 6).flatten(4, 5).flatten(2, 3)

    def _windows(self, t):
        """(B, H, W, ch) → (B, nh, win, nw, win, ch): each block's haloed window."""
        b, a, win, nh, nw = self.b, self.a, self.win, self.nh, self.nw
        e = -(-2 * a // b)
        # zero halo (after the projection: padded keys/values are zeros), plus the extra
        # rows/columns the chunked windows read past it (never part of a window)
        t = F.pad(t, (0, 0, a, (nw + e) * b - self.W - a, a, (nh + e) * b - self.H - a))
        t = halo_windows(t, 1, nh, b, a, win)                   # (B, nh, win, Wp, ch)
        return halo_windows(t, 3, nw, b, a, win)                # (B, nh, win, nw, win, ch)

    def _by_head(self, t):
        t = t.unflatten(-1, (self.bp.heads, -1))                # (B, nh, u, nw, t, G, c)
        return t.permute(0, 5, 1, 3, 2, 4, 6).flatten(4, 5).flatten(2, 3)

    def block_k(self, t):
        return self._by_head(self._windows(t))

    block_v = block_k

    def block_kv(self, k, v):
        """Keys and values windowed in one pass (one pad, one copy of the windows for both,
        as the k/v maps are side by side), then split."""
        kv = self._windows(torch.cat([k, v], dim=-1))
        k, v = torch.split(kv, [self.bp.qk_dim, self.bp.value_width], dim=-1)
        return self._by_head(k), self._by_head(v)

    @property
    def key_grid(self):
        return self.win, self.win

    def unblock(self, y):
        bq = self.b // self.s
        y = y.unflatten(3, (bq, bq)).unflatten(2, (self.nh, self.nw))
        # (B, G, nh, nw, bq, bq, c) → (B, nh, bq, nw, bq, G, c) → (B, H/s, W/s, G·c)
        return y.permute(0, 2, 4, 3, 5, 1, 6).flatten(5).flatten(3, 4).flatten(1, 2)

    def offsets(self):
        """(dy, dx) = key − query, the same for every block: (1, (b/s)², win²); a query's
        coordinate is its index in the strided block (timm's, for stride > 1)."""
        bq, a, win = self.b // self.s, self.a, self.win
        qy, qx = torch.meshgrid(torch.arange(bq), torch.arange(bq), indexing="ij")
        ky, kx = torch.meshgrid(torch.arange(win) - a, torch.arange(win) - a, indexing="ij")
        dy = ky.flatten()[None, :] - qy.flatten()[:, None]
        dx = kx.flatten()[None, :] - qx.flatten()[:, None]
        return dy[None], dx[None]


@register
class HaloKind(ApplicationKind):
    model = Halo
    doc = ("non-overlapping block×block query blocks, each seeing the (block + 2·halo)² "
           "window around it on the zero-padded k/v maps (padded keys not masked); stride s: "
           "every s-th query, output (H/s)×(W/s) (HaloNet)")
    offsets = True

    def bind(self, app, where):
        H, W = where.grid
        b, a, s = app.block, app.halo, app.stride
        if b % s:
            raise SpecError(f"a stride of {s} samples block/stride queries per block side: "
                            f"block {b} is not a multiple of it (timm asserts the same); "
                            f"valid strides for block {b}: "
                            f"{[d for d in range(1, b + 1) if b % d == 0]}",
                            path=where.field("stride"))
        if H % b or W % b:
            valid = [v for v in range(1, min(H, W) + 1) if H % v == 0 and W % v == 0]
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
        bq = b // s
        return HaloGeometry(blocks=(nh * nw, bq * bq, win * win), map_grid=(H, W),
                            kv_tokens=H * W, offset_span=(b + a, b + a), taps=win,
                            query_stride=s, block=b, halo=a, stride=s, window=win,
                            block_grid=(nh, nw))

    def rule(self, ctx):
        return HaloSelection(ctx)

    def dynamic_resolution(self, bp):
        return ("query blocks need H and W to be multiples of the block, which a symbolic "
                "H, W does not promise (timm asserts it per input)")
