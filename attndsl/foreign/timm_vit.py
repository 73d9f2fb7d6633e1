"""timm.vit — timm's VisionTransformer `Attention` (ViT, DeiT, and every model built from
timm's vision_transformer blocks): global multi-head attention over the class / register
tokens and the patch grid, optional q/k LayerNorm."""
from __future__ import annotations

from torch import nn

from .base import (Call, Equivalent, ForeignKind, Unsupported, dropout_of, linear_bias,
                   qk_norm_of, register)
from .conventions import token_grid


@register
class TimmVitAttention(ForeignKind):
    name = "timm.vit"
    classes = ("Attention",)
    convention = "bnc"
    doc = ("timm VisionTransformer Attention: global MHSA over the class / register tokens "
           "and the grid, qk_norm")

    def claims(self, module, parent):
        # PVT-v2's Attention has separate q and kv linears, ViT's one qkv; other models'
        # classes named Attention (EfficientFormer, VOLO, LeViT) lack ViT's q/k norm slots
        return (type(module).__name__ == "Attention"
                and isinstance(getattr(module, "qkv", None), nn.Linear)
                and isinstance(getattr(module, "proj", None), nn.Linear)
                and isinstance(getattr(module, "q_norm", None), nn.Module)
                and isinstance(getattr(module, "k_norm", None), nn.Module)
                and not hasattr(module, "kv"))

    def equivalent(self, module, parent, call: Call, model) -> Equivalent:
        if getattr(module, "gate", None) is not None:
            raise Unsupported("its output is gated (gated=True: an elementwise sigmoid gate), "
                              "which the language has no axis for")
        if not isinstance(getattr(module, "norm", nn.Identity()), nn.Identity):
            raise Unsupported("scale_norm=True (a LayerNorm of the attention output before "
                              "the projection) is not in the language")
        dim, heads = module.qkv.in_features, int(module.num_heads)
        if getattr(module, "attn_dim", dim) != dim or module.proj.out_features != dim:
            raise Unsupported(f"its attention width ({module.attn_dim}) or output width "
                              f"({module.proj.out_features}) differs from its input width "
                              f"({dim})")
        projections = {"layout": "qkv", "bias": linear_bias(module.qkv),
                       "out_bias": linear_bias(module.proj)}
        qk_norm = qk_norm_of(module)
        if qk_norm is not None:
            projections["qk_norm"] = qk_norm
        prefix = int(getattr(model, "num_prefix_tokens", 0) or 0)
        grid = token_grid(int(call.input.shape[1]) - prefix)
        spec = {"name": "timm_vit_attention", "heads": heads, "projections": projections,
                "parameterization": {"kind": "additive", "terms": ["query_key"]},
                "normalization": {"kind": "softmax"}, "application": {"kind": "global"},
                "dropout": {"attention": dropout_of(module),
                            "projection": dropout_of(module, "proj_drop")}}
        notes = (f"{prefix} prefix token(s) attended like the grid's",) if prefix else ()
        return Equivalent(spec, dim, heads, grid, "timm.vit", notes)

    def replacement(self, compiled, module, model):
        from .conventions import Tokens
        return Tokens(compiled, prefix=int(getattr(model, "num_prefix_tokens", 0) or 0))
