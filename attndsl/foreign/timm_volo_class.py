"""timm.volo_class — timm's VOLO `ClassAttention` (its post-network class-attention
layers): the class token alone queries the class token and every patch, q from `q`, k and
v from the fused `kv`; the output is the class token's only, (B, 1 + N, C) → (B, 1, C).
Called as CaiT's ClassAttn (timm.cait_class)."""
from __future__ import annotations

from .base import Call, Equivalent, Unsupported, register
from .timm_cait_class import TimmClassAttn, class_attention


@register
class TimmVoloClassAttention(TimmClassAttn):
    name = "timm.volo_class"
    classes = ("ClassAttention",)
    doc = ("timm VOLO ClassAttention: the class token alone queries every token (fused kv); "
           "only it gets an output")

    def equivalent(self, module, parent, call: Call, model) -> Equivalent:
        q, kv, proj = module.q, module.kv, module.proj
        dim = q.in_features
        if q.out_features != dim or kv.out_features != 2 * dim or proj.out_features != dim:
            raise Unsupported(f"its head_dim × heads ({q.out_features}) differs from its "
                              f"width ({dim})")
        return class_attention(module, call, (q, kv), self.name)
