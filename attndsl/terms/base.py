"""What a logit term is made of (the additive parameterization's summands).

w_ij = Σ_terms term_ij: each term lives in one module of this package with its spec
component (`kind` names it; written as a bare name when it has no options), which of q and
k it reads, whether it indexes a table by the (query, key) offset, its parameters, its
bind-time checks and its lowering. Nothing here imports the rest of attndsl beyond the
spec component, the errors and the application base.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn



@dataclass(frozen=True)
class TermWhere:
    """What a term's bind-time check may read."""

    term: Any          # the term's spec component
    branch: Any        # lang.models.Branch
    path: str          # spec path of the parameterization, e.g. "branches[1].parameterization"
    kind: Any          # the application's ApplicationKind
    geometry: Any      # the application's Geometry
    heads: int
    qk_dim: int
    width: int

    @property
    def term_kinds(self) -> tuple[str, ...]:
        return self.branch.parameterization.term_kinds

    @property
    def static_keys(self) -> bool:
        return self.branch.kernel_bank.keys == "static"


class LogitTerm:
    """Everything attndsl knows about one logit term (subclass per term module)."""

    model: ClassVar[type]
    doc: ClassVar[str]
    offsets: ClassVar[bool] = False     # indexes a table by the (query, key) offset
    per_sample: ClassVar[bool] = False  # reads q or k beyond the q·k scores: the bias
    #                                     differs per sample (no shared mask for SDPA)
    signed: ClassVar[bool] = False      # reads signed offsets (not rel_pos_orientation abs)

    @property
    def name(self) -> str:
        return self.model.model_fields["kind"].default

    def reads(self, term, branch) -> frozenset:
        """Which of the projected q and k the term reads."""
        return frozenset()

    def check(self, where: TermWhere) -> None:
        """Cross-field rules that need the branch or its sizes (raise SpecError)."""

    def parameters(self, term, bp) -> dict[str, nn.Module | nn.Parameter]:
        """Parameters by dotted name under the branch module ("rel_pos.bias", …)."""
        return {}

    def lower(self, ctx, sel, term, q, k, scale):
        """The term's logits, broadcasting to (B, G, nb, Lq, Lk) (…, d for a depthwise
        kernel where the term is per channel)."""
        raise NotImplementedError


TERMS: dict[str, LogitTerm] = {}


def register(cls: type[LogitTerm]) -> type[LogitTerm]:
    term = cls()
    if term.name in TERMS:
        raise RuntimeError(f"logit term '{term.name}' is defined twice")
    TERMS[term.name] = term
    return cls


def term_of(component) -> LogitTerm:
    return TERMS[component.kind]


# ---------------------------------------------------------------- lowering helpers
def gather_table(ctx, sel, table):
    """An offset-indexed table (G, T, …) at every (query, key) pair: (G, nb, Lq, Lk, …)."""
    with ctx.emitting(f"application: {ctx.bp.spec.application.kind}"):
        index = sel.rel_index()
    return table[:, index]


def offset_coordinates(span: tuple[int, int]) -> torch.Tensor:
    """((2sy−1)(2sx−1), 2) float64 offsets (Δy, Δx) in the row order of the offset tables
    (dy-major, dy = −(sy−1) … sy−1): the input of the MLP position biases."""
    axes = [torch.arange(-(s - 1), s, dtype=torch.float64) for s in span]
    return torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 2)


def per_head_bias(ctx, sel, table):
    """A (T, G) bias table computed per offset (by an MLP) at every (query, key) pair:
    (1, G, nb, Lq, Lk)."""
    return gather_table(ctx, sel, table.transpose(0, 1)).unsqueeze(0)


def query_dot_table(ctx, sel, q, table, scale):
    """s·q_i·r[j − i] for a (G, T, d) table."""
    rel = gather_table(ctx, sel, table)           # (G, nb, Lq, Lk, d)
    prod = q.unsqueeze(-2) * rel.unsqueeze(0)     # (B, G, nb, Lq, Lk, d)
    return scale * (prod if ctx.bp.depthwise else prod.sum(-1))
