"""Axial attention (Ho et al., "Axial Attention in Multidimensional Transformers", 2019;
Wang et al., "Axial-DeepLab", ECCV 2020, without positional terms) -- an independent
float64 reference with explicit weights (no checkpoint layout is mirrored).

Math (x: (B, H, W, C), h heads, d = C/h, s = d^-1/2; weights nn.Linear style (out, in);
w_qkv (3C, C) has rows [q; k; v], each block head-major: head g owns [g*d, (g+1)*d)):

    [q | k | v] = x w_qkv^T + b_qkv
    row attention     (token (r, c) sees the W tokens (r, c'), c' = 0..W-1):
        o_g(r, c) = sum_c' softmax_c'(s q_g(r, c) . k_g(r, c')) v_g(r, c')
    column attention  (token (r, c) sees the H tokens (r', c), r' = 0..H-1):
        o_g(r, c) = sum_r' softmax_r'(s q_g(r, c) . k_g(r', c)) v_g(r', c)
    y = concat_g o_g w_proj^T + b_proj

    axial_sequential(x) = column_attention(row_attention(x; row weights); column weights)
        (two full attention layers, each with its own qkv and proj; no residual)
    axial_parallel(x): ONE qkv projection; heads [0, row_heads) attend along rows, heads
        [row_heads, h) along columns (row_heads = h // 2 by default); concatenate in head
        order; ONE proj.
"""

import torch

__all__ = ["row_attention", "column_attention", "axial_sequential", "axial_parallel",
           "make_weights"]


from . import linear as _linear, make_weights  # noqa: F401  (make_weights re-exported)


def _qkv(x, heads, w_qkv, b_qkv):
    """(B, H, W, C) -> q, k, v each (B, heads, H, W, d)."""
    B, H, W, C = x.shape
    t = _linear(x, w_qkv, b_qkv).reshape(B, H, W, 3, heads, C // heads)
    t = t.permute(3, 0, 4, 1, 2, 5)
    return t[0], t[1], t[2]


def _along_rows(q, k, v):
    # (B, h, H, W, d): the key axis is W, batched over rows
    d = q.shape[-1]
    attn = torch.softmax(q @ k.transpose(-2, -1) * d ** -0.5, dim=-1)
    return attn @ v


def _along_columns(q, k, v):
    t = lambda a: a.transpose(2, 3)        # swap H and W so the key axis is H
    return t(_along_rows(t(q), t(k), t(v)))


def _merge(o, w_proj, b_proj):
    B, h, H, W, d = o.shape
    return _linear(o.permute(0, 2, 3, 1, 4).reshape(B, H, W, h * d), w_proj, b_proj)


def row_attention(x, heads, w_qkv, b_qkv, w_proj, b_proj):
    q, k, v = _qkv(x, heads, w_qkv, b_qkv)
    return _merge(_along_rows(q, k, v), w_proj, b_proj)


def column_attention(x, heads, w_qkv, b_qkv, w_proj, b_proj):
    q, k, v = _qkv(x, heads, w_qkv, b_qkv)
    return _merge(_along_columns(q, k, v), w_proj, b_proj)


def axial_sequential(x, heads, row_weights: dict, column_weights: dict):
    return column_attention(row_attention(x, heads, **row_weights), heads, **column_weights)


def axial_parallel(x, heads, w_qkv, b_qkv, w_proj, b_proj, row_heads=None):
    row_heads = heads // 2 if row_heads is None else row_heads
    if not 0 <= row_heads <= heads:
        raise ValueError(f"row_heads must lie in [0, {heads}], got {row_heads}")
    q, k, v = _qkv(x, heads, w_qkv, b_qkv)
    r = slice(0, row_heads)
    c = slice(row_heads, heads)
    o = torch.cat([_along_rows(q[:, r], k[:, r], v[:, r]),
                   _along_columns(q[:, c], k[:, c], v[:, c])], dim=1)
    return _merge(o, w_proj, b_proj)
