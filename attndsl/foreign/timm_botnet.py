"""timm.botnet — timm's `BottleneckAttn` (BoTNet, byoanet's botnet* blocks): global
multi-head attention over a channels-first feature map with height / width relative
logits (PosEmbedRel, tables sized by the grid), a 1×1-conv qkv and no output projection.
The stride-2 form pools the output after the attention (AvgPool2d(2)), which the language
has no axis for: refused with that reason."""
from __future__ import annotations

from torch import nn

from .base import Equivalent, ForeignKind, Unsupported, equal_head_widths, register


@register
class TimmBottleneckAttn(ForeignKind):
    name = "timm.botnet"
    classes = ("BottleneckAttn",)
    convention = "bchw"
    doc = ("timm BottleneckAttn, stride 1: global MHSA with height / width relative logits "
           "(channels-first, no output projection)")

    def equivalent(self, module, parent, call, model) -> Equivalent:
        if not isinstance(getattr(module, "pool", nn.Identity()), nn.Identity):
            raise Unsupported("stride 2: the output is average-pooled 2×2 after the "
                              "attention, and the language has no pooling after attention")
        heads = int(module.num_heads)
        dk, dv = int(module.dim_head_qk), int(module.dim_head_v)
        dim = module.qkv.in_channels
        equal_head_widths(heads, dk, dv, dim)
        x = call.input
        grid = (int(x.shape[2]), int(x.shape[3]))
        table = (int(module.pos_embed.height), int(module.pos_embed.width))
        if grid != table:
            raise Unsupported(f"its tables are for a {table[0]}×{table[1]} grid, the input is "
                              f"{grid[0]}×{grid[1]}")
        spec = {"name": "timm_bottleneck_attention", "heads": heads,
                "projections": {"layout": "qkv", "bias": module.qkv.bias is not None,
                                "out": False},
                "parameterization": {"kind": "additive",
                                     "terms": ["query_key",
                                               {"kind": "query_rel_pos_hw",
                                                "scaled": bool(module.scale_pos_embed)}],
                                     "rel_pos_orientation": "j_minus_i"},
                "normalization": {"kind": "softmax"}, "application": {"kind": "global"}}
        return Equivalent(spec, dim, heads, grid, "timm.botnet")
