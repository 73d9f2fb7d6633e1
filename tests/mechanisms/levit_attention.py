"""LeViT's attention against tests/published/levit.py (timm's layout, BatchNorms in eval
mode): attndsl's folded qkv Linear (rows [q; k; v], each head-major) is timm's LinearNorm
with the per-head [q_g | k_g | v_g] groups and an identity BatchNorm carrying the bias;
merge.proj is proj.ln the same way. functional_call: gradients reach the compiled
module's leaves."""
import math

import torch

from mechanisms.efficientformer_attention import per_head_rows
from published.levit import LevitAttention


def identity_bn(prefix, bias):
    """An eval-mode BatchNorm that is the identity plus `bias` (γ = √(1 + ε): scale 1)."""
    one = torch.ones_like(bias)
    return {f"{prefix}.weight": one * math.sqrt(1 + 1e-5), f"{prefix}.bias": bias,
            f"{prefix}.running_mean": torch.zeros_like(bias), f"{prefix}.running_var": one}


def reference(m, x):
    P = dict(m.named_parameters())
    bp = m.plan.branches[0]
    G, kd, vd = bp.heads, bp.qk_head_dim, bp.value_head_dim
    B, H, W, C = x.shape
    published = LevitAttention(m.dim, kd, G, vd // kd, (H, W), dtype=x.dtype).eval()
    params = {"qkv.linear.weight": per_head_rows(P["attn.qkv.weight"], G, kd, vd),
              **identity_bn("qkv.bn", per_head_rows(P["attn.qkv.bias"], G, kd, vd)),
              "proj.ln.linear.weight": P["merge.proj.weight"],
              **identity_bn("proj.ln.bn", P["merge.proj.bias"]),
              "attention_biases": P["attn.rel_pos.bias"]}
    return torch.func.functional_call(published, params, (x,))
