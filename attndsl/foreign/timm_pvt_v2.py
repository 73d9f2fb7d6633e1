"""timm.pvt_v2 — timm's PVT-v2 `Attention` (q and kv linears, told from ViT's same-named
class by them): spatial-reduction attention (an sr×sr strided conv + LayerNorm on the
keys' input), or with linear=True keys from the map adaptive-average-pooled to 7×7, a 1×1
conv, LayerNorm and GELU (pvt_v2_b*_li)."""
from __future__ import annotations

from torch import nn

from .base import (Equivalent, ForeignKind, Unsupported, dropout_of, linear_bias, register,
                   size_argument)
from .timm_twins_gsa import subsampled_attention


@register
class TimmPvtV2Attention(ForeignKind):
    name = "timm.pvt_v2"
    classes = ("Attention",)
    convention = "bnc_size"
    doc = ("timm PVT-v2 Attention: spatial-reduction attention, or linear SRA (7×7 adaptive "
           "pooling) with linear=True")

    def claims(self, module, parent):
        return (type(module).__name__ == "Attention" and isinstance(getattr(module, "q", None), nn.Linear)
                and isinstance(getattr(module, "kv", None), nn.Linear))

    def equivalent(self, module, parent, call, model) -> Equivalent:
        pool = getattr(module, "pool", None)
        if pool is None:
            return subsampled_attention(module, "timm_pvt_v2_attention", call, "timm.pvt_v2",
                                        "feat_size")
        size = pool.output_size
        size = size if isinstance(size, int) else (size[0] if size[0] == size[1] else None)
        if size is None or not isinstance(getattr(module, "act", None), nn.GELU):
            raise Unsupported("its linear reduction is not a square adaptive pool + 1×1 conv + "
                              "LayerNorm + GELU")
        dim, heads = module.q.in_features, int(module.num_heads)
        spec = {"name": "timm_pvt_v2_linear_attention", "heads": heads,
                "projections": {"layout": "q_kv", "bias": linear_bias(module.q),
                                "out_bias": linear_bias(module.proj)},
                "parameterization": {"kind": "additive", "terms": ["query_key"]},
                "normalization": {"kind": "softmax"},
                "application": {"kind": "adaptive_pooled", "size": int(size)},
                "dropout": {"attention": dropout_of(module),
                            "projection": dropout_of(module, "proj_drop")}}
        return Equivalent(spec, dim, heads, size_argument(call, keyword="feat_size"),
                          "timm.pvt_v2_linear")
