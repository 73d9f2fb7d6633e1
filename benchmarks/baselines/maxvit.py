"""MaxViT (block / grid): the paper-style reference and the hand-picked baselines.
"""
from __future__ import annotations

import torch.nn.functional as F

from .base import Ctx, Fn, Skip, swin_relative_position_index, window_partition, window_reverse
from .partitions import partition_sdpa, timm_grid_partition, timm_grid_reverse


# ---------------------------------------------------------------- MaxViT (block / grid)
def _maxvit_size(c: Ctx, mode):
    rows, columns = c.b.geometry.group if mode == "grid" else c.b.geometry.window
    if rows != columns:
        raise Skip(f"the baselines take square partitions, not {rows}×{columns}")
    return rows


def maxvit_reference(c: Ctx, mode: str) -> Fn:
    """timm maxxvit PartitionAttentionCl: window_partition (block) or grid_partition (grid)
    of the channels-last map, AttentionCl (qkv Linear, view (B, N, 3, heads, d) — the
    head_first=False layout — q·scale @ kᵀ, + RelPosBias table[relative_position_index]
    per call, softmax, @ v, proj), window / grid reverse."""
    P = _maxvit_size(c, mode)
    if c.H % P or c.W % P:
        raise Skip(f"{c.H}x{c.W} is not a multiple of {P}")
    G, d, s, n = c.G, c.d, c.scale, P * P
    Wqkv, bqkv, Wp_, bp_ = c.p("attn.qkv.weight"), c.p("attn.qkv.bias"), \
        c.p("attn.proj.weight"), c.p("attn.proj.bias")
    table = c.p("attn.rel_pos.bias").t()                      # ((2P−1)², G), timm's layout
    rel_index = swin_relative_position_index(P).view(-1).to(Wqkv.device)

    def fn(x):
        B, H, W, C = x.shape
        part = window_partition(x, P) if mode == "block" else timm_grid_partition(x, P)
        B_ = part.shape[0]
        t = part.view(B_, n, C)
        q, k, v = F.linear(t, Wqkv, bqkv).view(B_, n, 3, G, d).transpose(1, 3).unbind(2)
        q = q * s
        attn = q @ k.transpose(-2, -1)
        attn = attn + table[rel_index].view(n, n, G).permute(2, 0, 1)
        attn = attn.softmax(dim=-1)
        y = (attn @ v).transpose(1, 2).reshape(B_, P, P, C)
        y = F.linear(y, Wp_, bp_)
        return window_reverse(y, P, H, W) if mode == "block" else timm_grid_reverse(y, P, H, W)
    return fn


def maxvit_sdpa(c: Ctx, mode: str) -> Fn:
    P = _maxvit_size(c, mode)
    if c.H % P or c.W % P:
        raise Skip(f"{c.H}x{c.W} is not a multiple of {P}")
    bias = c.p("attn.rel_pos.bias")[:, swin_relative_position_index(P)]
    return partition_sdpa(c, mode, P, bias)


def maxvit_block_reference(c: Ctx) -> Fn:
    return maxvit_reference(c, "block")


def maxvit_grid_reference(c: Ctx) -> Fn:
    return maxvit_reference(c, "grid")


maxvit_block_reference.__doc__ = maxvit_grid_reference.__doc__ = maxvit_reference.__doc__
