"""timm.volo — timm's VOLO `Attention`: plain multi-head self-attention over all the tokens
of a channels-last map (VOLO's stages after the outlooker), called as f(x) with x
(B, H, W, C). VOLO's `OutlookAttention` is not in the language (docs/timm.md says what it
needs); its `ClassAttention` is timm.volo_class."""
from __future__ import annotations

from torch import nn

from .base import (Equivalent, ForeignKind, Unsupported, dropout_of, linear_bias, qkv_widths,
                   register, tensor_grid)


@register
class TimmVoloAttention(ForeignKind):
    name = "timm.volo"
    classes = ("Attention",)
    convention = "bhwc"
    doc = "timm VOLO Attention: global MHSA over a channels-last map"

    def claims(self, module, parent):
        # the same attributes as an older timm ViT's Attention (before q/k norms), which is
        # called on tokens: VOLO's is told apart by the module that defines it
        return (type(module).__name__ == "Attention"
                and type(module).__module__ == "timm.models.volo"
                and isinstance(getattr(module, "qkv", None), nn.Linear)
                and isinstance(getattr(module, "proj", None), nn.Linear))

    def equivalent(self, module, parent, call, model) -> Equivalent:
        x = call.input
        if x.dim() != 4:
            raise Unsupported(f"it was called on a {x.dim()}-D input; VOLO's Attention takes "
                              "a (B, H, W, C) map")
        dim, heads = qkv_widths(module)
        spec = {"name": "timm_volo_attention", "heads": heads,
                "projections": {"layout": "qkv", "bias": linear_bias(module.qkv),
                                "out_bias": linear_bias(module.proj)},
                "parameterization": {"kind": "additive", "terms": ["query_key"]},
                "normalization": {"kind": "softmax"}, "application": {"kind": "global"},
                "dropout": {"attention": dropout_of(module),
                            "projection": dropout_of(module, "proj_drop")}}
        return Equivalent(spec, dim, heads, tensor_grid(x), "timm.vit")
