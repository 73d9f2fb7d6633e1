"""Shunted self-attention (SSA), Ren et al., "Shunted Self-Attention via Multi-Scale
Token Aggregation", CVPR 2022 -- an independent float64 reference.

Mirrors the parameter layout of ``OliverRensu/Shunted-Transformer``, file ``SSA.py``,
class ``Attention`` (the token mixer of ``Block``), so an official state dict loads
with ``load_state_dict`` unchanged (prefix ``blockK.J.attn.`` stripped).

Math (x: (B, H, W, C) channels-last, tokens n = h*W + w, h heads, d = C/h,
scale s = d^-1/2, q = x Wq^T + bq split head-major: head g owns channels [g*d, (g+1)*d)):

sr_ratio r > 1, two key/value paths with rates (r1, r2) = (8, 4), (4, 2), (2, 1)
for r = 8, 4, 2:

    x_p  = GELU(LayerNorm_p(Conv_{r_p x r_p, stride r_p}(x)))       p = 1, 2
           (grid floor(H/r_p) x floor(W/r_p), N_p tokens, LayerNorm eps 1e-5)
    [k_p | v_p] = x_p Wkv_p^T + bkv_p      -- first C/2 output channels are k, last C/2 v,
                                               each head-major over h/2 heads of width d
    v_p' = v_p + DWConv3x3_p(v_p as a (C/2, grid_p) map)   -- local-conv channel c = g*d + j
    head g <  h/2:  o_g = softmax(s q_g k_{1,g}^T) v_{1,g}'
    head g >= h/2:  o_g = softmax(s q_g k_{2,g-h/2}^T) v_{2,g-h/2}'
    y = concat_g(o_g) Wproj^T + bproj        (path-1 heads fill channels [0, C/2))

sr_ratio 1 (last stage), one full-resolution path, local conv added AFTER attention:

    [k | v] = x Wkv^T + bkv                  -- kv: Linear(C, 2C), first C channels k
    o = concat_g softmax(s q_g k_g^T) v_g + DWConv3x3(v as a (C, H, W) map)
    y = o Wproj^T + bproj

(Because softmax rows sum to one, adding the local conv to v before attn.v or to the
output after it is the same thing; the official code does the former for r > 1 and the
latter for r = 1.)

State dict (r > 1): q.weight (C,C) q.bias (C,) | sr1.weight (C,C,r1,r1) sr1.bias (C,) |
norm1.weight/bias (C,) | sr2.weight (C,C,r2,r2) sr2.bias (C,) | norm2.weight/bias (C,) |
kv1.weight (C,C) kv1.bias (C,) | kv2.weight (C,C) kv2.bias (C,) |
local_conv1.weight (C/2,1,3,3) local_conv1.bias (C/2,) | local_conv2.* same |
proj.weight (C,C) proj.bias (C,).
State dict (r = 1): q.*, kv.weight (2C,C) kv.bias (2C,), local_conv.weight (C,1,3,3)
local_conv.bias (C,), proj.*.
q/kv biases exist when qkv_bias=True (the released shunted_t/s/b use qkv_bias=True).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["ShuntedAttention", "PATH_RATES", "randomize_"]

# rates of the two key/value paths per sr_ratio, as hard-coded in the official class
PATH_RATES = {8: (8, 4), 4: (4, 2), 2: (2, 1)}


def randomize_(module: nn.Module, seed: int) -> nn.Module:
    """Fill every parameter with values of a realistic scale from a seeded generator.

    Weights (>= 2 dims) get std fan_in^-1/2 so activations keep unit scale; 1-dim
    parameters (biases, norm affines) get std 0.5 so a wrong bias path is visible.
    Values are drawn in float64 and cast, so every dtype sees the same numbers.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in module.named_parameters():
            std = p[0].numel() ** -0.5 if p.dim() >= 2 else 0.5
            p.copy_((torch.randn(p.shape, generator=g, dtype=torch.float64) * std).to(p.dtype))
    return module


