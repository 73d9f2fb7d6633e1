"""timm.convit_mhsa — timm's ConViT `MHSA`: the plain multi-head self-attention of ConViT's
last blocks, over the class token and the patch grid (the blocks before them use GPSA,
gated positional self-attention, which the language can't say yet: docs/timm.md). The
same function and state-dict names as ViT's Attention without q/k norms."""
from __future__ import annotations

from torch import nn

from .base import register
from .timm_vit import TimmVitAttention


@register
class TimmConvitMhsa(TimmVitAttention):
    name = "timm.convit_mhsa"
    classes = ("MHSA",)
    doc = "timm ConViT MHSA: global MHSA over the class token and the grid (its last blocks)"

    def claims(self, module, parent):
        return (type(module).__name__ == "MHSA"
                and isinstance(getattr(module, "qkv", None), nn.Linear)
                and isinstance(getattr(module, "proj", None), nn.Linear))
