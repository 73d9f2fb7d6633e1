"""CrossFormer (SDA / LDA): the paper-style reference and the hand-picked baselines.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Ctx, Fn, Skip, swin_relative_position_index
from .partitions import partition_sdpa


# ---------------------------------------------------------------- CrossFormer (SDA / LDA)
def _dpb_table(c: Ctx, P: int):
    """The official DynamicPosBias over the raw offsets (biases buffer, dy-major), indexed
    by relative_position_index (query − key): (G, P², P²)."""
    p = c.P
    term = c.b.spec.parameterization.term("dpb")
    dy = torch.arange(1 - P, P)
    biases = torch.stack(torch.meshgrid(dy, dy, indexing="ij")).flatten(1).transpose(0, 1)
    biases = biases.to(p["attn.qkv.weight"])

    def stage(pos, i):
        w = p[f"attn.dpb.pos{i}.0.weight"]
        pos = torch.relu(F.layer_norm(pos, w.shape, w, p[f"attn.dpb.pos{i}.0.bias"]))
        return F.linear(pos, p[f"attn.dpb.pos{i}.2.weight"], p[f"attn.dpb.pos{i}.2.bias"])

    pos = F.linear(biases, p["attn.dpb.pos_proj.weight"], p["attn.dpb.pos_proj.bias"])
    if getattr(term, "residual", False):
        pos = pos + stage(pos, 1)
        pos = pos + stage(pos, 2)
        pos = stage(pos, 3)
    else:
        pos = stage(stage(stage(pos, 1), 2), 3)
    n = P * P
    idx = swin_relative_position_index(P).view(-1).to(pos.device)
    return pos[idx].view(n, n, -1).permute(2, 0, 1).contiguous()


def crossformer_reference(c: Ctx, mode: str) -> Fn:
    """CrossFormer's CrossFormerBlock (classification release) + Attention: SDA groups
    reshape(B, H/G, G, W/G, G, C), LDA groups reshape(B, G, H/G, G, W/G, C), permute;
    qkv, q·scale @ kᵀ, + DynamicPosBias(biases)[relative_position_index] (the MLP runs per
    call), softmax, @ v, proj; ungroup."""
    P = c.b.spec.application.size
    if c.H % P or c.W % P:
        raise Skip(f"{c.H}x{c.W} is not a multiple of {P}")
    G, d, s, n = c.G, c.d, c.scale, P * P
    Wqkv, bqkv, Wp_, bp_ = c.p("attn.qkv.weight"), c.p("attn.qkv.bias"), \
        c.p("attn.proj.weight"), c.p("attn.proj.bias")

    def fn(x):
        B, H, W, C = x.shape
        if mode == "block":
            x = x.reshape(B, H // P, P, W // P, P, C).permute(0, 1, 3, 2, 4, 5)
        else:
            x = x.reshape(B, P, H // P, P, W // P, C).permute(0, 2, 4, 1, 3, 5)
        x = x.reshape(B * H * W // n, n, C)
        B_ = x.shape[0]
        qkv = F.linear(x, Wqkv, bqkv).reshape(B_, n, 3, G, d).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q * s) @ k.transpose(-2, -1)
        attn = attn + _dpb_table(c, P).unsqueeze(0)
        attn = attn.softmax(dim=-1)
        y = F.linear((attn @ v).transpose(1, 2).reshape(B_, n, C), Wp_, bp_)
        y = y.reshape(B, H // P, W // P, P, P, C)
        if mode == "block":
            return y.permute(0, 1, 3, 2, 4, 5).reshape(B, H, W, C)
        return y.permute(0, 3, 1, 4, 2, 5).reshape(B, H, W, C)
    return fn


def crossformer_sdpa(c: Ctx, mode: str) -> Fn:
    P = c.b.spec.application.size
    if c.H % P or c.W % P:
        raise Skip(f"{c.H}x{c.W} is not a multiple of {P}")
    return partition_sdpa(c, mode, P, _dpb_table(c, P))


def crossformer_sda_reference(c: Ctx) -> Fn:
    return crossformer_reference(c, "block")


def crossformer_lda_reference(c: Ctx) -> Fn:
    return crossformer_reference(c, "grid")


crossformer_sda_reference.__doc__ = crossformer_lda_reference.__doc__ = crossformer_reference.__doc__
