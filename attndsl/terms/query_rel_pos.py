"""query_rel_pos — s·q_i·r^k[j − i]: a relative key table read by the query."""
from __future__ import annotations

from typing import Literal

from ..applications.base import table_parameter
from ..lang.component import Component
from ..errors import SpecError
from .base import LogitTerm, TermWhere, query_dot_table, register


class QueryRelPos(Component):
    """s·q_i·r^k[j − i] (relative key table, one per head)."""

    kind: Literal["query_rel_pos"] = "query_rel_pos"


@register
class QueryRelPosTerm(LogitTerm):
    model = QueryRelPos
    doc = "s·q_i·r^k[j−i] (relative key table)"
    offsets = True
    per_sample = True

    def reads(self, term, branch):
        return frozenset({"q"})

    def check(self, where: TermWhere):
        if where.static_keys:
            raise SpecError("with a static key bank 'query_key' already reads the "
                            "offset-indexed key table; drop 'query_rel_pos'",
                            path=f"{where.path}.terms")

    def parameters(self, term, bp):
        return {"rel_pos.key": table_parameter(bp.heads, bp.table_size, bp.qk_head_dim)}

    def lower(self, ctx, sel, term, q, k, scale):
        return query_dot_table(ctx, sel, q, ctx.p.rel_pos.key, scale)
