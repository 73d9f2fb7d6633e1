"""rel_pos_bias — r^b[j − i]: a learned bias per head and offset (alone, on a zero-padded
neighbourhood, a depthwise conv)."""
from __future__ import annotations

from typing import Literal

from ..applications.base import table_parameter
from ..lang.component import Component
from .base import LogitTerm, gather_table, register


class RelPosBias(Component):
    """r^b[j − i]: one learned bias per head and offset."""

    kind: Literal["rel_pos_bias"] = "rel_pos_bias"


@register
class RelPosBiasTerm(LogitTerm):
    model = RelPosBias
    doc = "r^b[j−i] (static relative position bias; alone it is a depthwise conv)"
    offsets = True

    def parameters(self, term, bp):
        return {"rel_pos.bias": table_parameter(bp.heads, bp.table_size)}

    def lower(self, ctx, sel, term, q, k, scale):
        bias = gather_table(ctx, sel, ctx.p.rel_pos.bias).unsqueeze(0)   # (1, G, nb, Lq, Lk)
        # one bias per head, shared by its channels under a depthwise kernel
        return bias.unsqueeze(-1) if ctx.bp.depthwise else bias
