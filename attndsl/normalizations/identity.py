"""identity — the logits are the weights (dynamic convolutions without a normaliser)."""
from __future__ import annotations

from typing import Literal

from ..lang.component import Component
from .base import NormalizationKind, register


class Identity(Component):
    kind: Literal["identity"] = "identity"


@register
class IdentityNormalization(NormalizationKind):
    model = Identity
    doc = "w unchanged"

    def lower(self, ctx, norm, w):
        return w
