"""axial attention: the paper-style reference and the hand-picked baselines.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Ctx, Fn


# ---------------------------------------------------------------- axial attention
def _axial_explicit(q, k, v, s):
    """(…, L, d): explicit softmax attention along L."""
    return ((q * s) @ k.transpose(-2, -1)).softmax(dim=-1) @ v


def axial_reference(c: Ctx) -> Fn:
    """Axial attention as written in the papers' code (Ho et al.; Axial-DeepLab without
    positional terms): qkv Linear, the attended axis permuted last-but-one, explicit
    q·scale @ kᵀ, softmax, @ v, permuted back, proj. Parallel: ONE qkv (the branches' rows
    reassembled as [q_rows; q_cols; k_rows; …]), the first heads along rows, the rest along
    columns, ONE proj. Sequential: row attention (its own qkv, proj), then column
    attention on its output (its own qkv, proj)."""
    P = c.P
    rb, cb = c.branch("rows"), c.branch("columns")
    sequential = c.plan.spec.merge.kind == "sequence"

    def qkv_of(x, Wqkv, bqkv, G):
        B, H, W, C = x.shape
        t = F.linear(x, Wqkv, bqkv).reshape(B, H, W, 3, G, -1).permute(3, 0, 4, 1, 2, 5)
        return t[0], t[1], t[2]                                   # (B, G, H, W, d)

    def rows(q, k, v, s):
        return _axial_explicit(q, k, v, s)

    def cols(q, k, v, s):
        t = lambda a: a.transpose(2, 3)                          # noqa: E731
        return t(_axial_explicit(t(q), t(k), t(v), s))

    def merge(o, Wp_, bp_):
        B, G, H, W, d = o.shape
        return F.linear(o.permute(0, 2, 3, 1, 4).reshape(B, H, W, G * d), Wp_, bp_)

    if sequential:
        def fn(x):
            q, k, v = qkv_of(x, P["rows.qkv.weight"], P["rows.qkv.bias"], rb.heads)
            y = merge(rows(q, k, v, rb.scale()), P["rows.proj.weight"], P["rows.proj.bias"])
            q, k, v = qkv_of(y, P["columns.qkv.weight"], P["columns.qkv.bias"], cb.heads)
            return merge(cols(q, k, v, cb.scale()), P["columns.proj.weight"], P["columns.proj.bias"])
        return fn

    def joined(name):
        r, cc = P[f"rows.qkv.{name}"].chunk(3), P[f"columns.qkv.{name}"].chunk(3)
        return torch.cat([r[0], cc[0], r[1], cc[1], r[2], cc[2]])
    Wqkv, bqkv = joined("weight"), joined("bias")
    Gr, G = rb.heads, rb.heads + cb.heads

    def fn(x):
        q, k, v = qkv_of(x, Wqkv, bqkv, G)
        o = torch.cat([rows(q[:, :Gr], k[:, :Gr], v[:, :Gr], rb.scale()),
                       cols(q[:, Gr:], k[:, Gr:], v[:, Gr:], cb.scale())], dim=1)
        return merge(o, P["merge.proj.weight"], P["merge.proj.bias"])
    return fn


def axial_sdpa(c: Ctx) -> Fn:
    """Each axis as one SDPA batch: channels-last qkv (B, H, W, 3, G, d) permuted to
    (B·H, G, W, d) for rows and (B·W, G, H, d) for columns, F.scaled_dot_product_attention,
    permuted back; parallel: one GEMM per branch and one proj; sequential: as the spec."""
    P = c.P
    rb, cb = c.branch("rows"), c.branch("columns")
    sequential = c.plan.spec.merge.kind == "sequence"

    def attend(x, bp, name):
        B, H, W, _ = x.shape
        G, d = bp.heads, bp.head_dim
        t = F.linear(x, P[f"{name}.qkv.weight"], P[f"{name}.qkv.bias"]).view(B, H, W, 3, G, d)
        if name == "rows":
            t = t.permute(3, 0, 1, 4, 2, 5).reshape(3, B * H, G, W, d)
            y = F.scaled_dot_product_attention(t[0], t[1], t[2], scale=bp.scale())
            return y.view(B, H, G, W, d).permute(0, 1, 3, 2, 4).reshape(B, H, W, G * d)
        t = t.permute(3, 0, 2, 4, 1, 5).reshape(3, B * W, G, H, d)
        y = F.scaled_dot_product_attention(t[0], t[1], t[2], scale=bp.scale())
        return y.view(B, W, G, H, d).permute(0, 3, 1, 2, 4).reshape(B, H, W, G * d)

    if sequential:
        def fn(x):
            y = F.linear(attend(x, rb, "rows"), P["rows.proj.weight"], P["rows.proj.bias"])
            return F.linear(attend(y, cb, "columns"), P["columns.proj.weight"], P["columns.proj.bias"])
        return fn

    def fn(x):
        y = torch.cat([attend(x, rb, "rows"), attend(x, cb, "columns")], dim=-1)
        return F.linear(y, P["merge.proj.weight"], P["merge.proj.bias"])
    return fn
