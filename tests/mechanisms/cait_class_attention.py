"""CaiT's class attention against tests/published/cait.py (timm's ClassAttn layout):
attndsl's q is timm's q, its kv rows [k; v] are timm's k and v. Unlike the map references,
this one takes tokens (B, T + H·W, C), the T class tokens first, as forward_tokens does, and
returns (B, T, C). functional_call: gradients reach the compiled module's leaves."""
import torch

from published.cait import ClassAttention


def reference(m, z):
    P = dict(m.named_parameters())
    tokens = m.plan.branches[0].spec.application.tokens
    published = ClassAttention(m.dim, m.plan.heads, tokens, dtype=z.dtype)
    k_w, v_w = P["attn.kv.weight"].chunk(2)
    k_b, v_b = P["attn.kv.bias"].chunk(2)
    params = {"q.weight": P["attn.q.weight"], "q.bias": P["attn.q.bias"],
              "k.weight": k_w, "k.bias": k_b, "v.weight": v_w, "v.bias": v_b,
              "proj.weight": P["attn.proj.weight"], "proj.bias": P["attn.proj.bias"]}
    return torch.func.functional_call(published, params, (z,))
