"""timm.xcit — timm's XCiT `XCA`, cross-covariance attention: each head's channels attend
to each other over the patch tokens (XCiT's class token joins only in its class-attention
layers, which are not in the language yet), with l2-normalized q and k times a learned
per-head temperature."""
from __future__ import annotations

from .base import (Call, Equivalent, ForeignKind, Unsupported, dropout_of, linear_bias,
                   qkv_widths, register)
from .conventions import token_grid


@register
class TimmXca(ForeignKind):
    name = "timm.xcit"
    classes = ("XCA",)
    convention = "bnc"        # the patch tokens (the attention reads no positions)
    doc = ("timm XCiT XCA: channel attention over the patch tokens (cosine logits times a "
           "per-head temperature)")

    def equivalent(self, module, parent, call: Call, model) -> Equivalent:
        dim, heads = qkv_widths(module)
        if tuple(module.temperature.shape) != (heads, 1, 1):
            raise Unsupported(f"its temperature has shape {tuple(module.temperature.shape)}, "
                              f"not ({heads}, 1, 1)")
        spec = {"name": "timm_xcit_xca", "heads": heads,
                "projections": {"layout": "qkv", "bias": linear_bias(module.qkv),
                                "out_bias": linear_bias(module.proj)},
                "parameterization": {"kind": "additive", "terms": ["query_key"],
                                     "similarity": {"kind": "cosine", "init": 1.0,
                                                    "scale_parameter": "linear"}},
                "normalization": {"kind": "softmax"}, "application": {"kind": "channels"},
                "dropout": {"attention": dropout_of(module),
                            "projection": dropout_of(module, "proj_drop")}}
        return Equivalent(spec, dim, heads, token_grid(int(call.input.shape[1])), "timm.xcit")
