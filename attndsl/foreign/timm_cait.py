"""timm.cait — timm's CaiT `TalkingHeadAttn`: global multi-head attention over the patch
tokens (CaiT's class token joins only in the class-attention layers, ClassAttn, which
attend from the class token alone and are not in the language yet) with talking heads:
the logits and the weights mixed across the heads before and after the softmax."""
from __future__ import annotations

import math

from torch import nn

from .base import Call, Equivalent, ForeignKind, Unsupported, dropout_of, linear_bias, register


@register
class TimmCaitTalkingHeadAttn(ForeignKind):
    name = "timm.cait"
    classes = ("TalkingHeadAttn",)
    convention = "bnc"
    doc = ("timm CaiT TalkingHeadAttn: global MHSA over the patch tokens with talking heads "
           "(G×G maps across the heads before and after the softmax)")

    def equivalent(self, module, parent, call: Call, model) -> Equivalent:
        dim, heads = module.qkv.in_features, int(module.num_heads)
        if module.qkv.out_features != 3 * dim or module.proj.out_features != dim:
            raise Unsupported(f"its attention width ({module.qkv.out_features // 3}) or output "
                              f"width ({module.proj.out_features}) differs from its input "
                              f"width ({dim})")
        maps = (module.proj_l, module.proj_w)
        if any(not isinstance(p, nn.Linear) or p.in_features != heads
               or p.out_features != heads for p in maps):
            raise Unsupported("its proj_l / proj_w are not Linear(heads, heads)")
        if (maps[0].bias is None) != (maps[1].bias is None):
            raise Unsupported("one of proj_l / proj_w has a bias and the other not")
        x = call.args[0] if call.args else call.kwargs["x"]
        n = int(x.shape[1])                 # the patch tokens only: no class token here
        side = math.isqrt(n)
        grid = (side, side) if side * side == n else (1, n)
        spec = {"name": "timm_cait_talking_head_attention", "heads": heads,
                "projections": {"layout": "qkv", "bias": linear_bias(module.qkv),
                                "out_bias": linear_bias(module.proj)},
                "parameterization": {"kind": "additive", "terms": ["query_key"]},
                "normalization": {"kind": "talking_heads", "bias": maps[0].bias is not None},
                "application": {"kind": "global"},
                "dropout": {"attention": dropout_of(module),
                            "projection": dropout_of(module, "proj_drop")}}
        return Equivalent(spec, dim, heads, grid, "timm.cait")

    def replacement(self, compiled, module, model):
        from .conventions import Tokens
        return Tokens(compiled, prefix=0)
