"""timm.xcit — timm's XCiT `XCA`, cross-covariance attention: each head's channels attend
to each other over the patch tokens (XCiT's class token joins only in its class-attention
layers, which are not in the language yet), with l2-normalized q and k times a learned
per-head temperature."""
from __future__ import annotations

import math

from .base import Call, Equivalent, ForeignKind, Unsupported, dropout_of, linear_bias, register


@register
class TimmXca(ForeignKind):
    name = "timm.xcit"
    classes = ("XCA",)
    convention = "bnc"
    doc = ("timm XCiT XCA: channel attention over the patch tokens (cosine logits times a "
           "per-head temperature)")

    def equivalent(self, module, parent, call: Call, model) -> Equivalent:
        dim, heads = module.qkv.in_features, int(module.num_heads)
        if module.qkv.out_features != 3 * dim or module.proj.out_features != dim:
            raise Unsupported(f"its attention width ({module.qkv.out_features // 3}) or output "
                              f"width ({module.proj.out_features}) differs from its input "
                              f"width ({dim})")
        if tuple(module.temperature.shape) != (heads, 1, 1):
            raise Unsupported(f"its temperature has shape {tuple(module.temperature.shape)}, "
                              f"not ({heads}, 1, 1)")
        x = call.args[0] if call.args else call.kwargs["x"]
        n = int(x.shape[1])            # the patch tokens (the attention reads no positions)
        side = math.isqrt(n)
        grid = (side, side) if side * side == n else (1, n)
        spec = {"name": "timm_xcit_xca", "heads": heads,
                "projections": {"layout": "qkv", "bias": linear_bias(module.qkv),
                                "out_bias": linear_bias(module.proj)},
                "parameterization": {"kind": "additive", "terms": ["query_key"],
                                     "similarity": {"kind": "cosine", "init": 1.0,
                                                    "scale_parameter": "linear"}},
                "normalization": {"kind": "softmax"}, "application": {"kind": "channels"},
                "dropout": {"attention": dropout_of(module),
                            "projection": dropout_of(module, "proj_drop")}}
        return Equivalent(spec, dim, heads, grid, "timm.xcit")

    def replacement(self, compiled, module, model):
        from .conventions import Tokens
        return Tokens(compiled, prefix=0)
