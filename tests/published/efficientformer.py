"""EfficientFormer's attention (Li et al., "EfficientFormer: Vision Transformers at
MobileNet Speed", NeurIPS 2022, arXiv:2206.01191; timm `efficientformer.py` Attention) --
an independent float64 reference in timm's layout.

Math. x: (B, H, W, C) tokens row-major, h heads, key width kd, value width vd = r·kd per
head (attn_ratio r = 4):

    t = x W_qkv^T + b_qkv              (h·(2kd + vd) channels, grouped PER HEAD:
                                        head g owns [q_g (kd) | k_g (kd) | v_g (vd)])
    logit[g, i, j] = q_{g,i}·k_{g,j} / sqrt(kd) + B[g, |y_i − y_j|·W + |x_i − x_j|]
    y_i = concat_g softmax_j(logit[g, i]) v_{g,j}        (h·vd channels, not C)
    out = y W_proj^T + b_proj                            (back to C)

State dict (timm): qkv.weight (h(2kd+vd), C), qkv.bias, attention_biases (h, H·W),
attention_bias_idxs (H·W, H·W) (a persistent buffer in timm), proj.weight (C, h·vd),
proj.bias.
"""
import torch
import torch.nn as nn

__all__ = ["EfficientFormerAttention"]


class EfficientFormerAttention(nn.Module):
    def __init__(self, dim: int, key_dim: int, heads: int, attn_ratio: int, grid,
                 dtype=torch.float64):
        super().__init__()
        self.heads, self.kd, self.vd = heads, key_dim, attn_ratio * key_dim
        self.H, self.W = grid
        self.qkv = nn.Linear(dim, heads * (2 * self.kd + self.vd), dtype=dtype)
        self.proj = nn.Linear(heads * self.vd, dim, dtype=dtype)
        self.attention_biases = nn.Parameter(torch.zeros(heads, self.H * self.W, dtype=dtype))
        ys = torch.arange(self.H).repeat_interleave(self.W)
        xs = torch.arange(self.W).repeat(self.H)
        idx = (ys[:, None] - ys[None, :]).abs() * self.W + (xs[:, None] - xs[None, :]).abs()
        self.register_buffer("attention_bias_idxs", idx)

    def attend(self, t: torch.Tensor) -> torch.Tensor:
        """The heads' outputs, concatenated, from the projected (B, N, h(2kd + vd)) t."""
        per_head = 2 * self.kd + self.vd
        outs = []
        for g in range(self.heads):
            part = t[..., g * per_head:(g + 1) * per_head]
            q, k, v = part.split([self.kd, self.kd, self.vd], dim=-1)
            logits = q @ k.transpose(-1, -2) / self.kd ** 0.5 \
                + self.attention_biases[g][self.attention_bias_idxs]
            outs.append(logits.softmax(-1) @ v)
        return torch.cat(outs, dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        y = self.attend(self.qkv(x.reshape(B, H * W, C)))
        return self.proj(y).reshape(B, H, W, C)
