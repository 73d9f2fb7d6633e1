"""timm.convit_gpsa — timm's ConViT `GPSA` (gated positional self-attention, its first
blocks, on the patch tokens of a square grid): per head, a learned gate mixes the content
softmax with the softmax of a linear map of each offset's (Δx, Δy, Δx² + Δy²)."""
from __future__ import annotations

from torch import nn

from .base import Call, Equivalent, ForeignKind, Unsupported, dropout_of, linear_bias, register
from .conventions import token_grid


@register
class TimmConvitGpsa(ForeignKind):
    name = "timm.convit_gpsa"
    classes = ("GPSA",)
    convention = "bnc"
    doc = "timm ConViT GPSA: content and positional attention mixed by a gate per head"

    def equivalent(self, module, parent, call: Call, model) -> Equivalent:
        dim, heads = int(module.dim), int(module.num_heads)
        if module.qk.out_features != 2 * dim or module.v.out_features != dim \
                or module.proj.out_features != dim:
            raise Unsupported("its qk / v / proj widths differ from its width")
        if linear_bias(module.qk) != linear_bias(module.v):
            raise Unsupported("one of its qk and v linears has a bias and the other not")
        if not isinstance(module.pos_proj, nn.Linear) or module.pos_proj.in_features != 3:
            raise Unsupported("its pos_proj is not Linear(3, heads)")
        n = int(call.input.shape[1])
        grid = token_grid(n)
        if grid[0] != grid[1]:
            raise Unsupported(f"{n} tokens are not a square grid, which its offsets assume")
        spec = {"name": "timm_convit_gpsa", "heads": heads,
                "projections": {"layout": "qkv", "bias": linear_bias(module.qk),
                                "out_bias": linear_bias(module.proj)},
                "parameterization": {"kind": "additive", "terms": ["query_key"]},
                "normalization": {"kind": "gated_positional"},
                "application": {"kind": "global"},
                "dropout": {"attention": dropout_of(module),
                            "projection": dropout_of(module, "proj_drop")}}
        return Equivalent(spec, dim, heads, grid, "timm.convit_gpsa")
