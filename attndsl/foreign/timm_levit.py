"""timm.levit — timm's LeViT `Attention` (use_conv=False: (B, N, C) tokens of a square
grid): global attention with key_dim keys and attn_ratio-wide values (qkv a Linear +
BatchNorm, folded), a learned bias per |offset| per head, Hardswish on the heads, then the
output projection (Linear + BatchNorm, folded). Eval mode: the BatchNorms are folded with
their running statistics. LeViT's `AttentionDownsample` (queries from every second token)
is not in the language (docs/timm.md)."""
from __future__ import annotations

from torch import nn

from .base import Call, Equivalent, ForeignKind, Unsupported, register
from .conventions import token_grid
from .timm_efficientformer import width_ratio


def _linear_norm(module) -> bool:
    return isinstance(getattr(module, "linear", None), nn.Linear) \
        and isinstance(getattr(module, "bn", None), nn.BatchNorm1d)


@register
class TimmLevitAttention(ForeignKind):
    name = "timm.levit"
    classes = ("Attention",)
    convention = "bnc"
    doc = ("timm LeViT Attention (linear form, eval mode): global attention with key_dim "
           "keys, attn_ratio-wide values, a bias per |offset|, Hardswish before proj "
           "(BatchNorms folded)")

    def claims(self, module, parent):
        return (type(module).__name__ == "Attention" and _linear_norm(getattr(module, "qkv", None))
                and isinstance(getattr(module, "attention_biases", None), nn.Parameter))

    def equivalent(self, module, parent, call: Call, model) -> Equivalent:
        if getattr(module, "use_conv", False):
            raise Unsupported("use_conv=True (the levit_conv_* models: 1×1 convs on "
                              "channels-first maps) is not converted yet")
        if module.training:
            raise Unsupported("in training mode its BatchNorms use batch statistics; the "
                              "swap folds them as in eval mode (call model.eval() first)")
        act, ln = getattr(module.proj, "act", None), getattr(module.proj, "ln", None)
        if not isinstance(act, nn.Hardswish) or not _linear_norm(ln):
            raise Unsupported("its proj is not Hardswish, then Linear + BatchNorm")
        if any(bn.eps != 1e-5 for bn in (module.qkv.bn, ln.bn)):
            raise Unsupported("a BatchNorm eps other than 1e-5 (the layout folds with it)")
        heads, kd, vd = int(module.num_heads), int(module.key_dim), int(module.val_dim)
        dim = module.qkv.linear.in_features
        if dim % heads:
            raise Unsupported(f"its width {dim} is not a multiple of its {heads} heads: the "
                              "language shares a branch's channels among its heads (the "
                              "smallest change: heads that need not divide the width when "
                              "qk_width and v_width size q, k and v and a projection follows)")
        if module.qkv.linear.out_features != heads * (2 * kd + vd) \
                or ln.linear.out_features != dim:
            raise Unsupported("its qkv / proj widths don't match heads × (2·key_dim + val_dim)")
        grid = token_grid(int(call.input.shape[1]))
        if grid[0] != grid[1] or grid[0] * grid[1] != module.attention_biases.shape[1]:
            raise Unsupported(f"{int(call.input.shape[1])} tokens, but its biases are for "
                              f"{module.attention_biases.shape[1]} (a square grid)")
        projections = {"layout": "qkv", "bias": True, "out": False,
                       "qk_width": width_ratio(heads * kd, dim)}
        if heads * vd != dim:
            projections["v_width"] = width_ratio(heads * vd, dim)
        spec = {"name": "timm_levit_attention", "heads": heads, "projections": projections,
                "parameterization": {"kind": "additive",
                                     "terms": ["query_key", "rel_pos_bias"],
                                     "rel_pos_orientation": "abs"},
                "normalization": {"kind": "softmax"}, "application": {"kind": "global"},
                "merge": {"activation": "hardswish", "out": True}}
        return Equivalent(spec, dim, heads, grid, "timm.levit", ("BatchNorms folded (eval mode)",))
