"""Shunted self-attention: the paper-style reference and the hand-picked baselines.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Ctx, Fn


# ---------------------------------------------------------------- Shunted self-attention
def _shunted_parts(c: Ctx):
    cb, fb = c.branch("coarse"), c.branch("fine")
    return cb, fb, cb.spec.application.ratio, fb.spec.application.ratio


def shunted_reference(c: Ctx) -> Fn:
    """Shunted-Transformer's SSA Attention (sr_ratio 8): q Linear over all heads; per path
    sr (r×r strided conv on NCHW), norm, act (GELU), kv Linear → k, v of half the heads;
    v += local_conv(v as a (C/2, H/r, W/r) map); explicit q·kᵀ·scale, softmax, @ v;
    concat the two paths, proj."""
    cb, fb, r1, r2 = _shunted_parts(c)
    p = c.P
    C = c.C
    Wq = torch.cat([p["coarse.q.weight"], p["fine.q.weight"]])
    bq = torch.cat([p["coarse.q.bias"], p["fine.q.bias"]])
    eps = cb.spec.application.norm_eps, fb.spec.application.norm_eps

    def fn(x):
        B, H, W, _ = x.shape
        N = H * W
        G = cb.heads + fb.heads
        d = C // G
        q = F.linear(x.reshape(B, N, C), Wq, bq).reshape(B, N, G, d).permute(0, 2, 1, 3)
        x_ = x.reshape(B, N, C).permute(0, 2, 1).reshape(B, C, H, W)
        outs = []
        for (name, bp, r, e, qh) in (("coarse", cb, r1, eps[0], q[:, :cb.heads]),
                                     ("fine", fb, r2, eps[1], q[:, cb.heads:])):
            xs = F.conv2d(x_, p[f"{name}.pool.conv.weight"], p[f"{name}.pool.conv.bias"], stride=r)
            h, w = xs.shape[-2:]
            xs = F.gelu(F.layer_norm(xs.reshape(B, C, -1).permute(0, 2, 1), (C,),
                                     p[f"{name}.pool.norm.weight"], p[f"{name}.pool.norm.bias"], e))
            kv = F.linear(xs, p[f"{name}.kv.weight"], p[f"{name}.kv.bias"]) \
                .reshape(B, -1, 2, bp.heads, d).permute(2, 0, 3, 1, 4)
            k, v = kv[0], kv[1]
            attn = ((qh @ k.transpose(-2, -1)) * bp.scale()).softmax(dim=-1)
            half = bp.heads * d
            vm = v.transpose(1, 2).reshape(B, -1, half).transpose(1, 2).reshape(B, half, h, w)
            lc = F.conv2d(vm, p[f"{name}.value_conv.weight"], p[f"{name}.value_conv.bias"],
                          padding=1, groups=half)
            v = v + lc.view(B, half, -1).view(B, bp.heads, d, -1).transpose(-1, -2)
            outs.append((attn @ v).transpose(1, 2).reshape(B, N, half))
        y = F.linear(torch.cat(outs, dim=-1), p["merge.proj.weight"], p["merge.proj.bias"])
        return y.reshape(B, H, W, C)
    return fn


def shunted_sdpa(c: Ctx) -> Fn:
    """Pooled keys per path: the strided conv on the channels-last view, LayerNorm, GELU,
    kv Linear, the 3×3 depthwise conv of v on the key grid (channels-last), then SDPA of
    the path's heads over its keys; concat, proj."""
    cb, fb, r1, r2 = _shunted_parts(c)
    p = c.P
    C = c.C

    def path(x, name, bp, r):
        B, H, W, _ = x.shape
        G, d = bp.heads, bp.head_dim
        half = G * d
        q = F.linear(x, p[f"{name}.q.weight"], p[f"{name}.q.bias"]).view(B, H * W, G, d).transpose(1, 2)
        xs = F.conv2d(x.permute(0, 3, 1, 2), p[f"{name}.pool.conv.weight"],
                      p[f"{name}.pool.conv.bias"], stride=r).permute(0, 2, 3, 1)
        h, w = xs.shape[1:3]
        xs = F.gelu(F.layer_norm(xs, (C,), p[f"{name}.pool.norm.weight"],
                                 p[f"{name}.pool.norm.bias"], bp.spec.application.norm_eps))
        kv = F.linear(xs, p[f"{name}.kv.weight"], p[f"{name}.kv.bias"])        # (B, h, w, 2·half)
        k, v = kv[..., :half], kv[..., half:]
        v = v + F.conv2d(v.permute(0, 3, 1, 2), p[f"{name}.value_conv.weight"],
                         p[f"{name}.value_conv.bias"], padding=1, groups=half).permute(0, 2, 3, 1)
        k = k.reshape(B, h * w, G, d).transpose(1, 2)
        v = v.reshape(B, h * w, G, d).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, scale=bp.scale())
        return y.transpose(1, 2).reshape(B, H, W, half)

    def fn(x):
        y = torch.cat([path(x, "coarse", cb, r1), path(x, "fine", fb, r2)], dim=-1)
        return F.linear(y, p["merge.proj.weight"], p["merge.proj.bias"])
    return fn
