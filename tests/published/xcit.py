"""XCiT's cross-covariance attention (Ali et al., "XCiT: Cross-Covariance Image
Transformers", NeurIPS 2021, arXiv:2106.09681, section 3.2) -- an independent float64
reference in timm's XCA layout.

Math (x: (B, N, C) tokens, h heads, d = C/h channels per head; w_qkv (3C, C) rows
[q; k; v], each head-major; temperature tau (h, 1, 1), timm initializes it to ones):

    Q_g, K_g, V_g  (d, N): head g's channels as vectors over the tokens
    Qh = Q_g / max(||Q_g||_row, 1e-12),  Kh likewise   (l2 over the N tokens, per channel)
    A_g = softmax_rows(tau_g * Qh Kh^T)                 (d, d): channel i attends channel j
    Y_g = A_g V_g                                       (d, N)
    y_n = concat_g Y_g[:, n] w_proj^T + b_proj          per token n

Written per head with explicit norms (no F.normalize, no permutes shared with attndsl).
State dict (timm): temperature (h, 1, 1), qkv.weight (3C, C), qkv.bias, proj.weight,
proj.bias.
"""
import torch
import torch.nn as nn

from . import on_map

__all__ = ["XCA", "XCAOnMap"]


class XCA(nn.Module):
    def __init__(self, dim: int, heads: int, dtype=torch.float64):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} not divisible by heads {heads}")
        self.heads, self.d = heads, dim // heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1, dtype=dtype))
        self.qkv = nn.Linear(dim, 3 * dim, dtype=dtype)
        self.proj = nn.Linear(dim, dim, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, N, C = x.shape
        q, k, v = self.qkv(x).split(C, dim=-1)              # (B, N, C) each
        heads = []
        for g in range(self.heads):
            cols = slice(g * self.d, (g + 1) * self.d)
            Q, K, V = (t[:, :, cols].transpose(1, 2) for t in (q, k, v))   # (B, d, N)
            Qh = Q / Q.pow(2).sum(-1, keepdim=True).sqrt().clamp_min(1e-12)
            Kh = K / K.pow(2).sum(-1, keepdim=True).sqrt().clamp_min(1e-12)
            A = torch.softmax(self.temperature[g] * torch.einsum("bin,bjn->bij", Qh, Kh), -1)
            heads.append(torch.einsum("bij,bjn->bin", A, V).transpose(1, 2))   # (B, N, d)
        return self.proj(torch.cat(heads, dim=-1))


XCAOnMap = on_map(XCA)
