"""timm.cait_class — timm's `ClassAttn` (CaiT's class-attention layers; XCiT imports the same
class): the class token alone is the query, the class token and every patch are keys and
values, and the output is the class token's only — (B, 1 + H·W, C) → (B, 1, C)."""
from __future__ import annotations

from .base import Call, Equivalent, ForeignKind, Unsupported, dropout_of, linear_bias, register
from .conventions import stand_in, token_grid


@register
class TimmClassAttn(ForeignKind):
    name = "timm.cait_class"
    classes = ("ClassAttn",)
    convention = "bnc"        # (B, 1 + H·W, C), the class token first → (B, 1, C)
    doc = ("timm CaiT / XCiT ClassAttn: the class token alone queries the class token and "
           "every patch; only it gets an output")

    def equivalent(self, module, parent, call: Call, model) -> Equivalent:
        q, k, v, proj = module.q, module.k, module.v, module.proj
        dim = q.in_features
        if any(t.in_features != dim or t.out_features != dim for t in (q, k, v, proj)):
            raise Unsupported("its q, k, v and proj are not all Linear(dim, dim)")
        return class_attention(module, call, (q, k, v), self.name)

    def replacement(self, compiled, module, model):
        return stand_in(self.convention, compiled, prefix=1)


def class_attention(module, call: Call, inputs: tuple, layout: str) -> Equivalent:
    """The equivalent of a timm class attention (one class token, first) whose input
    linears `inputs` (q, k, v or q, kv) all have a bias or none."""
    heads, dim = int(module.num_heads), module.proj.out_features
    biases = {linear_bias(t) for t in inputs}
    if len(biases) > 1:
        raise Unsupported("some of its input linears have a bias and some not")
    spec = {"name": "timm_class_attention", "heads": heads,
            "projections": {"layout": "q_kv", "bias": biases.pop(),
                            "out_bias": linear_bias(module.proj)},
            "parameterization": {"kind": "additive", "terms": ["query_key"]},
            "normalization": {"kind": "softmax"},
            "application": {"kind": "class_tokens", "tokens": 1},
            "dropout": {"attention": dropout_of(module),
                        "projection": dropout_of(module, "proj_drop")}}
    grid = token_grid(int(call.input.shape[1]) - 1)
    return Equivalent(spec, dim, heads, grid, layout,
                      ("the class token (first) queries; the output is its alone",))
