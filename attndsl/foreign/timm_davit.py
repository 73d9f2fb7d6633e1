"""timm.davit — timm's DaViT attention, both halves of its dual attention:

* `ChannelAttention` (channel group attention): softmax((s·k)ᵀ v) over each head's
  channels, applied to q — the channels application with the roles of q, k and v permuted
  (the layout timm.davit_channel reorders the qkv rows: attndsl's q, k, v are DaViT's k, v,
  q), dot similarity, s = d^−½;
* `WindowAttention` (spatial window attention, no position bias): its block partitions the
  map into windows and calls it on each window's tokens, so it is global attention over
  one window's ws² tokens."""
from __future__ import annotations

from torch import nn

from .base import Call, Equivalent, ForeignKind, linear_bias, qkv_widths, register
from .conventions import token_grid


class DavitKind(ForeignKind):
    """Both halves: softmax attention of a fused qkv and a proj over the tokens it is given
    (called on (B, N, C)); they differ in the application and the layout."""

    convention = "bnc"
    spec_name = application = layout = note = ""

    def claims(self, module, parent):
        return (super().claims(module, parent)
                and isinstance(getattr(module, "qkv", None), nn.Linear)
                and isinstance(getattr(module, "proj", None), nn.Linear))

    def equivalent(self, module, parent, call: Call, model) -> Equivalent:
        dim, heads = qkv_widths(module)
        spec = {"name": self.spec_name, "heads": heads,
                "projections": {"layout": "qkv", "bias": linear_bias(module.qkv),
                                "out_bias": linear_bias(module.proj)},
                "parameterization": {"kind": "additive", "terms": ["query_key"]},
                "normalization": {"kind": "softmax"},
                "application": {"kind": self.application}}
        return Equivalent(spec, dim, heads, token_grid(int(call.input.shape[1])), self.layout,
                          (self.note,))


@register
class TimmDavitChannelAttention(DavitKind):
    name = "timm.davit_channel"
    classes = ("ChannelAttention",)
    doc = ("timm DaViT ChannelAttention: channel attention softmax((s·k)ᵀv) applied to q "
           "(the channels application, q/k/v roles permuted by the layout)")
    spec_name, application = "timm_davit_channel_attention", "channels"
    layout, note = "timm.davit_channel", "q, k, v are DaViT's k, v, q"


@register
class TimmDavitWindowAttention(DavitKind):
    name = "timm.davit_window"
    classes = ("WindowAttention",)
    doc = ("timm DaViT WindowAttention: global attention over one window's tokens (its "
           "block partitions the map)")
    spec_name, application, layout = "timm_davit_window_attention", "global", "timm.vit"
    note = "called on one window's tokens: global attention over them"

    def claims(self, module, parent):
        # Swin's WindowAttention has a position bias (v1: a table, v2: cpb_mlp) and a block
        # whose _attn owns the partition; DaViT's has neither
        return (super().claims(module, parent)
                and not hasattr(module, "relative_position_bias_table")
                and not hasattr(module, "cpb_mlp")
                and not callable(getattr(parent, "_attn", None)))
