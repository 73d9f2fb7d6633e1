"""layernorm — layer normalization of each query's logits over its keys, without affine
parameters."""
from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field

from ..lang.component import Component, Float
from .base import KEY_AXIS, NormalizationKind, register


class LayerNormOverKernels(Component):
    """(w − mean_j w) / sqrt(var_j w + eps), biased variance, no affine."""

    kind: Literal["layernorm"] = "layernorm"
    eps: Float = Field(default=1e-5, ge=1e-12, le=1.0)


@register
class LayerNormNormalization(NormalizationKind):
    model = LayerNormOverKernels
    doc = "(w − mean_j w) / √(var_j w + eps), biased variance, no affine"

    def lower(self, ctx, norm, w):
        mean = w.mean(KEY_AXIS, keepdim=True)
        var = w.var(KEY_AXIS, keepdim=True, unbiased=False)
        return (w - mean) / torch.sqrt(var + norm.eps)
