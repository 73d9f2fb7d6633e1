"""sliding — the size×size neighbourhood of each query: zero-padded at borders (unfold /
conv semantics; the dynamic-convolution papers, ELSA) or clamped inside the image
(NATTEN's neighbourhood attention, NAT / DiNAT), with dilation."""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from ..errors import SpecError
from ..lang.component import Component, Int
from .base import (ApplicationKind, Geometry, Selection, fits_grid, register,
                   split_heads, merge_heads, to_nchw)
from .views import constant_gather, inverse_index, sliding_windows


class Sliding(Component):
    """The size×size neighbourhood of each query.

    border: zero_pad -- centred window; out-of-image neighbours are zero vectors after the
                        projection and still take part in Norm (unfold / conv semantics);
            clamp    -- the window is shifted inside the image (NATTEN neighbourhood
                        attention semantics; needs H, W >= size·dilation).
    """

    kind: Literal["sliding"] = "sliding"
    size: Int = Field(ge=1)
    dilation: Int = Field(default=1, ge=1)
    border: Literal["zero_pad", "clamp"] = "zero_pad"


class SlidingZeroPadSelection(Selection):
    """K×K neighbourhood centred on each query; out-of-image neighbours are zeros (unfold).
    Blocks: one block per query (nb = N, Lq = 1, Lk = K²)."""

    def __init__(self, ctx):
        super().__init__(ctx)
        self.k, self.dil = self.geo.taps, self.app.dilation

    def block_q(self, t):
        return split_heads(t, self.bp.heads).unsqueeze(3)

    @property
    def has_window_views(self) -> bool:
        """Whether `windows` can give every neighbourhood as a strided view of the map."""
        return True

    @property
    def weighs_windows(self) -> bool:
        """Compiled graphs weigh the window views in the (H, W, K, K) grid layout: inductor
        then fuses the loads into the reduction like a hand-written shift loop, with plain
        loop indices; F.unfold's im2col buffer (K² times the map) is never materialized.
        Eager graphs keep F.unfold / gathers, the cheaper copies there."""
        return self.ctx.compiled and self.has_window_views

    def block_k(self, t):
        if self.weighs_windows:
            win = self.windows(t).permute(0, 3, 1, 2, 4, 5, 6)     # (B, G, H, W, c, K, K)
            return win.flatten(-2).flatten(2, 3).transpose(-1, -2)
        return self.gathered(t)

    block_v = block_k

    def gathered(self, t):
        """The eager form: F.unfold's im2col copy, (B, G, N, K², c)."""
        k = self.k
        cols = F.unfold(to_nchw(t), k, dilation=self.dil, padding=self.dil * (k // 2))
        # (B, G·c·K², N) → (B, G, N, K², c)
        return cols.unflatten(1, (self.bp.heads, -1, k * k)).permute(0, 1, 4, 3, 2)

    def windows(self, t):
        """(B, H, W, G·c) → every pixel's neighbourhood as a strided view of the zero-padded
        map, pixel-major so that reductions over the window write channels-last outputs:
        (B, H, W, G, c, K, K). Its backward is written out (applications/views.py says why)."""
        return self.ctx.call_leaf(sliding_windows, t, self.bp.heads, self.k, self.dil,
                                  *self._starts())

    def _starts(self):
        return None, None

    def dot_windows(self, q, k):
        """q·k on the grid layout (see weigh_windows): q (B, G, N, 1, c), k the blocks of
        `block_k`, viewed back as windows → logits (B, G, N, 1, K²)."""
        k_, H, W = self.k, self.H, self.W
        win = k.transpose(-1, -2).unflatten(2, (H, W)).unflatten(-1, (k_, k_))
        win = win.permute(0, 2, 3, 1, 4, 5, 6)                      # (B, H, W, G, c, K, K)
        q = q.squeeze(3).unflatten(2, (H, W)).permute(0, 2, 3, 1, 4)[..., None, None]
        logits = (q * win).sum(4)                                   # (B, H, W, G, K, K)
        return logits.flatten(-2).flatten(1, 2).permute(0, 2, 1, 3).unsqueeze(3)

    def weigh_windows(self, w, t, per_channel: bool = False, tap_scale=None):
        """y = Σ_k w[k]·v[p+k] on the grid layout. w: (B, G, N, 1, K²) per head or
        (B, G, N, 1, K², c) per channel; t: the (B, H, W, G·c) value map; tap_scale: an
        optional per-channel, per-tap factor (G, c, K, K). → (B, H, W, G·c)."""
        k, H, W = self.k, self.H, self.W
        win = self.windows(t)                                       # (B, H, W, G, c, K, K)
        if tap_scale is not None:
            win = win * tap_scale
        w = w.squeeze(3).unflatten(2, (H, W)).unflatten(4, (k, k))  # (B, G, H, W, K, K[, c])
        w = w.permute(0, 2, 3, 1, 6, 4, 5) if per_channel else \
            w.permute(0, 2, 3, 1, 4, 5).unsqueeze(4)                # (B, H, W, G, c|1, K, K)
        return (w * win).sum((-2, -1)).flatten(-2)                  # (B, H, W, G·c)

    def unblock(self, y):
        return merge_heads(y.squeeze(3), self.H, self.W)

    @property
    def key_count(self) -> int:
        return self.k * self.k

    @property
    def block_shape(self):
        return self.H * self.W, 1, self.k * self.k

    def offsets(self):
        taps, r = torch.arange(self.k * self.k), self.k // 2     # unfold's tap order
        return (taps // self.k - r).view(1, 1, -1), (taps % self.k - r).view(1, 1, -1)


def clamped_start(pos: int, length: int, k: int) -> int:
    """NATTEN: the first of the K positions a query at `pos` attends to, along an axis of
    `length` — centred, then shifted to stay inside."""
    return min(max(pos - k // 2, 0), length - k)


class SlidingClampSelection(SlidingZeroPadSelection):
    """NATTEN neighbourhood: the K×K window is shifted inside the image at borders; with
    dilation δ it runs within each of the δ×δ interleaved sub-grids."""

    def _neighbours(self):
        """For every token: (key token ids (N, K²), offsets dy, dx in grid steps)."""
        def axis(length: int):
            starts, idx = [], torch.empty(length, self.k, dtype=torch.long)
            for i in range(length):
                r, pos = i % self.dil, i // self.dil          # residue sub-grid, position
                n_sub = len(range(r, length, self.dil))
                start = clamped_start(pos, n_sub, self.k)
                idx[i] = torch.arange(start, start + self.k) * self.dil + r
                starts.append(pos)
            return idx, torch.tensor(starts)
        iy, py = axis(self.H)
        ix, px = axis(self.W)
        keys = (iy[:, None, :, None] * self.W + ix[None, :, None, :])  # (H, W, K, K)
        dy = (iy // self.dil - py[:, None])[:, None, :, None].expand(-1, self.W, -1, self.k)
        dx = (ix // self.dil - px[:, None])[None, :, None, :].expand(self.H, -1, self.k, -1)
        n, kk = self.H * self.W, self.k * self.k
        return keys.reshape(n, kk), dy.reshape(n, kk), dx.reshape(n, kk)

    @property
    def has_window_views(self) -> bool:
        return self.H % self.dil == 0 and self.W % self.dil == 0

    def gathered(self, t):
        """The eager form (and the form for grids the dilation does not divide): one
        (N, K²) table of key ids, (B, G, N, K², c). Compiled graphs gather through
        `constant_gather`, whose backward is a gather too (applications/views.py says why)."""
        table = self._neighbours()[0]
        keys = self.ctx.constant("neighbours", table)
        t = split_heads(t, self.bp.heads)
        if not self.ctx.compiled:
            return t[:, :, keys]
        readers, weight = inverse_index(table, self.H * self.W)
        return self.ctx.call_leaf(constant_gather, t, 2, keys,
                                  self.ctx.constant("neighbour_readers", readers),
                                  self.ctx.constant("neighbour_reader_weights", weight))

    def _starts(self):
        """The clamped K×K windows are strided views picked by the clamped start of each
        row and column of each dilated sub-grid — separable index arithmetic instead of an
        (N, K²) gather table, which inductor turns into far cheaper loads (needs H, W
        multiples of the dilation; otherwise the gather table is used)."""
        k = self.k
        starts = []
        for axis, length in (("y", self.H // self.dil), ("x", self.W // self.dil)):
            starts.append(self.ctx.constant(f"starts_{axis}", torch.tensor(
                [clamped_start(i, length, k) for i in range(length)])))
        return starts

    def offsets(self):
        _, dy, dx = self._neighbours()
        return dy[:, None], dx[:, None]



@register
class SlidingKind(ApplicationKind):
    model = Sliding
    doc = ("the size×size neighbourhood of each query, with dilation; border zero_pad "
           "(unfold / conv semantics) or clamp (NATTEN: the window shifted inside the image)")
    offsets = True
    value_map = True
    shared_keys = False       # one query per block: a fused kernel would need a dense mask

    def bind(self, app, where):
        H, W = where.grid
        k, dil = app.size, app.dilation
        fits_grid(dil * (k - 1) + 1, where.grid, where.field("size"),
                  f"a neighbourhood of size {k} with dilation {dil} spans")
        if k % 2 == 0:
            raise SpecError(f"a sliding neighbourhood needs an odd size to be centred, got {k}",
                            path=where.field("size"))
        if app.border == "clamp":
            short = min(H, W) // dil
            if short < k:
                raise SpecError(f"neighbourhood {k} with dilation {dil} does not fit "
                                f"the {H}x{W} grid (each dilated sub-grid needs >= {k} rows "
                                f"and columns, smallest has {short}); use a smaller size, "
                                "dilation, or border 'zero_pad'", path=where.field("size"))
        zero_pad = app.border == "zero_pad"
        return Geometry(blocks=(H * W, 1, k * k), map_grid=(H, W), kv_tokens=H * W,
                        offset_span=(k // 2 + 1,) * 2 if zero_pad else (k, k), taps=k,
                        conv_taps=(k, dil) if zero_pad else None)

    def rule(self, ctx):
        clamp = ctx.bp.spec.application.border == "clamp"
        return (SlidingClampSelection if clamp else SlidingZeroPadSelection)(ctx)

    def dynamic_resolution(self, bp):
        if bp.spec.application.border == "clamp":
            return "border: clamp (clamped window starts per row and column)"
        return None
