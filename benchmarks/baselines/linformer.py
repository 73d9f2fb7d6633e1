"""Linformer: the paper-style reference and the hand-picked baselines.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Ctx, Fn


# ---------------------------------------------------------------- Linformer
def linformer_reference(c: Ctx) -> Fn:
    """lucidrains' LinformerSelfAttention: keys/values projected along the sequence with
    einsum('bnd,nk->bkd'), explicit einsum attention, to_out."""
    G, d, s, C = c.G, c.d, c.scale, c.C
    P = c.P
    E, Fm = P["attn.select.keys"], P["attn.select.values"]          # (k, N)

    def fn(x):
        B, H, W, _ = x.shape
        N = H * W
        qkv = F.linear(x.reshape(B, N, C), P["attn.qkv.weight"], P["attn.qkv.bias"])
        queries, keys, values = torch.split(qkv, C, dim=-1)
        keys = torch.einsum("bnd,nk->bkd", keys, E.t())
        values = torch.einsum("bnd,nk->bkd", values, Fm.t())
        kk = keys.shape[1]
        queries = queries.reshape(B, N, G, d).transpose(1, 2)
        keys = keys.reshape(B, kk, G, d).transpose(1, 2)
        values = values.reshape(B, kk, G, d).transpose(1, 2)
        dots = torch.einsum("bhnd,bhkd->bhnk", queries, keys) * s
        attn = dots.softmax(dim=-1)
        out = torch.einsum("bhnk,bhkd->bhnd", attn, values)
        out = out.transpose(1, 2).reshape(B, N, C)
        return F.linear(out, P["attn.proj.weight"], P["attn.proj.bias"]).reshape(B, H, W, C)
    return fn


def linformer_sdpa(c: Ctx) -> Fn:
    """E·K and F·V as two GEMMs (E (k, N) @ K (B, N, C)), then SDPA over the k keys."""
    G, d, s, C = c.G, c.d, c.scale, c.C
    P = c.P
    E, Fm = P["attn.select.keys"], P["attn.select.values"]

    def fn(x):
        B, H, W, _ = x.shape
        N = H * W
        qkv = F.linear(x.reshape(B, N, C), P["attn.qkv.weight"], P["attn.qkv.bias"])
        q, k, v = torch.split(qkv, C, dim=-1)
        k = torch.matmul(E, k)                                       # (B, k, C)
        v = torch.matmul(Fm, v)
        q = q.view(B, N, G, d).transpose(1, 2)
        k = k.view(B, -1, G, d).transpose(1, 2)
        v = v.view(B, -1, G, d).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, scale=s).transpose(1, 2).reshape(B, H, W, C)
        return F.linear(y, P["attn.proj.weight"], P["attn.proj.bias"])
    return fn
