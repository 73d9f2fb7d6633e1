"""timm.hiera — timm's Hiera `MaskUnitAttention` (blocks that keep the width and don't pool
the queries). Hiera's tokens arrive in its "unrolled" order, in which mask unit w holds
the tokens t with t mod num_windows = w, at position t // num_windows: on the tokens as one
row, that is the `grid` application with groups of [1, tokens per unit]. Its global blocks
are global attention, whatever the order. The first block of each later stage max-pools its
queries (q_stride) and widens the output (dim_out): not in the language."""
from __future__ import annotations

from torch import nn

from .base import Call, Equivalent, ForeignKind, Unsupported, dropout_of, linear_bias, register


@register
class TimmHieraMaskUnitAttention(ForeignKind):
    name = "timm.hiera"
    classes = ("MaskUnitAttention",)
    convention = "bnc"
    doc = ("timm Hiera MaskUnitAttention without query pooling: attention inside mask units "
           "(strided groups of its unrolled tokens) or global")

    def equivalent(self, module, parent, call: Call, model) -> Equivalent:
        if int(module.q_stride) > 1 or int(module.dim_out) != int(module.dim):
            raise Unsupported(f"its queries are max-pooled over {int(module.q_stride)} tokens "
                              f"and its output is {int(module.dim_out)} wide from "
                              f"{int(module.dim)} (Hiera's pooling between stages): the "
                              "language has no query pooling nor a width change")
        dim, heads = int(module.dim), int(module.heads)
        n = int(call.input.shape[1])
        if module.use_mask_unit_attn:
            unit = int(module.window_size)
            if n % unit:
                raise Unsupported(f"{n} tokens don't split into mask units of {unit}")
            application = {"kind": "grid", "size": [1, unit]}
        else:
            application = {"kind": "global"}
        spec = {"name": "timm_hiera_attention", "heads": heads,
                "projections": {"layout": "qkv", "bias": linear_bias(module.qkv),
                                "out_bias": linear_bias(module.proj)},
                "parameterization": {"kind": "additive", "terms": ["query_key"]},
                "normalization": {"kind": "softmax"}, "application": application,
                "dropout": {"attention": dropout_of(module, "attn_drop"),
                            "projection": 0.0}}
        return Equivalent(spec, dim, heads, (1, n), "timm.vit",
                          ("tokens in Hiera's unrolled order, as one row",))

    def replacement(self, compiled, module, model):
        return TokenRow(compiled)


class TokenRow(nn.Module):
    """(B, N, C) tokens as one row of the compiled module's grid: f(x) = attn(x as (B, 1,
    N, C)), for layouts whose groups are positions in the token sequence (Hiera)."""

    def __init__(self, attn: nn.Module):
        super().__init__()
        self.attn = attn

    def forward(self, x):
        return self.attn.forward_tokens(x, (1, x.shape[1]))
