"""ConViT's gated positional self-attention (d'Ascoli et al., "ConViT: Improving Vision
Transformers with Soft Convolutional Inductive Biases", ICML 2021, arXiv:2103.10697) -- an
independent float64 reference in timm's GPSA layout.

Math. x: (B, H, W, C) tokens row-major, h heads, d = C / h:

    [q; k] = x W_qk^T (+ b),  v = x W_v^T (+ b)          (qk rows [q; k], each head-major)
    content[g, i, j]    = softmax_j(q_{g,i}·k_{g,j} / sqrt(d))
    r_ij = (x_j − x_i, y_j − y_i, (x_j − x_i)² + (y_j − y_i)²)
    positional[g, i, j] = softmax_j(w_g · r_ij + b_g)      (pos_proj: Linear(3, h))
    A[g] = (1 − σ(λ_g))·content[g] + σ(λ_g)·positional[g],  then A[g, i] /= Σ_j A[g, i, j]
    y = concat_g(A[g] v_g) W_proj^T + b_proj

Written token pair by token pair for the positional features (no meshgrid arithmetic).
State dict (timm): qk.weight (2C, C), v.weight (C, C) (biases with qkv_bias), proj.weight,
proj.bias, pos_proj.weight (h, 3), pos_proj.bias (h,), gating_param (h,).
"""
import torch
import torch.nn as nn

__all__ = ["GatedPositionalSelfAttention"]


class GatedPositionalSelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, qkv_bias: bool = False, dtype=torch.float64):
        super().__init__()
        self.heads, self.d = heads, dim // heads
        self.qk = nn.Linear(dim, 2 * dim, bias=qkv_bias, dtype=dtype)
        self.v = nn.Linear(dim, dim, bias=qkv_bias, dtype=dtype)
        self.proj = nn.Linear(dim, dim, dtype=dtype)
        self.pos_proj = nn.Linear(3, heads, dtype=dtype)
        self.gating_param = nn.Parameter(torch.ones(heads, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        t = x.reshape(B, H * W, C)
        q, k = self.qk(t).split(C, dim=-1)
        v = self.v(t)
        coords = [(i // W, i % W) for i in range(H * W)]
        r = torch.tensor([[(xj - xi, yj - yi, (xj - xi) ** 2 + (yj - yi) ** 2)
                           for (yj, xj) in coords] for (yi, xi) in coords], dtype=x.dtype)
        positional = self.pos_proj(r)                               # (N, N, h)
        outs = []
        for g in range(self.heads):
            part = slice(g * self.d, (g + 1) * self.d)
            content = torch.softmax(q[..., part] @ k[..., part].transpose(-1, -2)
                                    / self.d ** 0.5, dim=-1)
            pos = torch.softmax(positional[..., g], dim=-1)
            gate = torch.sigmoid(self.gating_param[g])
            a = (1 - gate) * content + gate * pos
            a = a / a.sum(-1, keepdim=True)
            outs.append(a @ v[..., part])
        return self.proj(torch.cat(outs, dim=-1)).reshape(B, H, W, C)
