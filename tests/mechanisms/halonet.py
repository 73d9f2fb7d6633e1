"""HaloNet (attndsl's halo kind with the query_rel_pos_hw term) against
tests/published/halonet.py (timm's HaloAttn layout). attndsl's fused qkv Linear (rows
[q; k; v], each head-major, no bias) becomes timm's `q` 1×1 conv and its `kv` 1×1 conv,
whose channels are interleaved per head ([k_g | v_g]); attndsl's height/width tables
(2·(block + halo) − 1 rows) are timm's (2·win − 1 rows) without the first 2·halo rows,
which timm never reads: they are filled with a large constant here, so that reading one
would show."""
import torch

from published.halonet import HaloAttention


def timm_params(m, P=None, unused=100.0):
    """timm HaloAttn parameters built from attndsl module m's own tensors."""
    P = P or dict(m.named_parameters())
    bp = m.plan.branches[0]
    C, G, geo = m.dim, bp.heads, bp.geometry
    dqk, dv = bp.qk_head_dim, bp.head_dim
    w_q, w_k, w_v = torch.split(P["attn.qkv.weight"], [bp.qk_dim, bp.qk_dim, bp.width])
    kv = torch.cat([w_k.reshape(G, dqk, C), w_v.reshape(G, dv, C)], dim=1)
    pad = torch.full((2 * geo.halo, dqk), unused, dtype=w_q.dtype)
    return {"q.weight": w_q.reshape(G * dqk, C, 1, 1),
            "kv.weight": kv.reshape(G * (dqk + dv), C, 1, 1),
            "pos_embed.height_rel": torch.cat([pad, P["attn.rel_pos.height"]]),
            "pos_embed.width_rel": torch.cat([pad, P["attn.rel_pos.width"]])}


def reference(m, x):
    bp = m.plan.branches[0]
    published = HaloAttention(m.dim, bp.heads, bp.geometry.block, bp.geometry.halo,
                              dim_head=bp.qk_head_dim, dtype=x.dtype,
                              stride=bp.geometry.stride)
    return torch.func.functional_call(published, timm_params(m), (x,))
