"""softmax — exp(w_ij / T) / Σ_j exp(w_ij / T): the attention of ViT, Swin, NAT and most
of the zoo (T = 1 unless a temperature is given)."""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from ..lang.component import Component, Float
from .base import KEY_AXIS, NormalizationKind, register


class Softmax(Component):
    kind: Literal["softmax"] = "softmax"
    # logits / temperature: below 1e-6 (1e-320 was accepted) the quotient overflows
    temperature: Float = Field(default=1.0, ge=1e-6, le=1e6)


@register
class SoftmaxNormalization(NormalizationKind):
    model = Softmax
    doc = "exp(w/T) / Σ_j exp(w/T) (T: `temperature`, default 1)"

    def lower(self, ctx, norm, w):
        t = norm.temperature
        return torch.softmax(w / t if t != 1.0 else w, dim=KEY_AXIS)
