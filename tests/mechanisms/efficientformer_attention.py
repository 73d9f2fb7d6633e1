"""EfficientFormer's attention against tests/published/efficientformer.py (timm's layout):
attndsl's qkv rows [q; k; v] (each head-major) are timm's per-head [q_g | k_g | v_g] groups
reordered; its (G, H·W) |offset| table is timm's attention_biases as it is. The value
width (v_width) is 4× the key width, not the model's. functional_call: gradients reach the
compiled module's leaves."""
import torch

from published.efficientformer import EfficientFormerAttention


def per_head_rows(t, heads, kd, vd):
    """attndsl's [q; k; v] rows → timm's [q_g | k_g | v_g] per head."""
    q, k, v = t.split([heads * kd, heads * kd, heads * vd])
    groups = [torch.cat([q[g * kd:(g + 1) * kd], k[g * kd:(g + 1) * kd],
                         v[g * vd:(g + 1) * vd]]) for g in range(heads)]
    return torch.cat(groups)


def reference(m, x):
    P = dict(m.named_parameters())
    bp = m.plan.branches[0]
    G, kd, vd = bp.heads, bp.qk_head_dim, bp.value_head_dim
    B, H, W, C = x.shape
    published = EfficientFormerAttention(m.dim, kd, G, vd // kd, (H, W), dtype=x.dtype)
    params = {"qkv.weight": per_head_rows(P["attn.qkv.weight"], G, kd, vd),
              "qkv.bias": per_head_rows(P["attn.qkv.bias"], G, kd, vd),
              "attention_biases": P["attn.rel_pos.bias"],
              "proj.weight": P["attn.proj.weight"], "proj.bias": P["attn.proj.bias"]}
    return torch.func.functional_call(published, params, (x,))
