"""EfficientViT: the paper-style reference and the hand-picked baselines.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Ctx, Fn


# ---------------------------------------------------------------- EfficientViT
def _efficientvit_parts(c: Ctx):
    bps = list(c.plan.branches)
    ws = bps[0].spec.application.size
    K = bps[0].spec.projections.q_conv.size
    return bps, ws, K


def _abs_index(ws, device=None):
    """EfficientViT's attention_bias_idxs: |dy|·ws + |dx| (first-seen offset numbering)."""
    ys, xs = torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")
    ys, xs = ys.reshape(-1), xs.reshape(-1)
    return ((ys[:, None] - ys[None, :]).abs() * ws + (xs[:, None] - xs[None, :]).abs()).to(device)


def efficientvit_reference(c: Ctx) -> Fn:
    """MSRA EfficientViT LocalWindowAttention + CascadedGroupAttention (eval, each
    Conv2d_BN folded into one conv with bias): zero-pad to multiples of 7, window partition
    to NCHW windows; per head: feat = chunk_i (+ previous head's output), 1×1 conv to
    q, k, v, 5×5 depthwise conv of q, (qᵀk)·scale + attention_biases[i, idxs], softmax,
    v @ attnᵀ; concat, ReLU, 1×1 proj conv; reverse, crop."""
    bps, ws, K = _efficientvit_parts(c)
    p = c.P
    G = len(bps)
    kd = bps[0].qk_head_dim
    dd = bps[0].head_dim
    s = bps[0].scale()
    idx = _abs_index(ws, p["merge.proj.weight"].device)
    Wproj = p["merge.proj.weight"][:, :, None, None]

    def cga(x):                     # x (B', C, ws, ws)
        B_, C, H, W = x.shape
        feats_in = x.chunk(G, dim=1)
        feats_out = []
        feat = feats_in[0]
        for i, bp in enumerate(bps):
            nm = bp.name
            if i > 0:
                feat = feat + feats_in[i]
            feat = F.conv2d(feat, p[f"{nm}.qkv.weight"][:, :, None, None], p[f"{nm}.qkv.bias"])
            q, k, v = feat.view(B_, -1, H, W).split([kd, kd, dd], dim=1)
            q = F.conv2d(q, p[f"{nm}.q_conv.weight"], p[f"{nm}.q_conv.bias"], padding=K // 2, groups=kd)
            q, k, v = q.flatten(2), k.flatten(2), v.flatten(2)
            ab = p[f"{nm}.rel_pos.bias"][0][idx]
            attn = (q.transpose(-2, -1) @ k) * s + ab
            attn = attn.softmax(dim=-1)
            feat = (v @ attn.transpose(-2, -1)).view(B_, dd, H, W)
            feats_out.append(feat)
        return F.conv2d(torch.relu(torch.cat(feats_out, 1)), Wproj, p["merge.proj.bias"])

    def fn(x):                      # (B, H, W, C) channels-last = the official permute(0, 2, 3, 1)
        B, H, W, C = x.shape
        pad_b, pad_r = (ws - H % ws) % ws, (ws - W % ws) % ws
        if pad_b or pad_r:
            x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        pH, pW = H + pad_b, W + pad_r
        nH, nW = pH // ws, pW // ws
        x = x.view(B, nH, ws, nW, ws, C).transpose(2, 3).reshape(B * nH * nW, ws, ws, C).permute(0, 3, 1, 2)
        x = cga(x)
        x = x.permute(0, 2, 3, 1).view(B, nH, nW, ws, ws, C).transpose(2, 3).reshape(B, pH, pW, C)
        if pad_b or pad_r:
            x = x[:, :H, :W].contiguous()
        return x
    return fn


def efficientvit_sdpa(c: Ctx) -> Fn:
    """Window-major channels-last throughout: pad, partition once to (B·nW, 49, C); per
    head the cascade input (chunk + previous output) → q, k, v by one Linear, the 5×5
    depthwise conv of q on the (B·nW, d, 7, 7) view, SDPA with the static |Δ|-indexed bias
    as the mask; concat, ReLU, proj, reverse, crop."""
    bps, ws, K = _efficientvit_parts(c)
    p = c.P
    G = len(bps)
    kd, dd = bps[0].qk_head_dim, bps[0].head_dim
    s = bps[0].scale()
    idx = _abs_index(ws, p["merge.proj.weight"].device)
    masks = [p[f"{bp.name}.rel_pos.bias"][0][idx].contiguous() for bp in bps]    # (n, n)
    n = ws * ws

    def fn(x):
        B, H, W, C = x.shape
        pad_b, pad_r = (ws - H % ws) % ws, (ws - W % ws) % ws
        if pad_b or pad_r:
            x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        pH, pW = H + pad_b, W + pad_r
        nH, nW = pH // ws, pW // ws
        xw = x.view(B, nH, ws, nW, ws, C).transpose(2, 3).reshape(-1, n, C)
        chunks = xw.chunk(G, dim=-1)
        outs, feat = [], None
        for i, bp in enumerate(bps):
            nm = bp.name
            inp = chunks[i] if feat is None else chunks[i] + feat
            q, k, v = F.linear(inp, p[f"{nm}.qkv.weight"], p[f"{nm}.qkv.bias"]).split([kd, kd, dd], dim=-1)
            q = F.conv2d(q.transpose(1, 2).reshape(-1, kd, ws, ws), p[f"{nm}.q_conv.weight"],
                         p[f"{nm}.q_conv.bias"], padding=K // 2, groups=kd).flatten(2).transpose(1, 2)
            feat = F.scaled_dot_product_attention(q, k, v, attn_mask=masks[i], scale=s)
            outs.append(feat)
        y = F.linear(torch.relu(torch.cat(outs, dim=-1)), p["merge.proj.weight"], p["merge.proj.bias"])
        y = y.view(B, nH, nW, ws, ws, C).transpose(2, 3).reshape(B, pH, pW, C)
        return y[:, :H, :W] if (pad_b or pad_r) else y
    return fn
