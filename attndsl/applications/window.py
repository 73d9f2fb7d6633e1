"""window — non-overlapping size×size windows, optionally shifted (Swin, Twins LSA,
HiLo Hi-Fi)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from ..errors import SpecError
from ..lang.component import Component, Int
from .base import ApplicationKind, Geometry, Selection, fits_grid, pair_offsets, register


class Window(Component):
    """Non-overlapping size×size windows (Swin, Twins LSA, HiLo Hi-Fi).

    padding: what to do when H or W is not a multiple of the window:
      error         -- refuse;
      pad_unmasked  -- zero-pad the input bottom/right before the projections (padded keys
                       equal the projection bias and take part), crop after (timm, Twins);
      pad_masked    -- same, but padded keys are excluded from the softmax.
    shift_order: roll_then_pad (timm) or pad_then_roll (official Swin detection code).
    shrink_to_map: when min(H, W) <= size the window becomes min(H, W) and the shift 0.
    """

    kind: Literal["window"] = "window"
    size: Int = Field(ge=1)
    shift: Int = Field(default=0, ge=0)
    padding: Literal["error", "pad_unmasked", "pad_masked"] = "error"
    shift_order: Literal["roll_then_pad", "pad_then_roll"] = "roll_then_pad"
    shrink_to_map: bool = False


@dataclass(frozen=True, kw_only=True)
class WindowGeometry(Geometry):
    window: int                    # the bound window (shrink_to_map shrinks it)
    shift: int
    padded_grid: tuple[int, int]   # the grid padded to multiples of the window


class WindowSelection(Selection):
    """Non-overlapping ws×ws windows, optional cyclic shift with Swin's region mask, and
    bottom/right zero padding before the projections (masked or not)."""

    def __init__(self, ctx):
        super().__init__(ctx)
        self.ws, self.shift = self.geo.window, self.geo.shift
        self.Hp, self.Wp = self.geo.padded_grid
        self.pad = (self.Hp, self.Wp) != (self.H, self.W)

    def _pad(self, x):
        return F.pad(x, (0, 0, 0, self.Wp - self.W, 0, self.Hp - self.H)) if self.pad else x

    def _roll(self, x, sign: int):
        s = sign * self.shift
        return torch.roll(x, shifts=(s, s), dims=(1, 2)) if self.shift else x

    @property
    def map_grid(self) -> tuple[int, int]:
        return self.Hp, self.Wp

    def inputs(self, x):
        if self.app.shift_order == "roll_then_pad":
            x = self._pad(self._roll(x, -1))
        else:
            x = self._roll(self._pad(x), -1)
        return x, x

    def block_q(self, t):
        ws, nh, nw = self.ws, self.Hp // self.ws, self.Wp // self.ws
        t = t.unflatten(1, (nh, ws)).unflatten(3, (nw, ws)).unflatten(-1, (self.bp.heads, -1))
        # (B, nh, ws, nw, ws, G, c) → (B, G, nh·nw, ws·ws, c)
        return t.permute(0, 5, 1, 3, 2, 4, 6).flatten(4, 5).flatten(2, 3)

    block_k = block_v = block_q

    def to_tiles(self, t):
        """(B, Hp, Wp, c) (the padded, shifted map) → (B·nW, ws, ws, c)."""
        ws, nh, nw = self.ws, self.Hp // self.ws, self.Wp // self.ws
        t = t.unflatten(1, (nh, ws)).unflatten(3, (nw, ws))
        return t.permute(0, 1, 3, 2, 4, 5).flatten(0, 2)

    def from_tiles(self, t):
        nh, nw = self.Hp // self.ws, self.Wp // self.ws
        t = t.unflatten(0, (-1, nh, nw)).permute(0, 1, 3, 2, 4, 5)
        return t.flatten(3, 4).flatten(1, 2)

    def unblock(self, y):
        ws = self.ws
        y = y.unflatten(3, (ws, ws)).unflatten(2, (self.Hp // ws, self.Wp // ws))
        # (B, G, nh, nw, ws, ws, c) → (B, nh, ws, nw, ws, G, c) → (B, Hp, Wp, G·c)
        y = y.permute(0, 2, 4, 3, 5, 1, 6).flatten(5).flatten(3, 4).flatten(1, 2)
        crop = (lambda t: t[:, :self.H, :self.W]) if self.pad else (lambda t: t)
        if self.app.shift_order == "roll_then_pad":
            return self._roll(crop(y), +1)
        return crop(self._roll(y, +1))

    def offsets(self):
        ws = self.ws
        ys, xs = torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")
        return pair_offsets(ys.flatten(), xs.flatten())

    def _windows_of(self, grid: torch.Tensor) -> torch.Tensor:
        """(Hp, Wp) map → (nW, ws²) in window order."""
        ws = self.ws
        g = grid.reshape(self.Hp // ws, ws, self.Wp // ws, ws).permute(0, 2, 1, 3)
        return g.reshape(-1, ws * ws)

    def mask(self):
        ws, shift = self.ws, self.shift
        parts = []
        if shift:
            # Swin's regions, on the padded map: tokens rolled in from the other side may
            # not attend to their new neighbours (-100 before the softmax).
            region = torch.zeros(self.Hp, self.Wp)
            cuts_h = (slice(0, self.Hp - ws), slice(self.Hp - ws, self.Hp - shift),
                      slice(self.Hp - shift, None))
            cuts_w = (slice(0, self.Wp - ws), slice(self.Wp - ws, self.Wp - shift),
                      slice(self.Wp - shift, None))
            label = 0
            for sh in cuts_h:
                for sw in cuts_w:
                    region[sh, sw] = label
                    label += 1
            win = self._windows_of(region)
            parts.append((win[:, :, None] != win[:, None, :]).to(self.ctx.dtype) * -100.0)
        if self.pad and self.app.padding == "pad_masked":
            is_pad = torch.zeros(self.Hp, self.Wp, dtype=torch.bool)
            is_pad[self.H:, :] = True
            is_pad[:, self.W:] = True
            # roll_then_pad adds the padding after the roll, at bottom/right: as built
            if self.app.shift_order == "pad_then_roll" and shift:
                is_pad = torch.roll(is_pad, shifts=(-shift, -shift), dims=(0, 1))
            win = self._windows_of(is_pad)
            pad_mask = torch.zeros(win.shape[0], 1, ws * ws, dtype=self.ctx.dtype)
            parts.append(pad_mask.masked_fill(win[:, None, :], float("-inf")))
        if not parts:
            return None
        total = parts[0] if len(parts) == 1 else parts[0] + parts[1]
        return self.ctx.constant("mask", total.to(self.ctx.dtype))


@register
class WindowKind(ApplicationKind):
    model = Window
    doc = ("non-overlapping size×size windows, optionally cyclically shifted with Swin's "
           "region mask; bottom/right padding masked or not (Swin, Twins LSA, HiLo Hi-Fi)")
    offsets = True
    tiles = True

    def bind(self, app, where):
        H, W = where.grid
        ws, shift = app.size, app.shift
        if app.shrink_to_map and min(H, W) <= ws:
            ws, shift = min(H, W), 0   # never reads beyond the map: Swin's late stages
        else:
            fits_grid(app.size, where.grid, where.field("size"), "a window of")
        if shift >= ws:
            raise SpecError(f"window shift {shift} must be smaller than the window {ws}",
                            path=where.field("shift"))
        if (H % ws or W % ws) and app.padding == "error":
            raise SpecError(f"window {ws} does not divide the {H}x{W} grid and "
                            "application.padding is 'error'; set it to 'pad_unmasked' or "
                            f"'pad_masked', or use H and W that are multiples of {ws}",
                            path=where.field("padding"))
        if app.padding == "pad_masked" and where.branch.normalization.kind != "softmax":
            raise SpecError("padding 'pad_masked' excludes padded keys with -inf and needs "
                            f"softmax normalization, got '{where.branch.normalization.kind}'; "
                            "use 'pad_unmasked'", path=where.field("padding"))
        Hp, Wp = -(-H // ws) * ws, -(-W // ws) * ws
        vc = where.branch.extras.value_conv
        if vc is not None and vc.scope == "block" and (shift or (Hp, Wp) != (H, W)):
            raise SpecError("a value conv per window is added to the output, which the "
                            "window rule rolls back and crops: use it on unshifted windows "
                            "that divide the grid", path=f"{where.path}extras.value_conv")
        return WindowGeometry(blocks=((Hp // ws) * (Wp // ws), ws * ws, ws * ws),
                              map_grid=(Hp, Wp), kv_tokens=Hp * Wp,
                              offset_span=(ws, ws), taps=ws,
                              masked=bool(shift) or (app.padding == "pad_masked"
                                                     and (Hp, Wp) != (H, W)),
                              window=ws, shift=shift, padded_grid=(Hp, Wp))

    def rule(self, ctx):
        return WindowSelection(ctx)

    def dynamic_resolution(self, bp):
        return "window partition, padding and shift masks per grid"
