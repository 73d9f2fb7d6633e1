"""CaiT's talking-heads self-attention against tests/published/cait.py (timm's
TalkingHeadAttn layout): attndsl's talking_heads.pre / .post are timm's proj_l / proj_w.
The reference takes tokens: the map is flattened row-major and put back.
functional_call: gradients reach the compiled module's leaves."""
import torch

from published.cait import TalkingHeadAttention


def reference(m, x):
    P = dict(m.named_parameters())
    published = TalkingHeadAttention(m.dim, m.plan.heads, dtype=x.dtype)
    params = {"qkv.weight": P["attn.qkv.weight"], "qkv.bias": P["attn.qkv.bias"],
              "proj_l.weight": P["attn.talking_heads.pre.weight"],
              "proj_l.bias": P["attn.talking_heads.pre.bias"],
              "proj_w.weight": P["attn.talking_heads.post.weight"],
              "proj_w.bias": P["attn.talking_heads.post.bias"],
              "proj.weight": P["attn.proj.weight"], "proj.bias": P["attn.proj.bias"]}
    B, H, W, C = x.shape
    y = torch.func.functional_call(published, params, (x.reshape(B, H * W, C),))
    return y.reshape(B, H, W, C)
