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

__all__ = ["TalkingHeadAttention", "TalkingHeadAttentionOnMap", "ClassAttention"]


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


class ClassAttention(nn.Module):
    """CaiT's class attention (paper §3, "class-attention stage"; timm ClassAttn layout):
    with z = [x_class, x_patches] (B, T + N, C), the T class tokens first,

        Q = W_q x_class + b_q            (only the class tokens query)
        K = W_k z + b_k,  V = W_v z + b_v
        A_h = softmax(Q_h K_h^T / sqrt(d))     per head h, d = C / h
        out = W_o concat_h(A_h V_h) + b_o      (B, T, C): the class tokens' output only

    The paper has one class token (T = 1); T > 1 applies the same to each of the first T
    tokens. Written head by head.
    State dict (timm): q.weight, q.bias, k.weight, k.bias, v.weight, v.bias, proj.weight,
    proj.bias; with fused_kv (timm's VOLO ClassAttention) kv.weight, kv.bias (rows [k; v])
    in place of k and v."""

    def __init__(self, dim: int, heads: int, class_tokens: int = 1, dtype=torch.float64,
                 fused_kv: bool = False):
        super().__init__()
        self.heads, self.d, self.t = heads, dim // heads, class_tokens
        self.q = nn.Linear(dim, dim, dtype=dtype)
        if fused_kv:
            self.kv = nn.Linear(dim, 2 * dim, dtype=dtype)
        else:
            self.k = nn.Linear(dim, dim, dtype=dtype)
            self.v = nn.Linear(dim, dim, dtype=dtype)
        self.proj = nn.Linear(dim, dim, dtype=dtype)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        Q = self.q(z[:, :self.t])
        K, V = self.kv(z).chunk(2, dim=-1) if hasattr(self, "kv") else (self.k(z), self.v(z))
        outs = []
        for h in range(self.heads):
            part = slice(h * self.d, (h + 1) * self.d)
            logits = torch.einsum("btc,bnc->btn", Q[..., part], K[..., part]) / self.d ** 0.5
            outs.append(torch.einsum("btn,bnc->btc", torch.softmax(logits, dim=-1),
                                     V[..., part]))
        return self.proj(torch.cat(outs, dim=-1))
