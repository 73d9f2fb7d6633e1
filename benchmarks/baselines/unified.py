"""unified LSA sliding (+ rel pos): the paper-style reference and the hand-picked baselines.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Ctx, Fn


# ---------------------------------------------------------------- unified LSA sliding (+ rel pos)
def _unified_parts(c: Ctx):
    b = c.b
    terms = set(b.spec.parameterization.term_kinds)
    P = c.P
    return b, terms, P


def unified_reference(c: Ctx) -> Fn:
    """ELSA paper's unified local operator in eager PyTorch, F.unfold style: unfold k and
    v (zero-padded K×K), logits s q·k + s q·r^k + s k·r^q + r^b over the K² offsets,
    softmax, weighted sum of the unfolded values, proj."""
    b, terms, P = _unified_parts(c)
    G, d, s, C, K = c.G, c.d, c.scale, c.C, b.window
    T = K * K

    def fn(x):
        B, H, W, _ = x.shape
        N = H * W
        qkv = F.linear(x, P["attn.qkv.weight"], P["attn.qkv.bias"]).permute(0, 3, 1, 2)
        q, k, v = torch.split(qkv, C, dim=1)
        q = q.reshape(B, G, d, 1, N)
        ku = F.unfold(k, K, padding=K // 2).view(B, G, d, T, N)
        vu = F.unfold(v, K, padding=K // 2).view(B, G, d, T, N)
        logits = torch.zeros(B, G, T, N, dtype=x.dtype, device=x.device)
        if "query_key" in terms:
            logits = logits + s * (q * ku).sum(2)
        if "query_rel_pos" in terms:
            rk = P["attn.rel_pos.key"].permute(0, 2, 1).reshape(1, G, d, T, 1)
            logits = logits + s * (q * rk).sum(2)
        if "key_rel_pos" in terms:
            rq = P["attn.rel_pos.query"].permute(0, 2, 1).reshape(1, G, d, T, 1)
            logits = logits + s * (ku * rq).sum(2)
        if "rel_pos_bias" in terms:
            logits = logits + P["attn.rel_pos.bias"].view(1, G, T, 1)
        attn = logits.softmax(dim=2)
        y = (attn.unsqueeze(2) * vu).sum(3).reshape(B, C, H, W)
        return F.linear(y.permute(0, 2, 3, 1), P["attn.proj.weight"], P["attn.proj.bias"])
    return fn


def unified_shift_loop(c: Ctx) -> Fn:
    """Hand-written for torch.compile: channels-last q/k/v, the K² offsets as shifted
    slices of the zero-padded k / v (no K²-times larger tensor), q·r^k and the rel-pos
    bias as one small GEMM / broadcast, k·r^q folded per offset, softmax over the stacked
    logits, weighted sum over the same slices."""
    b, terms, P = _unified_parts(c)
    G, d, s, C, K = c.G, c.d, c.scale, c.C, b.window
    T, r = K * K, K // 2

    def fn(x):
        B, H, W, _ = x.shape
        qkv = F.linear(x, P["attn.qkv.weight"], P["attn.qkv.bias"])
        q, k, v = torch.split(qkv, C, dim=-1)
        q = q.view(B, H, W, G, d)
        kp = F.pad(k, (0, 0, r, r, r, r)).view(B, H + 2 * r, W + 2 * r, G, d)
        vp = F.pad(v, (0, 0, r, r, r, r)).view(B, H + 2 * r, W + 2 * r, G, d)
        base = torch.zeros(B, H, W, G, T, dtype=x.dtype, device=x.device)
        if "query_rel_pos" in terms:
            base = base + s * torch.einsum("bhwgd,gtd->bhwgt", q, P["attn.rel_pos.key"])
        if "rel_pos_bias" in terms:
            base = base + P["attn.rel_pos.bias"]
        rq = P.get("attn.rel_pos.query")
        logits = []
        for t in range(T):
            dy, dx = divmod(t, K)
            kj = kp[:, dy:dy + H, dx:dx + W]
            w_t = base[..., t]
            if "query_key" in terms:
                w_t = w_t + s * (q * kj).sum(-1)
            if "key_rel_pos" in terms:
                w_t = w_t + s * (kj * rq[:, t]).sum(-1)
            logits.append(w_t)
        a = torch.stack(logits, -1).softmax(-1)                      # (B, H, W, G, T)
        y = torch.zeros(B, H, W, G, d, dtype=x.dtype, device=x.device)
        for t in range(T):
            dy, dx = divmod(t, K)
            y = y + a[..., t:t + 1] * vp[:, dy:dy + H, dx:dx + W]
        return F.linear(y.reshape(B, H, W, C), P["attn.proj.weight"], P["attn.proj.bias"])
    return fn
