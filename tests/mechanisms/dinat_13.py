"""A 13×13 neighbourhood with dilation 2 (NATTEN semantics) against tests/reference.py's
neighbourhood attention (written from NATTEN's definition)."""
import reference as ref

GEOMETRY = (48, (28, 28))      # each dilated sub-grid needs ≥ 13 rows and columns
PADDED = (29, 27)              # sub-grids of unequal sizes


def reference(m, x):
    P, G = dict(m.named_parameters()), m.plan.heads
    k = m.plan.branches[0].spec.application.size
    return ref.neighborhood_attention(
        x, heads=G, kernel=k, dilation=2, scale=m.plan.head_dim ** -0.5,
        rpb=P["attn.rel_pos.bias"].reshape(G, 2 * k - 1, 2 * k - 1),
        w_qkv=P["attn.qkv.weight"], b_qkv=P["attn.qkv.bias"],
        w_proj=P["attn.proj.weight"], b_proj=P["attn.proj.bias"])
