"""EVA-02's rotary attention against tests/published/eva.py (timm's EvaAttention layout):
attndsl's qkv, q_bias, v_bias and proj are timm's. The reference takes tokens: the map is
flattened row-major and put back. functional_call: gradients reach the compiled module's
leaves."""
import torch

from published.eva import EvaRopeAttention


def reference(m, x):
    P = dict(m.named_parameters())
    rope = m.plan.branches[0].spec.projections.rope
    published = EvaRopeAttention(m.dim, m.plan.heads, rope.reference_grid, rope.temperature,
                                 dtype=x.dtype)
    params = {"qkv.weight": P["attn.qkv.weight"], "q_bias": P["attn.q_bias"],
              "v_bias": P["attn.v_bias"], "proj.weight": P["attn.proj.weight"],
              "proj.bias": P["attn.proj.bias"]}
    B, H, W, C = x.shape
    y = torch.func.functional_call(published, params, (x.reshape(B, H * W, C), (H, W)))
    return y.reshape(B, H, W, C)
