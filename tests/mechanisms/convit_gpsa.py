"""ConViT's gated positional self-attention against tests/published/convit.py (timm's GPSA
layout): attndsl's qkv rows [q; k; v] are timm's qk rows [q; k] then v's; its
gated.position / gated.gate are timm's pos_proj / gating_param. functional_call: gradients
reach the compiled module's leaves."""
import torch

from published.convit import GatedPositionalSelfAttention


def reference(m, x):
    P = dict(m.named_parameters())
    C = m.dim
    published = GatedPositionalSelfAttention(C, m.plan.heads, qkv_bias=True, dtype=x.dtype)
    w, b = P["attn.qkv.weight"], P["attn.qkv.bias"]
    params = {"qk.weight": w[:2 * C], "qk.bias": b[:2 * C], "v.weight": w[2 * C:],
              "v.bias": b[2 * C:], "proj.weight": P["attn.proj.weight"],
              "proj.bias": P["attn.proj.bias"],
              "pos_proj.weight": P["attn.gated.position.weight"],
              "pos_proj.bias": P["attn.gated.position.bias"],
              "gating_param": P["attn.gated.gate"]}
    return torch.func.functional_call(published, params, (x,))
