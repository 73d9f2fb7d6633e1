"""query_key — s·q_i·k_j (with a static key bank: s·q_i·r[j − i], a learned key per
offset)."""
from __future__ import annotations

from typing import Literal

from ..applications.base import table_parameter
from ..lang.component import Component
from ..errors import SpecError
from .base import LogitTerm, TermWhere, query_dot_table, register


class QueryKey(Component):
    """s·q_i·k_j: the query–key dot product."""

    kind: Literal["query_key"] = "query_key"


@register
class QueryKeyTerm(LogitTerm):
    model = QueryKey
    doc = "s·q_i·k_j (with a static key bank: s·q_i·r[j−i])"

    def reads(self, term, branch):
        return frozenset({"q", "k"} if branch.kernel_bank.keys == "dynamic" else {"q"})

    def check(self, where: TermWhere):
        if where.static_keys and not where.kind.offsets:
            raise SpecError("a static key bank holds one key per offset j − i; application "
                            f"'{where.kind.name}' has no offsets",
                            path=f"{where.path}.terms")

    def parameters(self, term, bp):
        if bp.spec.kernel_bank.keys != "static":
            return {}
        return {"key_bank": table_parameter(bp.heads, bp.table_size, bp.qk_head_dim)}

    def lower(self, ctx, sel, term, q, k, scale):
        if ctx.bp.spec.kernel_bank.keys == "static":
            return query_dot_table(ctx, sel, q, ctx.p.key_bank, scale)
        if ctx.bp.depthwise:
            return scale * q.unsqueeze(-2) * k.unsqueeze(-3)
        if sel.weighs_windows:
            return scale * sel.dot_windows(q, k)
        if sel.one_query_per_block:
            # one query per block (sliding neighbourhoods): a broadcast multiply-and-sum,
            # which inductor fuses with the key gather; a (1×d)·(d×K²) matmul per pixel
            # does not
            return scale * (q * k).sum(-1).unsqueeze(-2)
        return scale * q @ k.transpose(-1, -2)
