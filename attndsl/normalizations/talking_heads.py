"""talking_heads — Talking-Heads attention (Shazeer et al., 2020, arXiv:2003.02436; CaiT,
EfficientFormerV2): a softmax between two learned maps across the branch's heads,

    W = P_w · softmax_j(P_l · logits)      (P_l, P_w: G×G, with a bias each),

so that each head's weights are mixtures of every head's logits and probabilities. The maps
act on the head axis only: timm's `proj_l` / `proj_w` (CaiT's TalkingHeadAttn, Linear(G, G)
over the permuted weights) and `talking_head1` / `talking_head2` (EfficientFormerV2's
Attention4D, 1×1 convs over the head channels) are the same maps.
"""
from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from ..errors import SpecError
from ..lang.component import Component
from .base import KEY_AXIS, NormalizationKind, NormWhere, register

HEAD_AXIS = 1     # G in the blocked layout (B, G, nb, Lq, Lk[, d])


class TalkingHeads(Component):
    kind: Literal["talking_heads"] = "talking_heads"
    bias: bool = True          # both maps have a bias (timm's CaiT and EfficientFormerV2)


def mix_heads(linear: nn.Linear, w: torch.Tensor) -> torch.Tensor:
    """out[h] = Σ_g P[h, g]·w[g] (+ b[h]) over the head axis of the blocked weights."""
    return linear(w.movedim(HEAD_AXIS, -1)).movedim(-1, HEAD_AXIS)


@register
class TalkingHeadsNormalization(NormalizationKind):
    model = TalkingHeads
    doc = ("P_w · softmax(P_l · w): learned G×G maps across the heads before and after the "
           "softmax (Talking-Heads attention; CaiT, EfficientFormerV2)")

    def check(self, where: NormWhere) -> None:
        if where.geometry.masked:
            # a −100 / −inf logit mask, the same for every head, would be mixed too: a
            # negative P_l entry turns −inf into +inf
            raise SpecError("talking_heads mixes the logits of all heads before the softmax, "
                            "so a logits mask (shifted windows' regions, masked padding) "
                            "would be mixed as well; use an application without a mask "
                            "(global, unshifted windows, pooled keys)",
                            path=where.path)
        if where.branch.kernel.type == "depthwise":
            raise SpecError("talking_heads mixes one weight per head and key; a depthwise "
                            "kernel has one per channel: use kernel.type standard",
                            path=where.path)

    def parameters(self, norm, bp) -> dict[str, nn.Module]:
        def head_map() -> nn.Linear:
            layer = nn.Linear(bp.heads, bp.heads, bias=norm.bias)
            with torch.no_grad():       # start as the identity: plain softmax attention
                layer.weight.copy_(torch.eye(bp.heads))
                if norm.bias:
                    layer.bias.zero_()
            return layer
        return {"talking_heads.pre": head_map(), "talking_heads.post": head_map()}

    def lower(self, ctx, norm, w):
        maps = ctx.p.talking_heads
        return mix_heads(maps.post, torch.softmax(mix_heads(maps.pre, w), dim=KEY_AXIS))
