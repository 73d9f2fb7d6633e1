"""Swin window attention: the paper-style reference and the hand-picked baselines.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import (Ctx, Fn, Skip, swin_relative_position_index, swin_shift_mask, window_partition,
                   window_reverse, _pad_br)


# ---------------------------------------------------------------- Swin window attention
def _window_geometry(c: Ctx):
    b = c.b
    ws, shift = b.window, b.shift[0]     # the zoo's windows are square
    Hp = -(-c.H // ws) * ws
    Wp = -(-c.W // ws) * ws
    return ws, shift, Hp, Wp


def swin_reference(c: Ctx, norm: str = "softmax", bias: bool = True) -> Fn:
    """timm SwinTransformerBlock's attention path: roll, pad (roll_then_pad), window
    partition, WindowAttention (qkv, q·scale @ kᵀ, + table[relative_position_index], + the
    −100 shift mask, softmax, @ v, proj), window reverse, crop, roll back.
    norm='relu_mean': the dynamic-conv paper's ReLU/n instead of softmax.
    bias=False: Twins-style window attention without a table."""
    ws, shift, Hp, Wp = _window_geometry(c)
    G, d, s, n = c.G, c.d, c.scale, ws * ws
    Wqkv, bqkv, Wp_, bp_ = c.p("attn.qkv.weight"), c.p("attn.qkv.bias"), \
        c.p("attn.proj.weight"), c.p("attn.proj.bias")
    table = c.p("attn.rel_pos.bias").t() if bias else None      # Swin's ((2ws−1)², G)
    rel_index = swin_relative_position_index(ws).to(Wqkv.device)
    mask = swin_shift_mask(Hp, Wp, ws, shift).to(Wqkv) if shift else None

    def fn(x):
        B, H, W, C = x.shape
        if shift:
            x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
        x = _pad_br(x, ws)
        xw = window_partition(x, ws).view(-1, n, C)
        B_ = xw.shape[0]
        qkv = F.linear(xw, Wqkv, bqkv).reshape(B_, n, 3, G, d).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        q = q * s
        attn = q @ k.transpose(-2, -1)
        if table is not None:
            rpb = table[rel_index.view(-1)].view(n, n, -1).permute(2, 0, 1).contiguous()
            attn = attn + rpb.unsqueeze(0)
        if mask is not None:
            nW = mask.shape[0]
            attn = attn.view(B_ // nW, nW, G, n, n) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, G, n, n)
        if norm == "softmax":
            attn = attn.softmax(dim=-1)
        else:
            attn = torch.relu(attn) / n
        y = (attn @ v).transpose(1, 2).reshape(B_, n, C)
        y = F.linear(y, Wp_, bp_)
        y = window_reverse(y.view(-1, ws, ws, C), ws, Hp, Wp)[:, :H, :W]
        if shift:
            y = torch.roll(y, shifts=(shift, shift), dims=(1, 2))
        return y.contiguous()
    return fn


def _window_mask(c: Ctx, bias: bool, dtype):
    """Static additive mask (1, nW·G, n, n): rel-pos bias (+ shift mask), built once."""
    ws, shift, Hp, Wp = _window_geometry(c)
    n, G = ws * ws, c.G
    nW = (Hp // ws) * (Wp // ws)
    m = torch.zeros(nW, G, n, n, dtype=dtype, device=c.p("attn.qkv.weight").device)
    if bias:
        idx = swin_relative_position_index(ws)
        m = m + c.p("attn.rel_pos.bias")[:, idx].to(dtype)[None]
    if shift:
        m = m + swin_shift_mask(Hp, Wp, ws, shift).to(m)[:, None]
    return m.reshape(1, nW * G, n, n).contiguous()


def window_sdpa(c: Ctx, bias: bool = True) -> Fn:
    """One qkv GEMM on the (padded, rolled) map, window partition of q/k/v into
    (B, nW·G, n, d), F.scaled_dot_product_attention with the rel-pos bias (+ shift mask)
    as a static additive float mask, reverse, proj."""
    ws, shift, Hp, Wp = _window_geometry(c)
    G, d, s, n = c.G, c.d, c.scale, ws * ws
    Wqkv, bqkv, Wp_, bp_ = c.p("attn.qkv.weight"), c.p("attn.qkv.bias"), \
        c.p("attn.proj.weight"), c.p("attn.proj.bias")
    mask = _window_mask(c, bias, Wqkv.dtype) if (bias or shift) else None
    nh, nw = Hp // ws, Wp // ws

    def fn(x):
        B, H, W, C = x.shape
        if shift:
            x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
        x = _pad_br(x, ws)
        qkv = F.linear(x, Wqkv, bqkv).view(B, nh, ws, nw, ws, 3, G, d)
        qkv = qkv.permute(5, 0, 1, 3, 6, 2, 4, 7).reshape(3, B, nh * nw * G, n, d)
        y = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=mask, scale=s)
        y = y.view(B, nh, nw, G, ws, ws, d).permute(0, 1, 4, 2, 5, 3, 6).reshape(B, Hp, Wp, C)
        y = y[:, :H, :W]
        if shift:
            y = torch.roll(y, shifts=(shift, shift), dims=(1, 2))
        return F.linear(y, Wp_, bp_)
    return fn


def window_relu_bmm(c: Ctx) -> Fn:
    """ReLU/n window attention (no SDPA for non-softmax): windows as (B·nW·G, n, d),
    one baddbmm with the static rel-pos bias gathered once, relu, /n, bmm."""
    ws, shift, Hp, Wp = _window_geometry(c)
    G, d, s, n = c.G, c.d, c.scale, ws * ws
    Wqkv, bqkv, Wp_, bp_ = c.p("attn.qkv.weight"), c.p("attn.qkv.bias"), \
        c.p("attn.proj.weight"), c.p("attn.proj.bias")
    mask = _window_mask(c, True, Wqkv.dtype)               # (1, nW·G, n, n)
    nh, nw = Hp // ws, Wp // ws

    def fn(x):
        B, H, W, C = x.shape
        x = _pad_br(x, ws)
        qkv = F.linear(x, Wqkv, bqkv).view(B, nh, ws, nw, ws, 3, G, d)
        qkv = qkv.permute(5, 0, 1, 3, 6, 2, 4, 7).reshape(3, B, nh * nw * G, n, d)
        q, k, v = qkv[0], qkv[1], qkv[2]
        a = torch.baddbmm(mask.expand(B, -1, -1, -1).reshape(-1, n, n),
                          q.reshape(-1, n, d), k.reshape(-1, n, d).transpose(1, 2), alpha=s)
        a = torch.relu(a).mul_(1.0 / n)
        y = torch.bmm(a, v.reshape(-1, n, d)).view(B, nh, nw, G, ws, ws, d)
        y = y.permute(0, 1, 4, 2, 5, 3, 6).reshape(B, Hp, Wp, C)[:, :H, :W]
        return F.linear(y, Wp_, bp_)
    return fn


def _flex():
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    except Exception as exc:   # pragma: no cover - depends on the torch build
        raise Skip(f"FlexAttention not importable: {type(exc).__name__}: {exc}")
    return flex_attention, create_block_mask


def window_flex(c: Ctx, bias: bool = True) -> Fn:
    """Compiled FlexAttention on the window-major token order: block mask = same window,
    score_mod adds the rel-pos bias (and the −100 shift mask)."""
    flex_attention, create_block_mask = _flex()
    ws, shift, Hp, Wp = _window_geometry(c)
    G, d, s, n = c.G, c.d, c.scale, ws * ws
    Wqkv, bqkv, Wp_, bp_ = c.p("attn.qkv.weight"), c.p("attn.qkv.bias"), \
        c.p("attn.proj.weight"), c.p("attn.proj.bias")
    nh, nw = Hp // ws, Wp // ws
    N = Hp * Wp
    nW = nh * nw
    tab = (c.p("attn.rel_pos.bias")[:, swin_relative_position_index(ws)].contiguous()
           if bias else None)                                  # (G, n, n)
    smask = swin_shift_mask(Hp, Wp, ws, shift).to(Wqkv) if shift else None

    def mask_mod(b, h, q_idx, kv_idx):
        return (q_idx // n) == (kv_idx // n)

    def score_mod(score, b, h, q_idx, kv_idx):
        if tab is not None:
            score = score + tab[h, q_idx % n, kv_idx % n]
        if smask is not None:
            score = score + smask[(q_idx // n) % nW, q_idx % n, kv_idx % n]
        return score

    block_mask = create_block_mask(mask_mod, B=None, H=None, Q_LEN=N, KV_LEN=N,
                                   device=Wqkv.device)
    flex = torch.compile(flex_attention, dynamic=False)

    def fn(x):
        B, H, W, C = x.shape
        if shift:
            x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
        x = _pad_br(x, ws)
        qkv = F.linear(x, Wqkv, bqkv).view(B, nh, ws, nw, ws, 3, G, d)
        qkv = qkv.permute(5, 0, 6, 1, 3, 2, 4, 7).reshape(3, B, G, N, d)
        y = flex(qkv[0], qkv[1], qkv[2], score_mod=score_mod if (tab is not None or shift) else None,
                 block_mask=block_mask, scale=s)
        y = y.view(B, G, nh, nw, ws, ws, d).permute(0, 2, 4, 3, 5, 1, 6).reshape(B, Hp, Wp, C)
        y = y[:, :H, :W]
        if shift:
            y = torch.roll(y, shifts=(shift, shift), dims=(1, 2))
        return F.linear(y, Wp_, bp_)
    return fn
