"""MaxViT block / grid partition attention, Tu et al., "MaxViT: Multi-Axis Vision
Transformer", ECCV 2022 -- an independent float64 reference.

Mirrors the parameter layout of timm ``timm/models/maxxvit.py``: the ``attn`` of
``PartitionAttentionCl`` (class ``AttentionCl``, channels-last) with ``rel_pos_type='bias'``
(``timm/layers/pos_embed_rel.py`` class ``RelPosBias``), partitioned by ``window_partition``
(mode "block") or ``grid_partition`` (mode "grid").  This is the layout of timm's own
``maxvit_*_rw_*`` / ``coatnet_*_rw_*`` checkpoints (``_rw_max_cfg``: head_first=True,
rel_pos 'bias'); the TF-ported ``maxvit_*_tf_*`` weights use head_first=False and the
different ``RelPosBiasTf`` table and are NOT this module.

Math.  x: (B, H, W, C), partition P, h heads, d = C/h, scale = d^-1/2.  Both modes split
the map into (H/P)(W/P) groups of P*P tokens, each token carrying a group-local coordinate
(a, b) in [0, P)^2, token order n = a*P + b:

    block: group (I, J) = tokens (I*P + a, J*P + b)                  (local P x P tiles)
    grid:  group (i, j) = tokens (a*(H/P) + i, b*(W/P) + j)          (dilated, stride H/P)
           -- timm: view (B, P, H/P, P, W/P, C), permute (0, 2, 4, 1, 3, 5)

Inside a group: t = x Wqkv^T + bqkv (qkv: Linear(C, 3C)); with head_first=True (timm
default) the 3C channels are HEAD-MAJOR, head g owning [g*3d, (g+1)*3d) split as
[q_g | k_g | v_g] (d each) -- NOT the usual [q; k; v] row blocks.  head_first=False gives
rows [q; k; v], each head-major.

    logit[g, n, m] = scale * q_{g,n} . k_{g,m} + table[idx(n, m), g]
    idx(n, m) = (a_n - a_m + P-1) * (2P-1) + (b_n - b_m + P-1)      (QUERY minus KEY)
    o_g = softmax_m(logit[g]) v_g ;  y = concat_g(o_g) Wproj^T + bproj

The relative bias is over the group-local (a, b), which in grid mode are the COARSE
(dilated) coordinates, not pixel offsets.  No masking, no padding: H and W must be
multiples of P (raises otherwise, as timm asserts).

State dict: qkv.weight (3C, C), qkv.bias (3C,), rel_pos.relative_position_bias_table
((2P-1)^2, h), proj.weight (C, C), proj.bias (C,).  rel_pos.relative_position_index
(P^4,) is a non-persistent buffer, as in timm.
"""

import torch
import torch.nn as nn

__all__ = ["MaxVitPartitionAttention", "RelPosBias", "partition", "unpartition"]


