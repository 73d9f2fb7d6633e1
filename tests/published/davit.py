"""DaViT's channel group attention (Ding et al., "DaViT: Dual Attention Vision
Transformers", ECCV 2022, arXiv:2204.03645, section 3.2) -- an independent float64
reference in timm's ChannelAttention layout.

Math as timm's module computes it (x: (B, N, C), h heads, d = C/h, s = d^-1/2; w_qkv
(3C, C) rows [q; k; v], each head-major), per head g with Q, K, V the (N, d) token × channel
matrices:

    A = softmax_rows(s * K^T V)          (d, d): row i over the channels j
    Y = (A Q^T)^T = Q A^T                (N, d): token n's channel i = sum_j A[i, j] Q[n, j]
    y = concat_g Y w_proj^T + b_proj

(the paper writes softmax(Q^T K / sqrt(C_g)) V^T with the roles named differently: the
channel-by-channel weights come from two of the three projections and weigh the third.)
Per head, with einsum; no code shared with attndsl.
State dict (timm): qkv.weight (3C, C), qkv.bias, proj.weight, proj.bias.
"""
import torch
import torch.nn as nn

from . import on_map

__all__ = ["ChannelAttention", "ChannelAttentionOnMap"]


class ChannelAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dtype=torch.float64):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} not divisible by heads {heads}")
        self.heads, self.d = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim, dtype=dtype)
        self.proj = nn.Linear(dim, dim, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=-1)
        out = []
        for g in range(self.heads):
            cols = slice(g * self.d, (g + 1) * self.d)
            Q, K, V = q[..., cols], k[..., cols], v[..., cols]            # (B, N, d)
            A = torch.softmax(torch.einsum("bni,bnj->bij", K, V) * self.d ** -0.5, dim=-1)
            out.append(torch.einsum("bij,bnj->bni", A, Q))
        return self.proj(torch.cat(out, dim=-1))


ChannelAttentionOnMap = on_map(ChannelAttention)
