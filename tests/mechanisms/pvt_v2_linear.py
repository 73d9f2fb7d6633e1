"""PVT-v2 linear SRA (attndsl's adaptive_pooled kind) against tests/published/pvt_v2.py (the
timm / official layout): attndsl's q, kv (rows [k; v]) and proj Linears are timm's, its
pool.conv and pool.norm are timm's sr and norm."""
import torch

from published.pvt_v2 import PvtV2LinearAttention

PADDED = (17, 15)      # adaptive pooling's overlapping bins (neither side a multiple of 7)


def reference(m, x):
    P = dict(m.named_parameters())
    bp = m.plan.branches[0]
    published = PvtV2LinearAttention(m.dim, bp.heads, pool=bp.geometry.pooled_grid[0],
                                     dtype=x.dtype)
    names = {"q.weight": "attn.q.weight", "q.bias": "attn.q.bias",
             "kv.weight": "attn.kv.weight", "kv.bias": "attn.kv.bias",
             "proj.weight": "attn.proj.weight", "proj.bias": "attn.proj.bias",
             "sr.weight": "attn.pool.conv.weight", "sr.bias": "attn.pool.conv.bias",
             "norm.weight": "attn.pool.norm.weight", "norm.bias": "attn.pool.norm.bias"}
    return torch.func.functional_call(published, {k: P[v] for k, v in names.items()}, (x,))
