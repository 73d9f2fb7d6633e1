"""HaloNet blocked local self-attention with haloing, Vaswani et al., "Scaling Local
Self-Attention for Parameter Efficient Visual Backbones", CVPR 2021 -- an independent
float64 reference.

Mirrors the parameter layout and semantics of timm ``timm/layers/halo_attn.py``, class
``HaloAttn`` with stride=1, qkv_bias=False, scale_pos_embed=False (its defaults, used by
the ``halonet*`` / ``*_halonext*`` configs of ``timm/models/byoanet.py``), and its
``PosEmbedRel``.  There is no official reference implementation (timm says so); timm's
module has NO output projection -- the surrounding bottleneck block's 1x1 conv plays that
role -- and neither does this one.  A timm state dict for ``...self_attn.`` loads here
unchanged (prefix stripped).

Math.  x: (B, H, W, C) (C = dim = dim_out), h heads, block b, halo a, win = b + 2a,
dk = dim_head (default make_divisible(C, 8) // h, timm's qk_ratio=1), dv = C / h,
scale = dk^-1/2.

    q   = x Wq^T                       (q: 1x1 Conv2d(C, h*dk, bias=False); head g owns
                                        channels [g*dk, (g+1)*dk))
    kv  = x Wkv^T                      (kv: 1x1 Conv2d(C, h*(dk+dv), bias=False); the
                                        channels are HEAD-INTERLEAVED: head g owns
                                        [g*(dk+dv), (g+1)*(dk+dv)) split as [k_g (dk) | v_g (dv)]
                                        -- NOT [all k | all v])
    kv is zero-padded by a on every side (AFTER the conv, so padded keys and values are
    exact zero vectors).  Query block (I, J) holds pixels (I*b + i, J*b + j), i, j in [0, b),
    n = i*b + j; its keys are the win x win window of the padded map starting at padded
    (I*b, J*b), i.e. pixels (I*b - a + u, J*b - a + t), u, t in [0, win), m = u*win + t.

    logit[g, n, m] = scale * (q_{g,n} . k_{g,m})
                   + q_{g,n} . height_rel[u - i + win - 1] + q_{g,n} . width_rel[t - j + win - 1]
    o_g = softmax_m(logit[g]) v_g ;  y = concat_g(o_g)   (channels-last, C = h*dv)

Details that are easy to get wrong (all from timm):
  * the scale multiplies q.k only; the relative logits use the UNSCALED q;
  * the table row is (key window coordinate) - (query block coordinate) + win - 1, i.e.
    spatial offset (key - query) + a + win - 1; rows 0 .. 2a-1 are never used;
  * padded keys are NOT masked: they enter the softmax with logit equal to the relative
    logits alone (q.k = 0) and contribute zero values, so they dilute the attention of
    border blocks;
  * timm implements the relative logits with the Music-Transformer pad/reshape "skew";
    this module indexes the offsets directly.
H and W must be multiples of b (raises otherwise, as timm asserts).

Stride s (timm's HaloAttn(stride=2) without use_avg_pool: block_stride = s): q is a
stride-s 1x1 conv, so the queries are the pixels (s*y, s*x) only; a block holds
bs = b/s of them per side, (I*b + s*i, J*b + s*j), i, j in [0, bs); keys and values as
above; the table row uses the query's index i in the strided block (PosEmbedRel is built
for block_size_ds = b/s): u - i + win - 1. The output is (B, H/s, W/s, C).

State dict: q.weight (h*dk, C, 1, 1), kv.weight (h*(dk+dv), C, 1, 1),
pos_embed.height_rel (2*win-1, dk), pos_embed.width_rel (2*win-1, dk).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["HaloAttention", "PosEmbedRel", "make_divisible", "rel_rows"]


def make_divisible(v, divisor=8, min_value=None, round_limit=0.9):
    """timm's channel rounding (nearest multiple, never more than 10% below v)."""
    min_value = min_value or divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    if new_v < round_limit * v:
        new_v += divisor
    return new_v


def rel_rows(block: int, win: int) -> torch.Tensor:
    """(block, win) long: table row for query coordinate i and key window coordinate u."""
    return torch.arange(win)[None, :] - torch.arange(block)[:, None] + win - 1


