"""timm.eva — timm's EVA / EVA-02 `EvaAttention` (fused qkv): global multi-head attention
over the class tokens and the grid, q and v biases, optional q/k LayerNorm, and the model's
2-D rotary position embedding (`RotaryEmbeddingCat`, passed to every block as `rope`)
rotating the grid tokens' q and k (projections.rope: the spec computes the same angles)."""
from __future__ import annotations

import torch
from torch import nn

from .base import (Call, Equivalent, ForeignKind, Unsupported, dropout_of, linear_bias,
                   qk_norm_of, register)
from .conventions import Tokens, token_grid


@register
class TimmEvaAttention(ForeignKind):
    name = "timm.eva"
    classes = ("EvaAttention",)
    convention = "bnc"
    doc = ("timm EVA / EVA-02 EvaAttention: global MHSA over the class tokens and the grid, "
           "2-D rotary embedding of the grid tokens' q and k; timm builds the rotary table "
           "in float32 (attndsl in the module's dtype), so a float64 model agrees to its "
           "rounding, ~3e-8")
    # measured ≤ 3e-8 relative per module on eva02_tiny_patch14_224 (1.8e-9 for the whole
    # model); a wrong band, scale or pair layout is off by 1e-2 or more
    tolerance = 1e-6

    def equivalent(self, module, parent, call: Call, model) -> Equivalent:
        if getattr(module, "qkv", None) is None:
            raise Unsupported("separate q_proj / k_proj / v_proj (qkv_fused=False) are not "
                              "converted yet; the fused qkv is")
        if getattr(module, "gate", None) is not None:
            raise Unsupported("its output is gated (gated=True), which the language has no "
                              "axis for")
        if not isinstance(getattr(module, "norm", nn.Identity()), nn.Identity):
            raise Unsupported("scale_norm=True (a LayerNorm of the attention output before "
                              "the projection) is not in the language")
        dim, heads = module.qkv.in_features, int(module.num_heads)
        if module.qkv.out_features != 3 * dim or module.proj.out_features != dim:
            raise Unsupported(f"its attention width ({module.qkv.out_features // 3}) or output "
                              f"width differs from its input width ({dim})")
        if module.q_bias is None:
            bias = False
        elif torch.count_nonzero(module.k_bias):
            raise Unsupported("its k_bias buffer is not zero")
        else:
            bias = "no_key"
        projections = {"layout": "qkv", "bias": bias, "out_bias": linear_bias(module.proj)}
        qk_norm = qk_norm_of(module)
        if qk_norm is not None:
            projections["qk_norm"] = qk_norm
        prefix = int(getattr(module, "num_prefix_tokens", 0) or 0)
        grid = token_grid(int(call.input.shape[1]) - prefix)
        rope_tensor = call.kwargs.get("rope", call.args[1] if len(call.args) > 1 else None)
        notes = [f"{prefix} prefix token(s) attended like the grid's"] if prefix else []
        if rope_tensor is not None:
            projections["rope"] = rope_of(model, module)
            if grid[0] != grid[1]:
                raise Unsupported(f"{int(call.input.shape[1]) - prefix} grid tokens are not a "
                                  "square, and the rotary angles need the grid's rows and "
                                  "columns")
            notes.append("rotary table computed from the spec (timm's: float32)")
        spec = {"name": "timm_eva_attention", "heads": heads, "projections": projections,
                "parameterization": {"kind": "additive", "terms": ["query_key"]},
                "normalization": {"kind": "softmax"}, "application": {"kind": "global"},
                "dropout": {"attention": dropout_of(module),
                            "projection": dropout_of(module, "proj_drop")}}
        return Equivalent(spec, dim, heads, grid, "timm.eva", tuple(notes))

    def replacement(self, compiled, module, model):
        return RotaryTokens(compiled, prefix=int(getattr(module, "num_prefix_tokens", 0) or 0))


def rope_of(model: nn.Module, module: nn.Module) -> dict:
    """projections.rope for the model's RotaryEmbeddingCat ('cat': EVA-02), or Unsupported
    naming what differs."""
    rope = getattr(model, "rope", None)
    if type(rope).__name__ != "RotaryEmbeddingCat":
        raise Unsupported(f"its rotary embedding is {type(rope).__name__} (rope_type "
                          "'mixed', 'dinov3' and 'mrope' are not in the language; 'cat' is)")
    differs = [what for what, bad in (
        ("pixel frequency bands (in_pixels=True)", getattr(rope, "in_pixels", False)),
        ("a grid offset", float(getattr(rope, "grid_offset", 0.0) or 0.0) != 0.0),
        ("xy grid indexing", getattr(rope, "grid_indexing", "ij") != "ij"),
        ("coordinate augmentation", bool(getattr(rope, "aug_active", False))),
    ) if bad]
    if differs:
        raise Unsupported(f"its rotary embedding has {', '.join(differs)}: the language's "
                          "axial rope has inverse-frequency bands on integer positions")
    out = {"kind": "axial", "temperature": float(rope.temperature),
           "pairs": "halves" if getattr(module, "rotate_half", False) else "interleaved"}
    ref = getattr(rope, "ref_feat_shape", None)
    if ref is not None:
        out["reference_grid"] = [int(ref[0]), int(ref[1])]
    return out


class RotaryTokens(Tokens):
    """Tokens for a block that hands its attention the model's rotary table: the compiled
    module computes the same angles from its spec, so the table is accepted and not read."""

    def forward(self, x, rope=None, attn_mask=None, is_causal: bool = False):
        return super().forward(x, attn_mask=attn_mask, is_causal=is_causal)
