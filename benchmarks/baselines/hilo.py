"""HiLo (LITv2): the paper-style reference and the hand-picked baselines.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Ctx, Fn, _pad_br


# ---------------------------------------------------------------- HiLo (LITv2)
def _hilo_geometry(c: Ctx):
    hi, lo = c.branch("hifi"), c.branch("lofi")
    ws = hi.window
    return hi, lo, ws


def hilo_reference(c: Ctx) -> Fn:
    """LITv2 HiLo.hifi / HiLo.lofi as in the official code: Hi-Fi groups ws×ws windows
    with reshape/transpose, explicit attention; Lo-Fi AvgPool2d on the NCHW map, kv,
    explicit attention; concat [Hi-Fi, Lo-Fi]."""
    hi, lo, ws = _hilo_geometry(c)
    d = hi.head_dim
    hh, lh = hi.heads, lo.heads
    h_dim, l_dim = hh * d, lh * d
    s = lo.scale()
    P = c.P

    def hifi(x):
        B, H, W, C = x.shape
        hg, wg = H // ws, W // ws
        x = x.reshape(B, hg, ws, wg, ws, C).transpose(2, 3)
        qkv = F.linear(x, P["hifi.qkv.weight"], P["hifi.qkv.bias"]).reshape(
            B, hg * wg, -1, 3, hh, d).permute(3, 0, 1, 4, 2, 5)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q @ k.transpose(-2, -1)) * s).softmax(dim=-1)
        attn = (attn @ v).transpose(2, 3).reshape(B, hg, wg, ws, ws, h_dim)
        y = attn.transpose(2, 3).reshape(B, hg * ws, wg * ws, h_dim)
        return F.linear(y, P["hifi.proj.weight"], P["hifi.proj.bias"])

    def lofi(x):
        B, H, W, C = x.shape
        q = F.linear(x, P["lofi.q.weight"], P["lofi.q.bias"]).reshape(B, H * W, lh, d).permute(0, 2, 1, 3)
        x_ = F.avg_pool2d(x.permute(0, 3, 1, 2), ws, ws).reshape(B, C, -1).permute(0, 2, 1)
        kv = F.linear(x_, P["lofi.kv.weight"], P["lofi.kv.bias"]).reshape(B, -1, 2, lh, d).permute(2, 0, 3, 1, 4)
        k, v = kv[0], kv[1]
        attn = ((q @ k.transpose(-2, -1)) * s).softmax(dim=-1)
        y = (attn @ v).transpose(1, 2).reshape(B, H, W, l_dim)
        return F.linear(y, P["lofi.proj.weight"], P["lofi.proj.bias"])

    def fn(x):
        B, H, W, C = x.shape
        xp = _pad_br(x, ws)
        parts = []
        if hh:
            parts.append(hifi(xp))
        if lh:
            parts.append(lofi(xp))
        return torch.cat(parts, dim=-1)[:, :H, :W]
    return fn


def hilo_sdpa(c: Ctx) -> Fn:
    """Both branches on F.scaled_dot_product_attention: Hi-Fi windows as a
    (B·nW, heads, ws², d) batch, Lo-Fi over the ws×ws-average-pooled keys."""
    hi, lo, ws = _hilo_geometry(c)
    d = hi.head_dim
    hh, lh = hi.heads, lo.heads
    h_dim, l_dim = hh * d, lh * d
    s = lo.scale()
    P = c.P
    n = ws * ws

    def fn(x):
        B, H, W, C = x.shape
        x = _pad_br(x, ws)
        Hp, Wp = x.shape[1], x.shape[2]
        hg, wg = Hp // ws, Wp // ws
        parts = []
        if hh:
            qkv = F.linear(x, P["hifi.qkv.weight"], P["hifi.qkv.bias"]).view(B, hg, ws, wg, ws, 3, hh, d)
            qkv = qkv.permute(5, 0, 1, 3, 6, 2, 4, 7).reshape(3, B * hg * wg, hh, n, d)
            y = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], scale=s)
            y = y.view(B, hg, wg, hh, ws, ws, d).permute(0, 1, 4, 2, 5, 3, 6).reshape(B, Hp, Wp, h_dim)
            parts.append(F.linear(y, P["hifi.proj.weight"], P["hifi.proj.bias"]))
        if lh:
            q = F.linear(x, P["lofi.q.weight"], P["lofi.q.bias"]).view(B, Hp * Wp, lh, d).transpose(1, 2)
            x_ = F.avg_pool2d(x.permute(0, 3, 1, 2), ws, ws).permute(0, 2, 3, 1).reshape(B, -1, C)
            kv = F.linear(x_, P["lofi.kv.weight"], P["lofi.kv.bias"]).view(B, -1, 2, lh, d).permute(2, 0, 3, 1, 4)
            y = F.scaled_dot_product_attention(q, kv[0], kv[1], scale=s)
            y = y.transpose(1, 2).reshape(B, Hp, Wp, l_dim)
            parts.append(F.linear(y, P["lofi.proj.weight"], P["lofi.proj.bias"]))
        return torch.cat(parts, dim=-1)[:, :H, :W]
    return fn
