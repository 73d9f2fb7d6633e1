"""timm.volo_class — timm's VOLO `ClassAttention` (its post-network class-attention
layers): the class token alone queries the class token and every patch, q from `q`, k and
v from the fused `kv`; the output is the class token's only, (B, 1 + N, C) → (B, 1, C)."""
from __future__ import annotations

from .base import Call, Equivalent, ForeignKind, Unsupported, dropout_of, linear_bias, register
from .conventions import stand_in, token_grid


@register
class TimmVoloClassAttention(ForeignKind):
    name = "timm.volo_class"
    classes = ("ClassAttention",)
    convention = "bnc"
    doc = ("timm VOLO ClassAttention: the class token alone queries every token (fused kv); "
           "only it gets an output")

    def equivalent(self, module, parent, call: Call, model) -> Equivalent:
        q, kv, proj = module.q, module.kv, module.proj
        dim, heads = q.in_features, int(module.num_heads)
        if q.out_features != dim or kv.out_features != 2 * dim or proj.out_features != dim:
            raise Unsupported(f"its head_dim × heads ({q.out_features}) differs from its "
                              f"width ({dim})")
        if linear_bias(q) != linear_bias(kv):
            raise Unsupported("one of its q and kv linears has a bias and the other not")
        spec = {"name": "timm_volo_class_attention", "heads": heads,
                "projections": {"layout": "q_kv", "bias": linear_bias(q),
                                "out_bias": linear_bias(proj)},
                "parameterization": {"kind": "additive", "terms": ["query_key"]},
                "normalization": {"kind": "softmax"},
                "application": {"kind": "class_tokens", "tokens": 1},
                "dropout": {"attention": dropout_of(module),
                            "projection": dropout_of(module, "proj_drop")}}
        grid = token_grid(int(call.input.shape[1]) - 1)
        return Equivalent(spec, dim, heads, grid, "timm.volo_class",
                          ("the class token (first) queries; the output is its alone",))

    def replacement(self, compiled, module, model):
        return stand_in(self.convention, compiled, prefix=1)
