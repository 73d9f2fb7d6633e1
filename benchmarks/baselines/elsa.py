"""ELSA: the paper-style reference and the hand-picked baselines.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Ctx, Fn, Skip


# ---------------------------------------------------------------- ELSA
def _elsa_geometry(c: Ctx):
    b = c.b
    par = b.spec.parameterization
    K = b.window
    return b, par, K


def elsa_reference(c: Ctx) -> Fn:
    """ELSA's official module with its CPU elsa_op: pre_proj as a 1×1 conv on NCHW,
    Hadamard q⊙k·scale, grouped K×K conv → GELU → 1×1 conv, softmax over the K² logits of
    each head, ghost head (M^lam, + gamma·S) and F.unfold aggregation, post_proj."""
    b, par, K = _elsa_geometry(c)
    G, Cqk, s = c.G, b.qk_dim, c.scale
    gw = par.group_width
    P = c.P
    lam, gamma = b.spec.kernel.expand.lam, b.spec.kernel.expand.gamma
    Wpre = P["attn.qkv.weight"][:, :, None, None]
    bpre = P["attn.qkv.bias"]

    def fn(x):
        B, H, W, _ = x.shape
        C = c.C
        x = x.permute(0, 3, 1, 2)
        qkv = F.conv2d(x, Wpre, bpre)
        q, k, v = torch.split(qkv, (Cqk, Cqk, C), dim=1)
        hp = q * k * s
        h_attn = F.conv2d(hp, P["attn.hadamard.dw.weight"], P["attn.hadamard.dw.bias"],
                          padding=K // 2, groups=Cqk // gw)
        h_attn = F.conv2d(F.gelu(h_attn), P["attn.hadamard.pw.weight"], P["attn.hadamard.pw.bias"])
        v = v.reshape(B * G, C // G, H, W)
        h_attn = h_attn.reshape(B * G, -1, H, W).softmax(1)
        ones = torch.ones(1, C, K, K, dtype=x.dtype, device=x.device)
        ghost_mul = (P["attn.ghost.mul"][None] ** lam if lam != 0 else ones) \
            .expand(B, C, K, K).reshape(B * G, C // G, K, K)
        ghost_add = (P["attn.ghost.add"][None] * gamma if gamma != 0 else ones * 0) \
            .expand(B, C, K, K).reshape(B * G, C // G, K, K)
        # elsa_op, CPU path
        Bg, Cg = v.shape[:2]
        feats = F.unfold(v, kernel_size=K, padding=K // 2).reshape(Bg, Cg, K * K, H * W)
        filters = ghost_mul.reshape(Bg, Cg, K * K, 1) * h_attn.reshape(Bg, 1, K * K, H * W) \
            + ghost_add.reshape(Bg, Cg, K * K, 1)
        y = (feats * filters).sum(2).reshape(B, C, H, W)
        return F.linear(y.permute(0, 2, 3, 1), P["attn.proj.weight"], P["attn.proj.bias"])
    return fn


def elsa_split(c: Ctx, loop: bool) -> Fn:
    """Hand-tuned ELSA: qkv as a channels-last GEMM, Hadamard logits with channels-last
    convs, and the ghost head split into its static part — γ·S, a plain depthwise K×K
    conv2d of v — plus the dynamic head filters Σ_k A[g,k]·v(p+k), computed either by
    F.unfold + a per-head weighted sum (loop=False) or by K² shifted slices of the
    zero-padded v (loop=True, meant for torch.compile: no K²-times larger tensor).
    Needs lam = 0 (ghost mul unused), as in the zoo's ELSA-Swin spec."""
    b, par, K = _elsa_geometry(c)
    lam, gamma = b.spec.kernel.expand.lam, b.spec.kernel.expand.gamma
    if lam != 0:
        raise Skip("the static/dynamic split needs lam = 0")
    G, Cqk, s, d = c.G, b.qk_dim, c.scale, c.d
    gw, C = par.group_width, c.C
    P = c.P
    S = (P["attn.ghost.add"] * gamma).reshape(C, 1, K, K) if gamma != 0 else None
    r = K // 2

    def fn(x):
        B, H, W, _ = x.shape
        qkv = F.linear(x, P["attn.qkv.weight"], P["attn.qkv.bias"])
        q, k, v = torch.split(qkv, (Cqk, Cqk, C), dim=-1)
        hp = (q * k * s).permute(0, 3, 1, 2)
        a = F.conv2d(hp, P["attn.hadamard.dw.weight"], P["attn.hadamard.dw.bias"],
                     padding=r, groups=Cqk // gw)
        a = F.conv2d(F.gelu(a), P["attn.hadamard.pw.weight"], P["attn.hadamard.pw.bias"])
        a = a.view(B, G, K * K, H, W).softmax(2)                     # (B, G, K², H, W)
        vn = v.permute(0, 3, 1, 2)                                   # (B, C, H, W) view
        y = F.conv2d(vn, S, None, padding=r, groups=C) if S is not None else torch.zeros_like(vn)
        y = y.view(B, G, d, H, W)
        if loop:
            vp = F.pad(vn, (r, r, r, r)).view(B, G, d, H + 2 * r, W + 2 * r)
            for t in range(K * K):
                dy, dx = divmod(t, K)
                y = y + a[:, :, t:t + 1] * vp[:, :, :, dy:dy + H, dx:dx + W]
        else:
            feats = F.unfold(vn, kernel_size=K, padding=r).view(B, G, d, K * K, H, W)
            y = y + (feats * a.unsqueeze(2)).sum(3)
        y = y.reshape(B, C, H, W).permute(0, 2, 3, 1)
        return F.linear(y, P["attn.proj.weight"], P["attn.proj.bias"])
    return fn
