"""timm.efficientformer — timm's EfficientFormer `Attention` (its last stage's flat blocks,
(B, N, C) tokens of a square grid): global attention with narrow keys (key_dim per head),
values attn_ratio times as wide (v_width), a learned bias per |offset| per head, and the
output projection from the value width back to the model's."""
from __future__ import annotations

from fractions import Fraction

from torch import nn

from .base import Call, Equivalent, ForeignKind, Unsupported, register
from .conventions import token_grid


def width_ratio(width: int, dim: int) -> dict:
    """{num, den} with dim // den · num == width (a qk_width / v_width)."""
    r = Fraction(width, dim)
    return {"num": r.numerator, "den": r.denominator}


@register
class TimmEfficientFormerAttention(ForeignKind):
    name = "timm.efficientformer"
    classes = ("Attention",)
    convention = "bnc"
    doc = ("timm EfficientFormer Attention: global attention with key_dim keys, "
           "attn_ratio-wide values and a bias per |offset|")

    def claims(self, module, parent):
        return (type(module).__name__ == "Attention"
                and isinstance(getattr(module, "qkv", None), nn.Linear)
                and isinstance(getattr(module, "attention_biases", None), nn.Parameter)
                and hasattr(module, "val_dim"))

    def equivalent(self, module, parent, call: Call, model) -> Equivalent:
        heads, kd, vd = int(module.num_heads), int(module.key_dim), int(module.val_dim)
        dim = module.qkv.in_features
        if module.qkv.out_features != heads * (2 * kd + vd) \
                or module.proj.in_features != heads * vd or module.proj.out_features != dim:
            raise Unsupported("its qkv / proj widths don't match heads × (2·key_dim + val_dim)")
        grid = token_grid(int(call.input.shape[1]))
        if grid[0] * grid[1] != module.attention_biases.shape[1] or grid[0] != grid[1]:
            raise Unsupported(f"{int(call.input.shape[1])} tokens, but its biases are for "
                              f"{module.attention_biases.shape[1]} (a square grid)")
        spec = {"name": "timm_efficientformer_attention", "heads": heads,
                "projections": {"layout": "qkv", "bias": module.qkv.bias is not None,
                                "out_bias": module.proj.bias is not None,
                                "qk_width": width_ratio(heads * kd, dim),
                                "v_width": width_ratio(heads * vd, dim)},
                "parameterization": {"kind": "additive",
                                     "terms": ["query_key", "rel_pos_bias"],
                                     "rel_pos_orientation": "abs"},
                "normalization": {"kind": "softmax"}, "application": {"kind": "global"}}
        return Equivalent(spec, dim, heads, grid, "timm.efficientformer")
