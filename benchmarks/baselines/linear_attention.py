"""linear attention: the paper-style reference and the hand-picked baselines.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Ctx, Fn, Skip


# ---------------------------------------------------------------- linear attention
def _feature_map(c: Ctx):
    fm = c.b.spec.parameterization.feature_map
    if fm == "elu_plus_one":
        return lambda t: F.elu(t) + 1
    if fm == "relu":
        return F.relu
    raise Skip(f"feature map {fm!r}")


def linear_attention_reference(c: Ctx) -> Fn:
    """fast-transformers' LinearAttention (Katharopoulos et al.'s code) inside an
    AttentionLayer: qkv projections, Q = φ(Q), K = φ(K), KV = einsum('nshd,nshm->nhmd'),
    Z = 1/(einsum('nlhd,nhd->nlh', Q, K.sum(1)) + eps), V = einsum('nlhd,nhmd,nlh->nlhm'),
    out projection."""
    phi = _feature_map(c)
    G, d, C = c.G, c.d, c.C
    eps = c.b.spec.normalization.eps
    p = c.P

    def fn(x):
        B, H, W, _ = x.shape
        N = H * W
        q, k, v = F.linear(x.reshape(B, N, C), p["attn.qkv.weight"], p["attn.qkv.bias"]) \
            .view(B, N, 3, G, d).unbind(2)                          # (B, N, G, d)
        Q, K = phi(q), phi(k)
        KV = torch.einsum("nshd,nshm->nhmd", K, v)
        Z = 1 / (torch.einsum("nlhd,nhd->nlh", Q, K.sum(dim=1)) + eps)
        V = torch.einsum("nlhd,nhmd,nlh->nlhm", Q, KV, Z)
        return F.linear(V.reshape(B, H, W, C), p["attn.proj.weight"], p["attn.proj.bias"])
    return fn


def linear_attention_matmul(c: Ctx) -> Fn:
    """The associative form as two batched GEMMs: v gets a column of ones, so
    φ(K)ᵀ[V | 1] (B, G, d, d+1) carries both KV and Σφ(K); φ(Q) @ it gives numerator and
    denominator at once; divide (+ eps)."""
    phi = _feature_map(c)
    G, d, C = c.G, c.d, c.C
    eps = c.b.spec.normalization.eps
    p = c.P

    def fn(x):
        B, H, W, _ = x.shape
        N = H * W
        t = F.linear(x.reshape(B, N, C), p["attn.qkv.weight"], p["attn.qkv.bias"]) \
            .view(B, N, 3, G, d).permute(2, 0, 3, 1, 4)             # (3, B, G, N, d)
        Q, K, v = phi(t[0]), phi(t[1]), t[2]
        v1 = torch.cat([v, v.new_ones(B, G, N, 1)], dim=-1)
        out = Q @ (K.transpose(-2, -1) @ v1)                         # (B, G, N, d+1)
        y = out[..., :d] / (out[..., d:] + eps)
        return F.linear(y.transpose(1, 2).reshape(B, H, W, C), p["attn.proj.weight"],
                        p["attn.proj.bias"])
    return fn
