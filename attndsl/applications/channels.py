"""channels — attention across channels (XCiT's cross-covariance attention, Ali et al.,
NeurIPS 2021, arXiv:2106.09681): the queries, keys and values of a head are its channels,
each a vector over the N tokens, so the weights are c×c per head whatever the resolution
and every token's output channel i mixes that token's value channels by row i."""
from __future__ import annotations

from typing import Literal

from ..errors import SpecError
from ..lang.component import Component
from .base import ApplicationKind, Geometry, Selection, register


class Channels(Component):
    """A head's c channels attend to each other, over the tokens (XCiT's XCA).

    With cosine similarity (XCiT): q and k l2-normalized along the tokens, times a learned
    per-head temperature, softmax over the key channels, y_n = A·v_n per token n. q, k and v
    need one width per head (the weights are c×c and multiply v's c channels)."""

    kind: Literal["channels"] = "channels"


class ChannelsSelection(Selection):
    """One block per head whose queries are its c channels: blocks (B, G, 1, c, N)."""

    def block_q(self, t):
        # (B, H, W, G·c) → (B, N, G, c) → (B, G, c, N) → (B, G, 1, c, N); keys and values
        # the same (Selection's block_k / block_v)
        t = t.flatten(1, 2).unflatten(-1, (self.bp.heads, -1))
        return t.permute(0, 2, 3, 1).unsqueeze(2)

    def unblock(self, y):
        # (B, G, 1, c, N) → (B, N, G, c) → (B, H, W, G·c)
        return y.squeeze(2).permute(0, 3, 1, 2).flatten(2).unflatten(1, (self.H, self.W))


@register
class ChannelsKind(ApplicationKind):
    model = Channels
    doc = ("each head's channels attend to each other over the tokens: c×c weights per "
           "head, whatever the resolution (XCiT's cross-covariance attention)")
    grid_keys = False       # the keys are channels, not tokens of the map
    static_keys = False     # (no key set over tokens for a BlockMask)
    prefix_tokens = True    # a class / register token is one more feature of every channel

    def bind(self, app, where):
        H, W = where.grid
        if where.branch.projections.qk_width is not None:
            raise SpecError("channel attention multiplies the values' c channels by the c×c "
                            "weights of the query and key channels, so q and k need the "
                            "value width: leave projections.qk_width out",
                            path=f"{where.path}projections.qk_width")
        c = where.head_dim
        return Geometry(blocks=(1, c, c), map_grid=(H, W), kv_tokens=H * W)

    def rule(self, ctx):
        return ChannelsSelection(ctx)