def randomize_(module: nn.Module, seed: int) -> nn.Module:
    """Seeded fill: conv weights std fan_in^-1/2; the relative tables std 0.5 (like biases:
    they are looked-up tables, and far from zero so a wrong row is visible)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            z = torch.randn(p.shape, generator=g, dtype=torch.float64)
            if name.startswith("pos_embed.") or p.dim() < 2:
                v = 0.5 * z
            else:
                v = z * (p[0].numel() ** -0.5)
            p.copy_(v.to(p.dtype))
    return module


class PosEmbedRel(nn.Module):
    def __init__(self, win: int, dim_head: int, dtype=torch.float64):
        super().__init__()
        self.height_rel = nn.Parameter(torch.empty(2 * win - 1, dim_head, dtype=dtype))
        self.width_rel = nn.Parameter(torch.empty(2 * win - 1, dim_head, dtype=dtype))


class HaloAttention(nn.Module):
    def __init__(self, dim, heads, block, halo, dim_head=None, seed=0, dtype=torch.float64,
                 stride=1):
        super().__init__()
        if block % stride:
            raise ValueError(f"block {block} is not a multiple of the stride {stride}")
        self.stride = stride
        if dim % heads:
            raise ValueError(f"dim {dim} not divisible by heads {heads}")
        self.dim, self.heads, self.block, self.halo = dim, heads, block, halo
        self.win = block + 2 * halo
        self.dim_head_qk = dim_head or make_divisible(dim, divisor=8) // heads
        self.dim_head_v = dim // heads
        self.scale = self.dim_head_qk ** -0.5
        dqk, dv = self.dim_head_qk, self.dim_head_v
        self.q = nn.Conv2d(dim, heads * dqk, 1, bias=False, dtype=dtype)
        self.kv = nn.Conv2d(dim, heads * (dqk + dv), 1, bias=False, dtype=dtype)
        self.pos_embed = PosEmbedRel(self.win, dqk, dtype)
        self.register_buffer("rows", rel_rows(block // stride, self.win), persistent=False)
        randomize_(self, seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        b, a, win, h = self.block, self.halo, self.win, self.heads
        dqk, dv = self.dim_head_qk, self.dim_head_v
        if H % b or W % b:
            raise ValueError(f"map {H}x{W} is not a multiple of the block {b}")
        s = self.stride
        bs = b // s                                               # queries per block side
        q = F.linear(x[:, ::s, ::s], self.q.weight.flatten(1))   # the stride-s 1x1 conv
        q = q.reshape(B, H // s, W // s, h, dqk)
        kv = F.linear(x, self.kv.weight.flatten(1)).reshape(B, H, W, h, dqk + dv)
        kv = F.pad(kv, (0, 0, 0, 0, a, a, a, a))                 # zero halo around the map
        rh = self.pos_embed.height_rel[self.rows]                 # (bs, win, dqk): [i, u]
        rw = self.pos_embed.width_rel[self.rows]                  # (bs, win, dqk): [j, t]

        y = x.new_empty(B, H // s, W // s, h, dv)
        for I in range(H // b):
            for J in range(W // b):
                qb = q[:, I * bs:(I + 1) * bs, J * bs:(J + 1) * bs]          # (B, bs, bs, h, dqk)
                kvw = kv[:, I * b:I * b + win, J * b:J * b + win]            # (B, win, win, h, .)
                kw, vw = kvw[..., :dqk], kvw[..., dqk:]
                content = torch.einsum("bijgd,butgd->bgijut", qb, kw) * self.scale
                lh = torch.einsum("bijgd,iud->bgiju", qb, rh)
                lw = torch.einsum("bijgd,jtd->bgijt", qb, rw)
                logits = content + lh[..., :, None] + lw[..., None, :]
                p = torch.softmax(logits.reshape(B, h, bs, bs, win * win), dim=-1)
                o = torch.einsum("bgijm,bmgd->bijgd", p, vw.reshape(B, win * win, h, dv))
                y[:, I * bs:(I + 1) * bs, J * bs:(J + 1) * bs] = o
        return y.reshape(B, H // s, W // s, h * dv)
