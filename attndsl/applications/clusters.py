"""clusters — BOAT's feature-space local attention: balanced hierarchical clustering of
the queries, sibling clusters sharing keys."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from ..errors import SpecError
from ..lang.component import Component, Float, Int
from .base import ApplicationKind, Geometry, Selection, merge_heads, register, split_heads


class Clusters(Component):
    """BOAT feature-space local attention: balanced hierarchical clustering of the queries
    into clusters of `size` tokens; sibling clusters share `overlap` keys."""

    kind: Literal["clusters"] = "clusters"
    size: Int = Field(default=49, ge=2)
    overlap: Int = Field(default=20, ge=0)
    # the trace unrolls every refinement iteration at every level (BOAT uses 2)
    iterations: Int = Field(default=2, ge=0, le=16)
    temperature: Float = Field(default=100.0, ge=1e-6, le=1e6)


@dataclass(frozen=True, kw_only=True)
class ClusterGeometry(Geometry):
    levels: int      # depth of the balanced binary cluster tree


class ClusterSelection(Selection):
    """BOAT: balanced hierarchical clustering of each head's queries, sibling clusters
    sharing `overlap` keys. The permutation is computed from detached queries, so cluster
    assignments are constants for backward."""

    def __init__(self, ctx):
        super().__init__(ctx)
        self.levels, self.size, self.perm = self.geo.levels, self.app.size, None

    def _cluster(self, q):
        """q (B, G, N, d) → permutation (B, G, N) grouping tokens cluster by cluster."""
        N = self.H * self.W
        raw = q.detach()                      # means and weighted sums use raw queries,
        qn = F.normalize(raw, dim=-1)         # cosines use normalised ones
        tokens = self.ctx.constant("tokens", torch.arange(N))
        perm = torch.zeros_like(qn[..., 0], dtype=torch.long) + tokens   # (B, G, N)
        d = self.bp.qk_head_dim
        for level in range(self.levels):
            groups, gs = 2 ** level, N // 2 ** level
            order = perm.unflatten(2, (groups, gs))                     # (B, G, groups, gs)
            # explicit expands, not take_along_dim's broadcasting: that specializes the batch
            # size in torch.export
            index = order.unsqueeze(-1).expand(-1, -1, -1, -1, d)
            every = (-1, -1, groups, -1, -1)         # order holds token ids of the whole map
            qs = torch.gather(raw.unsqueeze(2).expand(every), 3, index)  # (B, G, groups, gs, d)
            qns = torch.gather(qn.unsqueeze(2).expand(every), 3, index)
            half = qs.unflatten(3, (2, gs // 2))
            cent = F.normalize(half.mean(4), dim=-1)                    # (B, G, groups, 2, d)
            for _ in range(self.app.iterations):
                assign = torch.softmax(self.app.temperature * qns @ cent.transpose(-1, -2), -1)
                cent = F.normalize(assign.transpose(-1, -2) @ qs, dim=-1)
            cos = qns @ cent.transpose(-1, -2)                           # (B, G, groups, gs, 2)
            ratio = (1 + cos[..., 0]) / (1 + cos[..., 1])
            rank = torch.sort(ratio, dim=-1, descending=True, stable=True).indices
            perm = torch.gather(order, 3, rank).flatten(2)
        return perm

    def _clustered(self, t, c: int):
        """(B, G, N, c) in cluster order → (B, G, clusters, size, c)."""
        index = self.perm.unsqueeze(-1).expand(-1, -1, -1, c)
        return torch.gather(t, 2, index).unflatten(2, (-1, self.size))

    def block_q(self, t):
        q = split_heads(t, self.bp.heads)
        self.perm = self._cluster(q)
        return self._clustered(q, self.bp.qk_head_dim)

    def block_k(self, t):
        c = self.bp.qk_head_dim
        own = self._clustered(split_heads(t, self.bp.heads), c)
        return self._with_borrowed(own)

    def _with_borrowed(self, own):
        ov = self.app.overlap
        if self.levels == 0 or ov == 0:
            return own
        pairs = own.unflatten(2, (-1, 2))                  # (B, G, pairs, 2, size, c)
        # cluster 2p borrows the first `ov` tokens of 2p+1, cluster 2p+1 the last of 2p
        borrowed = torch.stack([pairs[:, :, :, 1, :ov], pairs[:, :, :, 0, self.size - ov:]], 3)
        return torch.cat([own, borrowed.flatten(2, 3)], 3)

    def block_v(self, t):
        return self._with_borrowed(self._clustered(split_heads(t, self.bp.heads),
                                                   self.bp.head_dim))

    def unblock(self, y):
        inverse = torch.argsort(self.perm, dim=-1).unsqueeze(-1).expand(-1, -1, -1,
                                                                        self.bp.head_dim)
        return merge_heads(torch.gather(y.flatten(2, 3), 2, inverse), self.H, self.W)


@register
class ClustersKind(ApplicationKind):
    model = Clusters
    doc = ("BOAT: each head's queries clustered (balanced, hierarchical) into groups of "
           "`size` tokens; sibling clusters share `overlap` keys")
    value_map = True
    static_keys = False       # the tree assigns tokens to clusters per input

    def bind(self, app, where):
        H, W = where.grid
        n = H * W
        levels = round(math.log2(n / app.size)) if n >= app.size else -1
        if levels < 0 or app.size * 2 ** levels != n:
            ok = [app.size * 2 ** L for L in range(0, 9)]
            raise SpecError(f"balanced clustering needs N = size·2^L tokens; the {H}x{W} grid "
                            f"has N={n}, cluster size {app.size}; valid N: "
                            f"{ok[:6]} … (or set pad_to_multiple / another cluster size)",
                            path=where.field("size"))
        if app.overlap > app.size:
            raise SpecError(f"overlap {app.overlap} exceeds the cluster size {app.size}",
                            path=where.field("overlap"))
        keys = app.size + (app.overlap if levels else 0)
        return ClusterGeometry(blocks=(2 ** levels, app.size, keys), map_grid=(H, W),
                               kv_tokens=n, levels=levels)

    def rule(self, ctx):
        return ClusterSelection(ctx)

    def dynamic_resolution(self, bp):
        return "the number of clustering levels depends on H·W"
