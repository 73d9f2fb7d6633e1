"""timm.twins_lsa — timm's Twins `LocallyGroupedAttn` (Twins-SVT's LSA): softmax attention
in non-overlapping ws×ws windows of the map, zero-padded at the bottom / right and not
masked (timm's forward_padding)."""
from __future__ import annotations

from .base import (Equivalent, ForeignKind, Unsupported, dropout_of, linear_bias, register,
                   size_argument)


@register
class TimmTwinsLSA(ForeignKind):
    name = "timm.twins_lsa"
    classes = ("LocallyGroupedAttn",)
    convention = "bnc_size"
    doc = "timm Twins LocallyGroupedAttn (LSA): ws×ws windows, bottom/right zero padding"

    def equivalent(self, module, parent, call, model) -> Equivalent:
        dim, heads, ws = module.qkv.in_features, int(module.num_heads), int(module.ws)
        if ws <= 1:
            raise Unsupported(f"ws={ws}: timm's LocallyGroupedAttn asserts ws > 1")
        spec = {"name": "timm_twins_lsa", "heads": heads,
                "projections": {"layout": "qkv", "bias": linear_bias(module.qkv),
                                "out_bias": linear_bias(module.proj)},
                "parameterization": {"kind": "additive", "terms": ["query_key"]},
                "normalization": {"kind": "softmax"},
                "application": {"kind": "window", "size": ws, "padding": "pad_unmasked"},
                "dropout": {"attention": dropout_of(module),
                            "projection": dropout_of(module, "proj_drop")}}
        return Equivalent(spec, dim, heads, size_argument(call, keyword="size"),
                          "timm.twins_lsa")
