"""CaiT's talking-heads self-attention (Touvron et al., "Going deeper with Image
Transformers", ICCV 2021, arXiv:2103.17239; Talking-Heads Attention, Shazeer et al., 2020,
arXiv:2003.02436) -- an independent float64 reference in timm's TalkingHeadAttn layout.

Math (x: (B, N, C) tokens, h heads, d = C/h, s = d^-1/2; w_qkv (3C, C) rows [q; k; v],
each head-major; proj_l, proj_w: Linear(h, h) with bias, acting on the head axis):

    logits[g, i, j] = s * q_{g,i} . k_{g,j}
    L[h] = sum_g Pl[h, g] logits[g] + bl[h]             (mix before the softmax)
    A[h] = softmax_j(L[h])
    W[h] = sum_g Pw[h, g] A[g] + bw[h]                  (mix after it: rows need not sum to 1)
    y_i = concat_h (sum_j W[h, i, j] v_{h,j}) w_proj^T + b_proj

Written with explicit loops over the heads for the two mixes (no permute-then-Linear, which
is how timm writes it), so an index slip in either form shows.
State dict (timm): qkv.weight (3C, C), qkv.bias, proj_l.weight (h, h), proj_l.bias,
proj_w.weight (h, h), proj_w.bias, proj.weight (C, C), proj.bias.
"""
import torch
import torch.nn as nn

from . import on_map

__all__ = ["TalkingHeadAttention", "TalkingHeadAttentionOnMap"]


class TalkingHeadAttention(nn.Module):
    def __init__(self, dim: int, heads: int, dtype=torch.float64):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} not divisible by heads {heads}")
        self.heads, self.d = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim, dtype=dtype)
        self.proj_l = nn.Linear(heads, heads, dtype=dtype)
        self.proj_w = nn.Linear(heads, heads, dtype=dtype)
        self.proj = nn.Linear(dim, dim, dtype=dtype)

    @staticmethod
    def _mix(linear: nn.Linear, t: torch.Tensor) -> torch.Tensor:
        """t (B, h, N, M) → out[:, a] = sum_g W[a, g] t[:, g] + b[a], head by head."""
        out = [sum(linear.weight[a, g] * t[:, g] for g in range(t.shape[1])) + linear.bias[a]
               for a in range(linear.weight.shape[0])]
        return torch.stack(out, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=-1)
        q, k, v = (t.reshape(B, N, self.heads, self.d).transpose(1, 2) for t in (q, k, v))
        logits = (q @ k.transpose(-1, -2)) * self.d ** -0.5
        weights = self._mix(self.proj_w, torch.softmax(self._mix(self.proj_l, logits), -1))
        y = (weights @ v).transpose(1, 2).reshape(B, N, C)
        return self.proj(y)


TalkingHeadAttentionOnMap = on_map(TalkingHeadAttention)
