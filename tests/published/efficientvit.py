"""EfficientViT (MSRA) cascaded group attention (Liu et al., "EfficientViT: Memory Efficient
Vision Transformer with Cascaded Group Attention", CVPR 2023) -- an independent float64
reference.

Mirrors ``microsoft/Cream``, file ``EfficientViT/classification/model/efficientvit.py``,
classes ``Conv2d_BN``, ``CascadedGroupAttention`` and ``LocalWindowAttention`` (the same
math as timm's ``efficientvit_msra.py``, whose names differ).  BatchNorm is ALWAYS
evaluated with running statistics (eval mode), whatever ``module.training`` says.

Math, CascadedGroupAttention (x: (B, R, R, C) channels-last, R = resolution, N = R^2,
h heads, key dim kd, value dim d = int(attn_ratio * kd), which must equal C/h):

    CBN(x) = BN_eval(Conv(x))      BN_eval(z) = (z - mean) / sqrt(var + eps) * gamma + beta
    x_0, ..., x_{h-1} = the h channel chunks of x (C/h channels each)
    f_{-1} = 0
    for i in 0..h-1:
        [q | k | v] = CBN_qkv_i(x_i + f_{i-1})   -- 1x1 conv to 2kd + d channels, split
                                                      in the order q (kd), k (kd), v (d)
        q = CBN_dw_i(q)                            -- depthwise kernels[i] x kernels[i],
                                                      padding kernels[i] // 2, with BN
        A = softmax_j(q_n . k_m * kd^-1/2 + attention_biases[i, idx(n, m)])
        f_i = A v                                  -- (N, d)
    y = CBN_proj(ReLU(concat_i f_i))               -- 1x1 conv d*h -> C, with BN
    idx(n, m) = |y_n - y_m| * R + |x_n - x_m|: the official code numbers the offsets
    (|dy|, |dx|) in first-seen order over (p1, p2) in product(range(R), range(R))^2, and
    p1 = (0, 0) meets every offset first in row-major order, which is exactly this.

LocalWindowAttention(resolution R, window w): CascadedGroupAttention(resolution=min(w, R));
if R <= w the whole map is one window; otherwise zero-pad bottom/right to multiples of w,
partition into w x w windows (row-major), attend per window, reverse, crop.  Padded
tokens are NOT masked: their zero input goes through conv+BN, so they are live keys with
BN-shifted values -- the official behaviour, kept here.

State dict (CascadedGroupAttention; LocalWindowAttention prefixes ``attn.``):
qkvs.{i}.c.weight (2kd+d, C/h, 1, 1) | qkvs.{i}.bn.{weight,bias,running_mean,running_var}
(2kd+d,) + num_batches_tracked () | dws.{i}.c.weight (kd, 1, k_i, k_i) | dws.{i}.bn.* (kd,) |
proj.1.c.weight (C, d*h, 1, 1) | proj.1.bn.* (C,) | attention_biases (h, R^2) |
attention_bias_idxs (R^2, R^2) long buffer (persistent).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["Conv2dBN", "CascadedGroupAttention", "LocalWindowAttention", "fold_conv_bn",
           "offset_index", "randomize_"]


def randomize_(module: nn.Module, seed: int) -> nn.Module:
    """Seeded fill of every parameter and BN running statistic.

    Weights (>= 2 dims) get std fan_in^-1/2; 1-dim parameters and the attention-bias
    table get std 0.5 so a dropped bias or table shows; running_mean ~ N(0, 0.5^2) and
    running_var ~ U(0.5, 1.5) (positive, not 1) so an un-applied BN shows too.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            table = name.endswith("attention_biases")
            std = p[0].numel() ** -0.5 if p.dim() >= 2 and not table else 0.5
            p.copy_((torch.randn(p.shape, generator=g, dtype=torch.float64) * std).to(p.dtype))
        for name, b in module.named_buffers():
            if name.endswith("running_mean"):
                b.copy_((torch.randn(b.shape, generator=g, dtype=torch.float64) * 0.5).to(b.dtype))
            elif name.endswith("running_var"):
                b.copy_((torch.rand(b.shape, generator=g, dtype=torch.float64) + 0.5).to(b.dtype))
    return module


def bn_eval(bn: nn.BatchNorm2d, z):
    return F.batch_norm(z, bn.running_mean, bn.running_var, bn.weight, bn.bias,
                        training=False, eps=bn.eps)


def fold_conv_bn(conv_weight, bn):
    """Eval-mode affine equivalent of Conv2d(bias=False) + BN: (weight, bias) of one conv."""
    s = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    return conv_weight * s.reshape(-1, *([1] * (conv_weight.dim() - 1))), bn.bias - bn.running_mean * s


class Conv2dBN(nn.Sequential):
    """Official ``Conv2d_BN``: a Sequential of ``c`` (Conv2d, no bias) and ``bn``."""

    def __init__(self, a, b, ks=1, stride=1, pad=0, groups=1, dtype=torch.float64):
        super().__init__()
        self.add_module("c", nn.Conv2d(a, b, ks, stride, pad, groups=groups, bias=False, dtype=dtype))
        self.add_module("bn", nn.BatchNorm2d(b, dtype=dtype))

    def forward(self, x):          # x (B, C, H, W)
        return bn_eval(self.bn, self.c(x))