def randomize_(module: nn.Module, seed: int) -> nn.Module:
    """Seeded fill: weights (>= 2 dims) std fan_in^-1/2; biases and the bias table std 0.5.

    The table is 2-dim but is a lookup table, not a weight, so it gets std 0.5 like a bias
    (timm's 0.02 would make a wrong index nearly invisible).
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            z = torch.randn(p.shape, generator=g, dtype=torch.float64)
            if p.dim() >= 2 and not name.endswith("relative_position_bias_table"):
                v = z * (p[0].numel() ** -0.5)
            else:
                v = 0.5 * z
            p.copy_(v.to(p.dtype))
    return module


def _pair(p):
    return tuple(p) if isinstance(p, (tuple, list)) else (p, p)


class RelPosBias(nn.Module):
    """timm RelPosBias without prefix tokens: table ((2Ph-1)(2Pw-1), h), flat index
    ((Ph·Pw)^2,); the partition (Ph, Pw) or one P for both."""

    def __init__(self, partition, heads: int, dtype=torch.float64):
        super().__init__()
        Ph, Pw = _pair(partition)
        self.partition, self.heads = (Ph, Pw), heads
        self.relative_position_bias_table = nn.Parameter(
            torch.empty((2 * Ph - 1) * (2 * Pw - 1), heads, dtype=dtype))
        a = torch.arange(Ph).repeat_interleave(Pw)           # row of in-group token n
        b = torch.arange(Pw).repeat(Ph)                      # its column
        idx = (a[:, None] - a[None, :] + Ph - 1) * (2 * Pw - 1) + (b[:, None] - b[None, :] + Pw - 1)
        self.register_buffer("relative_position_index", idx.reshape(-1), persistent=False)

    def get_bias(self) -> torch.Tensor:
        n = self.partition[0] * self.partition[1]
        bias = self.relative_position_bias_table[self.relative_position_index]
        return bias.reshape(n, n, self.heads).permute(2, 0, 1)      # (h, n, n)


def partition(x: torch.Tensor, P, mode: str) -> torch.Tensor:
    """(B, H, W, C) -> (B, G, Ph*Pw, C), group-local order n = a*Pw + b."""
    B, H, W, C = x.shape
    Ph, Pw = _pair(P)
    if mode == "block":
        t = x.reshape(B, H // Ph, Ph, W // Pw, Pw, C).permute(0, 1, 3, 2, 4, 5)
    elif mode == "grid":
        t = x.reshape(B, Ph, H // Ph, Pw, W // Pw, C).permute(0, 2, 4, 1, 3, 5)
    else:
        raise ValueError(f"mode must be 'block' or 'grid', got {mode!r}")
    return t.reshape(B, -1, Ph * Pw, C)


def unpartition(t: torch.Tensor, P, mode: str, H: int, W: int) -> torch.Tensor:
    """Inverse of partition."""
    B, _, _, C = t.shape
    Ph, Pw = _pair(P)
    t = t.reshape(B, H // Ph, W // Pw, Ph, Pw, C)
    if mode == "block":
        x = t.permute(0, 1, 3, 2, 4, 5)
    else:
        x = t.permute(0, 3, 1, 4, 2, 5)
    return x.reshape(B, H, W, C)


class MaxVitPartitionAttention(nn.Module):
    def __init__(self, dim, heads, partition, mode, seed=0, dtype=torch.float64,
                 head_first=True):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} not divisible by heads {heads}")
        if mode not in ("block", "grid"):
            raise ValueError(f"mode must be 'block' or 'grid', got {mode!r}")
        self.dim, self.heads, self.partition, self.mode = dim, heads, partition, mode
        self.head_first = head_first
        self.dim_head = dim // heads
        self.scale = self.dim_head ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=True, dtype=dtype)
        self.rel_pos = RelPosBias(partition, heads, dtype=dtype)
        self.proj = nn.Linear(dim, dim, bias=True, dtype=dtype)
        randomize_(self, seed)

    def split_qkv(self, t: torch.Tensor):
        """(..., n, 3C) -> q, k, v each (..., h, n, d) following the head_first layout."""
        h, d = self.heads, self.dim_head
        lead = t.shape[:-1]
        if self.head_first:
            t = t.reshape(*lead, h, 3, d)
        else:
            t = t.reshape(*lead, 3, h, d).transpose(-3, -2)
        t = t.movedim(-4, -2)                                    # (..., h, 3, n, d)
        return t.unbind(-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        P = self.partition
        Ph, Pw = _pair(P)
        if H % Ph or W % Pw:
            raise ValueError(f"map {H}x{W} is not a multiple of the partition {P}")
        g = partition(x, P, self.mode)                           # (B, G, n, C)
        q, k, v = self.split_qkv(self.qkv(g))                    # (B, G, h, n, d)
        logits = (q * self.scale) @ k.transpose(-1, -2) + self.rel_pos.get_bias()
        o = torch.softmax(logits, dim=-1) @ v
        o = self.proj(o.transpose(-3, -2).reshape(*g.shape[:-1], C))
        return unpartition(o, P, self.mode, H, W)
