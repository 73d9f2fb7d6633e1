"""CSWin cross-shaped window attention with LePE, Dong et al., "CSWin Transformer: A General
Vision Transformer Backbone with Cross-Shaped Windows", CVPR 2022 -- an independent float64
reference.

Mirrors the attention part of microsoft/CSWin-Transformer ``models/cswin.py``, class
``CSWinBlock`` (its ``qkv``, ``attns`` and ``proj``; norm1 / mlp / residuals are left out)
with its two ``LePEAttention`` branches.  An official state dict for ``stageK.J.`` loads
here after keeping only the ``qkv.*``, ``proj.*`` and ``attns.*`` keys.

Math.  x: (B, R, R, C) with R = resolution, split size S, h heads (h even), d = C/h,
scale = d^-1/2 (the official head_dim**-0.5 of a branch: (C/2)/(h/2) = C/h).

    [q | k | v] = x Wqkv^T + bqkv            -- qkv: Linear(C, 3C), rows [q; k; v]
    branch 0 (official idx=0): channels [0, C/2) of q, k and v, heads 0 .. h/2-1,
        stripes of FULL HEIGHT and width S: H_sp = R, W_sp = S  (vertical stripes)
    branch 1 (official idx=1): channels [C/2, C), heads h/2 .. h-1,
        stripes of FULL WIDTH and height S:  H_sp = S, W_sp = R  (horizontal stripes)
    inside each stripe (tokens n = i*W_sp + j, row-major), per head g of the branch:
        o_g = softmax(scale * q_g k_g^T) v_g + lepe_g
        lepe = DWConv3x3(v) with padding 1 applied to the stripe AS ITS OWN IMAGE: taps that
               fall outside the stripe read zero even when a neighbouring stripe is there
               (official get_lepe reshapes to (B*stripes, C/2, H_sp, W_sp) before get_v);
               the conv has a bias, and lepe is added AFTER attn @ v (not to v).
    y = concat(branch 0, branch 1) Wproj^T + bproj

last_stage (or S == R, which the official block turns into last_stage by itself): a single
branch (official idx=-1) over all C channels and h heads with H_sp = W_sp = R, i.e. global
attention plus a 3x3 depthwise LePE over the whole zero-padded map.

Requires H = W = R and R a multiple of S (raises otherwise); there is no padding and no
masking.  The official scale comment ("scale factor was wrong in my original version") is
about an older qk_scale; the released models use qk_scale=None, i.e. d^-1/2.

State dict, two branches: qkv.weight (3C, C), qkv.bias (3C,), proj.weight (C, C),
proj.bias (C,), attns.0.get_v.weight (C/2, 1, 3, 3), attns.0.get_v.bias (C/2,),
attns.1.get_v.weight (C/2, 1, 3, 3), attns.1.get_v.bias (C/2,).
last_stage: the same but only attns.0.get_v.weight (C, 1, 3, 3), attns.0.get_v.bias (C,).
"""

import torch
import torch.nn as nn

__all__ = ["CSWinAttention", "LePEAttention"]


def randomize_(module: nn.Module, seed: int) -> nn.Module:
    """Seeded fill: weights (>= 2 dims) std fan_in^-1/2, biases std 0.5 (drawn in float64)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in module.named_parameters():
            z = torch.randn(p.shape, generator=g, dtype=torch.float64)
            v = z * (p[0].numel() ** -0.5) if p.dim() >= 2 else 0.5 * z
            p.copy_(v.to(p.dtype))
    return module


def to_stripes(t: torch.Tensor, hs: int, ws: int) -> torch.Tensor:
    """(B, H, W, c) -> (B*stripes, hs*ws, c), stripes ordered row-major, tokens row-major."""
    B, H, W, c = t.shape
    t = t.reshape(B, H // hs, hs, W // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return t.reshape(-1, hs * ws, c)


def from_stripes(t: torch.Tensor, hs: int, ws: int, B: int, H: int, W: int) -> torch.Tensor:
    c = t.shape[-1]
    t = t.reshape(B, H // hs, W // ws, hs, ws, c).permute(0, 1, 3, 2, 4, 5)
    return t.reshape(B, H, W, c)


class LePEAttention(nn.Module):
    """One branch: stripe attention over `dim` channels and `heads` heads, plus LePE."""

    def __init__(self, dim, heads, H_sp, W_sp, dtype=torch.float64):
        super().__init__()
        self.dim, self.heads, self.H_sp, self.W_sp = dim, heads, H_sp, W_sp
        self.scale = (dim // heads) ** -0.5
        self.get_v = nn.Conv2d(dim, dim, 3, padding=1, groups=dim, dtype=dtype)

    def forward(self, q, k, v):
        """q, k, v: (B, H, W, dim) -> (B, H, W, dim)."""
        B, H, W, c = q.shape
        hs, ws, h = self.H_sp, self.W_sp, self.heads
        qs, ks, vs = (to_stripes(t, hs, ws) for t in (q, k, v))      # (S, n, c)
        lepe = self.get_v(vs.transpose(1, 2).reshape(-1, c, hs, ws))  # stripe = own image
        lepe = lepe.reshape(-1, c, hs * ws).transpose(1, 2)

        def heads_(t):
            return t.reshape(t.shape[0], t.shape[1], h, c // h).transpose(1, 2)

        attn = torch.softmax((heads_(qs) * self.scale) @ heads_(ks).transpose(-1, -2), dim=-1)
        o = attn @ heads_(vs) + heads_(lepe)
        o = o.transpose(1, 2).reshape(-1, hs * ws, c)
        return from_stripes(o, hs, ws, B, H, W)


class CSWinAttention(nn.Module):
    def __init__(self, dim, heads, split, resolution, last_stage=False, seed=0,
                 dtype=torch.float64):
        super().__init__()
        if resolution % split:
            raise ValueError(f"resolution {resolution} is not a multiple of split {split}")
        # the official CSWinBlock silently switches to the single global branch here
        last_stage = last_stage or split == resolution
        if dim % heads or (not last_stage and (heads % 2 or dim % 2)):
            raise ValueError(f"dim {dim} / heads {heads} cannot be split into two branches")
        self.dim, self.heads, self.split, self.resolution = dim, heads, split, resolution
        self.last_stage = last_stage
        self.qkv = nn.Linear(dim, 3 * dim, bias=True, dtype=dtype)
        self.proj = nn.Linear(dim, dim, dtype=dtype)
        R, S = resolution, split
        if last_stage:
            self.attns = nn.ModuleList([LePEAttention(dim, heads, R, R, dtype)])
        else:
            self.attns = nn.ModuleList([
                LePEAttention(dim // 2, heads // 2, R, S, dtype),    # idx 0: vertical
                LePEAttention(dim // 2, heads // 2, S, R, dtype),    # idx 1: horizontal
            ])
        randomize_(self, seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        R = self.resolution
        if H != R or W != R:
            raise ValueError(f"map {H}x{W} does not match resolution {R}")
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        if self.last_stage:
            o = self.attns[0](q, k, v)
        else:
            c = C // 2
            o = torch.cat([self.attns[0](q[..., :c], k[..., :c], v[..., :c]),
                           self.attns[1](q[..., c:], k[..., c:], v[..., c:])], dim=-1)
        return self.proj(o)
