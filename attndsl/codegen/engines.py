"""What runs each branch of a lowered graph: the decision `autoplan.decide` makes once and
lowering, the passes, FlexAttention's probe and the module all follow. Its own module so
that everything below autoplan can name it without importing the rules."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class BranchChoice:
    branch: str
    engine: str        # "sdpa", "flex", "conv", "linear", "inductor" or "eager"
    reason: str


@dataclass(frozen=True)
class Engines:
    """The engine decisions for one lowered graph, made once by `decide`.

    compiled   the graph runs under inductor (rules may pick forms that only pay off once
               fused, and the module compiles it);
    branches   each branch's BranchChoice ("sdpa": the SDPA pass fuses its softmax
               attention; "conv": a static filter lowered as a depthwise conv);
    conv_dtype the dtype the depthwise / grouped convs run in (None: the graph's own).
    """

    compiled: bool
    branches: tuple[BranchChoice, ...]
    conv_dtype: torch.dtype | None = None

    def of(self, branch: str) -> BranchChoice:
        return next(c for c in self.branches if c.branch == branch)
