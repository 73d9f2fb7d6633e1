"""BoTNet's attention (attndsl's global kind with the query_rel_pos_hw term) against
tests/published/botnet.py (timm's BottleneckAttn layout): attndsl's qkv Linear is timm's
1×1 conv, its height/width tables timm's pos_embed.height_rel / width_rel as they are.
functional_call: gradients reach the compiled module's leaves."""
import torch

from published.botnet import BottleneckAttention


def reference(m, x):
    P = dict(m.named_parameters())
    B, H, W, C = x.shape
    published = BottleneckAttention(m.dim, m.plan.heads, (H, W), dtype=x.dtype)
    params = {"qkv.weight": P["attn.qkv.weight"].reshape(3 * C, C, 1, 1),
              "pos_embed.height_rel": P["attn.rel_pos.height"],
              "pos_embed.width_rel": P["attn.rel_pos.width"]}
    return torch.func.functional_call(published, params, (x,))
