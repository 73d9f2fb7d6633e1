"""PVT-v2 linear SRA: the paper-style reference and the hand-picked baselines.
"""
from __future__ import annotations

import torch.nn.functional as F

from .base import Ctx, Fn


# ---------------------------------------------------------------- PVT-v2 linear SRA
def _pvt_v2_parts(c: Ctx):
    app = c.b.spec.application
    return app.size, app.norm_eps


def pvt_v2_linear_reference(c: Ctx) -> Fn:
    """timm PVT-v2 Attention with linear=True (fused_attn off): q Linear, the NCHW map
    through AdaptiveAvgPool2d(7), the 1×1 sr conv, LayerNorm, GELU, kv Linear, explicit
    q·scale @ kᵀ, softmax, @ v, proj."""
    Psz, eps = _pvt_v2_parts(c)
    G, d, s, C = c.G, c.d, c.scale, c.C
    p = c.P
    Wsr, bsr = p["attn.pool.conv.weight"], p["attn.pool.conv.bias"]

    def fn(x):
        B, H, W, _ = x.shape
        N = H * W
        xt = x.reshape(B, N, C)
        q = F.linear(xt, p["attn.q.weight"], p["attn.q.bias"]).reshape(B, N, G, -1).permute(0, 2, 1, 3)
        x_ = xt.permute(0, 2, 1).reshape(B, C, H, W)
        x_ = F.conv2d(F.adaptive_avg_pool2d(x_, Psz), Wsr, bsr).reshape(B, C, -1).permute(0, 2, 1)
        x_ = F.gelu(F.layer_norm(x_, (C,), p["attn.pool.norm.weight"], p["attn.pool.norm.bias"], eps))
        kv = F.linear(x_, p["attn.kv.weight"], p["attn.kv.bias"]).reshape(B, -1, 2, G, d).permute(2, 0, 3, 1, 4)
        k, v = kv.unbind(0)
        attn = ((q * s) @ k.transpose(-2, -1)).softmax(dim=-1)
        y = (attn @ v).transpose(1, 2).reshape(B, N, C)
        return F.linear(y, p["attn.proj.weight"], p["attn.proj.bias"]).reshape(B, H, W, C)
    return fn


def pvt_v2_linear_sdpa(c: Ctx) -> Fn:
    """Pooled keys: adaptive_avg_pool2d on the channels-last view (49 tokens), the 1×1 conv
    as a Linear, LayerNorm, GELU, kv, then SDPA of every token over the 49 keys."""
    Psz, eps = _pvt_v2_parts(c)
    G, d, s, C = c.G, c.d, c.scale, c.C
    p = c.P
    Wsr = p["attn.pool.conv.weight"].reshape(C, C)
    bsr = p["attn.pool.conv.bias"]

    def fn(x):
        B, H, W, _ = x.shape
        q = F.linear(x, p["attn.q.weight"], p["attn.q.bias"]).view(B, H * W, G, d).transpose(1, 2)
        z = F.adaptive_avg_pool2d(x.permute(0, 3, 1, 2), Psz).permute(0, 2, 3, 1).reshape(B, -1, C)
        z = F.gelu(F.layer_norm(F.linear(z, Wsr, bsr), (C,), p["attn.pool.norm.weight"],
                                p["attn.pool.norm.bias"], eps))
        kv = F.linear(z, p["attn.kv.weight"], p["attn.kv.bias"]).view(B, -1, 2, G, d).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, kv[0], kv[1], scale=s)
        return F.linear(y.transpose(1, 2).reshape(B, H, W, C), p["attn.proj.weight"], p["attn.proj.bias"])
    return fn
