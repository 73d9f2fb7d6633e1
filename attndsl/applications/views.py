"""Sliding K×K neighbourhoods as strided views, with a backward of shifted slices.

Compiled graphs read every pixel's neighbourhood as a strided view of the map
(`Tensor.unfold`): inductor turns the view into plain loop indices inside the reduction
that consumes it, so the K²-times-larger im2col copy never exists. Autograd's backward of
those views is a scatter-add (`unfold_backward`, and `index` backward for NATTEN's clamped
starts), which inductor lowers to `index_put(accumulate=True)`. On the CPU with more than
one thread that becomes `atomic_add_vec` inside a 2-D tiled loop whose index expression is
wrong (the inner tile variable gets the stride of another dimension): wrong gradients, or
writes past the buffer that corrupt the heap ("double free or corruption"). Minimal repro,
torch 2.13.0 CPU, two threads:

    x = torch.randn(1, 3, 3, 2, requires_grad=True); w = torch.randn(1, 2, 2, 2, 2, 2)
    f = lambda x: (x.unfold(1, 2, 1).unfold(2, 2, 1) * w).sum((-2, -1))
    torch.compile(f)(x).sum().backward()      # x.grad off by ~1.9 (seed 0) vs eager

(docs/inductor-cpu-unfold-backward.md has the generated code and the heap-corrupting size).

So `WindowViews` keeps the view for the forward and writes the backward as its transpose
in shifted slices: per axis, source s sums the gradient of the K (query, tap) pairs that
read it, each a shifted slice of the zero-padded gradient (NATTEN's clamped starts first
fold the border queries onto the first and last window). No scatter, nothing atomic,
plain loop indices, and the forward is the same view as before.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def window_view(t, heads: int, k: int, dilation: int, starts_y=None, starts_x=None):
    """t (B, H, W, G·c) → every pixel's K×K neighbourhood (B, H, W, G, c, K, K) as a strided
    view. Zero padding (starts None): Tensor.unfold of the padded map, every δ-th element.
    Clamped: unfold each dilated sub-grid, then pick each row's and column's clamped start
    (separable index arithmetic; H and W multiples of δ)."""
    t = t.unflatten(-1, (heads, -1))                                     # (B, H, W, G, c)
    if starts_y is None:
        r, span = dilation * (k // 2), dilation * (k - 1) + 1
        win = F.pad(t, (0, 0, 0, 0, r, r, r, r)).unfold(1, span, 1).unfold(2, span, 1)
        return win[..., ::dilation, ::dilation] if dilation > 1 else win
    h, w = starts_y.shape[0], starts_x.shape[0]               # each dilated sub-grid
    # row y = i·δ + a: sub-grid row i of residue a (δ = 1: a plain grid)
    t = t.unflatten(2, (w, dilation)).unflatten(1, (h, dilation))   # (B, h, δ, w, δ, G, c)
    win = t.unfold(1, k, 1).unfold(3, k, 1)          # (B, h−K+1, δ, w−K+1, δ, G, c, K, K)
    win = win[:, starts_y][:, :, :, starts_x]             # (B, h, δ, w, δ, G, c, K, K)
    return win.flatten(3, 4).flatten(1, 2)                # (B, H, W, G, c, K, K)


def _shift_taps(g, axis: int, tap_axis: int, k: int, step: int, offset: int, length: int):
    """Σ_t g[s − t·step + offset, t] for every source s < length, the reads outside g
    being zero: the transpose of "query q reads source q + t·step − offset at tap t",
    as K shifted slices of the zero-padded gradient (plain loop indices for inductor)."""
    n = g.shape[axis]
    lo = (k - 1) * step
    hi = max(length + offset - n, 0)
    g = F.pad(g, [0, 0] * (g.dim() - 1 - axis) + [lo, hi])
    total = 0
    for t in range(k):
        total = total + g.narrow(axis, lo + offset - t * step, length).select(tap_axis, t)
    return total


def _fold_clamped_starts(g, axis: int, r: int):
    """Transpose of picking each query's clamped window start: the first r+1 queries all
    read window 0 and the last r+1 the last window (NATTEN's clamp), the others window
    q − r. → g with `axis` over the n − 2r windows."""
    n = g.shape[axis]
    windows = n - 2 * r
    middle = g.narrow(axis, r, windows)
    if r == 0:
        return middle
    pad = [0, 0] * (g.dim() - 1 - axis)
    head = F.pad(g.narrow(axis, 0, r).sum(axis, keepdim=True), pad + [0, windows - 1])
    tail = F.pad(g.narrow(axis, n - r, r).sum(axis, keepdim=True), pad + [windows - 1, 0])
    return middle + head + tail


class WindowViews(torch.autograd.Function):
    """`window_view` with a backward of shifted slices (see the module docstring for why)."""

    @staticmethod
    def forward(t, heads, k, dilation, starts_y, starts_x):
        return window_view(t, heads, k, dilation, starts_y, starts_x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        t, _, ctx.k, ctx.dilation, starts_y, _ = inputs
        ctx.clamped = starts_y is not None
        ctx.grid = t.shape[1], t.shape[2]

    @staticmethod
    def backward(ctx, grad):
        k, dil, (H, W) = ctx.k, ctx.dilation, ctx.grid
        g = grad.flatten(3, 4)                                      # (B, H, W, G·c, K, K)
        if not ctx.clamped:
            # query q reads source q + t·δ − δ⌊K/2⌋: separable shifts along y, then x
            g = _shift_taps(g, 1, 4, k, dil, dil * (k // 2), H)      # (B, H, W, G·c, K)
            return _shift_taps(g, 2, 4, k, dil, dil * (k // 2), W), None, None, None, None, None
        # clamped: per dilated sub-grid, fold the queries onto their windows' starts, then
        # window j reads sub-grid rows j + t (an unpadded unfold)
        g = g.unflatten(2, (W // dil, dil)).unflatten(1, (H // dil, dil))  # (B,h,δ,w,δ,C,K,K)
        g = _fold_clamped_starts(g, 1, k // 2)
        g = _shift_taps(g, 1, 6, k, 1, 0, H // dil)                  # (B, h, δ, w, δ, C, K)
        g = _fold_clamped_starts(g, 3, k // 2)
        g = _shift_taps(g, 3, 6, k, 1, 0, W // dil)                  # (B, h, δ, w, δ, C)
        return g.flatten(3, 4).flatten(1, 2), None, None, None, None, None


def sliding_windows(t, heads: int, k: int, dilation: int, starts_y=None, starts_x=None):
    """The traced entry (an fx leaf): `WindowViews` when autograd will differentiate
    through it, the plain view otherwise."""
    if torch.is_grad_enabled() and t.requires_grad:
        return WindowViews.apply(t, heads, k, dilation, starts_y, starts_x)
    return window_view(t, heads, k, dilation, starts_y, starts_x)


# ---------------------------------------------------------------- constant-index gathers
def inverse_index(index: torch.Tensor, sources: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The transpose of a constant gather `out[f] = t[index.flat[f]]`: for every source,
    the flat positions that read it, padded to the longest list → (sources, M) positions
    and a 0/1 weight (sources, M) that zeroes the padding."""
    readers: list[list[int]] = [[] for _ in range(sources)]
    for flat, src in enumerate(index.flatten().tolist()):
        readers[src].append(flat)
    longest = max(len(r) for r in readers)
    positions = torch.zeros(sources, longest, dtype=torch.long)
    weight = torch.zeros(sources, longest)
    for src, flats in enumerate(readers):
        positions[src, :len(flats)] = torch.tensor(flats, dtype=torch.long)
        weight[src, :len(flats)] = 1.0
    return positions, weight


def _gather(t, dim: int, index):
    """t's rows along `dim` picked by `index`, shaped like it (index.shape replaces dim)."""
    return t.index_select(dim, index.flatten()).unflatten(dim, tuple(index.shape))


class ConstantGather(torch.autograd.Function):
    """`t.index_select(dim, index)` shaped like `index`, with its backward written as the
    transposed gather (the readers of each source, from `inverse_index`) instead of
    autograd's scatter-add, which inductor's CPU backend miscompiles (module docstring)."""

    @staticmethod
    def forward(t, dim, index, readers, weight):
        return _gather(t, dim, index)

    @staticmethod
    def setup_context(ctx, inputs, output):
        _, ctx.dim, index, readers, weight = inputs
        ctx.index_dims = index.dim()
        ctx.save_for_backward(readers, weight)

    @staticmethod
    def backward(ctx, grad):
        readers, weight = ctx.saved_tensors
        dim = ctx.dim
        g = grad.flatten(dim, dim + ctx.index_dims - 1)             # (…, F, …)
        picked = _gather(g, dim, readers)
        shape = [1] * picked.dim()
        shape[dim], shape[dim + 1] = readers.shape
        return (picked * weight.to(g.dtype).view(shape)).sum(dim + 1), None, None, None, None


def constant_gather(t, dim: int, index, readers, weight):
    """The traced entry (an fx leaf): `ConstantGather` when autograd will differentiate
    through it, the plain gather otherwise."""
    if torch.is_grad_enabled() and t.requires_grad:
        return ConstantGather.apply(t, dim, index, readers, weight)
    return _gather(t, dim, index)
