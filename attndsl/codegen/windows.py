"""Sliding K×K neighbourhoods as strided views, with a backward that gathers.

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

So `WindowViews` keeps the view for the forward and writes the backward as the
transposed gather: each source pixel sums the gradient of the (query, tap) pairs that read
it, listed per axis in constant inverse tables. No scatter, nothing atomic, and the
forward is the same view as before.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def tap_sources(length: int, k: int, dilation: int, clamp: bool) -> torch.Tensor:
    """(length, K) source index along one axis for each (query position, tap); −1 where
    the tap falls in the zero padding. Zero padding: i + t·δ − δ·⌊K/2⌋. Clamped (NATTEN):
    the window slides inside the query's dilated sub-grid, so it never leaves the map."""
    sources = torch.empty(length, k, dtype=torch.long)
    for i in range(length):
        if clamp:
            residue, pos = i % dilation, i // dilation
            n_sub = len(range(residue, length, dilation))
            start = min(max(pos - k // 2, 0), n_sub - k)
            sources[i] = (torch.arange(k) + start) * dilation + residue
        else:
            src = i + (torch.arange(k) - k // 2) * dilation
            sources[i] = torch.where((src >= 0) & (src < length), src, -1)
    return sources


def inverse_taps(sources: torch.Tensor, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The transpose of `tap_sources`: for every source position, the flat (query·K + tap)
    entries that read it, padded to the longest list. → index (length, M) and a 0/1 weight
    (length, M) that zeroes the padding entries."""
    readers: list[list[int]] = [[] for _ in range(length)]
    for flat, src in enumerate(sources.flatten().tolist()):
        if src >= 0:
            readers[src].append(flat)
    longest = max(len(r) for r in readers)
    index = torch.zeros(length, longest, dtype=torch.long)
    weight = torch.zeros(length, longest)
    for src, flats in enumerate(readers):
        index[src, :len(flats)] = torch.tensor(flats, dtype=torch.long)
        weight[src, :len(flats)] = 1.0
    return index, weight


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


def _gather_taps(g, axis: int, tap_axis: int, index, weight):
    """Sum, for each source position along `axis`, the gradient entries (query, tap) that
    read it: g with `axis` and `tap_axis` → g with `axis` over sources, `tap_axis` gone."""
    g = g.movedim(tap_axis, axis + 1).flatten(axis, axis + 1)      # (…, L·K, …)
    picked = g.index_select(axis, index.flatten()).unflatten(axis, tuple(index.shape))
    shape = [1] * picked.dim()
    shape[axis], shape[axis + 1] = index.shape
    return (picked * weight.view(shape)).sum(axis + 1)


class WindowViews(torch.autograd.Function):
    """`window_view` with a gathering backward (see the module docstring for why)."""

    @staticmethod
    def forward(t, heads, k, dilation, starts_y, starts_x, index_y, weight_y, index_x,
                weight_x):
        return window_view(t, heads, k, dilation, starts_y, starts_x)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(*inputs[6:])

    @staticmethod
    def backward(ctx, grad):
        index_y, weight_y, index_x, weight_x = ctx.saved_tensors
        g = grad.flatten(3, 4)                                  # (B, H, W, G·c, K, K)
        g = _gather_taps(g, 1, 4, index_y, weight_y.to(g.dtype))   # (B, H, W, G·c, K)
        g = _gather_taps(g, 2, 4, index_x, weight_x.to(g.dtype))   # (B, H, W, G·c)
        return (g,) + (None,) * 9


def sliding_windows(t, heads: int, k: int, dilation: int, starts_y, starts_x, tables):
    """The traced entry (an fx leaf): `WindowViews` when autograd will differentiate
    through it, the plain view otherwise."""
    if torch.is_grad_enabled() and t.requires_grad:
        return WindowViews.apply(t, heads, k, dilation, starts_y, starts_x, *tables)
    return window_view(t, heads, k, dilation, starts_y, starts_x)
