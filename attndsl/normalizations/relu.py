"""relu — ReLU over the kernel axis, optionally divided by |S(i)| (the number of keys):
the ReLU-normalized dynamic convolutions of "ViTs as ConvNets"."""
from __future__ import annotations

from typing import Literal

import torch.nn.functional as F

from ..lang.component import Component
from .base import NormalizationKind, register


class Relu(Component):
    """ReLU over the kernel axis, optionally divided by |S(i)| (the number of keys)."""

    kind: Literal["relu"] = "relu"
    mean: bool = False


@register
class ReluNormalization(NormalizationKind):
    model = Relu
    doc = "relu(w), divided by \\|S(i)\\| with `mean: true`"

    def lower(self, ctx, norm, w):
        out = F.relu(w)
        return out / ctx.key_count if norm.mean else out