def offset_index(resolution):
    """(N, N) long: idx(n, m) = |dy| * R + |dx| (the official first-seen numbering)."""
    ys, xs = torch.meshgrid(torch.arange(resolution), torch.arange(resolution), indexing="ij")
    ys, xs = ys.reshape(-1), xs.reshape(-1)
    return (ys[:, None] - ys[None, :]).abs() * resolution + (xs[:, None] - xs[None, :]).abs()


class CascadedGroupAttention(nn.Module):
    """Official layout; forward takes (B, R, R, C) channels-last and returns the same."""

    def __init__(self, dim, key_dim, heads, attn_ratio, resolution, kernels, seed=0,
                 dtype=torch.float64):
        super().__init__()
        self.heads, self.key_dim, self.resolution = heads, key_dim, resolution
        self.scale = key_dim ** -0.5
        self.d = int(attn_ratio * key_dim)
        if dim % heads:
            raise ValueError(f"dim {dim} not divisible by heads {heads}")
        if heads > 1 and self.d != dim // heads:
            # the cascade adds head i-1's output (d channels) to chunk i (C/h channels)
            raise ValueError(f"value dim {self.d} must equal dim/heads = {dim // heads}")
        if len(kernels) < heads:
            raise ValueError("need one query dw-conv kernel size per head")
        self.qkvs = nn.ModuleList(
            Conv2dBN(dim // heads, 2 * key_dim + self.d, dtype=dtype) for _ in range(heads))
        self.dws = nn.ModuleList(
            Conv2dBN(key_dim, key_dim, kernels[i], 1, kernels[i] // 2, groups=key_dim, dtype=dtype)
            for i in range(heads))
        # index 0 is the (parameterless) ReLU, so the checkpoint says proj.1.c / proj.1.bn
        self.proj = nn.Sequential(nn.ReLU(), Conv2dBN(self.d * heads, dim, dtype=dtype))
        N = resolution * resolution
        self.attention_biases = nn.Parameter(torch.zeros(heads, N, dtype=dtype))
        self.register_buffer("attention_bias_idxs", offset_index(resolution))
        randomize_(self, seed)
        self.last_attn = None

    def forward(self, x):
        B, H, W, C = x.shape
        if (H, W) != (self.resolution, self.resolution):
            raise ValueError(f"expected {self.resolution}x{self.resolution}, got {H}x{W}")
        bias = self.attention_biases[:, self.attention_bias_idxs]      # (h, N, N)
        chunks = x.permute(0, 3, 1, 2).chunk(self.heads, dim=1)
        outs, attns = [], []
        feat = None
        for i in range(self.heads):
            inp = chunks[i] if feat is None else chunks[i] + feat
            qkv = self.qkvs[i](inp)
            q, k, v = qkv.split([self.key_dim, self.key_dim, self.d], dim=1)
            q = self.dws[i](q)
            q, k, v = q.flatten(2), k.flatten(2), v.flatten(2)          # (B, ch, N)
            attn = torch.softmax(q.transpose(1, 2) @ k * self.scale + bias[i], dim=-1)
            feat = (v @ attn.transpose(1, 2)).reshape(B, self.d, H, W)
            outs.append(feat)
            attns.append(attn)
        self.last_attn = torch.stack(attns, dim=1)                      # (B, h, N, N)
        y = self.proj[1](F.relu(torch.cat(outs, dim=1)))
        return y.permute(0, 2, 3, 1)


class LocalWindowAttention(nn.Module):
    """Official ``LocalWindowAttention``; forward takes (B, R, R, C)."""

    def __init__(self, dim, key_dim, heads, attn_ratio, resolution, window_resolution, kernels,
                 seed=0, dtype=torch.float64):
        super().__init__()
        self.resolution, self.window_resolution = resolution, window_resolution
        self.attn = CascadedGroupAttention(dim, key_dim, heads, attn_ratio,
                                           min(window_resolution, resolution), kernels,
                                           seed=seed, dtype=dtype)
        randomize_(self, seed)
        self.last_windows = None

    def forward(self, x):
        B, H, W, C = x.shape
        if (H, W) != (self.resolution, self.resolution):
            raise ValueError(f"expected {self.resolution}x{self.resolution}, got {H}x{W}")
        w = self.window_resolution
        if H <= w and W <= w:
            self.last_windows = 1
            return self.attn(x)
        pad_b, pad_r = (w - H % w) % w, (w - W % w) % w
        xp = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))        # zeros, not masked later
        Hp, Wp = H + pad_b, W + pad_r
        nH, nW = Hp // w, Wp // w
        self.last_windows = nH * nW
        win = xp.reshape(B, nH, w, nW, w, C).transpose(2, 3).reshape(B * nH * nW, w, w, C)
        y = self.attn(win)
        y = y.reshape(B, nH, nW, w, w, C).transpose(2, 3).reshape(B, Hp, Wp, C)
        return y[:, :H, :W].contiguous()
