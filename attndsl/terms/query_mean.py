"""query_mean — q_i[c] / |S(i)| per channel: with a depthwise kernel and values = keys,
depthwise self-attention computes q ⊙ mean_j k_j."""
from __future__ import annotations

from typing import Literal

from ..lang.component import Component
from ..errors import SpecError
from .base import LogitTerm, TermWhere, register


class QueryMean(Component):
    """q_i[c] / |S(i)| per channel."""

    kind: Literal["query_mean"] = "query_mean"


@register
class QueryMeanTerm(LogitTerm):
    model = QueryMean
    doc = "q_i[c]/|S(i)| per channel (depthwise self-attention: q ⊙ mean_j k_j)"

    def reads(self, term, branch):
        return frozenset({"q"})

    def check(self, where: TermWhere):
        if where.branch.kernel.type != "depthwise":
            raise SpecError("'query_mean' makes one weight per channel and needs kernel.type "
                            "'depthwise'", path=where.path.removesuffix(
                                "parameterization") + "kernel.type")

    def lower(self, ctx, sel, term, q, k, scale):
        n = sel.key_count
        return (q / n).unsqueeze(-2).expand(-1, -1, -1, -1, n, -1)
