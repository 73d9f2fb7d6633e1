"""neighbourhood attention: the paper-style reference and the hand-picked baselines.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Ctx, Fn, na_tables, natten_starts, Skip, _merge_dilated, _split_dilated
from .swin import _flex


# ---------------------------------------------------------------- neighbourhood attention
def _na_params(c: Ctx):
    b = c.b
    K = b.window
    dl = b.spec.application.dilation
    return K, dl


def nat_reference(c: Ctx) -> Fn:
    """NAT's LegacyNeighborhoodAttention (the public pure-PyTorch module, mode 1): qkv,
    F.unfold of k/v over the valid K×K windows, 'replicate' pad of the window grid (which
    is exactly NATTEN's clamped neighbourhood), q @ kᵀ per query, + rpb gathered from the
    (2K−1)² table, softmax, @ v, proj.  The legacy module has no dilation: for DiNAT the
    dl×dl interleaved sub-grids are split into the batch first (NATTEN semantics)."""
    K, dl = _na_params(c)
    G, d, s = c.G, c.d, c.scale
    Wqkv, bqkv, Wp_, bp_ = c.p("attn.qkv.weight"), c.p("attn.qkv.bias"), \
        c.p("attn.proj.weight"), c.p("attn.proj.bias")
    rpb = c.p("attn.rel_pos.bias")                         # (G, (2K−1)²)
    h, w = c.H // dl, c.W // dl
    _, rel = na_tables(h, w, K)                            # (N, K²)
    rel = rel.to(Wqkv.device)
    T, pdr = K * K, (K - 1) // 2

    def fn(x):
        B, H, W, C = x.shape
        if dl > 1:
            x = _split_dilated(x, dl)
        Bs = x.shape[0]
        N = h * w
        x = F.linear(x, Wqkv, bqkv).reshape(Bs, h, w, 3 * C)
        q, x = x[:, :, :, :C], x[:, :, :, C:]
        q = q.reshape(Bs, N, G, d, 1).transpose(3, 4) * s
        Hr, Wr = h - (K - 1), w - (K - 1)
        x = F.unfold(x.permute(0, 3, 1, 2), kernel_size=(K, K), stride=(1, 1),
                     padding=(0, 0)).reshape(Bs, 2 * C * T, Hr, Wr)
        x = F.pad(x, (pdr, pdr, pdr, pdr), "replicate").reshape(Bs, 2, G, d, T, N)
        x = x.permute(1, 0, 5, 2, 4, 3)
        k, v = x[0], x[1]
        attn = q @ k.transpose(-2, -1)                     # (Bs, N, G, 1, K²)
        attn = attn + rpb[:, rel].reshape(G, N, 1, T).transpose(0, 1)
        attn = attn.softmax(dim=-1)
        y = (attn @ v).reshape(Bs, h, w, C)
        if dl > 1:
            y = _merge_dilated(y, dl, B)
        return F.linear(y, Wp_, bp_)
    return fn


def nat_gather(c: Ctx, form: str = "mulsum") -> Fn:
    """Gather form for torch.compile: keys/values of every query gathered with a
    precomputed (N, K²) neighbour index, rpb gathered once (static), softmax.
    form='mulsum': logits and output as broadcast-multiply + sum over the gathered
    neighbours (inductor fuses gather, product and reduction: no (N, K², d) tensor);
    form='matmul': q @ Kᵀ and A @ V on the materialized gathers (what a bmm-minded port
    writes; inductor cannot fuse the gather into the bmm)."""
    K, dl = _na_params(c)
    G, d, s = c.G, c.d, c.scale
    Wqkv, bqkv, Wp_, bp_ = c.p("attn.qkv.weight"), c.p("attn.qkv.bias"), \
        c.p("attn.proj.weight"), c.p("attn.proj.bias")
    h, w = c.H // dl, c.W // dl
    nbr, rel = na_tables(h, w, K)
    nbr = nbr.to(Wqkv.device)
    bias = c.p("attn.rel_pos.bias")[:, rel.to(Wqkv.device)].contiguous()   # (G, N, K²)

    def fn(x):
        B, H, W, C = x.shape
        qkv = F.linear(x, Wqkv, bqkv)
        if dl > 1:
            qkv = _split_dilated(qkv, dl)
        Bs = qkv.shape[0]
        qkv = qkv.view(Bs, h * w, 3, G, d).permute(2, 0, 3, 1, 4)     # 3, Bs, G, N, d
        q, k, v = qkv[0], qkv[1], qkv[2]
        kn = k[:, :, nbr]                                             # (Bs, G, N, K², d)
        vn = v[:, :, nbr]
        if form == "matmul":
            a = (q.unsqueeze(3) * s) @ kn.transpose(-1, -2) + bias.unsqueeze(2)
            y = (a.softmax(-1) @ vn).squeeze(3)                       # (Bs, G, N, d)
        else:
            a = (q.unsqueeze(3) * kn).sum(-1) * s + bias              # (Bs, G, N, K²)
            y = (a.softmax(-1).unsqueeze(-1) * vn).sum(3)             # (Bs, G, N, d)
        y = y.permute(0, 2, 1, 3).reshape(Bs, h, w, C)
        if dl > 1:
            y = _merge_dilated(y, dl, B)
        return F.linear(y, Wp_, bp_)
    return fn


def nat_window_index(c: Ctx) -> Fn:
    """Clamped-window view form for torch.compile: Tensor.unfold views of k/v over the
    valid K×K windows indexed per row and per column by the clamped start (separable
    index arithmetic, no (N, K²) table), logits and output as broadcast-multiply + sum
    with K² innermost, rpb gathered once (static)."""
    K, dl = _na_params(c)
    G, d, s = c.G, c.d, c.scale
    Wqkv, bqkv, Wp_, bp_ = c.p("attn.qkv.weight"), c.p("attn.qkv.bias"), \
        c.p("attn.proj.weight"), c.p("attn.proj.bias")
    h, w = c.H // dl, c.W // dl
    dev = Wqkv.device
    sy, sx = natten_starts(h, K, dev), natten_starts(w, K, dev)
    _, rel = na_tables(h, w, K)
    bias = c.p("attn.rel_pos.bias")[:, rel.to(dev)].view(G, h, w, K * K).contiguous()

    def fn(x):
        B, H, W, C = x.shape
        qkv = F.linear(x, Wqkv, bqkv)
        if dl > 1:
            qkv = _split_dilated(qkv, dl)
        Bs = qkv.shape[0]
        qkv = qkv.view(Bs, h, w, 3, G, d).permute(3, 0, 4, 1, 2, 5)   # 3, Bs, G, h, w, d
        q, k, v = qkv[0] * s, qkv[1], qkv[2]
        kw = k.unfold(2, K, 1).unfold(3, K, 1)[:, :, sy][:, :, :, sx].reshape(Bs, G, h, w, d, K * K)
        vw = v.unfold(2, K, 1).unfold(3, K, 1)[:, :, sy][:, :, :, sx].reshape(Bs, G, h, w, d, K * K)
        a = (q.unsqueeze(-1) * kw).sum(-2) + bias                     # (Bs, G, h, w, K²)
        y = (a.softmax(-1).unsqueeze(-2) * vw).sum(-1)                # (Bs, G, h, w, d)
        y = y.permute(0, 2, 3, 1, 4).reshape(Bs, h, w, C)
        if dl > 1:
            y = _merge_dilated(y, dl, B)
        return F.linear(y, Wp_, bp_)
    return fn


def nat_dense_mask_sdpa(c: Ctx) -> Fn:
    """SDPA over all N keys with a dense static float mask: rpb inside the (clamped,
    dilated) neighbourhood, −inf outside.  O(N²) work; the mask is (G, N, N)."""
    K, dl = _na_params(c)
    G, d, s = c.G, c.d, c.scale
    Wqkv, bqkv, Wp_, bp_ = c.p("attn.qkv.weight"), c.p("attn.qkv.bias"), \
        c.p("attn.proj.weight"), c.p("attn.proj.bias")
    H, W = c.H, c.W
    N = H * W
    if G * N * N * Wqkv.element_size() > 8 * 2**30:
        raise Skip(f"dense mask would take {G * N * N * Wqkv.element_size() / 2**30:.1f} GiB")
    h, w = H // dl, W // dl
    nbr, rel = na_tables(h, w, K)                      # on the sub-grid
    # token index of sub-grid cell (a, b, yi, xi) in the full map
    ys = torch.arange(h)[:, None] * dl
    xs = torch.arange(w)[None, :] * dl
    mask = torch.full((G, N, N), float("-inf"), dtype=Wqkv.dtype, device=Wqkv.device)
    rpb = c.p("attn.rel_pos.bias")
    for a in range(dl):
        for b in range(dl):
            full = ((ys + a) * W + (xs + b)).reshape(-1)          # (h·w,) sub → full token
            qi = full[:, None].expand(-1, K * K)
            kj = full[nbr]
            mask[:, qi.reshape(-1).to(mask.device), kj.reshape(-1).to(mask.device)] = \
                rpb[:, rel.reshape(-1).to(mask.device)].to(mask.dtype)
    mask = mask.unsqueeze(0)

    def fn(x):
        B, H_, W_, C = x.shape
        qkv = F.linear(x.reshape(B, N, C), Wqkv, bqkv).view(B, N, 3, G, d).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=mask, scale=s)
        return F.linear(y.transpose(1, 2).reshape(B, H_, W_, C), Wp_, bp_)
    return fn


def nat_flex(c: Ctx) -> Fn:
    """Compiled FlexAttention on the row-major map: mask_mod = the clamped (dilated)
    neighbourhood by index arithmetic, score_mod adds rpb[h, dy, dx]."""
    flex_attention, create_block_mask = _flex()
    K, dl = _na_params(c)
    G, d, s = c.G, c.d, c.scale
    Wqkv, bqkv, Wp_, bp_ = c.p("attn.qkv.weight"), c.p("attn.qkv.bias"), \
        c.p("attn.proj.weight"), c.p("attn.proj.bias")
    H, W = c.H, c.W
    N = H * W
    h, w = H // dl, W // dl
    r = K // 2
    rpb = c.p("attn.rel_pos.bias").view(G, 2 * K - 1, 2 * K - 1).contiguous()

    def coords(idx):
        y, x = idx // W, idx % W
        return y // dl, y % dl, x // dl, x % dl

    def mask_mod(b, hh, q_idx, kv_idx):
        qy, qa, qx, qb = coords(q_idx)
        ky, ka, kx, kb = coords(kv_idx)
        sy = torch.clamp(qy - r, 0, h - K)
        sx = torch.clamp(qx - r, 0, w - K)
        return (qa == ka) & (qb == kb) & (ky >= sy) & (ky < sy + K) & (kx >= sx) & (kx < sx + K)

    def score_mod(score, b, hh, q_idx, kv_idx):
        qy, _, qx, _ = coords(q_idx)
        ky, _, kx, _ = coords(kv_idx)
        iy = torch.clamp(ky - qy + K - 1, 0, 2 * K - 2)
        ix = torch.clamp(kx - qx + K - 1, 0, 2 * K - 2)
        return score + rpb[hh, iy, ix]

    block_mask = create_block_mask(mask_mod, B=None, H=None, Q_LEN=N, KV_LEN=N,
                                   device=Wqkv.device)
    flex = torch.compile(flex_attention, dynamic=False)

    def fn(x):
        B, H_, W_, C = x.shape
        qkv = F.linear(x.reshape(B, N, C), Wqkv, bqkv).view(B, N, 3, G, d).permute(2, 0, 3, 1, 4)
        y = flex(qkv[0], qkv[1], qkv[2], score_mod=score_mod, block_mask=block_mask, scale=s)
        return F.linear(y.transpose(1, 2).reshape(B, H_, W_, C), Wp_, bp_)
    return fn


def nat_natten(c: Ctx) -> Fn:
    """NATTEN's fused neighbourhood attention, when the package is importable."""
    try:
        import natten  # noqa: F401
        from natten.functional import na2d
    except Exception as exc:
        raise Skip(f"NATTEN not installed ({type(exc).__name__}: {exc})")
    K, dl = _na_params(c)
    G, d, s = c.G, c.d, c.scale
    Wqkv, bqkv, Wp_, bp_ = c.p("attn.qkv.weight"), c.p("attn.qkv.bias"), \
        c.p("attn.proj.weight"), c.p("attn.proj.bias")
    rpb = c.p("attn.rel_pos.bias").view(G, 2 * K - 1, 2 * K - 1)

    def fn(x):   # pragma: no cover - NATTEN is not installed on the reference machine
        B, H, W, C = x.shape
        qkv = F.linear(x, Wqkv, bqkv).view(B, H, W, 3, G, d)
        q, k, v = qkv.unbind(3)
        y = na2d(q, k, v, kernel_size=K, dilation=dl, scale=s, rpb=rpb)
        return F.linear(y.reshape(B, H, W, C), Wp_, bp_)
    return fn
