"""timm.twins_gsa — timm's Twins `GlobalSubSampleAttn` (Twins' GSA, PCPVT's attention):
every token attends to keys and values from the map sub-sampled by an sr×sr strided conv
and a LayerNorm; with sr_ratio 1 plain global attention with q and kv linears."""
from __future__ import annotations

from torch import nn

from .base import (Equivalent, ForeignKind, Unsupported, dropout_of, linear_bias, register,
                   size_argument)


def subsampled_attention(module: nn.Module, name: str, call, layout: str,
                         size_keyword: str) -> Equivalent:
    """Twins GSA and PVT-v2's Attention share this structure: q, kv, an optional
    sr×sr stride-sr conv + LayerNorm on the keys' input, proj."""
    dim, heads = module.q.in_features, int(module.num_heads)
    sr = getattr(module, "sr", None)
    application = {"kind": "global"}
    if sr is not None:
        ratio = int(sr.stride[0])
        if tuple(sr.kernel_size) != (ratio, ratio) or tuple(sr.stride) != (ratio, ratio) \
                or tuple(getattr(sr, "padding", (0, 0))) != (0, 0):
            raise Unsupported(f"its sub-sampling conv is {tuple(sr.kernel_size)} stride "
                              f"{tuple(sr.stride)}; the language's pooled conv is r×r stride r")
        if not isinstance(getattr(module, "norm", None), nn.LayerNorm):
            raise Unsupported("its sub-sampling conv has no LayerNorm after it")
        application = {"kind": "pooled", "op": "conv", "ratio": ratio, "norm": "layernorm"}
    spec = {"name": name, "heads": heads,
            "projections": {"layout": "q_kv", "bias": linear_bias(module.q),
                            "out_bias": linear_bias(module.proj)},
            "parameterization": {"kind": "additive", "terms": ["query_key"]},
            "normalization": {"kind": "softmax"}, "application": application,
            "dropout": {"attention": dropout_of(module),
                        "projection": dropout_of(module, "proj_drop")}}
    if linear_bias(module.q) != linear_bias(module.kv):
        raise Unsupported("q has a bias and kv not (or the reverse)")
    return Equivalent(spec, dim, heads, size_argument(call, keyword=size_keyword), layout)


@register
class TimmTwinsGSA(ForeignKind):
    name = "timm.twins_gsa"
    classes = ("GlobalSubSampleAttn",)
    convention = "bnc_size"
    doc = ("timm Twins GlobalSubSampleAttn (GSA): keys from the map sub-sampled by an "
           "sr×sr conv + LayerNorm (global attention at sr_ratio 1)")

    def equivalent(self, module, parent, call, model) -> Equivalent:
        return subsampled_attention(module, "timm_twins_gsa", call, "timm.twins_gsa", "size")
