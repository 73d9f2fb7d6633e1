"""Sigmoid attention (b = −log n) against tests/published/sigmoid_attention.py."""
from published.sigmoid_attention import sigmoid_attention


def reference(m, x):
    P = dict(m.named_parameters())
    return sigmoid_attention(x, m.plan.heads, P["attn.qkv.weight"], P["attn.qkv.bias"],
                             P["attn.proj.weight"], P["attn.proj.bias"])
