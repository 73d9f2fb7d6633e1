"""global — every query sees all N tokens (ViT)."""
from __future__ import annotations

from typing import Literal

import torch

from ..lang.component import Component
from .base import ApplicationKind, Geometry, Selection, pair_offsets, register


class Global(Component):
    """All N tokens (ViT)."""

    kind: Literal["global"] = "global"


class GlobalSelection(Selection):
    """One block holding every token; tables span the whole grid ((2H−1)(2W−1) offsets)."""

    @property
    def key_count(self):
        return self.H * self.W      # symbolic in a dynamic-resolution export

    @property
    def block_shape(self):
        return 1, self.H * self.W, self.H * self.W

    @property
    def key_grid(self):
        return self.H, self.W

    def offsets(self):
        ys, xs = torch.meshgrid(torch.arange(self.H), torch.arange(self.W), indexing="ij")
        return pair_offsets(ys.flatten(), xs.flatten())


@register
class GlobalKind(ApplicationKind):
    model = Global
    doc = "every query sees all N tokens (ViT); class / register tokens are tokens like the others"
    offsets = True
    prefix_tokens = True
    value_map = True

    def bind(self, app, where):
        H, W = where.grid
        n = H * W
        return Geometry(blocks=(1, n, n), map_grid=(H, W), kv_tokens=n,
                        offset_span=(H, W))

    def rule(self, ctx):
        return GlobalSelection(ctx)

    def dynamic_resolution(self, bp):
        terms = set(getattr(bp.spec.parameterization, "term_kinds", ())) - {"query_key"}
        if terms or bp.spec.kernel_bank.keys == "static":
            return "relative-position terms over the whole grid (tables sized by the grid)"
        return None
