"""timm.cait — timm's CaiT `TalkingHeadAttn`: global multi-head attention over the patch
tokens (CaiT's class token joins only in the class-attention layers: timm.cait_class) with
talking heads:
the logits and the weights mixed across the heads before and after the softmax."""
from __future__ import annotations

from torch import nn

from .base import (Call, Equivalent, ForeignKind, Unsupported, dropout_of, linear_bias,
                   qkv_widths, register)
from .conventions import token_grid


@register
class TimmCaitTalkingHeadAttn(ForeignKind):
    name = "timm.cait"
    classes = ("TalkingHeadAttn",)
    convention = "bnc"        # the patch tokens only: no class token in these layers
    doc = ("timm CaiT TalkingHeadAttn: global MHSA over the patch tokens with talking heads "
           "(G×G maps across the heads before and after the softmax)")

    def equivalent(self, module, parent, call: Call, model) -> Equivalent:
        dim, heads = qkv_widths(module)
        maps = (module.proj_l, module.proj_w)
        if any(not isinstance(p, nn.Linear) or p.in_features != heads
               or p.out_features != heads for p in maps):
            raise Unsupported("its proj_l / proj_w are not Linear(heads, heads)")
        if (maps[0].bias is None) != (maps[1].bias is None):
            raise Unsupported("one of proj_l / proj_w has a bias and the other not")
        spec = {"name": "timm_cait_talking_head_attention", "heads": heads,
                "projections": {"layout": "qkv", "bias": linear_bias(module.qkv),
                                "out_bias": linear_bias(module.proj)},
                "parameterization": {"kind": "additive", "terms": ["query_key"]},
                "normalization": {"kind": "talking_heads", "bias": maps[0].bias is not None},
                "application": {"kind": "global"},
                "dropout": {"attention": dropout_of(module),
                            "projection": dropout_of(module, "proj_drop")}}
        return Equivalent(spec, dim, heads, token_grid(int(call.input.shape[1])), "timm.cait")

