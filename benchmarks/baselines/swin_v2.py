"""Swin-V2: the paper-style reference and the hand-picked baselines.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .base import (Ctx, Fn, Skip, swin_relative_position_index, swin_shift_mask, window_partition,
                   window_reverse)
from .partitions import partition_sdpa


# ---------------------------------------------------------------- Swin-V2
def _swin_v2_parts(c: Ctx):
    b = c.b
    par = b.spec.parameterization
    cpb = par.term("cpb")
    return b.window, b.shift[0], cpb, math.log(par.similarity.max_scale)


def swin_v2_coords_table(ws, pretrained):
    """timm WindowAttention (V2)'s relative_coords_table: (1, 2ws−1, 2ws−1, 2)."""
    h = torch.arange(-(ws - 1), ws, dtype=torch.float32)
    t = torch.stack(torch.meshgrid(h, h, indexing="ij")).permute(1, 2, 0).contiguous().unsqueeze(0)
    t = t / ((pretrained if pretrained > 0 else ws) - 1)
    t = t * 8
    return torch.sign(t) * torch.log2(torch.abs(t) + 1.0) / math.log2(8)


def _swin_v2_bias(c: Ctx):
    """16·sigmoid(cpb_mlp(coords))[relative_position_index]: (G, n, n)."""
    ws, _, cpb, _ = _swin_v2_parts(c)
    P = c.P
    coords = swin_v2_coords_table(ws, cpb.pretrained_window).to(P["attn.cpb_mlp.0.weight"])
    t = F.linear(torch.relu(F.linear(coords, P["attn.cpb_mlp.0.weight"], P["attn.cpb_mlp.0.bias"])),
                 P["attn.cpb_mlp.2.weight"]).view(-1, c.G)
    n = ws * ws
    rpb = t[swin_relative_position_index(ws).view(-1)].view(n, n, -1).permute(2, 0, 1)
    return cpb.scale * torch.sigmoid(rpb)


def swin_v2_reference(c: Ctx) -> Fn:
    """timm SwinTransformerV2Block's attention path: roll, window partition, V2
    WindowAttention (qkv with bias cat(q_bias, 0, v_bias), cosine of the l2-normalized q and
    k × exp(clamp(logit_scale, max=log 100)), + 16·sigmoid(cpb_mlp(relative_coords_table))
    [relative_position_index] computed per call, + the −100 shift mask, softmax, @ v, proj),
    window reverse, roll back."""
    ws, shift, cpb, max_log = _swin_v2_parts(c)
    if c.H % ws or c.W % ws:
        raise Skip(f"{c.H}x{c.W} is not a multiple of the window {ws}")
    G, n = c.G, ws * ws
    P = c.P
    Wqkv, qb, vb = P["attn.qkv.weight"], P["attn.q_bias"], P["attn.v_bias"]
    Wp_, bp_, ls = P["attn.proj.weight"], P["attn.proj.bias"], P["attn.logit_scale"]
    coords = swin_v2_coords_table(ws, cpb.pretrained_window).to(Wqkv)
    rel_index = swin_relative_position_index(ws).to(Wqkv.device)
    mask = swin_shift_mask(c.H, c.W, ws, shift).to(Wqkv) if shift else None

    def fn(x):
        B, H, W, C = x.shape
        if shift:
            x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
        xw = window_partition(x, ws).view(-1, n, C)
        B_ = xw.shape[0]
        qkv_bias = torch.cat((qb, torch.zeros_like(vb), vb))
        qkv = F.linear(xw, Wqkv, qkv_bias).reshape(B_, n, 3, G, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
        attn = attn * torch.clamp(ls, max=max_log).exp()
        table = F.linear(torch.relu(F.linear(coords, P["attn.cpb_mlp.0.weight"],
                                             P["attn.cpb_mlp.0.bias"])),
                         P["attn.cpb_mlp.2.weight"]).view(-1, G)
        rpb = table[rel_index.view(-1)].view(n, n, -1).permute(2, 0, 1).contiguous()
        attn = attn + cpb.scale * torch.sigmoid(rpb).unsqueeze(0)
        if mask is not None:
            nW = mask.shape[0]
            attn = attn.view(-1, nW, G, n, n) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, G, n, n)
        attn = attn.softmax(dim=-1)
        y = F.linear((attn @ v).transpose(1, 2).reshape(B_, n, C), Wp_, bp_)
        y = window_reverse(y.view(-1, ws, ws, C), ws, H, W)
        if shift:
            y = torch.roll(y, shifts=(shift, shift), dims=(1, 2))
        return y
    return fn


def swin_v2_sdpa(c: Ctx) -> Fn:
    """SDPA on the window partition: q and k l2-normalized, q times the per-head
    exp(clamp(logit_scale)), scale 1, the 16·sigmoid(CPB) bias (+ shift mask) gathered once
    as a static additive mask."""
    ws, shift, _, max_log = _swin_v2_parts(c)
    if c.H % ws or c.W % ws:
        raise Skip(f"{c.H}x{c.W} is not a multiple of the window {ws}")
    P = c.P
    qkv_bias = torch.cat((P["attn.q_bias"], torch.zeros_like(P["attn.v_bias"]), P["attn.v_bias"]))
    scale = torch.clamp(P["attn.logit_scale"], max=max_log).exp().reshape(-1)
    return partition_sdpa(c, "block", ws, _swin_v2_bias(c), qkv_bias=qkv_bias, shift=shift,
                          cosine_scale=scale)
