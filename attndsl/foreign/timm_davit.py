"""timm.davit — timm's DaViT attention, both halves of its dual attention:

* `ChannelAttention` (channel group attention): softmax((s·k)ᵀ v) over each head's
  channels, applied to q — the channels application with the roles of q, k and v permuted
  (the layout timm.davit_channel reorders the qkv rows: attndsl's q, k, v are DaViT's k, v,
  q), dot similarity, s = d^−½;
* `WindowAttention` (spatial window attention, no position bias): its block partitions the
  map into windows and calls it on each window's tokens, so it is global attention over
  one window's ws² tokens."""
from __future__ import annotations

import math

from torch import nn

from .base import Call, Equivalent, ForeignKind, Unsupported, linear_bias, register


def _tokens_grid(call: Call) -> tuple[int, int]:
    x = call.args[0] if call.args else call.kwargs["x"]
    n = int(x.shape[1])
    side = math.isqrt(n)
    return (side, side) if side * side == n else (1, n)


def _widths(module) -> tuple[int, int]:
    dim, heads = module.qkv.in_features, int(module.num_heads)
    if module.qkv.out_features != 3 * dim or module.proj.out_features != dim:
        raise Unsupported(f"its attention width ({module.qkv.out_features // 3}) or output "
                          f"width ({module.proj.out_features}) differs from its input width "
                          f"({dim})")
    return dim, heads


@register
class TimmDavitChannelAttention(ForeignKind):
    name = "timm.davit_channel"
    classes = ("ChannelAttention",)
    convention = "bnc"
    doc = ("timm DaViT ChannelAttention: channel attention softmax((s·k)ᵀv) applied to q "
           "(the channels application, q/k/v roles permuted by the layout)")

    def claims(self, module, parent):
        return (super().claims(module, parent) and isinstance(getattr(module, "qkv", None),
                                                              nn.Linear)
                and isinstance(getattr(module, "proj", None), nn.Linear))

    def equivalent(self, module, parent, call: Call, model) -> Equivalent:
        dim, heads = _widths(module)
        spec = {"name": "timm_davit_channel_attention", "heads": heads,
                "projections": {"layout": "qkv", "bias": linear_bias(module.qkv),
                                "out_bias": linear_bias(module.proj)},
                "parameterization": {"kind": "additive", "terms": ["query_key"]},
                "normalization": {"kind": "softmax"}, "application": {"kind": "channels"}}
        return Equivalent(spec, dim, heads, _tokens_grid(call), "timm.davit_channel",
                          ("q, k, v are DaViT's k, v, q",))

    def replacement(self, compiled, module, model):
        from .conventions import Tokens
        return Tokens(compiled, prefix=0)


@register
class TimmDavitWindowAttention(ForeignKind):
    name = "timm.davit_window"
    classes = ("WindowAttention",)
    convention = "bnc"
    doc = ("timm DaViT WindowAttention: global attention over one window's tokens (its "
           "block partitions the map)")

    def claims(self, module, parent):
        # Swin's WindowAttention has a position bias (v1: a table, v2: cpb_mlp) and a block
        # whose _attn owns the partition; DaViT's has neither
        return (super().claims(module, parent)
                and not hasattr(module, "relative_position_bias_table")
                and not hasattr(module, "cpb_mlp")
                and not callable(getattr(parent, "_attn", None))
                and isinstance(getattr(module, "qkv", None), nn.Linear)
                and isinstance(getattr(module, "proj", None), nn.Linear))

    def equivalent(self, module, parent, call: Call, model) -> Equivalent:
        dim, heads = _widths(module)
        spec = {"name": "timm_davit_window_attention", "heads": heads,
                "projections": {"layout": "qkv", "bias": linear_bias(module.qkv),
                                "out_bias": linear_bias(module.proj)},
                "parameterization": {"kind": "additive", "terms": ["query_key"]},
                "normalization": {"kind": "softmax"}, "application": {"kind": "global"}}
        return Equivalent(spec, dim, heads, _tokens_grid(call), "timm.vit",
                          ("called on one window's tokens: global attention over them",))

    def replacement(self, compiled, module, model):
        from .conventions import Tokens
        return Tokens(compiled, prefix=0)
