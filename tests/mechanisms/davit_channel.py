"""DaViT's channel group attention (the channels kind, dot logits) against
tests/published/davit.py (timm's ChannelAttention layout): DaViT's q, k, v rows are
attndsl's v, q, k rows (attndsl's queries are DaViT's k, its keys DaViT's v, its values
DaViT's q). functional_call: gradients reach the compiled module's leaves."""
import torch

from published.davit import ChannelAttentionOnMap


def reference(m, x):
    P = dict(m.named_parameters())
    q, k, v = P["attn.qkv.weight"].chunk(3)
    bq, bk, bv = P["attn.qkv.bias"].chunk(3)
    published = ChannelAttentionOnMap(m.dim, m.plan.heads, dtype=x.dtype)
    params = {"qkv.weight": torch.cat([v, q, k]), "qkv.bias": torch.cat([bv, bq, bk]),
              "proj.weight": P["attn.proj.weight"], "proj.bias": P["attn.proj.bias"]}
    return torch.func.functional_call(published, params, (x,))
