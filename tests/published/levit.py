"""LeViT's attention (Graham et al., "LeViT: a Vision Transformer in ConvNet's Clothing for
Faster Inference", ICCV 2021, arXiv:2104.01136; timm `levit.py` Attention, use_conv=False)
-- an independent float64 reference in timm's layout, BatchNorms in eval mode.

Math. x: (B, H, W, C) tokens row-major, h heads, key width kd, value width vd = r·kd:

    t = BN(x W_qkv^T)                  (LinearNorm: a Linear without bias, then BatchNorm1d
                                        with running statistics; h·(2kd + vd) channels
                                        grouped PER HEAD [q_g | k_g | v_g])
    logit[g, i, j] = q_{g,i}·k_{g,j} / sqrt(kd) + B[g, |y_i − y_j|·W + |x_i − x_j|]
    y_i = concat_g softmax_j(logit[g, i]) v_{g,j}
    out = BN'(hardswish(y) W_proj^T)   (proj = Hardswish, then LinearNorm back to C)

State dict (timm): qkv.linear.weight, qkv.bn.{weight, bias, running_mean, running_var,
num_batches_tracked}, proj.ln.linear.weight, proj.ln.bn.{…}, attention_biases (h, H·W)
(attention_bias_idxs is a non-persistent buffer in timm).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from .efficientformer import EfficientFormerAttention

__all__ = ["LevitAttention"]


class LinearNorm(nn.Module):
    def __init__(self, n_in: int, n_out: int, dtype):
        super().__init__()
        self.linear = nn.Linear(n_in, n_out, bias=False, dtype=dtype)
        self.bn = nn.BatchNorm1d(n_out, dtype=dtype)

    def forward(self, x):
        y = self.linear(x)
        bn = self.bn        # eval-mode statistics, written out
        return (y - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias


class LevitAttention(EfficientFormerAttention):
    """EfficientFormer's attention (tests/published/efficientformer.py: the same logits and
    per-head groups) with LeViT's LinearNorm projections and Hardswish before proj."""

    def __init__(self, dim: int, key_dim: int, heads: int, attn_ratio: int, grid,
                 dtype=torch.float64):
        super().__init__(dim, key_dim, heads, attn_ratio, grid, dtype)
        self.qkv = LinearNorm(dim, heads * (2 * self.kd + self.vd), dtype)
        self.proj = nn.Module()
        self.proj.ln = LinearNorm(heads * self.vd, dim, dtype)
        # timm keeps LeViT's index out of the state dict
        idx = self.attention_bias_idxs
        del self.attention_bias_idxs
        self.register_buffer("attention_bias_idxs", idx, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        y = F.hardswish(self.attend(self.qkv(x.reshape(B, H * W, C))))
        return self.proj.ln(y).reshape(B, H, W, C)
