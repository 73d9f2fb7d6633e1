"""BOAT FSLA: the paper-style reference and the hand-picked baselines.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Ctx, Fn


# ---------------------------------------------------------------- BOAT FSLA
def _boat_perm(q, levels, iters, temp):
    """BOAT's vectorized balanced hierarchical clustering (the public code's loop over
    levels, (bh, d, n) layout, bmm / gather), with the group order sorted *descending,
    stable* (attndsl's documented choice; the public code sorts ascending, which gives
    the same clusters in reverse order).  q (B, G, N, d) → permutation (B, G, N)."""
    B, G, N, d = q.shape
    q_pre = q.reshape(B * G, N, d).permute(0, 2, 1)                # (bh, d, n)
    idx_last = torch.arange(N, device=q.device).unsqueeze(0).expand(B * G, N)
    for _ in range(levels):
        bh, dd, n = q_pre.shape
        q_avg = q_pre.reshape(bh, dd, 2, n // 2).mean(dim=-1)
        q_avg = F.normalize(q_avg, dim=-2)
        qn = F.normalize(q_pre.permute(0, 2, 1), dim=-1)
        for _ in range(iters):
            soft = torch.softmax(qn.bmm(q_avg) * temp, dim=-1)
            q_avg = F.normalize(q_pre.bmm(soft), dim=-2)
        sc = qn.bmm(q_avg)
        ratio = (sc[:, :, 0] + 1) / (sc[:, :, 1] + 1)
        order = torch.sort(ratio, dim=-1, descending=True, stable=True).indices
        idx_last = idx_last.gather(-1, order).reshape(bh * 2, n // 2)
        q_pre = q_pre.gather(-1, order.unsqueeze(1).expand(q_pre.size())) \
            .reshape(bh, dd, 2, n // 2).permute(0, 2, 1, 3).reshape(bh * 2, dd, n // 2)
    return idx_last.reshape(B, G, N)


def _boat_common(c: Ctx):
    b = c.b
    app = b.spec.application
    return b, app.size, app.overlap, app.iterations, app.temperature, b.levels


def boat_attention(c: Ctx, sdpa: bool) -> Fn:
    """BOAT ContentAttention (public code): qkv, clustering under no_grad, gather q/k/v
    into clusters of `size`, siblings share `overlap` keys/values, explicit attention
    (sdpa=False) or F.scaled_dot_product_attention (sdpa=True), scatter back with the
    inverse permutation, + 3×3 depthwise conv of v, proj."""
    b, size, ov, iters, temp, L = _boat_common(c)
    G, d, s, C = c.G, c.d, c.scale, c.C
    P = c.P

    def fn(x):
        B, H, W, _ = x.shape
        N = H * W
        qkv = F.linear(x.reshape(B, N, C), P["attn.qkv.weight"], P["attn.qkv.bias"]) \
            .reshape(B, N, 3, G, d).permute(2, 0, 3, 1, 4)          # 3, B, G, N, d
        with torch.no_grad():
            perm = _boat_perm(qkv[0].detach(), L, iters, temp)
        rev = torch.argsort(perm, dim=-1)
        g = qkv.gather(-2, perm.unsqueeze(0).unsqueeze(-1).expand(qkv.size()))
        nc = N // size
        q, k, v = g.reshape(3, B, G, nc, size, d).unbind(0)
        if L > 0 and ov > 0:
            kk = k.view(B, G, nc // 2, 2, size, d)
            vv = v.view(B, G, nc // 2, 2, size, d)
            k_over = torch.stack([kk[:, :, :, 1, :ov], kk[:, :, :, 0, size - ov:]], 3)
            v_over = torch.stack([vv[:, :, :, 1, :ov], vv[:, :, :, 0, size - ov:]], 3)
            k = torch.cat([kk, k_over], 4).view(B, G, nc, size + ov, d)
            v = torch.cat([vv, v_over], 4).view(B, G, nc, size + ov, d)
        if sdpa:
            out = F.scaled_dot_product_attention(q, k, v, scale=s)
        else:
            attn = ((q @ k.transpose(-2, -1)) * s).softmax(dim=-1)
            out = attn @ v                                           # (B, G, nc, size, d)
        out = out.reshape(B, G, N, d).gather(-2, rev.unsqueeze(-1).expand(B, G, N, d))
        y = out.permute(0, 2, 1, 3).reshape(B, N, C)
        vmap = qkv[2].permute(0, 1, 3, 2).reshape(B, C, H, W)
        y = y + F.conv2d(vmap, P["attn.value_conv.weight"], P["attn.value_conv.bias"],
                         padding=1, groups=C).reshape(B, C, N).permute(0, 2, 1)
        return F.linear(y, P["attn.proj.weight"], P["attn.proj.bias"]).reshape(B, H, W, C)
    return fn
