"""window — non-overlapping size×size ([rows, columns]) windows, optionally shifted (Swin,
Twins LSA, HiLo Hi-Fi)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Union

import torch
import torch.nn.functional as F

from ..errors import SpecError
from ..lang.component import Component, Shift, Size, per_axis
from .base import ApplicationKind, Geometry, Selection, fits_grid, pair_offsets, register


class Window(Component):
    """Non-overlapping windows (Swin, Twins LSA, HiLo Hi-Fi), size×size or [rows, columns].

    size, shift: one integer for both axes or [rows, columns] (timm shrinks a window per
      axis on a non-square map; MaxViT partitions are non-square at non-square images).
    padding: what to do when H or W is not a multiple of the window:
      error         -- refuse;
      pad_unmasked  -- zero-pad the input bottom/right before the projections (padded keys
                       equal the projection bias and take part), crop after (timm, Twins);
      pad_masked    -- same, but padded keys are excluded from the softmax.
    shift_order: roll_then_pad (timm) or pad_then_roll (official Swin detection code).
    shrink_to_map: what a map no larger than the window does —
      false     -- nothing (the window pads or is refused as any other);
      true      -- the official Swin: when min(H, W) <= size the window becomes min(H, W)
                   square and the shift 0 (square windows only);
      per_axis  -- timm: each axis whose map length is <= the window's becomes that
                   length, unshifted (6×9 with window 8 and shift 4: window [6, 8], shift
                   [0, 4]).
    """

    kind: Literal["window"] = "window"
    size: Size
    shift: Shift = 0
    padding: Literal["error", "pad_unmasked", "pad_masked"] = "error"
    shift_order: Literal["roll_then_pad", "pad_then_roll"] = "roll_then_pad"
    shrink_to_map: Union[bool, Literal["per_axis"]] = False


@dataclass(frozen=True, kw_only=True)
class WindowGeometry(Geometry):
    window: tuple[int, int]        # the bound window (rows, columns): shrink_to_map shrinks it
    shift: tuple[int, int]         # (rows, columns)
    padded_grid: tuple[int, int]   # the grid padded to multiples of the window


class WindowSelection(Selection):
    """Non-overlapping wh×ww windows, optional cyclic shift with Swin's region mask, and
    bottom/right zero padding before the projections (masked or not)."""

    def __init__(self, ctx):
        super().__init__(ctx)
        (self.wh, self.ww), self.shift = self.geo.window, self.geo.shift
        self.Hp, self.Wp = self.geo.padded_grid
        self.nh, self.nw = self.Hp // self.wh, self.Wp // self.ww
        self.pad = (self.Hp, self.Wp) != (self.H, self.W)

    def _pad(self, x):
        return F.pad(x, (0, 0, 0, self.Wp - self.W, 0, self.Hp - self.H)) if self.pad else x

    def _roll(self, x, sign: int):
        sh, sw = self.shift
        return torch.roll(x, shifts=(sign * sh, sign * sw), dims=(1, 2)) if sh or sw else x

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
        t = t.unflatten(1, (self.nh, self.wh)).unflatten(3, (self.nw, self.ww))
        t = t.unflatten(-1, (self.bp.heads, -1))
        # (B, nh, wh, nw, ww, G, c) → (B, G, nh·nw, wh·ww, c)
        return t.permute(0, 5, 1, 3, 2, 4, 6).flatten(4, 5).flatten(2, 3)

    block_k = block_v = block_q

    def to_tiles(self, t):
        """(B, Hp, Wp, c) (the padded, shifted map) → (B·nW, wh, ww, c)."""
        t = t.unflatten(1, (self.nh, self.wh)).unflatten(3, (self.nw, self.ww))
        return t.permute(0, 1, 3, 2, 4, 5).flatten(0, 2)

    def from_tiles(self, t):
        t = t.unflatten(0, (-1, self.nh, self.nw)).permute(0, 1, 3, 2, 4, 5)
        return t.flatten(3, 4).flatten(1, 2)

    def unblock(self, y):
        y = y.unflatten(3, (self.wh, self.ww)).unflatten(2, (self.nh, self.nw))
        # (B, G, nh, nw, wh, ww, c) → (B, nh, wh, nw, ww, G, c) → (B, Hp, Wp, G·c)
        y = y.permute(0, 2, 4, 3, 5, 1, 6).flatten(5).flatten(3, 4).flatten(1, 2)
        crop = (lambda t: t[:, :self.H, :self.W]) if self.pad else (lambda t: t)
        if self.app.shift_order == "roll_then_pad":
            return self._roll(crop(y), +1)
        return crop(self._roll(y, +1))

    def offsets(self):
        ys, xs = torch.meshgrid(torch.arange(self.wh), torch.arange(self.ww), indexing="ij")
        return pair_offsets(ys.flatten(), xs.flatten())

    def _windows_of(self, grid: torch.Tensor) -> torch.Tensor:
        """(Hp, Wp) map → (nW, wh·ww) in window order."""
        g = grid.reshape(self.nh, self.wh, self.nw, self.ww).permute(0, 2, 1, 3)
        return g.reshape(-1, self.wh * self.ww)

    @staticmethod
    def _cuts(length: int, window: int, shift: int) -> tuple[slice, ...]:
        """Swin's regions along one axis of the padded, rolled map; an unshifted axis is one
        region (timm's slices (0, −w), (−w, −0), (−0, None) end with the whole axis)."""
        if not shift:
            return (slice(None),)
        return (slice(0, length - window), slice(length - window, length - shift),
                slice(length - shift, None))

    def mask(self):
        (sh, sw), parts = self.shift, []
        if sh or sw:
            # Swin's regions, on the padded map: tokens rolled in from the other side may
            # not attend to their new neighbours (-100 before the softmax).
            region = torch.zeros(self.Hp, self.Wp)
            label = 0
            for cut_h in self._cuts(self.Hp, self.wh, sh):
                for cut_w in self._cuts(self.Wp, self.ww, sw):
                    region[cut_h, cut_w] = label
                    label += 1
            win = self._windows_of(region)
            parts.append((win[:, :, None] != win[:, None, :]).to(self.ctx.dtype) * -100.0)
        if self.pad and self.app.padding == "pad_masked":
            is_pad = torch.zeros(self.Hp, self.Wp, dtype=torch.bool)
            is_pad[self.H:, :] = True
            is_pad[:, self.W:] = True
            # roll_then_pad adds the padding after the roll, at bottom/right: as built
            if self.app.shift_order == "pad_then_roll" and (sh or sw):
                is_pad = torch.roll(is_pad, shifts=(-sh, -sw), dims=(0, 1))
            win = self._windows_of(is_pad)
            pad_mask = torch.zeros(win.shape[0], 1, self.wh * self.ww, dtype=self.ctx.dtype)
            parts.append(pad_mask.masked_fill(win[:, None, :], float("-inf")))
        if not parts:
            return None
        total = parts[0] if len(parts) == 1 else parts[0] + parts[1]
        return self.ctx.constant("mask", total.to(self.ctx.dtype))


def bound_window(app, grid: tuple[int, int], where) -> tuple[tuple[int, int], tuple[int, int]]:
    """(window, shift) per axis at the grid, after shrink_to_map."""
    (H, W), (wh, ww), (sh, sw) = grid, per_axis(app.size), per_axis(app.shift)
    if app.shrink_to_map == "per_axis":
        # timm's _calc_window_shift: an axis no longer than its window is one unshifted window
        if H <= wh:
            wh, sh = H, 0
        if W <= ww:
            ww, sw = W, 0
    elif app.shrink_to_map:
        if (wh, sh) != (ww, sw):
            raise SpecError("shrink_to_map: true is the official Swin's rule for square "
                            f"windows, not for size {list(per_axis(app.size))} and shift "
                            f"{list(per_axis(app.shift))}; use shrink_to_map: per_axis "
                            "(timm's rule, per axis)", path=where.field("shrink_to_map"))
        if min(H, W) <= wh:
            return (min(H, W),) * 2, (0, 0)   # never reads beyond the map: Swin's late stages
    return (wh, ww), (sh, sw)
@register
class WindowKind(ApplicationKind):
    model = Window
    doc = ("non-overlapping size×size (or [rows, columns]) windows, optionally cyclically "
           "shifted with Swin's region mask; bottom/right padding masked or not; shrunk to "
           "a smaller map as the official Swin or per axis as timm (Swin, Twins LSA, HiLo "
           "Hi-Fi)")
    offsets = True
    tiles = True

    def bind(self, app, where):
        H, W = where.grid
        (wh, ww), (sh, sw) = bound_window(app, where.grid, where)
        if wh == ww:
            fits_grid(wh, where.grid, where.field("size"), "a window of")
        else:
            for axis, window in (("rows", wh), ("columns", ww)):
                fits_grid(window, where.grid, where.field("size"), f"a {wh}x{ww} window's {axis}")
        for axis, window, shift in (("rows", wh, sh), ("columns", ww, sw)):
            if shift >= window:
                raise SpecError(f"window shift {shift} must be smaller than the window "
                                f"{window}" + (f" ({axis})" if (wh, sh) != (ww, sw) else ""),
                                path=where.field("shift"))
        shown = str(wh) if wh == ww else f"{wh}x{ww}"
        if (H % wh or W % ww) and app.padding == "error":
            multiples = str(wh) if wh == ww else f"{wh} (H) and {ww} (W)"
            raise SpecError(f"window {shown} does not divide the {H}x{W} grid and "
                            "application.padding is 'error'; set it to 'pad_unmasked' or "
                            f"'pad_masked', or use H and W that are multiples of {multiples}",
                            path=where.field("padding"))
        if app.padding == "pad_masked" and where.branch.normalization.kind != "softmax":
            raise SpecError("padding 'pad_masked' excludes padded keys with -inf and needs "
                            f"softmax normalization, got '{where.branch.normalization.kind}'; "
                            "use 'pad_unmasked'", path=where.field("padding"))
        Hp, Wp = -(-H // wh) * wh, -(-W // ww) * ww
        shifted = bool(sh or sw)
        vc = where.branch.extras.value_conv
        if vc is not None and vc.scope == "block" and (shifted or (Hp, Wp) != (H, W)):
            raise SpecError("a value conv per window is added to the output, which the "
                            "window rule rolls back and crops: use it on unshifted windows "
                            "that divide the grid", path=f"{where.path}extras.value_conv")
        return WindowGeometry(blocks=((Hp // wh) * (Wp // ww), wh * ww, wh * ww),
                              map_grid=(Hp, Wp), kv_tokens=Hp * Wp,
                              offset_span=(wh, ww), taps=wh if wh == ww else 0,
                              masked=shifted or (app.padding == "pad_masked"
                                                 and (Hp, Wp) != (H, W)),
                              window=(wh, ww), shift=(sh, sw), padded_grid=(Hp, Wp))

    def rule(self, ctx):
        return WindowSelection(ctx)

    def dynamic_resolution(self, bp):
        return "window partition, padding and shift masks per grid"
