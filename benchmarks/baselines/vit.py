"""global MHSA (ViT): the paper-style reference and the hand-picked baselines.
"""
from __future__ import annotations

import torch.nn.functional as F

from .base import Ctx, Fn


# ---------------------------------------------------------------- global MHSA (ViT)
def vit_reference(c: Ctx) -> Fn:
    """timm Attention with fused_attn=False: explicit q @ kᵀ, softmax, @ v."""
    Wqkv, bqkv, Wp, bp = c.p("attn.qkv.weight"), c.p("attn.qkv.bias"), \
        c.p("attn.proj.weight"), c.p("attn.proj.bias")
    G, d, s = c.G, c.d, c.scale

    def fn(x):
        B, H, W, C = x.shape
        N = H * W
        qkv = F.linear(x.reshape(B, N, C), Wqkv, bqkv).reshape(B, N, 3, G, d).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q = q * s
        attn = (q @ k.transpose(-2, -1)).softmax(dim=-1)
        y = (attn @ v).transpose(1, 2).reshape(B, N, C)
        return F.linear(y, Wp, bp).reshape(B, H, W, C)
    return fn


def vit_sdpa(c: Ctx) -> Fn:
    """timm Attention with fused_attn=True: F.scaled_dot_product_attention."""
    Wqkv, bqkv, Wp, bp = c.p("attn.qkv.weight"), c.p("attn.qkv.bias"), \
        c.p("attn.proj.weight"), c.p("attn.proj.bias")
    G, d, s = c.G, c.d, c.scale

    def fn(x):
        B, H, W, C = x.shape
        N = H * W
        qkv = F.linear(x.reshape(B, N, C), Wqkv, bqkv).reshape(B, N, 3, G, d).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        y = F.scaled_dot_product_attention(q, k, v, scale=s).transpose(1, 2).reshape(B, N, C)
        return F.linear(y, Wp, bp).reshape(B, H, W, C)
    return fn
