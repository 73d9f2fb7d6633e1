"""depthwise conv: the paper-style reference and the hand-picked baselines.
"""
from __future__ import annotations

import torch.nn.functional as F

from .base import Ctx, Fn


# ---------------------------------------------------------------- depthwise conv
def dwconv_reference(c: Ctx) -> Fn:
    """nn.Conv2d(C, C, K, padding=K//2, groups=C) as the papers use it: NCHW in, NCHW out
    (explicit .contiguous() copies at the channels-last boundary)."""
    C, K = c.C, c.b.window
    w = c.p("attn.rel_pos.bias").reshape(C, 1, K, K)
    bias = c.p("attn.out_bias")

    def fn(x):
        y = F.conv2d(x.permute(0, 3, 1, 2).contiguous(), w, bias, padding=K // 2, groups=C)
        return y.permute(0, 2, 3, 1).contiguous()
    return fn


def dwconv_channels_last(c: Ctx) -> Fn:
    """F.conv2d on the channels-last view (no copies: the permuted input is channels-last
    in memory, the output is returned as a view)."""
    C, K = c.C, c.b.window
    w = c.p("attn.rel_pos.bias").reshape(C, 1, K, K)
    bias = c.p("attn.out_bias")

    def fn(x):
        return F.conv2d(x.permute(0, 3, 1, 2), w, bias, padding=K // 2, groups=C).permute(0, 2, 3, 1)
    return fn
