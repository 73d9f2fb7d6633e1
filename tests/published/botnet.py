"""BoTNet's global multi-head self-attention with 2-D relative position logits (Srinivas
et al., "Bottleneck Transformers for Visual Recognition", CVPR 2021, arXiv:2101.11605;
the relative logits of Bello et al., "Attention Augmented Convolutional Networks",
arXiv:1904.09925) -- an independent float64 reference in timm's BottleneckAttn layout
(stride 1, dim_out = dim, qk_ratio 1).

Math. x: (B, H, W, C), h heads, d = C / h, s = d^-1/2, tokens i = (y_i, x_i) row-major:

    [q; k; v] = x W_qkv^T          (qkv: 1x1 Conv2d(C, 3C), no bias; rows [q; k; v], each
                                    head-major)
    logit[g, i, j] = s * q_{g,i} . k_{g,j}
                   + q_{g,i} . height_rel[y_j - y_i + H - 1] + q_{g,i} . width_rel[x_j - x_i + W - 1]
    (the relative logits use the unscaled q: timm's scale_pos_embed=False; the tables
    (2H-1, d) and (2W-1, d) are shared by the heads)
    y_i = concat_g softmax_j(logit[g, i]) v_{g,j}       (no output projection: the
                                                        bottleneck's 1x1 conv follows)

timm writes the relative logits with the "skew" pad/reshape trick; this module indexes the
offsets directly, one query at a time.
State dict (timm): qkv.weight (3C, C, 1, 1), pos_embed.height_rel (2H-1, d),
pos_embed.width_rel (2W-1, d).
"""
import torch
import torch.nn as nn

__all__ = ["BottleneckAttention"]


class BottleneckAttention(nn.Module):
    def __init__(self, dim: int, heads: int, grid, dtype=torch.float64):
        super().__init__()
        self.heads, self.d, (self.H, self.W) = heads, dim // heads, grid
        self.qkv = nn.Conv2d(dim, 3 * dim, 1, bias=False, dtype=dtype)
        self.pos_embed = nn.Module()
        self.pos_embed.height_rel = nn.Parameter(torch.zeros(2 * self.H - 1, self.d, dtype=dtype))
        self.pos_embed.width_rel = nn.Parameter(torch.zeros(2 * self.W - 1, self.d, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        w = self.qkv.weight.reshape(3 * C, C)
        q, k, v = (x.reshape(B, H * W, C) @ w.T).split(C, dim=-1)
        q, k, v = (t.reshape(B, H * W, self.heads, self.d).transpose(1, 2) for t in (q, k, v))
        ys = torch.arange(H).repeat_interleave(W)
        xs = torch.arange(W).repeat(H)
        out = torch.empty_like(v)
        for i in range(H * W):
            rows_h = self.pos_embed.height_rel[ys - ys[i] + H - 1]      # (HW, d): key j's row
            rows_w = self.pos_embed.width_rel[xs - xs[i] + W - 1]
            qi = q[:, :, i]                                             # (B, h, d)
            logits = (qi[:, :, None] * k).sum(-1) * self.d ** -0.5 \
                + qi @ rows_h.T + qi @ rows_w.T                         # (B, h, HW)
            out[:, :, i] = torch.einsum("bhj,bhjd->bhd", logits.softmax(-1), v)
        return out.transpose(1, 2).reshape(B, H, W, C)
