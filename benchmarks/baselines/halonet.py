"""HaloNet: the paper-style reference and the hand-picked baselines.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Ctx, Fn


# ---------------------------------------------------------------- HaloNet
def _halo_parts(c: Ctx):
    bp = c.b
    geo = bp.geometry
    return bp, geo.block, geo.halo, geo.block + 2 * geo.halo


def _timm_rel_logits_1d(q, rel_k, permute_mask):
    """timm layers/halo_attn.py rel_logits_1d (the Music-Transformer skew)."""
    B, H, W, dim = q.shape
    rel_size = rel_k.shape[0]
    win_size = (rel_size + 1) // 2
    x = q @ rel_k.transpose(-1, -2)
    x = x.reshape(-1, W, rel_size)
    x_pad = F.pad(x, [0, 1]).flatten(1)
    x_pad = F.pad(x_pad, [0, rel_size - W])
    x_pad = x_pad.reshape(-1, W + 1, rel_size)
    x = x_pad[:, :W, win_size - 1:]
    x = x.reshape(B, H, 1, W, win_size).expand(-1, -1, win_size, -1, -1)
    return x.permute(permute_mask)


def halonet_reference(c: Ctx) -> Fn:
    """timm HaloAttn (stride 1, no qkv bias, scale_pos_embed=False) on NCHW: q 1×1 conv,
    blocks by reshape/permute; kv 1×1 conv (channels interleaved [k_g | v_g] per head),
    zero pad by the halo, Tensor.unfold windows; q @ kᵀ·scale + PosEmbedRel(q) (the skewed
    height/width relative logits of the unscaled q), softmax, @ v, fold. attndsl's fused qkv
    and its (2·(b+h)−1)-row tables are converted to timm's conv weights and
    (2·win−1)-row tables (2·halo unused rows in front) once, at build time."""
    bp, blk, halo, win = _halo_parts(c)
    G, C = bp.heads, c.C
    dqk, dv = bp.qk_head_dim, bp.head_dim
    s = bp.scale()
    w_q, w_k, w_v = torch.split(c.p("attn.qkv.weight"), [bp.qk_dim, bp.qk_dim, bp.width])
    Wq = w_q.reshape(G * dqk, C, 1, 1)
    Wkv = torch.cat([w_k.reshape(G, dqk, C), w_v.reshape(G, dv, C)], dim=1).reshape(-1, C, 1, 1)
    pad = torch.zeros(2 * halo, dqk, dtype=w_q.dtype, device=w_q.device)
    height_rel = torch.cat([pad, c.p("attn.rel_pos.height")])
    width_rel = torch.cat([pad, c.p("attn.rel_pos.width")])

    def pos_embed(q):
        B_, BB, HW, _ = q.shape
        q = q.reshape(-1, blk, blk, dqk)
        rel_w = _timm_rel_logits_1d(q, width_rel, permute_mask=(0, 1, 3, 2, 4))
        q = q.transpose(1, 2)
        rel_h = _timm_rel_logits_1d(q, height_rel, permute_mask=(0, 3, 1, 4, 2))
        return (rel_h + rel_w).reshape(B_, BB, HW, -1)

    def fn(x):
        B, H, W, _ = x.shape
        x = x.permute(0, 3, 1, 2)
        nh, nw = H // blk, W // blk
        nb = nh * nw
        q = F.conv2d(x, Wq)
        q = q.reshape(-1, dqk, nh, blk, nw, blk).permute(0, 1, 3, 5, 2, 4)
        q = q.reshape(B * G, dqk, -1, nb).transpose(1, 3)
        kv = F.conv2d(x, Wkv)
        kv = F.pad(kv, [halo, halo, halo, halo])
        kv = kv.unfold(2, win, blk).unfold(3, win, blk).reshape(
            B * G, dqk + dv, nb, -1).permute(0, 2, 3, 1)
        k, v = torch.split(kv, [dqk, dv], dim=-1)
        attn = (q @ k.transpose(-1, -2)) * s + pos_embed(q)
        attn = attn.softmax(dim=-1)
        out = (attn @ v).transpose(1, 3)
        out = out.reshape(-1, blk, blk, nh, nw)
        out = out.permute(0, 3, 1, 4, 2).contiguous().view(B, G * dv, H, W)
        return out.permute(0, 2, 3, 1)
    return fn


def halonet_sdpa(c: Ctx) -> Fn:
    """Channels-last fused qkv GEMM, query blocks by view/permute, k/v windows of the
    halo-padded maps by Tensor.unfold, the relative logits q·r_h[u−i] + q·r_w[t−j] as two
    small einsums against the tables gathered once per (i, u), passed to
    F.scaled_dot_product_attention as a per-call additive float mask."""
    bp, blk, halo, win = _halo_parts(c)
    G = bp.heads
    dqk, dv = bp.qk_head_dim, bp.head_dim
    s = bp.scale()
    Wqkv = c.p("attn.qkv.weight")
    par = bp.spec.parameterization
    sign = -1 if par.rel_pos_orientation == "i_minus_j" else 1
    sy = blk + halo
    u = torch.arange(win)[None, :] - halo
    i = torch.arange(blk)[:, None]
    rows = (sign * (u - i) + sy - 1).to(Wqkv.device)                 # (b, win)
    Rh = c.p("attn.rel_pos.height")[rows]                            # (b, win, dqk)
    Rw = c.p("attn.rel_pos.width")[rows]
    rel_scale = s if par.term("query_rel_pos_hw").scaled else 1.0
    n, m = blk * blk, win * win

    def fn(x):
        B, H, W, C = x.shape
        nh, nw = H // blk, W // blk
        q, k, v = torch.split(F.linear(x, Wqkv), [bp.qk_dim, bp.qk_dim, bp.width], dim=-1)
        q = q.reshape(B, nh, blk, nw, blk, G, dqk).permute(0, 1, 3, 5, 2, 4, 6)   # B nh nw G i j d
        kv = F.pad(torch.cat([k.view(B, H, W, G, dqk), v.view(B, H, W, G, dv)], dim=-1),
                   (0, 0, 0, 0, halo, halo, halo, halo))
        kv = kv.unfold(1, win, blk).unfold(2, win, blk)                # B nh nw G d+dv u t
        kv = kv.permute(0, 1, 2, 3, 5, 6, 4).reshape(B * nh * nw, G, m, dqk + dv)
        k, v = kv[..., :dqk], kv[..., dqk:]
        qb = q.reshape(B * nh * nw, G, blk, blk, dqk)
        lh = torch.einsum("ngijd,iud->ngiju", qb, Rh)
        lw = torch.einsum("ngijd,jtd->ngijt", qb, Rw)
        mask = (lh.unsqueeze(-1) + lw.unsqueeze(-2)).reshape(B * nh * nw, G, n, m)
        if rel_scale != 1.0:
            mask = mask * rel_scale
        y = F.scaled_dot_product_attention(qb.reshape(-1, G, n, dqk), k, v, attn_mask=mask, scale=s)
        y = y.view(B, nh, nw, G, blk, blk, dv).permute(0, 1, 4, 2, 5, 3, 6)
        return y.reshape(B, H, W, G * dv)
    return fn
