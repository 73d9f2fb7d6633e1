"""Linear attention (relu) against tests/published/linear_attention.py's linear form."""
from published.linear_attention import linear_attention


def reference(m, x):
    P = dict(m.named_parameters())
    return linear_attention(x, m.plan.heads, "relu", P["attn.qkv.weight"],
                            P["attn.qkv.bias"], P["attn.proj.weight"], P["attn.proj.bias"],
                            eps=m.spec.branches[0].normalization.eps)
