"""axial — each query sees the tokens of its row, or of its column (axial attention, Ho et
al. 2019; Axial-DeepLab, Wang et al. 2020)."""
from __future__ import annotations

from typing import Literal

import torch

from ..lang.component import Component
from .base import ApplicationKind, Geometry, Selection, register


class Axial(Component):
    """The W tokens of the query's row (axis: row) or the H tokens of its column (axis:
    column). Relative positions are offsets along that axis (a table of 2W−1 or 2H−1 rows,
    so sized by the grid)."""

    kind: Literal["axial"] = "axial"
    axis: Literal["row", "column"]


class AxialSelection(Selection):
    """Rows: blocks (B, heads, H, W, c), one block per row; columns: (B, heads, W, H, c),
    one per column. Every size is read from the context's grid (self.H, self.W), so the
    rule runs with a symbolic H, W."""

    def __init__(self, ctx):
        super().__init__(ctx)
        self.rows = self.app.axis == "row"

    def block_q(self, t):
        t = t.unflatten(-1, (self.bp.heads, -1))                     # (B, H, W, G, c)
        return t.permute(0, 3, 1, 2, 4) if self.rows else t.permute(0, 3, 2, 1, 4)

    block_k = block_v = block_q

    def unblock(self, y):
        # rows (B, G, H, W, c) / columns (B, G, W, H, c) → (B, H, W, G·c)
        y = y.permute(0, 2, 3, 1, 4) if self.rows else y.permute(0, 3, 2, 1, 4)
        return y.flatten(3)

    @property
    def key_count(self):
        return self.W if self.rows else self.H          # symbolic in a dynamic export

    @property
    def block_shape(self):
        return (self.H, self.W, self.W) if self.rows else (self.W, self.H, self.H)

    def offsets(self):
        n = self.W if self.rows else self.H
        pos = torch.arange(n)
        along = (pos[None, :] - pos[:, None])[None]                    # (1, n, n): j − i
        zero = torch.zeros(1, 1, 1, dtype=along.dtype)
        return (zero, along) if self.rows else (along, zero)


@register
class AxialKind(ApplicationKind):
    model = Axial
    doc = ("the query's row (axis: row, W keys) or column (axis: column, H keys); "
           "rel-pos offsets along that axis (axial attention, Axial-DeepLab)")
    offsets = True

    def bind(self, app, where):
        H, W = where.grid
        nb, n = (H, W) if app.axis == "row" else (W, H)
        return Geometry(blocks=(nb, n, n), map_grid=(H, W), kv_tokens=H * W,
                        offset_span=(1, W) if app.axis == "row" else (H, 1))

    def rule(self, ctx):
        return AxialSelection(ctx)

    def dynamic_resolution(self, bp):
        par = bp.spec.parameterization
        terms = set(getattr(par, "term_kinds", ())) - {"query_key"}
        if terms or bp.spec.kernel_bank.keys == "static":
            return ("relative-position terms along the axis (tables of 2W−1 or 2H−1 rows, "
                    "sized by the grid)")
        return None
