"""class_tokens — class attention (CaiT, Touvron et al., ICCV 2021, arXiv:2103.17239; XCiT's
class-attention layers): the class tokens before the grid are the only queries, every token
(class tokens and patches) is a key, and the output is the class tokens' alone.

The tokens arrive as one row, the class tokens first: `forward_tokens(x, (H, W),
prefix=P)` with x (B, P + H·W, C) returns (B, tokens, C). A map (B, H, W, C) has no class
tokens, so `forward` refuses it."""
from __future__ import annotations

from typing import Literal

from pydantic import Field

from ..errors import SpecError
from ..lang.component import Component, Int
from .base import ApplicationKind, Geometry, Selection, register


class ClassTokens(Component):
    """The first `tokens` tokens (the class tokens) query all tokens; only they have an
    output (CaiT's and XCiT's class attention: q from the class token, k and v from the
    class token and every patch)."""

    kind: Literal["class_tokens"] = "class_tokens"
    tokens: Int = Field(default=1, ge=1)


class ClassTokensSelection(Selection):
    """One block: the `tokens` class tokens against all n tokens, (B, G, 1, tokens, c)
    queries and (B, G, 1, n, c) keys and values."""

    def inputs(self, x):
        # (B, 1, n, C): the queries are projected from the class tokens only
        return x.flatten(1, 2)[:, :self.geo.blocks[1]].unsqueeze(1), x

    # one block, however many class tokens: a matmul (and SDPA's form), not the
    # multiply-and-sum of a neighbourhood's single query
    one_query_per_block = False

    @property
    def map_grid(self):
        return 1, self.geo.blocks[1]

    def unblock(self, y):
        # (B, G, 1, tokens, d) → (B, 1, tokens, G·d)
        return y.squeeze(2).permute(0, 2, 1, 3).flatten(2).unsqueeze(1)


@register
class ClassTokensKind(ApplicationKind):
    model = ClassTokens
    doc = ("the class tokens alone query every token (class tokens and patches); the "
           "output is theirs only (CaiT / XCiT class attention: forward_tokens with "
           "prefix ≥ tokens)")
    prefix_tokens = True
    prefix_queries = True

    def bind(self, app, where):
        H, W = where.grid
        n = H * W
        if app.tokens > n:
            raise SpecError(f"{app.tokens} class tokens but only {n} tokens in all",
                            path=where.field("tokens"))
        layout = where.branch.projections.layout
        if layout != "q_kv":
            raise SpecError("class attention projects q from the class tokens alone and k, v "
                            f"from every token, so the projection layout must be 'q_kv', got "
                            f"'{layout}'", path=f"{where.path}projections.layout")
        return Geometry(blocks=(1, app.tokens, n), map_grid=(1, app.tokens), kv_tokens=n)

    def rule(self, ctx):
        return ClassTokensSelection(ctx)
