"""timm.maxvit — timm's MaxxVit `AttentionCl` inside a `PartitionAttentionCl` (MaxViT's
block and grid attention, channels-last), replaced at the block's `_partition_attn(x)`:
the P×P block (window) or grid partition is the spec's application, RelPosBias its
relative position bias (timm's *_rw_* models: head_first=True, rel_pos_type 'bias')."""
from __future__ import annotations

from torch import nn

from .base import (Equivalent, ForeignKind, Unsupported, dropout_of, linear_bias, register,
                   axes, tensor_grid)


@register
class TimmMaxVitAttention(ForeignKind):
    name = "timm.maxvit"
    classes = ("AttentionCl",)
    convention = "bhwc"
    doc = ("timm MaxxVit AttentionCl of a PartitionAttentionCl (channels-last): P×P block "
           "or grid attention with RelPosBias")

    def claims(self, module, parent):
        return (type(module).__name__ == "AttentionCl" and parent is not None
                and callable(getattr(parent, "_partition_attn", None))
                and getattr(parent, "attn", None) is module)

    def site(self, module, parent, name):
        return parent, "_partition_attn"

    def equivalent(self, module, parent, call, model) -> Equivalent:
        rel = getattr(module, "rel_pos", None)
        if rel is None or type(rel).__name__ != "RelPosBias":
            raise Unsupported(f"its relative position module is {type(rel).__name__}; the "
                              "timm.maxvit layout reads RelPosBias (rel_pos_type 'bias'): "
                              "RelPosBiasTf (the *_tf_* ports) and RelPosMlp (*_rmlp_*) are "
                              "not yet converted")
        if not getattr(module, "head_first", True):
            raise Unsupported("head_first=False (the TF-ported layout) is not yet converted")
        if getattr(rel, "prefix_tokens", 0):
            raise Unsupported("its RelPosBias has prefix tokens")
        dim, heads = module.qkv.in_features, int(module.num_heads)
        if module.qkv.out_features != 3 * dim or module.proj.in_features != dim \
                or module.proj.out_features != dim:
            raise Unsupported(f"its attention width ({module.qkv.out_features // 3}) or output "
                              f"width differs from its input width ({dim})")
        size = axes(parent.partition_size)      # [rows, columns]: (7, 10) at 224×320
        application = ({"kind": "window", "size": size} if parent.partition_block
                       else {"kind": "grid", "size": size})
        x = call.input
        spec = {"name": f"timm_maxvit_{'block' if parent.partition_block else 'grid'}",
                "heads": heads,
                "projections": {"layout": "qkv", "bias": linear_bias(module.qkv),
                                "out_bias": linear_bias(module.proj)},
                "parameterization": {"kind": "additive",
                                     "terms": ["query_key", "rel_pos_bias"],
                                     "rel_pos_orientation": "i_minus_j"},
                "normalization": {"kind": "softmax"}, "application": application,
                "dropout": {"attention": dropout_of(module),
                            "projection": dropout_of(module, "proj_drop")}}
        return Equivalent(spec, dim, heads, tensor_grid(x), "timm.maxvit")

    def replacement(self, compiled, module, model):
        return compiled

    def install(self, parent: nn.Module, name: str, replacement: nn.Module) -> None:
        import types
        parent.attn = replacement
        parent._partition_attn = types.MethodType(lambda self, x: self.attn(x), parent)
