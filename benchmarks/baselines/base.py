"""The context every baseline builder gets, the partition helpers several families share,
and the registry's types (the package's docstring says what a reference and a baseline
are)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F


Fn = Callable[[torch.Tensor], torch.Tensor]


class Skip(Exception):
    """A baseline that cannot be built here; the message is recorded as the reason."""


# ------------------------------------------------------------------------------ context
@dataclass
class Ctx:
    """What a builder needs: the attndsl module, its parameters and its geometry."""
    m: torch.nn.Module

    def __post_init__(self):
        self.P = {k: v.detach() for k, v in self.m.named_parameters()}
        self.plan = self.m.plan
        self.C = self.m.dim
        self.G = self.plan.heads
        self.H, self.W = self.plan.resolution

    def branch(self, name=None):
        for b in self.plan.branches:
            if name is None or b.name == name:
                return b
        raise KeyError(name)

    @property
    def b(self):
        return self.plan.branches[0]

    @property
    def d(self):
        return self.b.head_dim

    @property
    def scale(self):
        return self.b.scale()

    def p(self, name):
        return self.P[name]


def _compile(fn: Fn) -> Fn:
    return torch.compile(fn, dynamic=False)


# ------------------------------------------------------------------------------ helpers
def window_partition(x, ws):
    """timm: (B, H, W, C) → (B·nW, ws, ws, C)."""
    B, H, W, C = x.shape
    x = x.view(B, H // ws, ws, W // ws, ws, C)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, ws, ws, C)


def window_reverse(windows, ws, H, W):
    """timm: (B·nW, ws, ws, C) → (B, H, W, C)."""
    C = windows.shape[-1]
    x = windows.view(-1, H // ws, W // ws, ws, ws, C)
    return x.permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, H, W, C)


def swin_relative_position_index(ws):
    """timm's relative_position_index: (n, n), offset i − j."""
    coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij"))
    coords = torch.flatten(coords, 1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0).contiguous()
    rel[:, :, 0] += ws - 1
    rel[:, :, 1] += ws - 1
    rel[:, :, 0] *= 2 * ws - 1
    return rel.sum(-1)


def swin_shift_mask(Hp, Wp, ws, shift):
    """timm's SW-MSA attn_mask: (nW, n, n) with 0 / −100."""
    img = torch.zeros(1, Hp, Wp, 1)
    cnt = 0
    for h in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
        for w in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
            img[:, h, w, :] = cnt
            cnt += 1
    mw = window_partition(img, ws).view(-1, ws * ws)
    mask = mw.unsqueeze(1) - mw.unsqueeze(2)
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)


def _pad_br(x, ws):
    H, W = x.shape[1], x.shape[2]
    ph, pw = (ws - H % ws) % ws, (ws - W % ws) % ws
    return F.pad(x, (0, 0, 0, pw, 0, ph)) if ph or pw else x


def natten_starts(L, K, device=None):
    """Clamped neighbourhood start along one axis: clamp(i − K//2, 0, L − K)."""
    return torch.clamp(torch.arange(L, device=device) - K // 2, 0, L - K)


def na_tables(h, w, K):
    """For an h×w grid: neighbour token index (N, K²) and rpb index (N, K²) into the
    (2K−1)² table (offset j − i), NATTEN's clamped windows."""
    sy, sx = natten_starts(h, K), natten_starts(w, K)
    a = torch.arange(K)
    yj = (sy[:, None] + a[None, :])                    # (h, K)
    xj = (sx[:, None] + a[None, :])                    # (w, K)
    nbr = (yj[:, None, :, None] * w + xj[None, :, None, :]).reshape(h * w, K * K)
    dy = yj - torch.arange(h)[:, None] + K - 1         # (h, K)
    dx = xj - torch.arange(w)[:, None] + K - 1
    rel = (dy[:, None, :, None] * (2 * K - 1) + dx[None, :, None, :]).reshape(h * w, K * K)
    return nbr, rel


def _split_dilated(t, dl):
    """(B, H, W, c) → (B·dl², H/dl, W/dl, c): the dl×dl interleaved sub-grids."""
    B, H, W, c = t.shape
    return t.view(B, H // dl, dl, W // dl, dl, c).permute(0, 2, 4, 1, 3, 5) \
        .reshape(B * dl * dl, H // dl, W // dl, c)


def _merge_dilated(t, dl, B):
    _, h, w, c = t.shape
    return t.view(B, dl, dl, h, w, c).permute(0, 3, 1, 4, 2, 5).reshape(B, h * dl, w * dl, c)


# ------------------------------------------------------------------------------ registry types
@dataclass
class Baseline:
    name: str
    build: Callable[[Ctx], Fn]
    compiled: bool = False        # needs the compiler (skipped by --no-compile)
    wrap: bool = False            # build() gives the eager form; the suite torch.compiles it
    note: str = ""

    def make(self, c: Ctx) -> Fn:
        fn = self.build(c)
        return _compile(fn) if self.wrap else fn


@dataclass
class Family:
    name: str
    zoo: str
    kind: str                      # FLOP formula key
    reference: Callable[[Ctx], Fn]
    baselines: list[Baseline] = field(default_factory=list)
    # "stage": the stage's head count; "channels": depthwise; "spec": the spec's own heads
    # (specs whose branches fix their head split); an int: that many heads at every stage
    heads: str | int = "stage"
    note: str = ""
    # dtype of the numerical check when the timed dtype cannot be compared directly
    # (BOAT: float32 near-ties in the cluster sort flip whole sub-trees; ZOO.md §3)
    check_dtype: str | None = None
    # (H, W) for the --quick smoke sizes when the spec cannot bind at 14×14 (dinat_13)
    quick_resolution: tuple[int, int] | None = None


def both(name: str, make) -> list[Baseline]:
    """A hand-picked baseline eager and under torch.compile (the latter checked eagerly too
    by the tests: wrap=True)."""
    return [Baseline(name, make), Baseline(f"{name}_compiled", make, compiled=True, wrap=True)]


def rel_err(y: torch.Tensor, ref: torch.Tensor) -> float:
    """max |y − ref| / max |ref| (both upcast to float64)."""
    y, ref = y.detach().double(), ref.detach().double()
    return float((y - ref).abs().max() / ref.abs().max().clamp_min(1e-30))
