"""soft_select — Linformer: keys and values projected along the token axis to a fixed
number of rows."""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field
from torch import nn

from ..lang.component import Component, Int
from .base import ApplicationKind, Geometry, Selection, register, table_parameter


class SoftSelect(Component):
    """Linformer: keys and values projected along the token axis to `keys` rows
    (learned E, F of shape (keys, N), shared across heads)."""

    kind: Literal["soft_select"] = "soft_select"
    keys: Int = Field(ge=1)


class SoftSelection(Selection):
    """Linformer: k' = E·k and v' = F·v along the token axis (E, F shared by heads)."""

    def block_k(self, t):
        return self._select(self.ctx.p.select.keys, t)

    def block_v(self, t):
        return self._select(self.ctx.p.select.values, t)

    def _select(self, e, t):
        """E·t on the (B, N, C) map, one (k×N)·(N×C) GEMM per image rather than one thin
        GEMM per head; then the heads: (B, G, 1, k, d)."""
        # bmm over the strided slice of the qkv output, e broadcast to the batch: matmul
        # would fold the batch and copy the slice first (6.7 vs 3.8 ms at 56×56, C=96)
        flat = t.flatten(1, 2)
        selected = torch.bmm(e.expand(flat.shape[0], -1, -1), flat)     # (B, k, C)
        return selected.unflatten(-1, (self.bp.heads, -1)).permute(0, 2, 1, 3).unsqueeze(2)


@register
class SoftSelectKind(ApplicationKind):
    model = SoftSelect
    doc = ("Linformer: keys and values are learned mixtures E·k, F·v of the N tokens "
           "(E, F of shape (keys, N), shared by the heads)")
    grid_keys = False

    def bind(self, app, where):
        H, W = where.grid
        return Geometry(blocks=(1, H * W, app.keys), map_grid=(H, W), kv_tokens=app.keys)

    def parameters(self, app, bp, dim):
        select, n = nn.Module(), bp.grid[0] * bp.grid[1]
        select.keys = table_parameter(app.keys, n)
        select.values = table_parameter(app.keys, n)
        return {"select": select}

    def rule(self, ctx):
        return SoftSelection(ctx)

    def dynamic_resolution(self, bp):
        return "E and F are sized by H·W"
