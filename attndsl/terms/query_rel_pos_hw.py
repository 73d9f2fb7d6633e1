"""query_rel_pos_hw — q_i·r_h[dy] + q_i·r_w[dx]: separable relative logits, one table per
axis shared by all heads (HaloNet; timm's PosEmbedRel in HaloAttn, BottleneckAttn).

For offsets (dy, dx) = j − i with |dy| < sy, |dx| < sx (the application's offset span),
    rel_pos.height  (2·sy − 1, d_qk_head)   row dy + sy − 1
    rel_pos.width   (2·sx − 1, d_qk_head)   row dx + sx − 1
(rel_pos_orientation i_minus_j reads row −dy + sy − 1). The logits use the unscaled q
(HaloNet, timm's scale_pos_embed=False); `scaled: true` multiplies them by the branch
scale.

Converting timm's HaloAttn tables: timm's `pos_embed.height_rel` / `width_rel` have
2·win − 1 rows (win = block + 2·halo) and are read at row (key's window coordinate) −
(query's block coordinate) + win − 1 = dy + halo + win − 1, which is this table's row
dy + sy − 1 (sy = block + halo) plus 2·halo. timm's first 2·halo rows are never read:
drop them (rel_pos.height = pos_embed.height_rel[2·halo:]), and pad that many rows back
(any values) to go the other way.
"""
from __future__ import annotations

from typing import Literal

import torch

from ..applications.base import table_parameter
from ..lang.component import Component
from .base import LogitTerm, register


class QueryRelPosHW(Component):
    """q_i·r_h[dy] + q_i·r_w[dx]: a height and a width table shared by the heads
    (HaloNet); `scaled` multiplies by the branch scale (HaloNet: unscaled)."""

    kind: Literal["query_rel_pos_hw"] = "query_rel_pos_hw"
    scaled: bool = False


def pick_rows(ctx, scores, rows, axis: str):
    """scores (B, G, nb, Lq, T) of every query against every table row; rows (Lq', Lk) the
    row of each (query, key) pair, Lq' = Lq, or 1 when the rows do not depend on the query
    → (B, G, nb, Lq, Lk) by advanced indexing (broadcasts over B, G, nb: no shape query)."""
    if rows.shape[0] == 1:
        return scores[..., ctx.constant(f"rel_rows_{axis}", rows[0])]
    queries = ctx.constant("rel_rows_query", torch.arange(rows.shape[0])[:, None])
    return scores[..., queries, ctx.constant(f"rel_rows_{axis}", rows)]


@register
class QueryRelPosHWTerm(LogitTerm):
    model = QueryRelPosHW
    doc = "q_i·r_h[dy] + q_i·r_w[dx] (separable height/width tables shared by heads; HaloNet)"
    offsets = True
    signed = True
    per_sample = True

    def reads(self, term, branch):
        return frozenset({"q"})

    def parameters(self, term, bp):
        sy, sx = bp.geometry.offset_span
        return {"rel_pos.height": table_parameter(2 * sy - 1, bp.qk_head_dim),
                "rel_pos.width": table_parameter(2 * sx - 1, bp.qk_head_dim)}

    def lower(self, ctx, sel, term, q, k, scale):
        sy, sx = ctx.bp.geometry.offset_span
        with ctx.emitting(f"application: {ctx.bp.spec.application.kind}"):
            dy, dx = sel.offsets()
        if ctx.bp.spec.parameterization.rel_pos_orientation == "i_minus_j":
            dy, dx = -dy, -dx
        r_h, r_w = ctx.p.rel_pos.height, ctx.p.rel_pos.width    # (T, d), shared by heads
        rows_h, rows_w = dy + sy - 1, dx + sx - 1                # (nb, Lq, Lk) broadcasting
        if ctx.bp.depthwise or rows_h.shape[0] != 1 or rows_w.shape[0] != 1:
            # one logit per channel (q ⊙ (r_h[dy] + r_w[dx])), or offsets that differ per
            # block: the tables at every pair, times q
            rel = (r_h[ctx.constant("rel_rows_height", rows_h)]
                   + r_w[ctx.constant("rel_rows_width", rows_w)])    # (nb, Lq, Lk, d)
            prod = q.unsqueeze(-2) * rel                             # (B, G, nb, Lq, Lk, d)
            out = prod if ctx.bp.depthwise else prod.sum(-1)
        elif separable(rows_h[0], rows_w[0], sel.key_grid):
            # the keys a (kh × kw) grid, row-major, whose height row depends on the key's
            # row alone and width row on its column (HaloNet's windows, BoTNet's grid): each
            # query's kh + kw logits, then their outer sum — Lq·(kh + kw) gathered values
            # instead of 2·Lq·Lk (HaloNet 8/3: 13× fewer)
            kh, kw = sel.key_grid
            lh = pick_rows(ctx, q @ r_h.t(), rows_h[0].unflatten(-1, (kh, kw))[..., 0], "height")
            lw = pick_rows(ctx, q @ r_w.t(), rows_w[0].unflatten(-1, (kh, kw))[..., 0, :], "width")
            out = (lh.unsqueeze(-1) + lw.unsqueeze(-2)).flatten(-2)
        else:
            # offsets shared by the blocks: q·r for every table row (a small matmul), then
            # each pair's row — the (…, Lq, Lk, d) product of gathered tables is never built
            out = (pick_rows(ctx, q @ r_h.t(), rows_h[0], "height")
                   + pick_rows(ctx, q @ r_w.t(), rows_w[0], "width"))
        return scale * out if term.scaled else out


def separable(rows_h: torch.Tensor, rows_w: torch.Tensor, key_grid) -> bool:
    """The (Lq, Lk) table rows split by a (kh × kw) key grid: the height row constant
    along each key row, the width row constant along each key column."""
    if key_grid is None or rows_h.dim() != 2 or rows_h.shape[-1] != key_grid[0] * key_grid[1]:
        return False
    h, w = rows_h.unflatten(-1, key_grid), rows_w.unflatten(-1, key_grid)
    return bool((h == h[..., :1]).all()) and bool((w == w[..., :1, :]).all())
