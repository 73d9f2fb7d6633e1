"""partitions (block / grid): the paper-style reference and the hand-picked baselines.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Ctx, Fn, swin_shift_mask


# ---------------------------------------------------------------- partitions (block / grid)
def _to_groups(t, P, mode, G):
    """(B, H, W, 3·G·d) → (3, B, nG·G, P², d): block (P×P tiles) or grid (stride H/P)
    groups, row-major group order, group-local (a, b) row-major inside."""
    B, H, W, C3 = t.shape
    d = C3 // (3 * G)
    if mode == "block":
        t = t.view(B, H // P, P, W // P, P, 3, G, d).permute(5, 0, 1, 3, 6, 2, 4, 7)
    else:
        t = t.view(B, P, H // P, P, W // P, 3, G, d).permute(5, 0, 2, 4, 6, 1, 3, 7)
    return t.reshape(3, B, -1, P * P, d)


def _from_groups(y, P, mode, B, H, W):
    """Inverse of _to_groups for one tensor: (B, nG·G, P², d) → (B, H, W, G·d)."""
    d = y.shape[-1]
    if mode == "block":
        y = y.view(B, H // P, W // P, -1, P, P, d).permute(0, 1, 4, 2, 5, 3, 6)
    else:
        y = y.view(B, H // P, W // P, -1, P, P, d).permute(0, 4, 1, 5, 2, 3, 6)
    return y.reshape(B, H, W, -1)


def timm_grid_partition(x, P):
    """timm maxxvit grid_partition: (B, H, W, C) → (B·(H/P)(W/P), P, P, C)."""
    B, H, W, C = x.shape
    x = x.view(B, P, H // P, P, W // P, C)
    return x.permute(0, 2, 4, 1, 3, 5).contiguous().view(-1, P, P, C)


def timm_grid_reverse(windows, P, H, W):
    C = windows.shape[-1]
    x = windows.view(-1, H // P, W // P, P, P, C)
    return x.permute(0, 3, 1, 4, 2, 5).contiguous().view(-1, H, W, C)


def _group_mask(bias, nG, shift_mask=None):
    """Static additive SDPA mask (1, nG·G, n, n) from a (G, n, n) bias (+ (nG, n, n))."""
    m = bias.unsqueeze(0).expand(nG, -1, -1, -1)
    if shift_mask is not None:
        m = m + shift_mask.to(bias).unsqueeze(1)
    G, n = bias.shape[0], bias.shape[-1]
    return m.reshape(1, nG * G, n, n).contiguous()


def partition_sdpa(c: Ctx, mode: str, P: int, bias, qkv_bias=None, shift: int = 0,
                   cosine_scale=None) -> Fn:
    """One qkv GEMM on the map, block / grid partition of q/k/v into (B, nG·G, P², d),
    F.scaled_dot_product_attention with the static (G, P², P²) bias (+ Swin's shift mask)
    as an additive float mask, reverse, proj. cosine_scale (G,): Swin-V2's scaled cosine
    attention (q, k l2-normalized, q times the clamped per-head scale, SDPA scale 1)."""
    G = c.G
    Wqkv, Wp_, bp_ = c.p("attn.qkv.weight"), c.p("attn.proj.weight"), c.p("attn.proj.bias")
    bqkv = c.P.get("attn.qkv.bias") if qkv_bias is None else qkv_bias
    H, W = c.H, c.W
    nG = (H // P) * (W // P)
    smask = swin_shift_mask(H, W, P, shift) if shift else None
    mask = _group_mask(bias.to(Wqkv.dtype), nG, smask)
    s = c.scale
    qs = None
    if cosine_scale is not None:
        qs = cosine_scale.to(Wqkv.dtype).reshape(1, G, 1).expand(nG, G, 1).reshape(1, nG * G, 1, 1)
        s = 1.0

    def fn(x):
        B, H_, W_, C = x.shape
        if shift:
            x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
        q, k, v = _to_groups(F.linear(x, Wqkv, bqkv), P, mode, G)
        if qs is not None:
            q = F.normalize(q, dim=-1) * qs
            k = F.normalize(k, dim=-1)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=s)
        y = _from_groups(y, P, mode, B, H_, W_)
        if shift:
            y = torch.roll(y, shifts=(shift, shift), dims=(1, 2))
        return F.linear(y, Wp_, bp_)
    return fn
