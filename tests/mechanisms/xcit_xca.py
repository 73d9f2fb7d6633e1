"""XCiT's cross-covariance attention (the channels kind with the linear-temperature cosine
similarity) against tests/published/xcit.py (timm's XCA layout): attndsl's logit_scale is
timm's temperature. functional_call: gradients reach the compiled module's leaves."""
import torch

from published.xcit import XCAOnMap


def reference(m, x):
    P = dict(m.named_parameters())
    published = XCAOnMap(m.dim, m.plan.heads, dtype=x.dtype)
    params = {"temperature": P["attn.logit_scale"],
              "qkv.weight": P["attn.qkv.weight"], "qkv.bias": P["attn.qkv.bias"],
              "proj.weight": P["attn.proj.weight"], "proj.bias": P["attn.proj.bias"]}
    return torch.func.functional_call(published, params, (x,))
