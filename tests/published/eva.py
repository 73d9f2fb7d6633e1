"""EVA-02's attention with 2-D rotary position embeddings (Fang et al., "EVA-02: A Visual
Representation for Neon Genesis", 2023, arXiv:2303.11331; rotary embeddings: Su et al.,
RoFormer, arXiv:2104.09864) -- an independent float64 reference in timm's EvaAttention
layout (fused qkv without bias, q_bias and v_bias, k unbiased; proj).

Math (x: (B, P + H·W, C), P class tokens first, then the grid row-major; h heads,
d = C/h, b = d/4 bands f_i = T^(−i/b), T = 10000):

    q, k, v = x W_qkv^T + [b_q; 0; b_v]
    a grid token at row y, column x (scaled to the pretraining grid: y·R_h/H, x·R_w/W) turns
    each head's channel pair (2i, 2i+1), read as the complex number q_{2i} + i·q_{2i+1}, by
    e^{iθ_i} with θ_i = y·f_i for i < b and θ_i = x·f_{i−b} for b ≤ i < 2b; k the same;
    the class tokens are not turned
    y = softmax(q k^T / sqrt(d)) v W_proj^T + b_proj

The rotation is written with complex numbers (torch.view_as_complex), not the cos/sin
channel arithmetic attndsl lowers to.
State dict (timm): qkv.weight (3C, C), q_bias (C), v_bias (C), proj.weight, proj.bias
(timm's k_bias is a zero buffer outside the state dict).
"""
import torch
import torch.nn as nn

__all__ = ["EvaRopeAttention"]


class EvaRopeAttention(nn.Module):
    def __init__(self, dim: int, heads: int, reference_grid=None, temperature: float = 1e4,
                 dtype=torch.float64):
        super().__init__()
        self.heads, self.d = heads, dim // heads
        self.reference_grid, self.temperature = reference_grid, temperature
        self.qkv = nn.Linear(dim, 3 * dim, bias=False, dtype=dtype)
        self.q_bias = nn.Parameter(torch.zeros(dim, dtype=dtype))
        self.v_bias = nn.Parameter(torch.zeros(dim, dtype=dtype))
        self.proj = nn.Linear(dim, dim, dtype=dtype)

    def turns(self, grid):
        """e^{iθ} per grid token and channel pair: (H·W, d/2) complex."""
        H, W = grid
        b = self.d // 4
        f = torch.tensor([self.temperature ** (-i / b) for i in range(b)], dtype=torch.float64)
        ry, rx = self.reference_grid or (H, W)
        rows = []
        for y in range(H):
            for x in range(W):
                theta = torch.cat([(y * ry / H) * f, (x * rx / W) * f])
                rows.append(torch.polar(torch.ones_like(theta), theta))
        return torch.stack(rows)

    def _rotate(self, t, grid, prefix):
        """t (B, h, N, d): the grid tokens' channel pairs times e^{iθ}."""
        grid_part = t[:, :, prefix:]
        z = torch.view_as_complex(grid_part.reshape(*grid_part.shape[:-1], -1, 2).contiguous())
        z = z * self.turns(grid)
        turned = torch.view_as_real(z).flatten(-2).to(t.dtype)
        return torch.cat([t[:, :, :prefix], turned], dim=2)

    def forward(self, x: torch.Tensor, grid, prefix: int = 0) -> torch.Tensor:
        B, N, C = x.shape
        bias = torch.cat([self.q_bias, torch.zeros_like(self.q_bias), self.v_bias])
        q, k, v = (x @ self.qkv.weight.T + bias).split(C, dim=-1)
        q, k, v = (t.reshape(B, N, self.heads, self.d).transpose(1, 2) for t in (q, k, v))
        q, k = self._rotate(q, grid, prefix), self._rotate(k, grid, prefix)
        w = torch.softmax((q @ k.transpose(-1, -2)) / self.d ** 0.5, dim=-1)
        return self.proj((w @ v).transpose(1, 2).reshape(B, N, C))
