"""timm.swin_v2 — timm's SwinTransformerV2 `WindowAttention`, told from v1's same-named
class by its continuous position bias (`cpb_mlp`) and `logit_scale`: scaled cosine
attention in (shifted) windows at its block's `_attn(x)`."""
from __future__ import annotations

from torch import nn

from .base import Equivalent, Unsupported, axes, dropout_of, register
from .timm_swin import SwinBlockKind


@register
class TimmSwinV2WindowAttention(SwinBlockKind):
    name = "timm.swin_v2"
    doc = ("timm SwinTransformerV2 WindowAttention at its block: scaled cosine attention, "
           "continuous position bias (log-spaced MLP), windows, shift; timm's coordinate "
           "table is a float32 buffer (attndsl's is computed in the module's dtype), so a "
           "float64 model agrees to its rounding, ~1e-8")
    # timm builds relative_coords_table in float32; in float64 the swap differs by that
    # rounding (measured 5e-9 relative on swinv2_tiny_window8_256; 1e-15 with the exact
    # table put in timm's buffer): a wrong window or shift is off by 1e-2 or more
    tolerance = 1e-7

    def claims(self, module, parent):
        return (super().claims(module, parent) and hasattr(module, "cpb_mlp")
                and hasattr(module, "logit_scale"))

    def equivalent(self, module, parent, call, model) -> Equivalent:
        window, shift, grid = self.geometry(module, parent, call)
        dim, heads = module.qkv.in_features, int(module.num_heads)
        mlp = module.cpb_mlp
        hidden = mlp[0].out_features if isinstance(mlp, nn.Sequential) else None
        if hidden is None or len(mlp) != 3 or not isinstance(mlp[1], nn.ReLU):
            raise Unsupported("its cpb_mlp is not Linear(2, hidden) → ReLU → Linear(hidden, "
                              "heads)")
        pretrained = axes(getattr(module, "pretrained_window_size", (0, 0)))
        q_bias = getattr(module, "q_bias", None) is not None
        if module.qkv.bias is not None or (q_bias != (getattr(module, "v_bias", None) is not None)):
            raise Unsupported("its q/k/v biases are not timm's q_bias + v_bias pair")
        spec = {"name": "timm_swin_v2_window_attention", "heads": heads,
                "projections": {"layout": "qkv", "bias": "no_key" if q_bias else False,
                                "out_bias": module.proj.bias is not None},
                "parameterization": {"kind": "additive",
                                     "terms": ["query_key", {"kind": "cpb", "hidden": hidden,
                                                             "pretrained_window": pretrained}],
                                     "similarity": {"kind": "cosine", "max_scale": 100},
                                     "rel_pos_orientation": "i_minus_j"},
                "normalization": {"kind": "softmax"},
                "application": {"kind": "window", "size": window, "shift": shift,
                                "padding": "pad_unmasked", "shift_order": "roll_then_pad"},
                "dropout": {"attention": dropout_of(module),
                            "projection": dropout_of(module, "proj_drop")}}
        return Equivalent(spec, dim, heads, grid, "timm.swin_v2")
