"""Lowering rules: one small function (or class) per axis value, emitting torch ops.

They run under torch.fx symbolic tracing, so tensors here are fx Proxies and every Python
`if` is on a bind-time constant from the plan: the traced graph is straight-line code.

Shape legend (the "blocked" layout shared by every application):
    B batch, G heads, nb query blocks, Lq queries per block, Lk keys per block,
    d channels per head.
    q blocks  (B, G, nb, Lq, d_qk)      k blocks (B, G, nb, Lk, d_qk)
    v blocks  (B, G, nb, Lk, d)
    logits    (B, G, nb, Lq, Lk)        standard kernel: one weight per head
              (B, G, nb, Lq, Lk, d)     depthwise kernel: one weight per channel
The normalization axis is always dim 4 (Lk).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..spec import models as m
from ..spec.bind import BranchPlan
from .windows import constant_gather, inverse_index, sliding_windows

KEY_AXIS = 4


class Ctx:
    """What a rule may use: the traced root (parameters and constants), the branch plan,
    and bind-time facts (dtype, device, training, whether inductor will compile the graph)."""

    def __init__(self, root, bp: BranchPlan, params, dtype, device, training: bool, tracer,
                 compiled: bool = False, grid=None):
        self.root, self.bp, self.p = root, bp, params
        self.dtype, self.device, self.training = dtype, device, training
        self.compiled = compiled
        # the grid the rules work on: the plan's, or the input's sizes when the rules run
        # eagerly for a dynamic-resolution export (tracer None)
        self.grid = grid or bp.grid
        self.tracer = tracer

    def constant(self, name: str, value: torch.Tensor):
        """Register a bind-time constant (index table, mask) as a buffer of the graph and
        return it as a graph value (a get_attr node), so passes can see where it is used."""
        if self.tracer is None:          # rules running eagerly: the tensor itself
            return value.to(self.device)
        # "_" + …: branch names start with a letter, so a constant never takes the name of
        # a branch's parameter module (branch "a"'s mask vs a branch named "a_mask")
        full = f"_{self.bp.name}__{name}"
        if not hasattr(self.root, full):
            self.root.register_buffer(full, value.to(self.device), persistent=False)
        return self.tracer.create_proxy("get_attr", full, (), {})

    def call_leaf(self, fn, *args):
        """Call `fn` as one node of the graph (not traced into): for functions that decide
        at run time, such as whether autograd needs their custom backward."""
        if self.tracer is None:
            return fn(*args)
        return self.tracer.create_proxy("call_function", fn, args, {})


# ====================================================================== helpers
# (flatten / unflatten with static sizes keep the generated code free of shape queries)
def split_heads(t, heads: int):
    """(B, h, w, heads·c) → (B, heads, h·w, c)."""
    return t.flatten(1, 2).unflatten(-1, (heads, -1)).permute(0, 2, 1, 3)


def merge_heads(t, h: int, w: int):
    """(B, heads, h·w, c) → (B, h, w, heads·c)."""
    return t.permute(0, 2, 1, 3).flatten(2).unflatten(1, (h, w))


def head_norm(t, norm, heads: int):
    """A per-head norm of a (B, h, w, G·d) map (timm's q_norm / k_norm)."""
    return norm(t.unflatten(-1, (heads, -1))).flatten(-2)


def to_nchw(t):
    return t.permute(0, 3, 1, 2)


def to_nhwc(t):
    return t.permute(0, 2, 3, 1)


def offset_index(dy: torch.Tensor, dx: torch.Tensor, span_y: int, span_x: int):
    """Index of offset (dy, dx) in a (2·span_y−1)×(2·span_x−1) table, row-major."""
    return (dy + span_y - 1) * (2 * span_x - 1) + (dx + span_x - 1)


# ====================================================================== application
class Selection:
    """Base of the application rules: which keys each query sees.

    inputs(x)        → (x for queries, x for keys/values), both (B, h, w, C)
    block_q/k/v(t)   → maps (B, h, w, G·c) to blocks
    unblock(y)       → output blocks back to (B, H, W, G·d)
    key_count        |S(i)| (static)
    rel_index()      offsets of every (query, key) pair into the branch's tables, shaped to
                     broadcast as (nb, Lq, Lk); None when the application has no offsets
    mask()           additive logits mask broadcasting as (nb, Lq, Lk), or None
    """

    def __init__(self, ctx: Ctx):
        self.ctx, self.bp = ctx, ctx.bp
        self.app = ctx.bp.spec.application
        self.H, self.W = ctx.grid

    def inputs(self, x):
        return x, x

    @property
    def map_grid(self) -> tuple[int, int]:
        """(h, w) of the q/k maps that `inputs` leads to (padded for windows)."""
        return self.H, self.W

    def block_q(self, t):
        return split_heads(t, self.bp.heads).unsqueeze(2)

    def block_k(self, t):
        return self.block_q(t)

    block_v = block_k

    def unblock(self, y):
        return merge_heads(y.squeeze(2), self.H, self.W)

    @property
    def key_count(self) -> int:
        return self.H * self.W

    @property
    def block_shape(self) -> tuple[int, int, int]:
        """(nb, Lq, Lk): query blocks, queries and keys per block (static)."""
        return 1, self.H * self.W, self.key_count

    def rel_index(self):
        return None

    def mask(self):
        return None

    # whether aggregation weighs strided window views of the value map (sliding only)
    weighs_windows = False


class GlobalSelection(Selection):
    """All tokens; tables span the whole grid ((2H−1)(2W−1) offsets)."""

    def rel_index(self):
        ys, xs = torch.meshgrid(torch.arange(self.H), torch.arange(self.W), indexing="ij")
        ys, xs = ys.flatten(), xs.flatten()
        dy, dx = ys[None, :] - ys[:, None], xs[None, :] - xs[:, None]   # j − i
        if self.bp.spec.parameterization.rel_pos_orientation == "i_minus_j":
            dy, dx = -dy, -dx
        return self.ctx.constant("rel_index", offset_index(dy, dx, self.H, self.W)[None])


class PooledSelection(Selection):
    """Keys and values from AvgPool2d(r)(x) or LN(Conv2d_r,r(x)); leftover rows dropped."""

    def inputs(self, x):
        app, p = self.app, self.ctx.p
        if app.op == "avg":
            pooled = to_nhwc(F.avg_pool2d(to_nchw(x), app.ratio))
        else:
            pooled = to_nhwc(p.pool.conv(to_nchw(x)))
            if app.norm == "layernorm":
                pooled = p.pool.norm(pooled)
        return x, pooled

    @property
    def key_count(self) -> int:
        return self.bp.kv_tokens


class SoftSelection(Selection):
    """Linformer: k' = E·k and v' = F·v along the token axis (E, F shared by heads)."""

    def block_k(self, t):
        return self._select(self.ctx.p.select.keys, t)

    def block_v(self, t):
        return self._select(self.ctx.p.select.values, t)

    def _select(self, e, t):
        """E·t on the (B, N, C) map, one (k×N)·(N×C) GEMM per image rather than one thin
        GEMM per head; then the heads: (B, G, 1, k, d)."""
        # bmm over the strided slice of the qkv output, e broadcast to the batch: matmul
        # would fold the batch and copy the slice first (6.7 vs 3.8 ms at 56×56, C=96)
        flat = t.flatten(1, 2)
        selected = torch.bmm(e.expand(flat.shape[0], -1, -1), flat)     # (B, k, C)
        return selected.unflatten(-1, (self.bp.heads, -1)).permute(0, 2, 1, 3).unsqueeze(2)

    @property
    def key_count(self) -> int:
        return self.app.keys


class WindowSelection(Selection):
    """Non-overlapping ws×ws windows, optional cyclic shift with Swin's region mask, and
    bottom/right zero padding before the projections (masked or not)."""

    def __init__(self, ctx):
        super().__init__(ctx)
        self.ws, self.shift = self.bp.window, self.bp.shift
        self.Hp, self.Wp = self.bp.padded_grid
        self.pad = (self.Hp, self.Wp) != (self.H, self.W)

    def _pad(self, x):
        return F.pad(x, (0, 0, 0, self.Wp - self.W, 0, self.Hp - self.H)) if self.pad else x

    def _roll(self, x, sign: int):
        s = sign * self.shift
        return torch.roll(x, shifts=(s, s), dims=(1, 2)) if self.shift else x

    @property
    def map_grid(self) -> tuple[int, int]:
        return self.Hp, self.Wp

    def inputs(self, x):
        if self.app.shift_order == "roll_then_pad":
            x = self._pad(self._roll(x, -1))
        else:
            x = self._roll(self._pad(x), -1)
        return x, x

    def block_q(self, t):
        ws, nh, nw = self.ws, self.Hp // self.ws, self.Wp // self.ws
        t = t.unflatten(1, (nh, ws)).unflatten(3, (nw, ws)).unflatten(-1, (self.bp.heads, -1))
        # (B, nh, ws, nw, ws, G, c) → (B, G, nh·nw, ws·ws, c)
        return t.permute(0, 5, 1, 3, 2, 4, 6).flatten(4, 5).flatten(2, 3)

    block_k = block_v = block_q

    def unblock(self, y):
        ws = self.ws
        y = y.unflatten(3, (ws, ws)).unflatten(2, (self.Hp // ws, self.Wp // ws))
        # (B, G, nh, nw, ws, ws, c) → (B, nh, ws, nw, ws, G, c) → (B, Hp, Wp, G·c)
        y = y.permute(0, 2, 4, 3, 5, 1, 6).flatten(5).flatten(3, 4).flatten(1, 2)
        crop = (lambda t: t[:, :self.H, :self.W]) if self.pad else (lambda t: t)
        if self.app.shift_order == "roll_then_pad":
            return self._roll(crop(y), +1)
        return crop(self._roll(y, +1))

    @property
    def key_count(self) -> int:
        return self.ws * self.ws

    @property
    def block_shape(self):
        return (self.Hp // self.ws) * (self.Wp // self.ws), self.ws ** 2, self.ws ** 2

    def rel_index(self):
        ws = self.ws
        ys, xs = torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")
        ys, xs = ys.flatten(), xs.flatten()
        dy, dx = ys[None, :] - ys[:, None], xs[None, :] - xs[:, None]   # j − i
        if self.bp.spec.parameterization.rel_pos_orientation == "i_minus_j":
            dy, dx = -dy, -dx
        return self.ctx.constant("rel_index", offset_index(dy, dx, ws, ws)[None])

    def _windows_of(self, grid: torch.Tensor) -> torch.Tensor:
        """(Hp, Wp) map → (nW, ws²) in window order."""
        ws = self.ws
        g = grid.reshape(self.Hp // ws, ws, self.Wp // ws, ws).permute(0, 2, 1, 3)
        return g.reshape(-1, ws * ws)

    def mask(self):
        ws, shift = self.ws, self.shift
        parts = []
        if shift:
            # Swin's regions, on the padded map: tokens rolled in from the other side may
            # not attend to their new neighbours (-100 before the softmax).
            region = torch.zeros(self.Hp, self.Wp)
            cuts_h = (slice(0, self.Hp - ws), slice(self.Hp - ws, self.Hp - shift),
                      slice(self.Hp - shift, None))
            cuts_w = (slice(0, self.Wp - ws), slice(self.Wp - ws, self.Wp - shift),
                      slice(self.Wp - shift, None))
            label = 0
            for sh in cuts_h:
                for sw in cuts_w:
                    region[sh, sw] = label
                    label += 1
            win = self._windows_of(region)
            parts.append((win[:, :, None] != win[:, None, :]).to(self.ctx.dtype) * -100.0)
        if self.pad and self.app.padding == "pad_masked":
            is_pad = torch.zeros(self.Hp, self.Wp, dtype=torch.bool)
            is_pad[self.H:, :] = True
            is_pad[:, self.W:] = True
            if self.app.shift_order == "pad_then_roll" and shift:
                is_pad = torch.roll(is_pad, shifts=(-shift, -shift), dims=(0, 1))
            elif shift:
                pass  # roll_then_pad: padding is added after the roll, at bottom/right
            win = self._windows_of(is_pad)
            pad_mask = torch.zeros(win.shape[0], 1, ws * ws, dtype=self.ctx.dtype)
            parts.append(pad_mask.masked_fill(win[:, None, :], float("-inf")))
        if not parts:
            return None
        total = parts[0] if len(parts) == 1 else parts[0] + parts[1]
        return self.ctx.constant("mask", total.to(self.ctx.dtype))


class SlidingZeroPadSelection(Selection):
    """K×K neighbourhood centred on each query; out-of-image neighbours are zeros (unfold).
    Blocks: one block per query (nb = N, Lq = 1, Lk = K²)."""

    def __init__(self, ctx):
        super().__init__(ctx)
        self.k, self.dil = self.app.size, self.app.dilation

    def block_q(self, t):
        return split_heads(t, self.bp.heads).unsqueeze(3)

    @property
    def has_window_views(self) -> bool:
        """Whether `windows` can give every neighbourhood as a strided view of the map."""
        return True

    @property
    def weighs_windows(self) -> bool:
        """Compiled graphs weigh the window views in the (H, W, K, K) grid layout: inductor
        then fuses the loads into the reduction like a hand-written shift loop, with plain
        loop indices; F.unfold's im2col buffer (K² times the map) is never materialized.
        Eager graphs keep F.unfold / gathers, the cheaper copies there."""
        return self.ctx.compiled and self.has_window_views

    def block_k(self, t):
        if self.weighs_windows:
            win = self.windows(t).permute(0, 3, 1, 2, 4, 5, 6)     # (B, G, H, W, c, K, K)
            return win.flatten(-2).flatten(2, 3).transpose(-1, -2)
        return self.gathered(t)

    block_v = block_k

    def gathered(self, t):
        """The eager form: F.unfold's im2col copy, (B, G, N, K², c)."""
        k = self.k
        cols = F.unfold(to_nchw(t), k, dilation=self.dil, padding=self.dil * (k // 2))
        # (B, G·c·K², N) → (B, G, N, K², c)
        return cols.unflatten(1, (self.bp.heads, -1, k * k)).permute(0, 1, 4, 3, 2)

    def windows(self, t):
        """(B, H, W, G·c) → every pixel's neighbourhood as a strided view of the zero-padded
        map, pixel-major so that reductions over the window write channels-last outputs:
        (B, H, W, G, c, K, K). Its backward is written out (codegen/windows.py says why)."""
        return self.ctx.call_leaf(sliding_windows, t, self.bp.heads, self.k, self.dil,
                                  *self._starts())

    def _starts(self):
        return None, None

    def dot_windows(self, q, k):
        """q·k on the grid layout (see weigh_windows): q (B, G, N, 1, c), k the blocks of
        `block_k`, viewed back as windows → logits (B, G, N, 1, K²)."""
        k_, H, W = self.k, self.H, self.W
        win = k.transpose(-1, -2).unflatten(2, (H, W)).unflatten(-1, (k_, k_))
        win = win.permute(0, 2, 3, 1, 4, 5, 6)                      # (B, H, W, G, c, K, K)
        q = q.squeeze(3).unflatten(2, (H, W)).permute(0, 2, 3, 1, 4)[..., None, None]
        logits = (q * win).sum(4)                                   # (B, H, W, G, K, K)
        return logits.flatten(-2).flatten(1, 2).permute(0, 2, 1, 3).unsqueeze(3)

    def weigh_windows(self, w, t, per_channel: bool = False, tap_scale=None):
        """y = Σ_k w[k]·v[p+k] on the grid layout. w: (B, G, N, 1, K²) per head or
        (B, G, N, 1, K², c) per channel; t: the (B, H, W, G·c) value map; tap_scale: an
        optional per-channel, per-tap factor (G, c, K, K). → (B, H, W, G·c)."""
        k, H, W = self.k, self.H, self.W
        win = self.windows(t)                                       # (B, H, W, G, c, K, K)
        if tap_scale is not None:
            win = win * tap_scale
        w = w.squeeze(3).unflatten(2, (H, W)).unflatten(4, (k, k))  # (B, G, H, W, K, K[, c])
        w = w.permute(0, 2, 3, 1, 6, 4, 5) if per_channel else \
            w.permute(0, 2, 3, 1, 4, 5).unsqueeze(4)                # (B, H, W, G, c|1, K, K)
        return (w * win).sum((-2, -1)).flatten(-2)                  # (B, H, W, G·c)

    def unblock(self, y):
        return merge_heads(y.squeeze(3), self.H, self.W)

    @property
    def key_count(self) -> int:
        return self.k * self.k

    @property
    def block_shape(self):
        return self.H * self.W, 1, self.k * self.k

    def rel_index(self):
        index = torch.arange(self.k * self.k)   # unfold order = (dy+r)·K + (dx+r), j − i
        if self.bp.spec.parameterization.rel_pos_orientation == "i_minus_j":
            index = index.flip(0)
        return self.ctx.constant("rel_index", index.view(1, 1, -1))


def clamped_start(pos: int, length: int, k: int) -> int:
    """NATTEN: the first of the K positions a query at `pos` attends to, along an axis of
    `length` — centred, then shifted to stay inside."""
    return min(max(pos - k // 2, 0), length - k)


class SlidingClampSelection(SlidingZeroPadSelection):
    """NATTEN neighbourhood: the K×K window is shifted inside the image at borders; with
    dilation δ it runs within each of the δ×δ interleaved sub-grids."""

    def _neighbours(self):
        """For every token: (key token ids (N, K²), offsets dy, dx in grid steps)."""
        def axis(length: int):
            starts, idx = [], torch.empty(length, self.k, dtype=torch.long)
            for i in range(length):
                r, pos = i % self.dil, i // self.dil          # residue sub-grid, position
                n_sub = len(range(r, length, self.dil))
                start = clamped_start(pos, n_sub, self.k)
                idx[i] = torch.arange(start, start + self.k) * self.dil + r
                starts.append(pos)
            return idx, torch.tensor(starts)
        iy, py = axis(self.H)
        ix, px = axis(self.W)
        keys = (iy[:, None, :, None] * self.W + ix[None, :, None, :])  # (H, W, K, K)
        dy = (iy // self.dil - py[:, None])[:, None, :, None].expand(-1, self.W, -1, self.k)
        dx = (ix // self.dil - px[:, None])[None, :, None, :].expand(self.H, -1, self.k, -1)
        n, kk = self.H * self.W, self.k * self.k
        return keys.reshape(n, kk), dy.reshape(n, kk), dx.reshape(n, kk)

    @property
    def has_window_views(self) -> bool:
        return self.H % self.dil == 0 and self.W % self.dil == 0

    def gathered(self, t):
        """The eager form (and the form for grids the dilation does not divide): one
        (N, K²) table of key ids, (B, G, N, K², c). Compiled graphs gather through
        `constant_gather`, whose backward is a gather too (codegen/windows.py says why)."""
        table = self._neighbours()[0]
        keys = self.ctx.constant("neighbours", table)
        t = split_heads(t, self.bp.heads)
        if not self.ctx.compiled:
            return t[:, :, keys]
        readers, weight = inverse_index(table, self.H * self.W)
        return self.ctx.call_leaf(constant_gather, t, 2, keys,
                                  self.ctx.constant("neighbour_readers", readers),
                                  self.ctx.constant("neighbour_reader_weights", weight))

    def _starts(self):
        """The clamped K×K windows are strided views picked by the clamped start of each
        row and column of each dilated sub-grid — separable index arithmetic instead of an
        (N, K²) gather table, which inductor turns into far cheaper loads (needs H, W
        multiples of the dilation; otherwise the gather table is used)."""
        k = self.k
        starts = []
        for axis, length in (("y", self.H // self.dil), ("x", self.W // self.dil)):
            starts.append(self.ctx.constant(f"starts_{axis}", torch.tensor(
                [clamped_start(i, length, k) for i in range(length)])))
        return starts

    def rel_index(self):
        _, dy, dx = self._neighbours()
        if self.bp.spec.parameterization.rel_pos_orientation == "i_minus_j":
            dy, dx = -dy, -dx
        return self.ctx.constant("rel_index", offset_index(dy, dx, self.k, self.k)[:, None])


class ClusterSelection(Selection):
    """BOAT: balanced hierarchical clustering of each head's queries, sibling clusters
    sharing `overlap` keys. The permutation is computed from detached queries, so cluster
    assignments are constants for backward."""

    def __init__(self, ctx):
        super().__init__(ctx)
        self.levels, self.size, self.perm = self.bp.levels, self.app.size, None

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

    @property
    def key_count(self) -> int:
        return self.size + (self.app.overlap if self.levels else 0)

    @property
    def block_shape(self):
        return 2 ** self.levels, self.size, self.key_count


def selection_for(ctx: Ctx) -> Selection:
    app = ctx.bp.spec.application
    if isinstance(app, m.Sliding):
        return (SlidingClampSelection if app.border == "clamp" else SlidingZeroPadSelection)(ctx)
    return SELECTIONS[app.kind](ctx)


SELECTIONS = {
    "global": GlobalSelection, "pooled": PooledSelection, "soft_select": SoftSelection,
    "window": WindowSelection, "clusters": ClusterSelection,
}


# ====================================================================== kernel size
def unfold_kernel(t, grid: tuple[int, int], size: int):
    """K×K keys (dynamic-conv paper): each q/k vector becomes its zero-padded K×K
    neighbourhood, (B, h, w, G·c) → (B, h, w, G·c·K²), kept grouped by head."""
    h, w = grid
    cols = F.unfold(to_nchw(t), size, padding=size // 2)      # (B, C·K², h·w), c-major
    return to_nhwc(cols.unflatten(-1, (h, w)))


# ====================================================================== parameterization
def _tables(ctx: Ctx, sel: Selection, table):
    """Gather an offset-indexed table (G, T, …) at every (query, key) pair."""
    return table[:, sel.rel_index()]              # (G, nb, Lq, Lk, …)


def term_query_key(ctx, sel, q, k, scale):
    if ctx.bp.spec.kernel_bank.keys == "static":
        return _query_dot_table(ctx, sel, q, ctx.p.key_bank, scale)
    if ctx.bp.depthwise:
        return scale * q.unsqueeze(-2) * k.unsqueeze(-3)
    if sel.weighs_windows:
        return scale * sel.dot_windows(q, k)
    if sel.block_shape[1] == 1:
        # one query per block (sliding neighbourhoods): a broadcast multiply-and-sum, which
        # inductor fuses with the key gather; a (1×d)·(d×K²) matmul per pixel does not
        return scale * (q * k).sum(-1).unsqueeze(-2)
    return scale * q @ k.transpose(-1, -2)


def _query_dot_table(ctx, sel, q, table, scale):
    rel = _tables(ctx, sel, table)                # (G, nb, Lq, Lk, d)
    prod = q.unsqueeze(-2) * rel.unsqueeze(0)     # (B, G, nb, Lq, Lk, d)
    return scale * (prod if ctx.bp.depthwise else prod.sum(-1))


def term_query_rel_pos(ctx, sel, q, k, scale):
    return _query_dot_table(ctx, sel, q, ctx.p.rel_pos.key, scale)


def term_key_rel_pos(ctx, sel, q, k, scale):
    rel = _tables(ctx, sel, ctx.p.rel_pos.query)  # (G, nb, Lq, Lk, d)
    prod = k.unsqueeze(-3) * rel.unsqueeze(0)     # (B, G, nb, Lq, Lk, d)
    return scale * (prod if ctx.bp.depthwise else prod.sum(-1))


def term_rel_pos_bias(ctx, sel, q, k, scale):
    return _tables(ctx, sel, ctx.p.rel_pos.bias).unsqueeze(0)   # (1, G, nb, Lq, Lk)


def term_query_mean(ctx, sel, q, k, scale):
    n = sel.key_count
    return (q / n).unsqueeze(-2).expand(-1, -1, -1, -1, n, -1)


TERMS = {
    "query_key": term_query_key, "query_rel_pos": term_query_rel_pos,
    "key_rel_pos": term_key_rel_pos, "rel_pos_bias": term_rel_pos_bias,
    "query_mean": term_query_mean,
}


def additive_logits(ctx, sel, q, k):
    """(scores, bias): scores = s·q·kᵀ from a dynamic query_key term (None without one),
    bias = the sum of every other term (None without any). Kept apart so that a pass can
    hand `scores` to a fused attention kernel and `bias` to its mask."""
    scale = ctx.bp.scale()
    scores = bias = None
    for name in ctx.bp.spec.parameterization.terms:
        term = TERMS[name](ctx, sel, q, k, scale)
        if ctx.bp.depthwise and name == "rel_pos_bias":
            term = term.unsqueeze(-1)   # one bias per head, shared by its channels
        if name == "query_key" and ctx.bp.spec.kernel_bank.keys == "dynamic":
            scores = term
        else:
            bias = add(bias, term)
    return scores, bias


def add(a, b):
    """a + b where either may be absent (None)."""
    return b if a is None else a if b is None else a + b


ACTIVATIONS = {"gelu": F.gelu, "relu": F.relu, "identity": lambda t: t}


def hadamard_logits(ctx, q_map, k_map):
    """ELSA: logits = PW(act(DW(q ⊙ k · s))), G·K² channels per pixel → (B, G, N, 1, K²)."""
    bp, par = ctx.bp, ctx.bp.spec.parameterization
    h = q_map * k_map
    s = bp.scale()
    if s != 1.0:
        h = h * s
    h = ACTIVATIONS[par.activation](conv_module(ctx, ctx.p.hadamard.dw, to_nchw(h)))
    logits = ctx.p.hadamard.pw(h)                        # (B, G·K², H, W)
    kk = bp.window * bp.window
    return logits.unflatten(1, (bp.heads, kk)).flatten(3).permute(0, 1, 3, 2).unsqueeze(3)


# ====================================================================== normalization
def norm_softmax(ctx, w):
    t = ctx.bp.spec.normalization.temperature
    return torch.softmax(w / t if t != 1.0 else w, dim=KEY_AXIS)


def norm_identity(ctx, w):
    return w


def norm_relu(ctx, w):
    out = F.relu(w)
    return out / ctx.key_count if ctx.bp.spec.normalization.mean else out


def norm_layernorm(ctx, w):
    mean = w.mean(KEY_AXIS, keepdim=True)
    var = w.var(KEY_AXIS, keepdim=True, unbiased=False)
    return (w - mean) / torch.sqrt(var + ctx.bp.spec.normalization.eps)


def norm_sigmoid(ctx, w):
    return torch.sigmoid(w)


def norm_l1(ctx, w):
    return w / w.abs().sum(KEY_AXIS, keepdim=True).clamp_min(ctx.bp.spec.normalization.eps)


def norm_filter(ctx, w):
    """DDF filter normalization: (w − mean)/(std + 1e-10) · gain / K, unbiased std."""
    gain = ctx.bp.spec.normalization.gain
    centred = w - w.mean(KEY_AXIS, keepdim=True)
    return centred / (w.std(KEY_AXIS, keepdim=True) + 1e-10) * (gain / ctx.bp.window)


NORMALIZATIONS = {
    "softmax": norm_softmax, "identity": norm_identity, "relu": norm_relu,
    "layernorm": norm_layernorm, "sigmoid": norm_sigmoid, "l1": norm_l1,
    "filter_norm": norm_filter,
}


# ====================================================================== kernel expansion
def _per_channel(ctx, table):
    """A (width, K, K) per-channel table → (G, 1, 1, K², d), broadcasting over blocks."""
    bp = ctx.bp
    return table.reshape(bp.heads, bp.head_dim, -1).permute(0, 2, 1)[:, None, None]


def _ghost_mul(ctx):
    lam = ctx.bp.spec.kernel.expand.lam
    return ctx.p.ghost.mul if lam == 1 else ctx.p.ghost.mul ** lam


def ghost_head(ctx, a):
    """F[c,k] = M[c,k]^λ · A[g,k] + γ·S[c,k]: per-head filters (B, G, N, 1, K²) →
    per-channel filters (B, G, N, 1, K², d). Only used where attention dropout must drop
    entries of F itself (training); otherwise `ghost_head_aggregate` never builds F."""
    bp, ex = ctx.bp, ctx.bp.spec.kernel.expand
    out = a.unsqueeze(-1)
    if ex.lam != 0:
        out = out * _per_channel(ctx, _ghost_mul(ctx))
    else:
        out = out.expand(-1, -1, -1, -1, -1, bp.head_dim)
    if ex.gamma != 0:
        out = out + ex.gamma * _per_channel(ctx, ctx.p.ghost.add)
    return out


def ghost_head_splits(ctx) -> bool:
    """Σ_k F[c,k]·v[c,k] = Σ_k A[g,k]·(M[c,k]^λ·v[c,k]) + Σ_k γ·S[c,k]·v[c,k] is exact,
    and avoids the per-channel filter tensor F (K²·C per pixel) — unless attention dropout
    has to drop entries of F."""
    b = ctx.bp.spec
    return b.kernel.expand is not None and not (ctx.training and b.dropout.attention > 0)


def ghost_head_aggregate(ctx, sel, a, v, v_map):
    """The ghost head, split: head-shared weights A over M^λ-scaled values (one weighted
    sum per head, which inductor fuses with the neighbourhood loads), plus the static
    filter γ·S as a depthwise convolution (bind allows the ghost head only on zero-padded
    sliding neighbourhoods, where Σ_k S[c,k]·v[c,p+k] is exactly that).
    a (B, G, N, 1, K²), v (B, G, N, K², d) → (B, H, W, width)."""
    ex = ctx.bp.spec.kernel.expand
    if sel.weighs_windows:
        bp, k = ctx.bp, sel.k
        mul = _ghost_mul(ctx).reshape(bp.heads, bp.head_dim, k, k) if ex.lam != 0 else None
        y = sel.weigh_windows(a, v_map, tap_scale=mul)
    else:
        v_dyn = v * _per_channel(ctx, _ghost_mul(ctx))[:, 0] if ex.lam != 0 else v
        y = sel.unblock(aggregate(a, v_dyn, per_channel=False, single_query=True))
    if ex.gamma != 0:
        kernel = (ex.gamma * ctx.p.ghost.add).unsqueeze(1)          # (width, 1, K, K)
        y = y + depthwise_conv(ctx, v_map, kernel, sel.dil)
    return y


# ====================================================================== static filters
def static_filter_branch(b) -> bool:
    """w_ij = Norm(r^b[j−i]) alone on a zero-padded neighbourhood: the weights do not depend
    on the input, so the whole branch is a depthwise convolution (also autoplan's rule)."""
    return (isinstance(b.parameterization, m.Additive)
            and tuple(b.parameterization.terms) == ("rel_pos_bias",)
            and isinstance(b.application, m.Sliding) and b.application.border == "zero_pad"
            and b.kernel.type == "standard" and b.kernel.expand is None)


def is_static_filter(ctx) -> bool:
    """static_filter_branch, unless attention dropout must drop individual weights."""
    b = ctx.bp.spec
    return static_filter_branch(b) and not (ctx.training and b.dropout.attention > 0)


def static_filter_conv(ctx, sel, v_map, bias=None):
    """The normalized K×K table of each head as the kernel of F.conv2d (groups = channels):
    conv2d is cross-correlation, y[i] = Σ_δ w[δ]·v[i+δ], and the table is indexed by
    δ = j − i in the same (dy+r)·K + (dx+r) order (flipped for i_minus_j tables)."""
    bp, k, dil = ctx.bp, sel.k, sel.dil
    table = ctx.p.rel_pos.bias                                   # (G, K²)
    if bp.spec.parameterization.rel_pos_orientation == "i_minus_j":
        table = table.flip(-1)
    weights = NORMALIZATIONS[bp.spec.normalization.kind](ctx, table[None, :, None, None])
    kernel = weights.reshape(bp.heads, 1, k, k)
    if bp.head_dim > 1:   # a head's filter serves each of its channels
        kernel = kernel.repeat_interleave(bp.head_dim, dim=0)
    return depthwise_conv(ctx, v_map, kernel, dil, bias)


def depthwise_conv(ctx, v_map, kernel, dil: int, bias=None):
    """Zero-padded depthwise K×K cross-correlation of a (B, H, W, width) map with a
    (width, 1, K, K) kernel → (B, H, W, width)."""
    k, width = ctx.bp.window, ctx.bp.width       # static sizes: no shape queries in the graph
    return to_nhwc(grouped_conv(ctx, to_nchw(v_map), kernel, bias, padding=dil * (k // 2),
                                dilation=dil, groups=width))


def grouped_conv(ctx, x, weight, bias=None, **kw):
    """F.conv2d for the depthwise / grouped convs of the zoo (static filters, ELSA's
    Hadamard conv, BOAT's value conv, PEG). In low precision on a CPU they run in float32:
    this AVX2 CPU has no bfloat16 depthwise kernel worth the name (7×7 at 56×56, C=96,
    batch 8: ~650 ms in bfloat16, eager or compiled, against ~9 ms in float32;
    benchmarks/results/paired_*)."""
    if ctx.dtype in (torch.bfloat16, torch.float16) and ctx.device.type == "cpu":
        bias = bias.float() if bias is not None else None
        return F.conv2d(x.float(), weight.float(), bias, **kw).to(ctx.dtype)
    return F.conv2d(x, weight, bias, **kw)


def conv_module(ctx, conv, x):
    """An nn.Conv2d parameter module applied through grouped_conv (same arguments)."""
    return grouped_conv(ctx, x, conv.weight, conv.bias, stride=conv.stride,
                        padding=conv.padding, dilation=conv.dilation, groups=conv.groups)


# ====================================================================== aggregation
def aggregate(w, v, per_channel: bool, single_query: bool = False):
    """y_i = Σ_j w_ij ⊙ v_j, for one weight per head (matmul) or per channel; with one
    query per block as a multiply-and-sum (see term_query_key)."""
    if single_query and not per_channel:
        return (w.transpose(-1, -2) * v).sum(-2, keepdim=True)
    if not per_channel:
        return w @ v
    return (w * v.unsqueeze(3)).sum(KEY_AXIS)


def dropout(ctx, t, p: float):
    return F.dropout(t, p, training=True) if (ctx.training and p > 0) else t


def mask_like(mask, per_channel: bool):
    return mask.unsqueeze(-1) if per_channel else mask


__all__ = ["Ctx", "selection_for", "TERMS", "NORMALIZATIONS", "unfold_kernel",
           "additive_logits", "hadamard_logits", "ghost_head", "ghost_head_splits",
           "ghost_head_aggregate", "depthwise_conv", "aggregate", "dropout",
           "mask_like"]
