"""EfficientViT cascaded group attention against tests/published/efficientvit.py (the
official LocalWindowAttention / CascadedGroupAttention layout, BatchNorm in eval mode).
attndsl holds each Conv2d_BN folded into one conv with a bias; the reference gets the same
function by a BatchNorm that is the identity plus that bias (running mean 0, variance 1,
γ = sqrt(1 + eps)), so gradients still reach attndsl's tensors."""
import math

import torch

from published.efficientvit import LocalWindowAttention

PADDED = (16, 16)        # not a multiple of 7: zero-padded to 21×21, padded tokens live


def _bn(params, prefix, bias, eps=1e-5):
    n = bias.shape[0]
    params.update({f"{prefix}.bn.weight": torch.full((n,), math.sqrt(1 + eps),
                                                     dtype=bias.dtype),
                   f"{prefix}.bn.bias": bias,
                   f"{prefix}.bn.running_mean": torch.zeros(n, dtype=bias.dtype),
                   f"{prefix}.bn.running_var": torch.ones(n, dtype=bias.dtype)})


def reference(m, x):
    P = dict(m.named_parameters())
    heads, C = m.plan.heads, m.dim
    kernel = m.spec.branches[0].projections.q_conv.size
    window = m.spec.branches[0].application.size
    published = LocalWindowAttention(C, C // heads, heads, 1.0, x.shape[1], window,
                                     [kernel] * heads, dtype=x.dtype)
    params = {}
    for i in range(heads):
        w = P[f"h{i}.qkv.weight"]
        params[f"attn.qkvs.{i}.c.weight"] = w[:, :, None, None]
        _bn(params, f"attn.qkvs.{i}", P[f"h{i}.qkv.bias"])
        params[f"attn.dws.{i}.c.weight"] = P[f"h{i}.q_conv.weight"]
        _bn(params, f"attn.dws.{i}", P[f"h{i}.q_conv.bias"])
    params["attn.proj.1.c.weight"] = P["merge.proj.weight"][:, :, None, None]
    _bn(params, "attn.proj.1", P["merge.proj.bias"])
    params["attn.attention_biases"] = torch.cat([P[f"h{i}.rel_pos.bias"] for i in range(heads)])
    return torch.func.functional_call(published, params, (x,))