class ShuntedAttention(nn.Module):
    """SSA token mixer in the official ``Attention`` layout; forward takes (B, H, W, C)."""

    def __init__(self, dim, heads, sr_ratio, qkv_bias=True, seed=0, dtype=torch.float64):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} not divisible by heads {heads}")
        if sr_ratio != 1 and sr_ratio not in PATH_RATES:
            raise ValueError(f"sr_ratio must be 1, 2, 4 or 8 (official code), got {sr_ratio}")
        if sr_ratio > 1 and heads % 2:
            raise ValueError("sr_ratio > 1 splits the heads in two halves: heads must be even")
        self.dim, self.heads, self.sr_ratio = dim, heads, sr_ratio
        self.head_dim = dim // heads
        self.scale = self.head_dim ** -0.5
        kw = dict(dtype=dtype)
        # registration order follows the official __init__ so state-dict order matches too
        self.q = nn.Linear(dim, dim, bias=qkv_bias, **kw)
        self.proj = nn.Linear(dim, dim, **kw)
        if sr_ratio > 1:
            r1, r2 = PATH_RATES[sr_ratio]
            self.rates = (r1, r2)
            self.sr1 = nn.Conv2d(dim, dim, r1, stride=r1, **kw)
            self.norm1 = nn.LayerNorm(dim, **kw)
            self.sr2 = nn.Conv2d(dim, dim, r2, stride=r2, **kw)
            self.norm2 = nn.LayerNorm(dim, **kw)
            self.kv1 = nn.Linear(dim, dim, bias=qkv_bias, **kw)
            self.kv2 = nn.Linear(dim, dim, bias=qkv_bias, **kw)
            half = dim // 2
            self.local_conv1 = nn.Conv2d(half, half, 3, padding=1, groups=half, **kw)
            self.local_conv2 = nn.Conv2d(half, half, 3, padding=1, groups=half, **kw)
        else:
            self.rates = ()
            self.kv = nn.Linear(dim, 2 * dim, bias=qkv_bias, **kw)
            self.local_conv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim, **kw)
        randomize_(self, seed)
        self.last_attn = None   # per-path attention weights of the latest call, for tests
        self.key_grids = None   # per-path key-grid sizes (Hp, Wp) of the latest call

    def _heads(self, t, n_heads):
        # (B, N, n_heads*d) -> (B, n_heads, N, d), head-major channels
        B, N, _ = t.shape
        return t.reshape(B, N, n_heads, self.head_dim).transpose(1, 2)

    def _path(self, x_map, q, sr, norm, kv, local_conv):
        """One pooled key/value path for half of the heads. x_map (B, C, H, W)."""
        B = x_map.shape[0]
        half_heads = self.heads // 2
        pooled = sr(x_map)                                   # (B, C, Hp, Wp), floor division
        Hp, Wp = pooled.shape[-2:]
        t = F.gelu(norm(pooled.flatten(2).transpose(1, 2)))  # (B, Np, C)
        kvt = kv(t)                                          # (B, Np, C): [k (C/2) | v (C/2)]
        half = self.dim // 2
        k = self._heads(kvt[..., :half], half_heads)
        v = self._heads(kvt[..., half:], half_heads)
        # the local conv sees v as a (C/2, Hp, Wp) map with channel = head*d + j
        v_map = v.transpose(1, 2).reshape(B, Hp * Wp, half).transpose(1, 2).reshape(B, half, Hp, Wp)
        v = v + self._heads(local_conv(v_map).flatten(2).transpose(1, 2), half_heads)
        attn = torch.softmax((q @ k.transpose(-2, -1)) * self.scale, dim=-1)
        return attn @ v, attn, (Hp, Wp)

    def forward(self, x):
        B, H, W, C = x.shape
        N = H * W
        tokens = x.reshape(B, N, C)
        q = self._heads(self.q(tokens), self.heads)
        x_map = x.permute(0, 3, 1, 2)
        if self.sr_ratio > 1:
            hh = self.heads // 2
            o1, a1, g1 = self._path(x_map, q[:, :hh], self.sr1, self.norm1, self.kv1, self.local_conv1)
            o2, a2, g2 = self._path(x_map, q[:, hh:], self.sr2, self.norm2, self.kv2, self.local_conv2)
            self.last_attn = (a1, a2)
            self.key_grids = (g1, g2)
            o = torch.cat([o1, o2], dim=1)                   # path-1 heads first
            o = o.transpose(1, 2).reshape(B, N, C)
        else:
            kvt = self.kv(tokens)                            # [k (C) | v (C)]
            k = self._heads(kvt[..., :C], self.heads)
            v = self._heads(kvt[..., C:], self.heads)
            attn = torch.softmax((q @ k.transpose(-2, -1)) * self.scale, dim=-1)
            self.last_attn = (attn,)
            self.key_grids = ((H, W),)
            v_map = kvt[..., C:].transpose(1, 2).reshape(B, C, H, W)
            local = self.local_conv(v_map).flatten(2).transpose(1, 2)     # (B, N, C)
            o = (attn @ v).transpose(1, 2).reshape(B, N, C) + local
        return self.proj(o).reshape(B, H, W, C)
