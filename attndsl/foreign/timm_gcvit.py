"""timm.gcvit — timm's GCViT `WindowAttentionGlobal` in its local blocks (use_global=False),
replaced at the block's `_window_attn(x)`: window attention without a shift and a relative
position bias (RelPosBias), the window partition the spec's. The global-query blocks
(use_global=True) take their queries from the stage's global query generator, a second
input the language has no axis for: they are left with that reason."""
from __future__ import annotations

import types

from torch import nn

from .base import (Equivalent, ForeignKind, Unsupported, axes, dropout_of, linear_bias,
                   register, tensor_grid)


@register
class TimmGcvitWindowAttention(ForeignKind):
    name = "timm.gcvit"
    classes = ("WindowAttentionGlobal",)
    convention = "bhwc"
    doc = ("timm GCViT WindowAttentionGlobal, local blocks: unshifted window attention with "
           "RelPosBias (at the block's _window_attn)")

    def claims(self, module, parent):
        return (type(module).__name__ == "WindowAttentionGlobal" and parent is not None
                and callable(getattr(parent, "_window_attn", None))
                and getattr(parent, "attn", None) is module)

    def site(self, module, parent, name):
        return parent, "_window_attn"

    def equivalent(self, module, parent, call, model) -> Equivalent:
        if module.use_global:
            raise Unsupported("its queries are the stage's global query tokens (a second "
                              "input, made by GCViT's global query generator), not "
                              "projections of its own input")
        rel = getattr(module, "rel_pos", None)
        if type(rel).__name__ != "RelPosBias" or getattr(rel, "prefix_tokens", 0):
            raise Unsupported(f"its relative position module is {type(rel).__name__} "
                              "(the layout reads RelPosBias without prefix tokens)")
        dim, heads = module.qkv.in_features, int(module.num_heads)
        if module.qkv.out_features != 3 * dim or module.proj.out_features != dim:
            raise Unsupported("its attention or output width differs from its input width")
        x = call.input
        H, W = tensor_grid(x)
        wh, ww = (int(s) for s in parent.window_size)
        if H % wh or W % ww:
            raise Unsupported(f"its {wh}×{ww} windows don't tile the {H}×{W} map")
        spec = {"name": "timm_gcvit_window", "heads": heads,
                "projections": {"layout": "qkv", "bias": linear_bias(module.qkv),
                                "out_bias": linear_bias(module.proj)},
                "parameterization": {"kind": "additive",
                                     "terms": ["query_key", "rel_pos_bias"],
                                     "rel_pos_orientation": "i_minus_j"},
                "normalization": {"kind": "softmax"},
                "application": {"kind": "window", "size": axes((wh, ww))},
                "dropout": {"attention": dropout_of(module),
                            "projection": dropout_of(module, "proj_drop")}}
        return Equivalent(spec, dim, heads, (H, W), "timm.gcvit")

    def replacement(self, compiled, module, model):
        return LocalWindowAttention(compiled)

    def install(self, parent: nn.Module, name: str, replacement: nn.Module) -> None:
        parent.attn = replacement
        parent._window_attn = types.MethodType(
            lambda self, x, q_global=None: self.attn(x), parent)


class LocalWindowAttention(nn.Module):
    """Stands in at a local block's _window_attn(x, q_global): the map (B, H, W, C) through
    the compiled window attention; the stage's global query, which a local block never
    reads, is accepted and ignored."""

    def __init__(self, attn: nn.Module):
        super().__init__()
        self.attn = attn

    def forward(self, x, q_global=None):
        return self.attn(x)
