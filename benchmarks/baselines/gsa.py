"""PVT / Twins GSA: the paper-style reference and the hand-picked baselines.
"""
from __future__ import annotations

import torch.nn.functional as F

from .base import Ctx, Fn


# ---------------------------------------------------------------- PVT / Twins GSA
def gsa_reference(c: Ctx) -> Fn:
    """Twins GlobalSubSampleAttn / PVT SRA: q over all tokens, sr×sr strided conv on the
    NCHW map, LayerNorm, kv, explicit attention, proj."""
    b = c.b
    sr = b.spec.application.ratio
    G, d, s = c.G, c.d, c.scale
    Wq, bq, Wkv, bkv = c.p("attn.q.weight"), c.p("attn.q.bias"), c.p("attn.kv.weight"), c.p("attn.kv.bias")
    Wsr, bsr = c.p("attn.pool.conv.weight"), c.p("attn.pool.conv.bias")
    lnw, lnb = c.p("attn.pool.norm.weight"), c.p("attn.pool.norm.bias")
    eps = b.spec.application.norm_eps
    Wp_, bp_ = c.p("attn.proj.weight"), c.p("attn.proj.bias")

    def fn(x):
        B, H, W, C = x.shape
        N = H * W
        q = F.linear(x.reshape(B, N, C), Wq, bq).reshape(B, N, G, d).permute(0, 2, 1, 3)
        x_ = F.conv2d(x.permute(0, 3, 1, 2), Wsr, bsr, stride=sr).reshape(B, C, -1).permute(0, 2, 1)
        x_ = F.layer_norm(x_, (C,), lnw, lnb, eps)
        kv = F.linear(x_, Wkv, bkv).reshape(B, -1, 2, G, d).permute(2, 0, 3, 1, 4)
        k, v = kv[0], kv[1]
        attn = ((q @ k.transpose(-2, -1)) * s).softmax(dim=-1)
        y = (attn @ v).transpose(1, 2).reshape(B, N, C)
        return F.linear(y, Wp_, bp_).reshape(B, H, W, C)
    return fn


def gsa_sdpa(c: Ctx) -> Fn:
    """Pooled keys: the same strided conv + LayerNorm + kv, then
    F.scaled_dot_product_attention over the (H/sr)·(W/sr) keys."""
    b = c.b
    sr = b.spec.application.ratio
    G, d, s = c.G, c.d, c.scale
    Wq, bq, Wkv, bkv = c.p("attn.q.weight"), c.p("attn.q.bias"), c.p("attn.kv.weight"), c.p("attn.kv.bias")
    Wsr, bsr = c.p("attn.pool.conv.weight"), c.p("attn.pool.conv.bias")
    lnw, lnb = c.p("attn.pool.norm.weight"), c.p("attn.pool.norm.bias")
    eps = b.spec.application.norm_eps
    Wp_, bp_ = c.p("attn.proj.weight"), c.p("attn.proj.bias")

    def fn(x):
        B, H, W, C = x.shape
        N = H * W
        q = F.linear(x.reshape(B, N, C), Wq, bq).view(B, N, G, d).transpose(1, 2)
        x_ = F.conv2d(x.permute(0, 3, 1, 2), Wsr, bsr, stride=sr)        # channels-last conv
        x_ = F.layer_norm(x_.permute(0, 2, 3, 1).reshape(B, -1, C), (C,), lnw, lnb, eps)
        kv = F.linear(x_, Wkv, bkv).view(B, -1, 2, G, d).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, kv[0], kv[1], scale=s)
        return F.linear(y.transpose(1, 2).reshape(B, H, W, C), Wp_, bp_)
    return fn
