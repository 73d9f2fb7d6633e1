"""key_rel_pos — s·k_j·r^q[j − i]: a relative query table read by the key."""
from __future__ import annotations

from typing import Literal

from ..applications.base import table_parameter
from ..lang.component import Component
from .base import LogitTerm, gather_table, register


class KeyRelPos(Component):
    """s·k_j·r^q[j − i] (relative query table, one per head)."""

    kind: Literal["key_rel_pos"] = "key_rel_pos"


@register
class KeyRelPosTerm(LogitTerm):
    model = KeyRelPos
    doc = "s·k_j·r^q[j−i] (relative query table)"
    offsets = True
    per_sample = True

    def reads(self, term, branch):
        return frozenset({"k"})

    def parameters(self, term, bp):
        return {"rel_pos.query": table_parameter(bp.heads, bp.table_size, bp.qk_head_dim)}

    def lower(self, ctx, sel, term, q, k, scale):
        rel = gather_table(ctx, sel, ctx.p.rel_pos.query)  # (G, nb, Lq, Lk, d)
        prod = k.unsqueeze(-3) * rel.unsqueeze(0)          # (B, G, nb, Lq, Lk, d)
        return scale * (prod if ctx.bp.depthwise else prod.sum(-1))
