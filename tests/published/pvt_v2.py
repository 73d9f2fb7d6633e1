"""PVT-v2 linear spatial-reduction attention (Linear SRA), Wang et al., "PVT v2: Improved
Baselines with Pyramid Vision Transformer", CVMJ 2022 -- an independent float64 reference.

Mirrors the parameter layout of timm ``timm/models/pvt_v2.py``, class ``Attention`` with
``linear_attn=True`` (= whai362/PVT ``classification/pvt_v2.py`` ``Attention(linear=True)``,
the ``pvt_v2_b2_li`` model).  A timm state dict for ``stages.i.blocks.j.attn.`` loads here
unchanged (prefix stripped).

Math.  x: (B, H, W, C), h heads, d = C/h, scale = d^-1/2, pool size P (7 in PVT-v2):

    q  = x Wq^T + bq                                   (all H*W tokens, not pooled)
    p  = AdaptiveAvgPool_P(x)                          (P x P, from x itself)
         p[i, j] = mean of x[r, c] over r in [floor(iH/P), ceil((i+1)H/P)),
                                            c in [floor(jW/P), ceil((j+1)W/P))
         (bins may overlap when P does not divide H, and repeat rows when H < P)
    z  = GELU_exact(LayerNorm_eps1e-5(p Wsr^T + bsr))  (sr: 1x1 Conv2d(C, C), P*P tokens)
    [k | v] = z Wkv^T + bkv                            (kv: Linear(C, 2C), rows [k; v],
                                                        each head-major)
    o_g = softmax(scale * q_g k_g^T) v_g ;  y = concat_g(o_g) Wproj^T + bproj

timm pools first and then applies the 1x1 conv; the two commute (both linear, each bin's
weights sum to one), but LayerNorm and GELU act on the P*P pooled tokens after both.
Keys and values never see the full map.  No masking; any H, W work (always P*P keys).

State dict: q.weight (C, C), q.bias (C,), kv.weight (2C, C), kv.bias (2C,),
proj.weight (C, C), proj.bias (C,), sr.weight (C, C, 1, 1), sr.bias (C,),
norm.weight (C,), norm.bias (C,).  (timm's ``pool`` and ``act`` have no parameters.)
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["PvtV2LinearAttention", "adaptive_avg_pool", "pool_bins"]


def randomize_(module: nn.Module, seed: int) -> nn.Module:
    """Seeded fill: weights (>= 2 dims) std fan_in^-1/2, biases std 0.5, and the LayerNorm
    gain 1 + 0.5 N(0, 1) (a gain around zero would be unrealistic)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            z = torch.randn(p.shape, generator=g, dtype=torch.float64)
            if p.dim() >= 2:
                v = z * (p[0].numel() ** -0.5)
            elif name == "norm.weight":
                v = 1.0 + 0.5 * z
            else:
                v = 0.5 * z
            p.copy_(v.to(p.dtype))
    return module


def pool_bins(n: int, P: int):
    """[(start, end)] of the P adaptive-pooling bins over n positions (end exclusive)."""
    return [((i * n) // P, -((-(i + 1) * n) // P)) for i in range(P)]


def adaptive_avg_pool(x: torch.Tensor, P: int) -> torch.Tensor:
    """(B, H, W, C) -> (B, P, P, C) as explicit bin means."""
    B, H, W, C = x.shape
    rows = []
    for r0, r1 in pool_bins(H, P):
        rows.append(torch.stack([x[:, r0:r1, c0:c1].mean(dim=(1, 2))
                                 for c0, c1 in pool_bins(W, P)], dim=1))
    return torch.stack(rows, dim=1)


class PvtV2LinearAttention(nn.Module):
    def __init__(self, dim, heads, pool=7, seed=0, dtype=torch.float64):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} not divisible by heads {heads}")
        self.dim, self.heads, self.pool_size = dim, heads, pool
        self.head_dim = dim // heads
        self.scale = self.head_dim ** -0.5
        dd = dict(dtype=dtype)
        self.q = nn.Linear(dim, dim, bias=True, **dd)
        self.kv = nn.Linear(dim, 2 * dim, bias=True, **dd)
        self.proj = nn.Linear(dim, dim, **dd)
        self.sr = nn.Conv2d(dim, dim, kernel_size=1, stride=1, **dd)
        self.norm = nn.LayerNorm(dim, eps=1e-5, **dd)
        randomize_(self, seed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        h, d = self.heads, self.head_dim
        q = self.q(x).reshape(B, H * W, h, d).transpose(1, 2)            # (B, h, N, d)
        p = adaptive_avg_pool(x, self.pool_size).reshape(B, -1, C)
        z = F.linear(p, self.sr.weight.reshape(C, C), self.sr.bias)       # 1x1 conv
        z = F.gelu(self.norm(z), approximate="none")
        k, v = self.kv(z).reshape(B, -1, 2, h, d).permute(2, 0, 3, 1, 4).unbind(0)
        o = torch.softmax((q * self.scale) @ k.transpose(-1, -2), dim=-1) @ v
        return self.proj(o.transpose(1, 2).reshape(B, H, W, C))
