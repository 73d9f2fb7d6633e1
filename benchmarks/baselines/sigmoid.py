"""sigmoid attention: the paper-style reference and the hand-picked baselines.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .base import Ctx, Fn


# ---------------------------------------------------------------- sigmoid attention
def _sigmoid_bias(c: Ctx, n_keys: int) -> float:
    b = c.b.spec.normalization.bias
    return -math.log(n_keys) if isinstance(b, str) else float(b)


def sigmoid_reference(c: Ctx) -> Fn:
    """Sigmoid attention as the paper's reference code writes it (no FlashSigmoid on CPU):
    qkv, sigmoid(q @ kᵀ·scale + b) with b = −log n, @ v, proj."""
    G, d, s, C = c.G, c.d, c.scale, c.C
    p = c.P

    def fn(x):
        B, H, W, _ = x.shape
        N = H * W
        q, k, v = F.linear(x.reshape(B, N, C), p["attn.qkv.weight"], p["attn.qkv.bias"]) \
            .reshape(B, N, 3, G, d).permute(2, 0, 3, 1, 4).unbind(0)
        attn = torch.sigmoid(q @ k.transpose(-2, -1) * s + _sigmoid_bias(c, N))
        y = (attn @ v).transpose(1, 2).reshape(B, N, C)
        return F.linear(y, p["attn.proj.weight"], p["attn.proj.bias"]).reshape(B, H, W, C)
    return fn


def sigmoid_baddbmm(c: Ctx, chunk: int | None = 1024) -> Fn:
    """Eager, memory-aware: per block of `chunk` queries, one baddbmm (the −log n bias as
    its input, the scale as alpha), an in-place sigmoid, one bmm — no N×N tensor beyond a
    block."""
    G, d, s, C = c.G, c.d, c.scale, c.C
    p = c.P

    def fn(x):
        B, H, W, _ = x.shape
        N = H * W
        t = F.linear(x.reshape(B, N, C), p["attn.qkv.weight"], p["attn.qkv.bias"]) \
            .view(B, N, 3, G, d).permute(2, 0, 3, 1, 4).reshape(3, B * G, N, d)
        q, k, v = t[0], t[1], t[2]
        kt = k.transpose(1, 2)
        bias = torch.full((1, 1, 1), _sigmoid_bias(c, N), dtype=x.dtype, device=x.device)
        step = chunk or N
        ys = []
        for i in range(0, N, step):
            a = torch.baddbmm(bias, q[:, i:i + step], kt, alpha=s)
            ys.append(torch.bmm(a.sigmoid_(), v))
        y = torch.cat(ys, dim=1) if len(ys) > 1 else ys[0]
        y = y.view(B, G, N, d).transpose(1, 2).reshape(B, H, W, C)
        return F.linear(y, p["attn.proj.weight"], p["attn.proj.bias"])
    return fn


def sigmoid_explicit(c: Ctx) -> Fn:
    """The explicit form written for torch.compile: channels-last qkv, (B, G, N, d) views,
    sigmoid(q @ kᵀ·s + b) @ v (inductor fuses scale, bias and sigmoid into one pass)."""
    G, d, s, C = c.G, c.d, c.scale, c.C
    p = c.P

    def fn(x):
        B, H, W, _ = x.shape
        N = H * W
        t = F.linear(x.reshape(B, N, C), p["attn.qkv.weight"], p["attn.qkv.bias"]) \
            .view(B, N, 3, G, d).permute(2, 0, 3, 1, 4)
        a = torch.sigmoid(t[0] @ t[1].transpose(-2, -1) * s + _sigmoid_bias(c, N))
        y = (a @ t[2]).transpose(1, 2).reshape(B, H, W, C)
        return F.linear(y, p["attn.proj.weight"], p["attn.proj.bias"])
    return fn
