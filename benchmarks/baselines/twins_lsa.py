"""Twins LSA: the paper-style reference and the hand-picked baselines.
"""
from __future__ import annotations

import torch.nn.functional as F

from .base import Ctx, Fn


# ---------------------------------------------------------------- Twins LSA
def twins_lsa_reference(c: Ctx) -> Fn:
    """Twins LocallyGroupedAttn: pad, (B, _h, ws, _w, ws, C).transpose(2, 3), qkv on the
    groups, explicit attention, ungroup, crop, proj."""
    ws = c.b.window
    G, d, s = c.G, c.d, c.scale
    Wqkv, bqkv, Wp_, bp_ = c.p("attn.qkv.weight"), c.p("attn.qkv.bias"), \
        c.p("attn.proj.weight"), c.p("attn.proj.bias")

    def fn(x):
        B, H, W, C = x.shape
        pad_r, pad_b = (ws - W % ws) % ws, (ws - H % ws) % ws
        x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        Hp, Wp = x.shape[1], x.shape[2]
        _h, _w = Hp // ws, Wp // ws
        x = x.reshape(B, _h, ws, _w, ws, C).transpose(2, 3)
        qkv = F.linear(x, Wqkv, bqkv).reshape(B, _h * _w, ws * ws, 3, G, d).permute(3, 0, 1, 4, 2, 5)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q @ k.transpose(-2, -1)) * s).softmax(dim=-1)
        attn = (attn @ v).transpose(2, 3).reshape(B, _h, _w, ws, ws, C)
        y = attn.transpose(2, 3).reshape(B, _h * ws, _w * ws, C)[:, :H, :W].contiguous()
        return F.linear(y, Wp_, bp_)
    return fn
