"""sigmoid — sigmoid(w + b) per weight, no normalization across keys (sigmoid attention,
Ramapuram et al. 2024)."""
from __future__ import annotations

import math
from typing import Annotated, Literal, Union

import torch
from pydantic import Field

from ..lang.component import Component, Float
from .base import NormalizationKind, register


class Sigmoid(Component):
    """sigmoid(w + b): b a constant, or "-log n" with n = |S(i)| the keys per query
    (sigmoid attention, Ramapuram et al. 2024: b = −log n keeps the output scale as n
    grows; a constant, not a parameter)."""

    kind: Literal["sigmoid"] = "sigmoid"
    bias: Union[Annotated[Float, Field(ge=-1e6, le=1e6)], Literal["-log n"]] = 0.0


@register
class SigmoidNormalization(NormalizationKind):
    model = Sigmoid
    doc = "sigmoid(w + b), b a constant or `-log n` (n = \\|S(i)\\|)"

    def lower(self, ctx, norm, w):
        bias, n = norm.bias, ctx.key_count
        if bias == "-log n":     # a constant of the geometry, not a parameter
            # (symbolic when the rules run for a dynamic-resolution export: a tensor op)
            bias = -math.log(n) if isinstance(n, int) else -torch.log(w.new_full((), n))
        return torch.sigmoid(w + bias) if not isinstance(bias, float) or bias \
            else torch.sigmoid(w)
