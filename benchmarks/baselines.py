"""Paper-style eager references and hand-picked baselines for every zoo family.

Every callable here takes the *attndsl module's own parameters* (names as in
docs/parameters.md) and computes the same function as the module:
x (B, H, W, C) channels-last → (B, H, W, C).  The suite checks each one numerically
against the module before it times it (a mismatch is an error of the suite).

Per family:
  reference     how the paper's public code computes it in eager PyTorch
                (timm / Swin / Twins / LITv2 / ELSA / BOAT code style, explicit
                q @ kᵀ, bias gather, softmax, @ v), with the module's weights;
  baselines     what a careful engineer would hand-pick on CPU: SDPA (bias as an additive
                float mask, window partition), SDPA with pooled keys, a depthwise
                conv2d, torch.compile of a gather form, FlexAttention (compiled, CPU:
                inference only), NATTEN when importable.
  flops         the FLOP count used for GFLOP/s (formula in FLOP_FORMULAS).

Baselines that need torch.compile are marked `compiled=True` (the suite's --no-compile
skips them).  Static masks / bias tensors of the *baselines* are gathered once when the
baseline is built (inference: the weights are fixed); the paper-style references gather
per call, as the papers' code does.
"""
from __future__ import annotations

import math
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


# ============================================================================ families
# ---------------------------------------------------------------- global MHSA (ViT)
def vit_reference(c: Ctx) -> Fn:
    """timm Attention with fused_attn=False: explicit q @ kᵀ, softmax, @ v."""
    Wqkv, bqkv, Wp, bp = c.p("attn.qkv.weight"), c.p("attn.qkv.bias"), \
        c.p("attn.proj.weight"), c.p("attn.proj.bias")
    G, d, s = c.G, c.d, c.scale

    def fn(x):
        B, H, W, C = x.shape
        N = H * W
        qkv = F.linear(x.reshape(B, N, C), Wqkv, bqkv).reshape(B, N, 3, G, d).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q = q * s
        attn = (q @ k.transpose(-2, -1)).softmax(dim=-1)
        y = (attn @ v).transpose(1, 2).reshape(B, N, C)
        return F.linear(y, Wp, bp).reshape(B, H, W, C)
    return fn


def vit_sdpa(c: Ctx) -> Fn:
    """timm Attention with fused_attn=True: F.scaled_dot_product_attention."""
    Wqkv, bqkv, Wp, bp = c.p("attn.qkv.weight"), c.p("attn.qkv.bias"), \
        c.p("attn.proj.weight"), c.p("attn.proj.bias")
    G, d, s = c.G, c.d, c.scale

    def fn(x):
        B, H, W, C = x.shape
        N = H * W
        qkv = F.linear(x.reshape(B, N, C), Wqkv, bqkv).reshape(B, N, 3, G, d).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        y = F.scaled_dot_product_attention(q, k, v, scale=s).transpose(1, 2).reshape(B, N, C)
        return F.linear(y, Wp, bp).reshape(B, H, W, C)
    return fn


# ---------------------------------------------------------------- Swin window attention
def _window_geometry(c: Ctx):
    b = c.b
    ws, shift = b.window, b.shift
    Hp = -(-c.H // ws) * ws
    Wp = -(-c.W // ws) * ws
    return ws, shift, Hp, Wp


def swin_reference(c: Ctx, norm: str = "softmax", bias: bool = True) -> Fn:
    """timm SwinTransformerBlock's attention path: roll, pad (roll_then_pad), window
    partition, WindowAttention (qkv, q·scale @ kᵀ, + table[relative_position_index], + the
    −100 shift mask, softmax, @ v, proj), window reverse, crop, roll back.
    norm='relu_mean': the dynamic-conv paper's ReLU/n instead of softmax.
    bias=False: Twins-style window attention without a table."""
    ws, shift, Hp, Wp = _window_geometry(c)
    G, d, s, n = c.G, c.d, c.scale, ws * ws
    Wqkv, bqkv, Wp_, bp_ = c.p("attn.qkv.weight"), c.p("attn.qkv.bias"), \
        c.p("attn.proj.weight"), c.p("attn.proj.bias")
    table = c.p("attn.rel_pos.bias").t() if bias else None      # Swin's ((2ws−1)², G)
    rel_index = swin_relative_position_index(ws).to(Wqkv.device)
    mask = swin_shift_mask(Hp, Wp, ws, shift).to(Wqkv) if shift else None

    def fn(x):
        B, H, W, C = x.shape
        if shift:
            x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
        x = _pad_br(x, ws)
        xw = window_partition(x, ws).view(-1, n, C)
        B_ = xw.shape[0]
        qkv = F.linear(xw, Wqkv, bqkv).reshape(B_, n, 3, G, d).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        q = q * s
        attn = q @ k.transpose(-2, -1)
        if table is not None:
            rpb = table[rel_index.view(-1)].view(n, n, -1).permute(2, 0, 1).contiguous()
            attn = attn + rpb.unsqueeze(0)
        if mask is not None:
            nW = mask.shape[0]
            attn = attn.view(B_ // nW, nW, G, n, n) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, G, n, n)
        if norm == "softmax":
            attn = attn.softmax(dim=-1)
        else:
            attn = torch.relu(attn) / n
        y = (attn @ v).transpose(1, 2).reshape(B_, n, C)
        y = F.linear(y, Wp_, bp_)
        y = window_reverse(y.view(-1, ws, ws, C), ws, Hp, Wp)[:, :H, :W]
        if shift:
            y = torch.roll(y, shifts=(shift, shift), dims=(1, 2))
        return y.contiguous()
    return fn


def _window_mask(c: Ctx, bias: bool, dtype):
    """Static additive mask (1, nW·G, n, n): rel-pos bias (+ shift mask), built once."""
    ws, shift, Hp, Wp = _window_geometry(c)
    n, G = ws * ws, c.G
    nW = (Hp // ws) * (Wp // ws)
    m = torch.zeros(nW, G, n, n, dtype=dtype, device=c.p("attn.qkv.weight").device)
    if bias:
        idx = swin_relative_position_index(ws)
        m = m + c.p("attn.rel_pos.bias")[:, idx].to(dtype)[None]
    if shift:
        m = m + swin_shift_mask(Hp, Wp, ws, shift).to(m)[:, None]
    return m.reshape(1, nW * G, n, n).contiguous()


def window_sdpa(c: Ctx, bias: bool = True) -> Fn:
    """One qkv GEMM on the (padded, rolled) map, window partition of q/k/v into
    (B, nW·G, n, d), F.scaled_dot_product_attention with the rel-pos bias (+ shift mask)
    as a static additive float mask, reverse, proj."""
    ws, shift, Hp, Wp = _window_geometry(c)
    G, d, s, n = c.G, c.d, c.scale, ws * ws
    Wqkv, bqkv, Wp_, bp_ = c.p("attn.qkv.weight"), c.p("attn.qkv.bias"), \
        c.p("attn.proj.weight"), c.p("attn.proj.bias")
    mask = _window_mask(c, bias, Wqkv.dtype) if (bias or shift) else None
    nh, nw = Hp // ws, Wp // ws

    def fn(x):
        B, H, W, C = x.shape
        if shift:
            x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
        x = _pad_br(x, ws)
        qkv = F.linear(x, Wqkv, bqkv).view(B, nh, ws, nw, ws, 3, G, d)
        qkv = qkv.permute(5, 0, 1, 3, 6, 2, 4, 7).reshape(3, B, nh * nw * G, n, d)
        y = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], attn_mask=mask, scale=s)
        y = y.view(B, nh, nw, G, ws, ws, d).permute(0, 1, 4, 2, 5, 3, 6).reshape(B, Hp, Wp, C)
        y = y[:, :H, :W]
        if shift:
            y = torch.roll(y, shifts=(shift, shift), dims=(1, 2))
        return F.linear(y, Wp_, bp_)
    return fn


def window_relu_bmm(c: Ctx) -> Fn:
    """ReLU/n window attention (no SDPA for non-softmax): windows as (B·nW·G, n, d),
    one baddbmm with the static rel-pos bias gathered once, relu, /n, bmm."""
    ws, shift, Hp, Wp = _window_geometry(c)
    G, d, s, n = c.G, c.d, c.scale, ws * ws
    Wqkv, bqkv, Wp_, bp_ = c.p("attn.qkv.weight"), c.p("attn.qkv.bias"), \
        c.p("attn.proj.weight"), c.p("attn.proj.bias")
    mask = _window_mask(c, True, Wqkv.dtype)               # (1, nW·G, n, n)
    nh, nw = Hp // ws, Wp // ws

    def fn(x):
        B, H, W, C = x.shape
        x = _pad_br(x, ws)
        qkv = F.linear(x, Wqkv, bqkv).view(B, nh, ws, nw, ws, 3, G, d)
        qkv = qkv.permute(5, 0, 1, 3, 6, 2, 4, 7).reshape(3, B, nh * nw * G, n, d)
        q, k, v = qkv[0], qkv[1], qkv[2]
        a = torch.baddbmm(mask.expand(B, -1, -1, -1).reshape(-1, n, n),
                          q.reshape(-1, n, d), k.reshape(-1, n, d).transpose(1, 2), alpha=s)
        a = torch.relu(a).mul_(1.0 / n)
        y = torch.bmm(a, v.reshape(-1, n, d)).view(B, nh, nw, G, ws, ws, d)
        y = y.permute(0, 1, 4, 2, 5, 3, 6).reshape(B, Hp, Wp, C)[:, :H, :W]
        return F.linear(y, Wp_, bp_)
    return fn


def _flex():
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    except Exception as exc:   # pragma: no cover - depends on the torch build
        raise Skip(f"FlexAttention not importable: {type(exc).__name__}: {exc}")
    return flex_attention, create_block_mask


def window_flex(c: Ctx, bias: bool = True) -> Fn:
    """Compiled FlexAttention on the window-major token order: block mask = same window,
    score_mod adds the rel-pos bias (and the −100 shift mask)."""
    flex_attention, create_block_mask = _flex()
    ws, shift, Hp, Wp = _window_geometry(c)
    G, d, s, n = c.G, c.d, c.scale, ws * ws
    Wqkv, bqkv, Wp_, bp_ = c.p("attn.qkv.weight"), c.p("attn.qkv.bias"), \
        c.p("attn.proj.weight"), c.p("attn.proj.bias")
    nh, nw = Hp // ws, Wp // ws
    N = Hp * Wp
    nW = nh * nw
    tab = (c.p("attn.rel_pos.bias")[:, swin_relative_position_index(ws)].contiguous()
           if bias else None)                                  # (G, n, n)
    smask = swin_shift_mask(Hp, Wp, ws, shift).to(Wqkv) if shift else None

    def mask_mod(b, h, q_idx, kv_idx):
        return (q_idx // n) == (kv_idx // n)

    def score_mod(score, b, h, q_idx, kv_idx):
        if tab is not None:
            score = score + tab[h, q_idx % n, kv_idx % n]
        if smask is not None:
            score = score + smask[(q_idx // n) % nW, q_idx % n, kv_idx % n]
        return score

    block_mask = create_block_mask(mask_mod, B=None, H=None, Q_LEN=N, KV_LEN=N,
                                   device=Wqkv.device)
    flex = torch.compile(flex_attention, dynamic=False)

    def fn(x):
        B, H, W, C = x.shape
        if shift:
            x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
        x = _pad_br(x, ws)
        qkv = F.linear(x, Wqkv, bqkv).view(B, nh, ws, nw, ws, 3, G, d)
        qkv = qkv.permute(5, 0, 6, 1, 3, 2, 4, 7).reshape(3, B, G, N, d)
        y = flex(qkv[0], qkv[1], qkv[2], score_mod=score_mod if (tab is not None or shift) else None,
                 block_mask=block_mask, scale=s)
        y = y.view(B, G, nh, nw, ws, ws, d).permute(0, 2, 4, 3, 5, 1, 6).reshape(B, Hp, Wp, C)
        y = y[:, :H, :W]
        if shift:
            y = torch.roll(y, shifts=(shift, shift), dims=(1, 2))
        return F.linear(y, Wp_, bp_)
    return fn


# ---------------------------------------------------------------- Twins LSA
def twins_lsa_reference(c: Ctx) -> Fn:
    """Twins LocallyGroupedAttn: pad, (B, _h, ws, _w, ws, C).transpose(2, 3), qkv on the
    groups, explicit attention, ungroup, crop, proj."""
    ws = c.b.window
    G, d, s = c.G, c.d, c.scale
    Wqkv, bqkv, Wp_, bp_ = c.p("attn.qkv.weight"), c.p("attn.qkv.bias"), \
        c.p("attn.proj.weight"), c.p("attn.proj.bias")

    def fn(x):
        B, H, W, C = x.shape
        pad_r, pad_b = (ws - W % ws) % ws, (ws - H % ws) % ws
        x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        Hp, Wp = x.shape[1], x.shape[2]
        _h, _w = Hp // ws, Wp // ws
        x = x.reshape(B, _h, ws, _w, ws, C).transpose(2, 3)
        qkv = F.linear(x, Wqkv, bqkv).reshape(B, _h * _w, ws * ws, 3, G, d).permute(3, 0, 1, 4, 2, 5)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q @ k.transpose(-2, -1)) * s).softmax(dim=-1)
        attn = (attn @ v).transpose(2, 3).reshape(B, _h, _w, ws, ws, C)
        y = attn.transpose(2, 3).reshape(B, _h * ws, _w * ws, C)[:, :H, :W].contiguous()
        return F.linear(y, Wp_, bp_)
    return fn


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


# ---------------------------------------------------------------- PVT / Twins GSA
def gsa_reference(c: Ctx) -> Fn:
    """Twins GlobalSubSampleAttn / PVT SRA: q over all tokens, sr×sr strided conv on the
    NCHW map, LayerNorm, kv, explicit attention, proj."""
    b = c.b
    sr = b.spec.application.ratio
    G, d, s = c.G, c.d, c.scale
    Wq, bq, Wkv, bkv = c.p("attn.q.weight"), c.p("attn.q.bias"), c.p("attn.kv.weight"), c.p("attn.kv.bias")
    Wsr, bsr = c.p("attn.pool.conv.weight"), c.p("attn.pool.conv.bias")
    lnw, lnb = c.p("attn.pool.norm.weight"), c.p("attn.pool.norm.bias")
    eps = b.spec.application.norm_eps
    Wp_, bp_ = c.p("attn.proj.weight"), c.p("attn.proj.bias")

    def fn(x):
        B, H, W, C = x.shape
        N = H * W
        q = F.linear(x.reshape(B, N, C), Wq, bq).reshape(B, N, G, d).permute(0, 2, 1, 3)
        x_ = F.conv2d(x.permute(0, 3, 1, 2), Wsr, bsr, stride=sr).reshape(B, C, -1).permute(0, 2, 1)
        x_ = F.layer_norm(x_, (C,), lnw, lnb, eps)
        kv = F.linear(x_, Wkv, bkv).reshape(B, -1, 2, G, d).permute(2, 0, 3, 1, 4)
        k, v = kv[0], kv[1]
        attn = ((q @ k.transpose(-2, -1)) * s).softmax(dim=-1)
        y = (attn @ v).transpose(1, 2).reshape(B, N, C)
        return F.linear(y, Wp_, bp_).reshape(B, H, W, C)
    return fn


def gsa_sdpa(c: Ctx) -> Fn:
    """Pooled keys: the same strided conv + LayerNorm + kv, then
    F.scaled_dot_product_attention over the (H/sr)·(W/sr) keys."""
    b = c.b
    sr = b.spec.application.ratio
    G, d, s = c.G, c.d, c.scale
    Wq, bq, Wkv, bkv = c.p("attn.q.weight"), c.p("attn.q.bias"), c.p("attn.kv.weight"), c.p("attn.kv.bias")
    Wsr, bsr = c.p("attn.pool.conv.weight"), c.p("attn.pool.conv.bias")
    lnw, lnb = c.p("attn.pool.norm.weight"), c.p("attn.pool.norm.bias")
    eps = b.spec.application.norm_eps
    Wp_, bp_ = c.p("attn.proj.weight"), c.p("attn.proj.bias")

    def fn(x):
        B, H, W, C = x.shape
        N = H * W
        q = F.linear(x.reshape(B, N, C), Wq, bq).view(B, N, G, d).transpose(1, 2)
        x_ = F.conv2d(x.permute(0, 3, 1, 2), Wsr, bsr, stride=sr)        # channels-last conv
        x_ = F.layer_norm(x_.permute(0, 2, 3, 1).reshape(B, -1, C), (C,), lnw, lnb, eps)
        kv = F.linear(x_, Wkv, bkv).view(B, -1, 2, G, d).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, kv[0], kv[1], scale=s)
        return F.linear(y.transpose(1, 2).reshape(B, H, W, C), Wp_, bp_)
    return fn


# ---------------------------------------------------------------- HiLo (LITv2)
def _hilo_geometry(c: Ctx):
    hi, lo = c.branch("hifi"), c.branch("lofi")
    ws = hi.window
    return hi, lo, ws


def hilo_reference(c: Ctx) -> Fn:
    """LITv2 HiLo.hifi / HiLo.lofi as in the official code: Hi-Fi groups ws×ws windows
    with reshape/transpose, explicit attention; Lo-Fi AvgPool2d on the NCHW map, kv,
    explicit attention; concat [Hi-Fi, Lo-Fi]."""
    hi, lo, ws = _hilo_geometry(c)
    d = hi.head_dim
    hh, lh = hi.heads, lo.heads
    h_dim, l_dim = hh * d, lh * d
    s = lo.scale()
    P = c.P

    def hifi(x):
        B, H, W, C = x.shape
        hg, wg = H // ws, W // ws
        x = x.reshape(B, hg, ws, wg, ws, C).transpose(2, 3)
        qkv = F.linear(x, P["hifi.qkv.weight"], P["hifi.qkv.bias"]).reshape(
            B, hg * wg, -1, 3, hh, d).permute(3, 0, 1, 4, 2, 5)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q @ k.transpose(-2, -1)) * s).softmax(dim=-1)
        attn = (attn @ v).transpose(2, 3).reshape(B, hg, wg, ws, ws, h_dim)
        y = attn.transpose(2, 3).reshape(B, hg * ws, wg * ws, h_dim)
        return F.linear(y, P["hifi.proj.weight"], P["hifi.proj.bias"])

    def lofi(x):
        B, H, W, C = x.shape
        q = F.linear(x, P["lofi.q.weight"], P["lofi.q.bias"]).reshape(B, H * W, lh, d).permute(0, 2, 1, 3)
        x_ = F.avg_pool2d(x.permute(0, 3, 1, 2), ws, ws).reshape(B, C, -1).permute(0, 2, 1)
        kv = F.linear(x_, P["lofi.kv.weight"], P["lofi.kv.bias"]).reshape(B, -1, 2, lh, d).permute(2, 0, 3, 1, 4)
        k, v = kv[0], kv[1]
        attn = ((q @ k.transpose(-2, -1)) * s).softmax(dim=-1)
        y = (attn @ v).transpose(1, 2).reshape(B, H, W, l_dim)
        return F.linear(y, P["lofi.proj.weight"], P["lofi.proj.bias"])

    def fn(x):
        B, H, W, C = x.shape
        xp = _pad_br(x, ws)
        parts = []
        if hh:
            parts.append(hifi(xp))
        if lh:
            parts.append(lofi(xp))
        return torch.cat(parts, dim=-1)[:, :H, :W]
    return fn


def hilo_sdpa(c: Ctx) -> Fn:
    """Both branches on F.scaled_dot_product_attention: Hi-Fi windows as a
    (B·nW, heads, ws², d) batch, Lo-Fi over the ws×ws-average-pooled keys."""
    hi, lo, ws = _hilo_geometry(c)
    d = hi.head_dim
    hh, lh = hi.heads, lo.heads
    h_dim, l_dim = hh * d, lh * d
    s = lo.scale()
    P = c.P
    n = ws * ws

    def fn(x):
        B, H, W, C = x.shape
        x = _pad_br(x, ws)
        Hp, Wp = x.shape[1], x.shape[2]
        hg, wg = Hp // ws, Wp // ws
        parts = []
        if hh:
            qkv = F.linear(x, P["hifi.qkv.weight"], P["hifi.qkv.bias"]).view(B, hg, ws, wg, ws, 3, hh, d)
            qkv = qkv.permute(5, 0, 1, 3, 6, 2, 4, 7).reshape(3, B * hg * wg, hh, n, d)
            y = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2], scale=s)
            y = y.view(B, hg, wg, hh, ws, ws, d).permute(0, 1, 4, 2, 5, 3, 6).reshape(B, Hp, Wp, h_dim)
            parts.append(F.linear(y, P["hifi.proj.weight"], P["hifi.proj.bias"]))
        if lh:
            q = F.linear(x, P["lofi.q.weight"], P["lofi.q.bias"]).view(B, Hp * Wp, lh, d).transpose(1, 2)
            x_ = F.avg_pool2d(x.permute(0, 3, 1, 2), ws, ws).permute(0, 2, 3, 1).reshape(B, -1, C)
            kv = F.linear(x_, P["lofi.kv.weight"], P["lofi.kv.bias"]).view(B, -1, 2, lh, d).permute(2, 0, 3, 1, 4)
            y = F.scaled_dot_product_attention(q, kv[0], kv[1], scale=s)
            y = y.transpose(1, 2).reshape(B, Hp, Wp, l_dim)
            parts.append(F.linear(y, P["lofi.proj.weight"], P["lofi.proj.bias"]))
        return torch.cat(parts, dim=-1)[:, :H, :W]
    return fn


# ---------------------------------------------------------------- ELSA
def _elsa_geometry(c: Ctx):
    b = c.b
    par = b.spec.parameterization
    K = b.window
    return b, par, K


def elsa_reference(c: Ctx) -> Fn:
    """ELSA's official module with its CPU elsa_op: pre_proj as a 1×1 conv on NCHW,
    Hadamard q⊙k·scale, grouped K×K conv → GELU → 1×1 conv, softmax over the K² logits of
    each head, ghost head (M^lam, + gamma·S) and F.unfold aggregation, post_proj."""
    b, par, K = _elsa_geometry(c)
    G, Cqk, s = c.G, b.qk_dim, c.scale
    gw = par.group_width
    P = c.P
    lam, gamma = b.spec.kernel.expand.lam, b.spec.kernel.expand.gamma
    Wpre = P["attn.qkv.weight"][:, :, None, None]
    bpre = P["attn.qkv.bias"]

    def fn(x):
        B, H, W, _ = x.shape
        C = c.C
        x = x.permute(0, 3, 1, 2)
        qkv = F.conv2d(x, Wpre, bpre)
        q, k, v = torch.split(qkv, (Cqk, Cqk, C), dim=1)
        hp = q * k * s
        h_attn = F.conv2d(hp, P["attn.hadamard.dw.weight"], P["attn.hadamard.dw.bias"],
                          padding=K // 2, groups=Cqk // gw)
        h_attn = F.conv2d(F.gelu(h_attn), P["attn.hadamard.pw.weight"], P["attn.hadamard.pw.bias"])
        v = v.reshape(B * G, C // G, H, W)
        h_attn = h_attn.reshape(B * G, -1, H, W).softmax(1)
        ones = torch.ones(1, C, K, K, dtype=x.dtype, device=x.device)
        ghost_mul = (P["attn.ghost.mul"][None] ** lam if lam != 0 else ones) \
            .expand(B, C, K, K).reshape(B * G, C // G, K, K)
        ghost_add = (P["attn.ghost.add"][None] * gamma if gamma != 0 else ones * 0) \
            .expand(B, C, K, K).reshape(B * G, C // G, K, K)
        # elsa_op, CPU path
        Bg, Cg = v.shape[:2]
        feats = F.unfold(v, kernel_size=K, padding=K // 2).reshape(Bg, Cg, K * K, H * W)
        filters = ghost_mul.reshape(Bg, Cg, K * K, 1) * h_attn.reshape(Bg, 1, K * K, H * W) \
            + ghost_add.reshape(Bg, Cg, K * K, 1)
        y = (feats * filters).sum(2).reshape(B, C, H, W)
        return F.linear(y.permute(0, 2, 3, 1), P["attn.proj.weight"], P["attn.proj.bias"])
    return fn


def elsa_split(c: Ctx, loop: bool) -> Fn:
    """Hand-tuned ELSA: qkv as a channels-last GEMM, Hadamard logits with channels-last
    convs, and the ghost head split into its static part — γ·S, a plain depthwise K×K
    conv2d of v — plus the dynamic head filters Σ_k A[g,k]·v(p+k), computed either by
    F.unfold + a per-head weighted sum (loop=False) or by K² shifted slices of the
    zero-padded v (loop=True, meant for torch.compile: no K²-times larger tensor).
    Needs lam = 0 (ghost mul unused), as in the zoo's ELSA-Swin spec."""
    b, par, K = _elsa_geometry(c)
    lam, gamma = b.spec.kernel.expand.lam, b.spec.kernel.expand.gamma
    if lam != 0:
        raise Skip("the static/dynamic split needs lam = 0")
    G, Cqk, s, d = c.G, b.qk_dim, c.scale, c.d
    gw, C = par.group_width, c.C
    P = c.P
    S = (P["attn.ghost.add"] * gamma).reshape(C, 1, K, K) if gamma != 0 else None
    r = K // 2

    def fn(x):
        B, H, W, _ = x.shape
        qkv = F.linear(x, P["attn.qkv.weight"], P["attn.qkv.bias"])
        q, k, v = torch.split(qkv, (Cqk, Cqk, C), dim=-1)
        hp = (q * k * s).permute(0, 3, 1, 2)
        a = F.conv2d(hp, P["attn.hadamard.dw.weight"], P["attn.hadamard.dw.bias"],
                     padding=r, groups=Cqk // gw)
        a = F.conv2d(F.gelu(a), P["attn.hadamard.pw.weight"], P["attn.hadamard.pw.bias"])
        a = a.view(B, G, K * K, H, W).softmax(2)                     # (B, G, K², H, W)
        vn = v.permute(0, 3, 1, 2)                                   # (B, C, H, W) view
        y = F.conv2d(vn, S, None, padding=r, groups=C) if S is not None else torch.zeros_like(vn)
        y = y.view(B, G, d, H, W)
        if loop:
            vp = F.pad(vn, (r, r, r, r)).view(B, G, d, H + 2 * r, W + 2 * r)
            for t in range(K * K):
                dy, dx = divmod(t, K)
                y = y + a[:, :, t:t + 1] * vp[:, :, :, dy:dy + H, dx:dx + W]
        else:
            feats = F.unfold(vn, kernel_size=K, padding=r).view(B, G, d, K * K, H, W)
            y = y + (feats * a.unsqueeze(2)).sum(3)
        y = y.reshape(B, C, H, W).permute(0, 2, 3, 1)
        return F.linear(y, P["attn.proj.weight"], P["attn.proj.bias"])
    return fn


# ---------------------------------------------------------------- BOAT FSLA
def _boat_perm(q, levels, iters, temp):
    """BOAT's vectorized balanced hierarchical clustering (the public code's loop over
    levels, (bh, d, n) layout, bmm / gather), with the group order sorted *descending,
    stable* (attndsl's documented choice; the public code sorts ascending, which gives
    the same clusters in reverse order).  q (B, G, N, d) → permutation (B, G, N)."""
    B, G, N, d = q.shape
    q_pre = q.reshape(B * G, N, d).permute(0, 2, 1)                # (bh, d, n)
    idx_last = torch.arange(N, device=q.device).unsqueeze(0).expand(B * G, N)
    for _ in range(levels):
        bh, dd, n = q_pre.shape
        q_avg = q_pre.reshape(bh, dd, 2, n // 2).mean(dim=-1)
        q_avg = F.normalize(q_avg, dim=-2)
        qn = F.normalize(q_pre.permute(0, 2, 1), dim=-1)
        for _ in range(iters):
            soft = torch.softmax(qn.bmm(q_avg) * temp, dim=-1)
            q_avg = F.normalize(q_pre.bmm(soft), dim=-2)
        sc = qn.bmm(q_avg)
        ratio = (sc[:, :, 0] + 1) / (sc[:, :, 1] + 1)
        order = torch.sort(ratio, dim=-1, descending=True, stable=True).indices
        idx_last = idx_last.gather(-1, order).reshape(bh * 2, n // 2)
        q_pre = q_pre.gather(-1, order.unsqueeze(1).expand(q_pre.size())) \
            .reshape(bh, dd, 2, n // 2).permute(0, 2, 1, 3).reshape(bh * 2, dd, n // 2)
    return idx_last.reshape(B, G, N)


def _boat_common(c: Ctx):
    b = c.b
    app = b.spec.application
    return b, app.size, app.overlap, app.iterations, app.temperature, b.levels


def boat_attention(c: Ctx, sdpa: bool) -> Fn:
    """BOAT ContentAttention (public code): qkv, clustering under no_grad, gather q/k/v
    into clusters of `size`, siblings share `overlap` keys/values, explicit attention
    (sdpa=False) or F.scaled_dot_product_attention (sdpa=True), scatter back with the
    inverse permutation, + 3×3 depthwise conv of v, proj."""
    b, size, ov, iters, temp, L = _boat_common(c)
    G, d, s, C = c.G, c.d, c.scale, c.C
    P = c.P

    def fn(x):
        B, H, W, _ = x.shape
        N = H * W
        qkv = F.linear(x.reshape(B, N, C), P["attn.qkv.weight"], P["attn.qkv.bias"]) \
            .reshape(B, N, 3, G, d).permute(2, 0, 3, 1, 4)          # 3, B, G, N, d
        with torch.no_grad():
            perm = _boat_perm(qkv[0].detach(), L, iters, temp)
        rev = torch.argsort(perm, dim=-1)
        g = qkv.gather(-2, perm.unsqueeze(0).unsqueeze(-1).expand(qkv.size()))
        nc = N // size
        q, k, v = g.reshape(3, B, G, nc, size, d).unbind(0)
        if L > 0 and ov > 0:
            kk = k.view(B, G, nc // 2, 2, size, d)
            vv = v.view(B, G, nc // 2, 2, size, d)
            k_over = torch.stack([kk[:, :, :, 1, :ov], kk[:, :, :, 0, size - ov:]], 3)
            v_over = torch.stack([vv[:, :, :, 1, :ov], vv[:, :, :, 0, size - ov:]], 3)
            k = torch.cat([kk, k_over], 4).view(B, G, nc, size + ov, d)
            v = torch.cat([vv, v_over], 4).view(B, G, nc, size + ov, d)
        if sdpa:
            out = F.scaled_dot_product_attention(q, k, v, scale=s)
        else:
            attn = ((q @ k.transpose(-2, -1)) * s).softmax(dim=-1)
            out = attn @ v                                           # (B, G, nc, size, d)
        out = out.reshape(B, G, N, d).gather(-2, rev.unsqueeze(-1).expand(B, G, N, d))
        y = out.permute(0, 2, 1, 3).reshape(B, N, C)
        vmap = qkv[2].permute(0, 1, 3, 2).reshape(B, C, H, W)
        y = y + F.conv2d(vmap, P["attn.value_conv.weight"], P["attn.value_conv.bias"],
                         padding=1, groups=C).reshape(B, C, N).permute(0, 2, 1)
        return F.linear(y, P["attn.proj.weight"], P["attn.proj.bias"]).reshape(B, H, W, C)
    return fn


# ---------------------------------------------------------------- depthwise conv
def dwconv_reference(c: Ctx) -> Fn:
    """nn.Conv2d(C, C, K, padding=K//2, groups=C) as the papers use it: NCHW in, NCHW out
    (explicit .contiguous() copies at the channels-last boundary)."""
    C, K = c.C, c.b.window
    w = c.p("attn.rel_pos.bias").reshape(C, 1, K, K)
    bias = c.p("attn.out_bias")

    def fn(x):
        y = F.conv2d(x.permute(0, 3, 1, 2).contiguous(), w, bias, padding=K // 2, groups=C)
        return y.permute(0, 2, 3, 1).contiguous()
    return fn


def dwconv_channels_last(c: Ctx) -> Fn:
    """F.conv2d on the channels-last view (no copies: the permuted input is channels-last
    in memory, the output is returned as a view)."""
    C, K = c.C, c.b.window
    w = c.p("attn.rel_pos.bias").reshape(C, 1, K, K)
    bias = c.p("attn.out_bias")

    def fn(x):
        return F.conv2d(x.permute(0, 3, 1, 2), w, bias, padding=K // 2, groups=C).permute(0, 2, 3, 1)
    return fn


# ---------------------------------------------------------------- unified LSA sliding (+ rel pos)
def _unified_parts(c: Ctx):
    b = c.b
    terms = set(b.spec.parameterization.term_kinds)
    P = c.P
    return b, terms, P


def unified_reference(c: Ctx) -> Fn:
    """ELSA paper's unified local operator in eager PyTorch, F.unfold style: unfold k and
    v (zero-padded K×K), logits s q·k + s q·r^k + s k·r^q + r^b over the K² offsets,
    softmax, weighted sum of the unfolded values, proj."""
    b, terms, P = _unified_parts(c)
    G, d, s, C, K = c.G, c.d, c.scale, c.C, b.window
    T = K * K

    def fn(x):
        B, H, W, _ = x.shape
        N = H * W
        qkv = F.linear(x, P["attn.qkv.weight"], P["attn.qkv.bias"]).permute(0, 3, 1, 2)
        q, k, v = torch.split(qkv, C, dim=1)
        q = q.reshape(B, G, d, 1, N)
        ku = F.unfold(k, K, padding=K // 2).view(B, G, d, T, N)
        vu = F.unfold(v, K, padding=K // 2).view(B, G, d, T, N)
        logits = torch.zeros(B, G, T, N, dtype=x.dtype, device=x.device)
        if "query_key" in terms:
            logits = logits + s * (q * ku).sum(2)
        if "query_rel_pos" in terms:
            rk = P["attn.rel_pos.key"].permute(0, 2, 1).reshape(1, G, d, T, 1)
            logits = logits + s * (q * rk).sum(2)
        if "key_rel_pos" in terms:
            rq = P["attn.rel_pos.query"].permute(0, 2, 1).reshape(1, G, d, T, 1)
            logits = logits + s * (ku * rq).sum(2)
        if "rel_pos_bias" in terms:
            logits = logits + P["attn.rel_pos.bias"].view(1, G, T, 1)
        attn = logits.softmax(dim=2)
        y = (attn.unsqueeze(2) * vu).sum(3).reshape(B, C, H, W)
        return F.linear(y.permute(0, 2, 3, 1), P["attn.proj.weight"], P["attn.proj.bias"])
    return fn


def unified_shift_loop(c: Ctx) -> Fn:
    """Hand-written for torch.compile: channels-last q/k/v, the K² offsets as shifted
    slices of the zero-padded k / v (no K²-times larger tensor), q·r^k and the rel-pos
    bias as one small GEMM / broadcast, k·r^q folded per offset, softmax over the stacked
    logits, weighted sum over the same slices."""
    b, terms, P = _unified_parts(c)
    G, d, s, C, K = c.G, c.d, c.scale, c.C, b.window
    T, r = K * K, K // 2

    def fn(x):
        B, H, W, _ = x.shape
        qkv = F.linear(x, P["attn.qkv.weight"], P["attn.qkv.bias"])
        q, k, v = torch.split(qkv, C, dim=-1)
        q = q.view(B, H, W, G, d)
        kp = F.pad(k, (0, 0, r, r, r, r)).view(B, H + 2 * r, W + 2 * r, G, d)
        vp = F.pad(v, (0, 0, r, r, r, r)).view(B, H + 2 * r, W + 2 * r, G, d)
        base = torch.zeros(B, H, W, G, T, dtype=x.dtype, device=x.device)
        if "query_rel_pos" in terms:
            base = base + s * torch.einsum("bhwgd,gtd->bhwgt", q, P["attn.rel_pos.key"])
        if "rel_pos_bias" in terms:
            base = base + P["attn.rel_pos.bias"]
        rq = P.get("attn.rel_pos.query")
        logits = []
        for t in range(T):
            dy, dx = divmod(t, K)
            kj = kp[:, dy:dy + H, dx:dx + W]
            w_t = base[..., t]
            if "query_key" in terms:
                w_t = w_t + s * (q * kj).sum(-1)
            if "key_rel_pos" in terms:
                w_t = w_t + s * (kj * rq[:, t]).sum(-1)
            logits.append(w_t)
        a = torch.stack(logits, -1).softmax(-1)                      # (B, H, W, G, T)
        y = torch.zeros(B, H, W, G, d, dtype=x.dtype, device=x.device)
        for t in range(T):
            dy, dx = divmod(t, K)
            y = y + a[..., t:t + 1] * vp[:, dy:dy + H, dx:dx + W]
        return F.linear(y.reshape(B, H, W, C), P["attn.proj.weight"], P["attn.proj.bias"])
    return fn


# ---------------------------------------------------------------- Linformer
def linformer_reference(c: Ctx) -> Fn:
    """lucidrains' LinformerSelfAttention: keys/values projected along the sequence with
    einsum('bnd,nk->bkd'), explicit einsum attention, to_out."""
    G, d, s, C = c.G, c.d, c.scale, c.C
    P = c.P
    E, Fm = P["attn.select.keys"], P["attn.select.values"]          # (k, N)

    def fn(x):
        B, H, W, _ = x.shape
        N = H * W
        qkv = F.linear(x.reshape(B, N, C), P["attn.qkv.weight"], P["attn.qkv.bias"])
        queries, keys, values = torch.split(qkv, C, dim=-1)
        keys = torch.einsum("bnd,nk->bkd", keys, E.t())
        values = torch.einsum("bnd,nk->bkd", values, Fm.t())
        kk = keys.shape[1]
        queries = queries.reshape(B, N, G, d).transpose(1, 2)
        keys = keys.reshape(B, kk, G, d).transpose(1, 2)
        values = values.reshape(B, kk, G, d).transpose(1, 2)
        dots = torch.einsum("bhnd,bhkd->bhnk", queries, keys) * s
        attn = dots.softmax(dim=-1)
        out = torch.einsum("bhnk,bhkd->bhnd", attn, values)
        out = out.transpose(1, 2).reshape(B, N, C)
        return F.linear(out, P["attn.proj.weight"], P["attn.proj.bias"]).reshape(B, H, W, C)
    return fn


def linformer_sdpa(c: Ctx) -> Fn:
    """E·K and F·V as two GEMMs (E (k, N) @ K (B, N, C)), then SDPA over the k keys."""
    G, d, s, C = c.G, c.d, c.scale, c.C
    P = c.P
    E, Fm = P["attn.select.keys"], P["attn.select.values"]

    def fn(x):
        B, H, W, _ = x.shape
        N = H * W
        qkv = F.linear(x.reshape(B, N, C), P["attn.qkv.weight"], P["attn.qkv.bias"])
        q, k, v = torch.split(qkv, C, dim=-1)
        k = torch.matmul(E, k)                                       # (B, k, C)
        v = torch.matmul(Fm, v)
        q = q.view(B, N, G, d).transpose(1, 2)
        k = k.view(B, -1, G, d).transpose(1, 2)
        v = v.view(B, -1, G, d).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, scale=s).transpose(1, 2).reshape(B, H, W, C)
        return F.linear(y, P["attn.proj.weight"], P["attn.proj.bias"])
    return fn


# ============================================================================ zoo §9 families
# ---------------------------------------------------------------- partitions (block / grid)
def _to_groups(t, P, mode, G):
    """(B, H, W, 3·G·d) → (3, B, nG·G, P², d): block (P×P tiles) or grid (stride H/P)
    groups, row-major group order, group-local (a, b) row-major inside."""
    B, H, W, C3 = t.shape
    d = C3 // (3 * G)
    if mode == "block":
        t = t.view(B, H // P, P, W // P, P, 3, G, d).permute(5, 0, 1, 3, 6, 2, 4, 7)
    else:
        t = t.view(B, P, H // P, P, W // P, 3, G, d).permute(5, 0, 2, 4, 6, 1, 3, 7)
    return t.reshape(3, B, -1, P * P, d)


def _from_groups(y, P, mode, B, H, W):
    """Inverse of _to_groups for one tensor: (B, nG·G, P², d) → (B, H, W, G·d)."""
    d = y.shape[-1]
    if mode == "block":
        y = y.view(B, H // P, W // P, -1, P, P, d).permute(0, 1, 4, 2, 5, 3, 6)
    else:
        y = y.view(B, H // P, W // P, -1, P, P, d).permute(0, 4, 1, 5, 2, 3, 6)
    return y.reshape(B, H, W, -1)


def timm_grid_partition(x, P):
    """timm maxxvit grid_partition: (B, H, W, C) → (B·(H/P)(W/P), P, P, C)."""
    B, H, W, C = x.shape
    x = x.view(B, P, H // P, P, W // P, C)
    return x.permute(0, 2, 4, 1, 3, 5).contiguous().view(-1, P, P, C)


def timm_grid_reverse(windows, P, H, W):
    C = windows.shape[-1]
    x = windows.view(-1, H // P, W // P, P, P, C)
    return x.permute(0, 3, 1, 4, 2, 5).contiguous().view(-1, H, W, C)


def _group_mask(bias, nG, shift_mask=None):
    """Static additive SDPA mask (1, nG·G, n, n) from a (G, n, n) bias (+ (nG, n, n))."""
    m = bias.unsqueeze(0).expand(nG, -1, -1, -1)
    if shift_mask is not None:
        m = m + shift_mask.to(bias).unsqueeze(1)
    G, n = bias.shape[0], bias.shape[-1]
    return m.reshape(1, nG * G, n, n).contiguous()


def partition_sdpa(c: Ctx, mode: str, P: int, bias, qkv_bias=None, shift: int = 0,
                   cosine_scale=None) -> Fn:
    """One qkv GEMM on the map, block / grid partition of q/k/v into (B, nG·G, P², d),
    F.scaled_dot_product_attention with the static (G, P², P²) bias (+ Swin's shift mask)
    as an additive float mask, reverse, proj. cosine_scale (G,): Swin-V2's scaled cosine
    attention (q, k l2-normalized, q times the clamped per-head scale, SDPA scale 1)."""
    G = c.G
    Wqkv, Wp_, bp_ = c.p("attn.qkv.weight"), c.p("attn.proj.weight"), c.p("attn.proj.bias")
    bqkv = c.P.get("attn.qkv.bias") if qkv_bias is None else qkv_bias
    H, W = c.H, c.W
    nG = (H // P) * (W // P)
    smask = swin_shift_mask(H, W, P, shift) if shift else None
    mask = _group_mask(bias.to(Wqkv.dtype), nG, smask)
    s = c.scale
    qs = None
    if cosine_scale is not None:
        qs = cosine_scale.to(Wqkv.dtype).reshape(1, G, 1).expand(nG, G, 1).reshape(1, nG * G, 1, 1)
        s = 1.0

    def fn(x):
        B, H_, W_, C = x.shape
        if shift:
            x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
        q, k, v = _to_groups(F.linear(x, Wqkv, bqkv), P, mode, G)
        if qs is not None:
            q = F.normalize(q, dim=-1) * qs
            k = F.normalize(k, dim=-1)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=s)
        y = _from_groups(y, P, mode, B, H_, W_)
        if shift:
            y = torch.roll(y, shifts=(shift, shift), dims=(1, 2))
        return F.linear(y, Wp_, bp_)
    return fn


# ---------------------------------------------------------------- Swin-V2
def _swin_v2_parts(c: Ctx):
    b = c.b
    par = b.spec.parameterization
    cpb = par.term("cpb")
    return b.window, b.shift, cpb, math.log(par.similarity.max_scale)


def swin_v2_coords_table(ws, pretrained):
    """timm WindowAttention (V2)'s relative_coords_table: (1, 2ws−1, 2ws−1, 2)."""
    h = torch.arange(-(ws - 1), ws, dtype=torch.float32)
    t = torch.stack(torch.meshgrid(h, h, indexing="ij")).permute(1, 2, 0).contiguous().unsqueeze(0)
    t = t / ((pretrained if pretrained > 0 else ws) - 1)
    t = t * 8
    return torch.sign(t) * torch.log2(torch.abs(t) + 1.0) / math.log2(8)


def _swin_v2_bias(c: Ctx):
    """16·sigmoid(cpb_mlp(coords))[relative_position_index]: (G, n, n)."""
    ws, _, cpb, _ = _swin_v2_parts(c)
    P = c.P
    coords = swin_v2_coords_table(ws, cpb.pretrained_window).to(P["attn.cpb_mlp.0.weight"])
    t = F.linear(torch.relu(F.linear(coords, P["attn.cpb_mlp.0.weight"], P["attn.cpb_mlp.0.bias"])),
                 P["attn.cpb_mlp.2.weight"]).view(-1, c.G)
    n = ws * ws
    rpb = t[swin_relative_position_index(ws).view(-1)].view(n, n, -1).permute(2, 0, 1)
    return cpb.scale * torch.sigmoid(rpb)


def swin_v2_reference(c: Ctx) -> Fn:
    """timm SwinTransformerV2Block's attention path: roll, window partition, V2
    WindowAttention (qkv with bias cat(q_bias, 0, v_bias), cosine of the l2-normalized q and
    k × exp(clamp(logit_scale, max=log 100)), + 16·sigmoid(cpb_mlp(relative_coords_table))
    [relative_position_index] computed per call, + the −100 shift mask, softmax, @ v, proj),
    window reverse, roll back."""
    ws, shift, cpb, max_log = _swin_v2_parts(c)
    if c.H % ws or c.W % ws:
        raise Skip(f"{c.H}x{c.W} is not a multiple of the window {ws}")
    G, n = c.G, ws * ws
    P = c.P
    Wqkv, qb, vb = P["attn.qkv.weight"], P["attn.q_bias"], P["attn.v_bias"]
    Wp_, bp_, ls = P["attn.proj.weight"], P["attn.proj.bias"], P["attn.logit_scale"]
    coords = swin_v2_coords_table(ws, cpb.pretrained_window).to(Wqkv)
    rel_index = swin_relative_position_index(ws).to(Wqkv.device)
    mask = swin_shift_mask(c.H, c.W, ws, shift).to(Wqkv) if shift else None

    def fn(x):
        B, H, W, C = x.shape
        if shift:
            x = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2))
        xw = window_partition(x, ws).view(-1, n, C)
        B_ = xw.shape[0]
        qkv_bias = torch.cat((qb, torch.zeros_like(vb), vb))
        qkv = F.linear(xw, Wqkv, qkv_bias).reshape(B_, n, 3, G, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
        attn = attn * torch.clamp(ls, max=max_log).exp()
        table = F.linear(torch.relu(F.linear(coords, P["attn.cpb_mlp.0.weight"],
                                             P["attn.cpb_mlp.0.bias"])),
                         P["attn.cpb_mlp.2.weight"]).view(-1, G)
        rpb = table[rel_index.view(-1)].view(n, n, -1).permute(2, 0, 1).contiguous()
        attn = attn + cpb.scale * torch.sigmoid(rpb).unsqueeze(0)
        if mask is not None:
            nW = mask.shape[0]
            attn = attn.view(-1, nW, G, n, n) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, G, n, n)
        attn = attn.softmax(dim=-1)
        y = F.linear((attn @ v).transpose(1, 2).reshape(B_, n, C), Wp_, bp_)
        y = window_reverse(y.view(-1, ws, ws, C), ws, H, W)
        if shift:
            y = torch.roll(y, shifts=(shift, shift), dims=(1, 2))
        return y
    return fn


def swin_v2_sdpa(c: Ctx) -> Fn:
    """SDPA on the window partition: q and k l2-normalized, q times the per-head
    exp(clamp(logit_scale)), scale 1, the 16·sigmoid(CPB) bias (+ shift mask) gathered once
    as a static additive mask."""
    ws, shift, _, max_log = _swin_v2_parts(c)
    if c.H % ws or c.W % ws:
        raise Skip(f"{c.H}x{c.W} is not a multiple of the window {ws}")
    P = c.P
    qkv_bias = torch.cat((P["attn.q_bias"], torch.zeros_like(P["attn.v_bias"]), P["attn.v_bias"]))
    scale = torch.clamp(P["attn.logit_scale"], max=max_log).exp().reshape(-1)
    return partition_sdpa(c, "block", ws, _swin_v2_bias(c), qkv_bias=qkv_bias, shift=shift,
                          cosine_scale=scale)


# ---------------------------------------------------------------- MaxViT (block / grid)
def _maxvit_size(c: Ctx, mode):
    b = c.b
    return b.group if mode == "grid" else b.window


def maxvit_reference(c: Ctx, mode: str) -> Fn:
    """timm maxxvit PartitionAttentionCl: window_partition (block) or grid_partition (grid)
    of the channels-last map, AttentionCl (qkv Linear, view (B, N, 3, heads, d) — the
    head_first=False layout — q·scale @ kᵀ, + RelPosBias table[relative_position_index]
    per call, softmax, @ v, proj), window / grid reverse."""
    P = _maxvit_size(c, mode)
    if c.H % P or c.W % P:
        raise Skip(f"{c.H}x{c.W} is not a multiple of {P}")
    G, d, s, n = c.G, c.d, c.scale, P * P
    Wqkv, bqkv, Wp_, bp_ = c.p("attn.qkv.weight"), c.p("attn.qkv.bias"), \
        c.p("attn.proj.weight"), c.p("attn.proj.bias")
    table = c.p("attn.rel_pos.bias").t()                      # ((2P−1)², G), timm's layout
    rel_index = swin_relative_position_index(P).view(-1).to(Wqkv.device)

    def fn(x):
        B, H, W, C = x.shape
        part = window_partition(x, P) if mode == "block" else timm_grid_partition(x, P)
        B_ = part.shape[0]
        t = part.view(B_, n, C)
        q, k, v = F.linear(t, Wqkv, bqkv).view(B_, n, 3, G, d).transpose(1, 3).unbind(2)
        q = q * s
        attn = q @ k.transpose(-2, -1)
        attn = attn + table[rel_index].view(n, n, G).permute(2, 0, 1)
        attn = attn.softmax(dim=-1)
        y = (attn @ v).transpose(1, 2).reshape(B_, P, P, C)
        y = F.linear(y, Wp_, bp_)
        return window_reverse(y, P, H, W) if mode == "block" else timm_grid_reverse(y, P, H, W)
    return fn


def maxvit_sdpa(c: Ctx, mode: str) -> Fn:
    P = _maxvit_size(c, mode)
    if c.H % P or c.W % P:
        raise Skip(f"{c.H}x{c.W} is not a multiple of {P}")
    bias = c.p("attn.rel_pos.bias")[:, swin_relative_position_index(P)]
    return partition_sdpa(c, mode, P, bias)


def maxvit_block_reference(c: Ctx) -> Fn:
    return maxvit_reference(c, "block")


def maxvit_grid_reference(c: Ctx) -> Fn:
    return maxvit_reference(c, "grid")


maxvit_block_reference.__doc__ = maxvit_grid_reference.__doc__ = maxvit_reference.__doc__


# ---------------------------------------------------------------- CrossFormer (SDA / LDA)
def _dpb_table(c: Ctx, P: int):
    """The official DynamicPosBias over the raw offsets (biases buffer, dy-major), indexed
    by relative_position_index (query − key): (G, P², P²)."""
    p = c.P
    term = c.b.spec.parameterization.term("dpb")
    dy = torch.arange(1 - P, P)
    biases = torch.stack(torch.meshgrid(dy, dy, indexing="ij")).flatten(1).transpose(0, 1)
    biases = biases.to(p["attn.qkv.weight"])

    def stage(pos, i):
        w = p[f"attn.dpb.pos{i}.0.weight"]
        pos = torch.relu(F.layer_norm(pos, w.shape, w, p[f"attn.dpb.pos{i}.0.bias"]))
        return F.linear(pos, p[f"attn.dpb.pos{i}.2.weight"], p[f"attn.dpb.pos{i}.2.bias"])

    pos = F.linear(biases, p["attn.dpb.pos_proj.weight"], p["attn.dpb.pos_proj.bias"])
    if getattr(term, "residual", False):
        pos = pos + stage(pos, 1)
        pos = pos + stage(pos, 2)
        pos = stage(pos, 3)
    else:
        pos = stage(stage(stage(pos, 1), 2), 3)
    n = P * P
    idx = swin_relative_position_index(P).view(-1).to(pos.device)
    return pos[idx].view(n, n, -1).permute(2, 0, 1).contiguous()


def crossformer_reference(c: Ctx, mode: str) -> Fn:
    """CrossFormer's CrossFormerBlock (classification release) + Attention: SDA groups
    reshape(B, H/G, G, W/G, G, C), LDA groups reshape(B, G, H/G, G, W/G, C), permute;
    qkv, q·scale @ kᵀ, + DynamicPosBias(biases)[relative_position_index] (the MLP runs per
    call), softmax, @ v, proj; ungroup."""
    P = c.b.spec.application.size
    if c.H % P or c.W % P:
        raise Skip(f"{c.H}x{c.W} is not a multiple of {P}")
    G, d, s, n = c.G, c.d, c.scale, P * P
    Wqkv, bqkv, Wp_, bp_ = c.p("attn.qkv.weight"), c.p("attn.qkv.bias"), \
        c.p("attn.proj.weight"), c.p("attn.proj.bias")

    def fn(x):
        B, H, W, C = x.shape
        if mode == "block":
            x = x.reshape(B, H // P, P, W // P, P, C).permute(0, 1, 3, 2, 4, 5)
        else:
            x = x.reshape(B, P, H // P, P, W // P, C).permute(0, 2, 4, 1, 3, 5)
        x = x.reshape(B * H * W // n, n, C)
        B_ = x.shape[0]
        qkv = F.linear(x, Wqkv, bqkv).reshape(B_, n, 3, G, d).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q * s) @ k.transpose(-2, -1)
        attn = attn + _dpb_table(c, P).unsqueeze(0)
        attn = attn.softmax(dim=-1)
        y = F.linear((attn @ v).transpose(1, 2).reshape(B_, n, C), Wp_, bp_)
        y = y.reshape(B, H // P, W // P, P, P, C)
        if mode == "block":
            return y.permute(0, 1, 3, 2, 4, 5).reshape(B, H, W, C)
        return y.permute(0, 3, 1, 4, 2, 5).reshape(B, H, W, C)
    return fn


def crossformer_sdpa(c: Ctx, mode: str) -> Fn:
    P = c.b.spec.application.size
    if c.H % P or c.W % P:
        raise Skip(f"{c.H}x{c.W} is not a multiple of {P}")
    return partition_sdpa(c, mode, P, _dpb_table(c, P))


def crossformer_sda_reference(c: Ctx) -> Fn:
    return crossformer_reference(c, "block")


def crossformer_lda_reference(c: Ctx) -> Fn:
    return crossformer_reference(c, "grid")


crossformer_sda_reference.__doc__ = crossformer_lda_reference.__doc__ = crossformer_reference.__doc__


# ---------------------------------------------------------------- CSWin
def _cswin_parts(c: Ctx):
    vb, hb = c.branch("vertical"), c.branch("horizontal")
    P = c.P

    def joined(name):
        v, h = P[f"vertical.qkv.{name}"].chunk(3), P[f"horizontal.qkv.{name}"].chunk(3)
        return torch.cat([v[0], h[0], v[1], h[1], v[2], h[2]])
    return vb, hb, joined("weight"), joined("bias")


def cswin_reference(c: Ctx) -> Fn:
    """CSWin's official CSWinBlock attention: one qkv Linear, its first C/2 channels to
    LePEAttention idx 0 (vertical stripes: H_sp = H, W_sp = split) and the rest to idx 1
    (horizontal); each: im2cswin, q·scale @ kᵀ, softmax, @ v, + LePE (get_v: a 3×3
    depthwise conv of v on every stripe as its own image), windows2img; concat, proj."""
    vb, hb, Wqkv, bqkv = _cswin_parts(c)
    P = c.P
    split = vb.spec.application.width
    C = c.C
    Wp_, bp_ = P["merge.proj.weight"], P["merge.proj.bias"]

    def branch(t, bp, name, H, W):
        B = t.shape[1]
        c_ = t.shape[-1]
        heads, s = bp.heads, bp.scale()
        H_sp, W_sp = (H, split) if name == "vertical" else (split, W)

        def img2windows(img):
            Bi, Ci = img.shape[:2]
            img = img.view(Bi, Ci, H // H_sp, H_sp, W // W_sp, W_sp)
            return img.permute(0, 2, 4, 3, 5, 1).contiguous().reshape(-1, H_sp * W_sp, Ci)

        def im2cswin(u):
            u = u.transpose(-2, -1).contiguous().view(B, c_, H, W)
            u = img2windows(u)
            return u.reshape(-1, H_sp * W_sp, heads, c_ // heads).permute(0, 2, 1, 3).contiguous()

        def get_lepe(u):
            u = u.transpose(-2, -1).contiguous().view(B, c_, H, W)
            u = u.view(B, c_, H // H_sp, H_sp, W // W_sp, W_sp)
            u = u.permute(0, 2, 4, 1, 3, 5).contiguous().reshape(-1, c_, H_sp, W_sp)
            lepe = F.conv2d(u, P[f"{name}.value_conv.weight"], P[f"{name}.value_conv.bias"],
                            padding=1, groups=c_)
            lepe = lepe.reshape(-1, heads, c_ // heads, H_sp * W_sp).permute(0, 1, 3, 2).contiguous()
            u = u.reshape(-1, heads, c_ // heads, H_sp * W_sp).permute(0, 1, 3, 2).contiguous()
            return u, lepe

        q, k, v = t[0], t[1], t[2]
        q, k = im2cswin(q), im2cswin(k)
        v, lepe = get_lepe(v)
        attn = (q * s) @ k.transpose(-2, -1)
        attn = F.softmax(attn, dim=-1, dtype=attn.dtype)
        y = (attn @ v) + lepe
        y = y.transpose(1, 2).reshape(-1, H_sp * W_sp, c_)
        y = y.view(B, H // H_sp, W // W_sp, H_sp, W_sp, -1)
        return y.permute(0, 1, 3, 2, 4, 5).contiguous().view(B, H * W, -1)

    def fn(x):
        B, H, W, _ = x.shape
        qkv = F.linear(x.reshape(B, H * W, C), Wqkv, bqkv).reshape(B, -1, 3, C).permute(2, 0, 1, 3)
        half = vb.width
        x1 = branch(qkv[:, :, :, :half], vb, "vertical", H, W)
        x2 = branch(qkv[:, :, :, half:], hb, "horizontal", H, W)
        y = F.linear(torch.cat([x1, x2], dim=2), Wp_, bp_)
        return y.reshape(B, H, W, C)
    return fn


def cswin_sdpa(c: Ctx) -> Fn:
    """Each branch's q/k/v straight from its own qkv GEMM into stripe batches
    (B·stripes, heads, H·split or split·W, d) by one view + permute, SDPA, LePE as a
    depthwise conv2d on the stripe batch (zero-padded per stripe), added to SDPA's output;
    concat, proj."""
    vb, hb, _, _ = _cswin_parts(c)
    P = c.P
    split = vb.spec.application.width
    Wp_, bp_ = P["merge.proj.weight"], P["merge.proj.bias"]

    def branch(x, bp, name):
        B, H, W, _ = x.shape
        G, d, s = bp.heads, bp.head_dim, bp.scale()
        cw = G * d
        t = F.linear(x, P[f"{name}.qkv.weight"], P[f"{name}.qkv.bias"])
        if name == "vertical":        # stripes: all rows × `split` columns
            nS, th, tw = W // split, H, split
            t = t.view(B, H, nS, split, 3, G, d).permute(4, 0, 2, 5, 1, 3, 6)
        else:                         # `split` rows × all columns
            nS, th, tw = H // split, split, W
            t = t.view(B, nS, split, W, 3, G, d).permute(4, 0, 1, 5, 2, 3, 6)
        t = t.reshape(3, B * nS, G, th * tw, d)
        q, k, v = t[0], t[1], t[2]
        y = F.scaled_dot_product_attention(q, k, v, scale=s)
        vimg = v.transpose(-1, -2).reshape(B * nS, cw, th, tw)
        lepe = F.conv2d(vimg, P[f"{name}.value_conv.weight"], P[f"{name}.value_conv.bias"],
                        padding=1, groups=cw)
        y = y + lepe.view(B * nS, G, d, th * tw).transpose(-1, -2)
        y = y.view(B, nS, G, th, tw, d)
        if name == "vertical":
            y = y.permute(0, 3, 1, 4, 2, 5)            # (B, H, nS, split, G, d)
        else:
            y = y.permute(0, 1, 3, 4, 2, 5)            # (B, nS, split, W, G, d)
        return y.reshape(B, H, W, cw)

    def fn(x):
        y = torch.cat([branch(x, vb, "vertical"), branch(x, hb, "horizontal")], dim=-1)
        return F.linear(y, Wp_, bp_)
    return fn


# ---------------------------------------------------------------- axial attention
def _axial_explicit(q, k, v, s):
    """(…, L, d): explicit softmax attention along L."""
    return ((q * s) @ k.transpose(-2, -1)).softmax(dim=-1) @ v


def axial_reference(c: Ctx) -> Fn:
    """Axial attention as written in the papers' code (Ho et al.; Axial-DeepLab without
    positional terms): qkv Linear, the attended axis permuted last-but-one, explicit
    q·scale @ kᵀ, softmax, @ v, permuted back, proj. Parallel: ONE qkv (the branches' rows
    reassembled as [q_rows; q_cols; k_rows; …]), the first heads along rows, the rest along
    columns, ONE proj. Sequential: row attention (its own qkv, proj), then column
    attention on its output (its own qkv, proj)."""
    P = c.P
    rb, cb = c.branch("rows"), c.branch("columns")
    sequential = c.plan.spec.merge.kind == "sequence"

    def qkv_of(x, Wqkv, bqkv, G):
        B, H, W, C = x.shape
        t = F.linear(x, Wqkv, bqkv).reshape(B, H, W, 3, G, -1).permute(3, 0, 4, 1, 2, 5)
        return t[0], t[1], t[2]                                   # (B, G, H, W, d)

    def rows(q, k, v, s):
        return _axial_explicit(q, k, v, s)

    def cols(q, k, v, s):
        t = lambda a: a.transpose(2, 3)                          # noqa: E731
        return t(_axial_explicit(t(q), t(k), t(v), s))

    def merge(o, Wp_, bp_):
        B, G, H, W, d = o.shape
        return F.linear(o.permute(0, 2, 3, 1, 4).reshape(B, H, W, G * d), Wp_, bp_)

    if sequential:
        def fn(x):
            q, k, v = qkv_of(x, P["rows.qkv.weight"], P["rows.qkv.bias"], rb.heads)
            y = merge(rows(q, k, v, rb.scale()), P["rows.proj.weight"], P["rows.proj.bias"])
            q, k, v = qkv_of(y, P["columns.qkv.weight"], P["columns.qkv.bias"], cb.heads)
            return merge(cols(q, k, v, cb.scale()), P["columns.proj.weight"], P["columns.proj.bias"])
        return fn

    def joined(name):
        r, cc = P[f"rows.qkv.{name}"].chunk(3), P[f"columns.qkv.{name}"].chunk(3)
        return torch.cat([r[0], cc[0], r[1], cc[1], r[2], cc[2]])
    Wqkv, bqkv = joined("weight"), joined("bias")
    Gr, G = rb.heads, rb.heads + cb.heads

    def fn(x):
        q, k, v = qkv_of(x, Wqkv, bqkv, G)
        o = torch.cat([rows(q[:, :Gr], k[:, :Gr], v[:, :Gr], rb.scale()),
                       cols(q[:, Gr:], k[:, Gr:], v[:, Gr:], cb.scale())], dim=1)
        return merge(o, P["merge.proj.weight"], P["merge.proj.bias"])
    return fn


def axial_sdpa(c: Ctx) -> Fn:
    """Each axis as one SDPA batch: channels-last qkv (B, H, W, 3, G, d) permuted to
    (B·H, G, W, d) for rows and (B·W, G, H, d) for columns, F.scaled_dot_product_attention,
    permuted back; parallel: one GEMM per branch and one proj; sequential: as the spec."""
    P = c.P
    rb, cb = c.branch("rows"), c.branch("columns")
    sequential = c.plan.spec.merge.kind == "sequence"

    def attend(x, bp, name):
        B, H, W, _ = x.shape
        G, d = bp.heads, bp.head_dim
        t = F.linear(x, P[f"{name}.qkv.weight"], P[f"{name}.qkv.bias"]).view(B, H, W, 3, G, d)
        if name == "rows":
            t = t.permute(3, 0, 1, 4, 2, 5).reshape(3, B * H, G, W, d)
            y = F.scaled_dot_product_attention(t[0], t[1], t[2], scale=bp.scale())
            return y.view(B, H, G, W, d).permute(0, 1, 3, 2, 4).reshape(B, H, W, G * d)
        t = t.permute(3, 0, 2, 4, 1, 5).reshape(3, B * W, G, H, d)
        y = F.scaled_dot_product_attention(t[0], t[1], t[2], scale=bp.scale())
        return y.view(B, W, G, H, d).permute(0, 3, 1, 2, 4).reshape(B, H, W, G * d)

    if sequential:
        def fn(x):
            y = F.linear(attend(x, rb, "rows"), P["rows.proj.weight"], P["rows.proj.bias"])
            return F.linear(attend(y, cb, "columns"), P["columns.proj.weight"], P["columns.proj.bias"])
        return fn

    def fn(x):
        y = torch.cat([attend(x, rb, "rows"), attend(x, cb, "columns")], dim=-1)
        return F.linear(y, P["merge.proj.weight"], P["merge.proj.bias"])
    return fn


# ---------------------------------------------------------------- PVT-v2 linear SRA
def _pvt_v2_parts(c: Ctx):
    app = c.b.spec.application
    return app.size, app.norm_eps


def pvt_v2_linear_reference(c: Ctx) -> Fn:
    """timm PVT-v2 Attention with linear=True (fused_attn off): q Linear, the NCHW map
    through AdaptiveAvgPool2d(7), the 1×1 sr conv, LayerNorm, GELU, kv Linear, explicit
    q·scale @ kᵀ, softmax, @ v, proj."""
    Psz, eps = _pvt_v2_parts(c)
    G, d, s, C = c.G, c.d, c.scale, c.C
    p = c.P
    Wsr, bsr = p["attn.pool.conv.weight"], p["attn.pool.conv.bias"]

    def fn(x):
        B, H, W, _ = x.shape
        N = H * W
        xt = x.reshape(B, N, C)
        q = F.linear(xt, p["attn.q.weight"], p["attn.q.bias"]).reshape(B, N, G, -1).permute(0, 2, 1, 3)
        x_ = xt.permute(0, 2, 1).reshape(B, C, H, W)
        x_ = F.conv2d(F.adaptive_avg_pool2d(x_, Psz), Wsr, bsr).reshape(B, C, -1).permute(0, 2, 1)
        x_ = F.gelu(F.layer_norm(x_, (C,), p["attn.pool.norm.weight"], p["attn.pool.norm.bias"], eps))
        kv = F.linear(x_, p["attn.kv.weight"], p["attn.kv.bias"]).reshape(B, -1, 2, G, d).permute(2, 0, 3, 1, 4)
        k, v = kv.unbind(0)
        attn = ((q * s) @ k.transpose(-2, -1)).softmax(dim=-1)
        y = (attn @ v).transpose(1, 2).reshape(B, N, C)
        return F.linear(y, p["attn.proj.weight"], p["attn.proj.bias"]).reshape(B, H, W, C)
    return fn


def pvt_v2_linear_sdpa(c: Ctx) -> Fn:
    """Pooled keys: adaptive_avg_pool2d on the channels-last view (49 tokens), the 1×1 conv
    as a Linear, LayerNorm, GELU, kv, then SDPA of every token over the 49 keys."""
    Psz, eps = _pvt_v2_parts(c)
    G, d, s, C = c.G, c.d, c.scale, c.C
    p = c.P
    Wsr = p["attn.pool.conv.weight"].reshape(C, C)
    bsr = p["attn.pool.conv.bias"]

    def fn(x):
        B, H, W, _ = x.shape
        q = F.linear(x, p["attn.q.weight"], p["attn.q.bias"]).view(B, H * W, G, d).transpose(1, 2)
        z = F.adaptive_avg_pool2d(x.permute(0, 3, 1, 2), Psz).permute(0, 2, 3, 1).reshape(B, -1, C)
        z = F.gelu(F.layer_norm(F.linear(z, Wsr, bsr), (C,), p["attn.pool.norm.weight"],
                                p["attn.pool.norm.bias"], eps))
        kv = F.linear(z, p["attn.kv.weight"], p["attn.kv.bias"]).view(B, -1, 2, G, d).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, kv[0], kv[1], scale=s)
        return F.linear(y.transpose(1, 2).reshape(B, H, W, C), p["attn.proj.weight"], p["attn.proj.bias"])
    return fn


# ---------------------------------------------------------------- Shunted self-attention
def _shunted_parts(c: Ctx):
    cb, fb = c.branch("coarse"), c.branch("fine")
    return cb, fb, cb.spec.application.ratio, fb.spec.application.ratio


def shunted_reference(c: Ctx) -> Fn:
    """Shunted-Transformer's SSA Attention (sr_ratio 8): q Linear over all heads; per path
    sr (r×r strided conv on NCHW), norm, act (GELU), kv Linear → k, v of half the heads;
    v += local_conv(v as a (C/2, H/r, W/r) map); explicit q·kᵀ·scale, softmax, @ v;
    concat the two paths, proj."""
    cb, fb, r1, r2 = _shunted_parts(c)
    p = c.P
    C = c.C
    Wq = torch.cat([p["coarse.q.weight"], p["fine.q.weight"]])
    bq = torch.cat([p["coarse.q.bias"], p["fine.q.bias"]])
    eps = cb.spec.application.norm_eps, fb.spec.application.norm_eps

    def fn(x):
        B, H, W, _ = x.shape
        N = H * W
        G = cb.heads + fb.heads
        d = C // G
        q = F.linear(x.reshape(B, N, C), Wq, bq).reshape(B, N, G, d).permute(0, 2, 1, 3)
        x_ = x.reshape(B, N, C).permute(0, 2, 1).reshape(B, C, H, W)
        outs = []
        for (name, bp, r, e, qh) in (("coarse", cb, r1, eps[0], q[:, :cb.heads]),
                                     ("fine", fb, r2, eps[1], q[:, cb.heads:])):
            xs = F.conv2d(x_, p[f"{name}.pool.conv.weight"], p[f"{name}.pool.conv.bias"], stride=r)
            h, w = xs.shape[-2:]
            xs = F.gelu(F.layer_norm(xs.reshape(B, C, -1).permute(0, 2, 1), (C,),
                                     p[f"{name}.pool.norm.weight"], p[f"{name}.pool.norm.bias"], e))
            kv = F.linear(xs, p[f"{name}.kv.weight"], p[f"{name}.kv.bias"]) \
                .reshape(B, -1, 2, bp.heads, d).permute(2, 0, 3, 1, 4)
            k, v = kv[0], kv[1]
            attn = ((qh @ k.transpose(-2, -1)) * bp.scale()).softmax(dim=-1)
            half = bp.heads * d
            vm = v.transpose(1, 2).reshape(B, -1, half).transpose(1, 2).reshape(B, half, h, w)
            lc = F.conv2d(vm, p[f"{name}.value_conv.weight"], p[f"{name}.value_conv.bias"],
                          padding=1, groups=half)
            v = v + lc.view(B, half, -1).view(B, bp.heads, d, -1).transpose(-1, -2)
            outs.append((attn @ v).transpose(1, 2).reshape(B, N, half))
        y = F.linear(torch.cat(outs, dim=-1), p["merge.proj.weight"], p["merge.proj.bias"])
        return y.reshape(B, H, W, C)
    return fn


def shunted_sdpa(c: Ctx) -> Fn:
    """Pooled keys per path: the strided conv on the channels-last view, LayerNorm, GELU,
    kv Linear, the 3×3 depthwise conv of v on the key grid (channels-last), then SDPA of
    the path's heads over its keys; concat, proj."""
    cb, fb, r1, r2 = _shunted_parts(c)
    p = c.P
    C = c.C

    def path(x, name, bp, r):
        B, H, W, _ = x.shape
        G, d = bp.heads, bp.head_dim
        half = G * d
        q = F.linear(x, p[f"{name}.q.weight"], p[f"{name}.q.bias"]).view(B, H * W, G, d).transpose(1, 2)
        xs = F.conv2d(x.permute(0, 3, 1, 2), p[f"{name}.pool.conv.weight"],
                      p[f"{name}.pool.conv.bias"], stride=r).permute(0, 2, 3, 1)
        h, w = xs.shape[1:3]
        xs = F.gelu(F.layer_norm(xs, (C,), p[f"{name}.pool.norm.weight"],
                                 p[f"{name}.pool.norm.bias"], bp.spec.application.norm_eps))
        kv = F.linear(xs, p[f"{name}.kv.weight"], p[f"{name}.kv.bias"])        # (B, h, w, 2·half)
        k, v = kv[..., :half], kv[..., half:]
        v = v + F.conv2d(v.permute(0, 3, 1, 2), p[f"{name}.value_conv.weight"],
                         p[f"{name}.value_conv.bias"], padding=1, groups=half).permute(0, 2, 3, 1)
        k = k.reshape(B, h * w, G, d).transpose(1, 2)
        v = v.reshape(B, h * w, G, d).transpose(1, 2)
        y = F.scaled_dot_product_attention(q, k, v, scale=bp.scale())
        return y.transpose(1, 2).reshape(B, H, W, half)

    def fn(x):
        y = torch.cat([path(x, "coarse", cb, r1), path(x, "fine", fb, r2)], dim=-1)
        return F.linear(y, p["merge.proj.weight"], p["merge.proj.bias"])
    return fn


# ---------------------------------------------------------------- linear attention
def _feature_map(c: Ctx):
    fm = c.b.spec.parameterization.feature_map
    if fm == "elu_plus_one":
        return lambda t: F.elu(t) + 1
    if fm == "relu":
        return F.relu
    raise Skip(f"feature map {fm!r}")


def linear_attention_reference(c: Ctx) -> Fn:
    """fast-transformers' LinearAttention (Katharopoulos et al.'s code) inside an
    AttentionLayer: qkv projections, Q = φ(Q), K = φ(K), KV = einsum('nshd,nshm->nhmd'),
    Z = 1/(einsum('nlhd,nhd->nlh', Q, K.sum(1)) + eps), V = einsum('nlhd,nhmd,nlh->nlhm'),
    out projection."""
    phi = _feature_map(c)
    G, d, C = c.G, c.d, c.C
    eps = c.b.spec.normalization.eps
    p = c.P

    def fn(x):
        B, H, W, _ = x.shape
        N = H * W
        q, k, v = F.linear(x.reshape(B, N, C), p["attn.qkv.weight"], p["attn.qkv.bias"]) \
            .view(B, N, 3, G, d).unbind(2)                          # (B, N, G, d)
        Q, K = phi(q), phi(k)
        KV = torch.einsum("nshd,nshm->nhmd", K, v)
        Z = 1 / (torch.einsum("nlhd,nhd->nlh", Q, K.sum(dim=1)) + eps)
        V = torch.einsum("nlhd,nhmd,nlh->nlhm", Q, KV, Z)
        return F.linear(V.reshape(B, H, W, C), p["attn.proj.weight"], p["attn.proj.bias"])
    return fn


def linear_attention_matmul(c: Ctx) -> Fn:
    """The associative form as two batched GEMMs: v gets a column of ones, so
    φ(K)ᵀ[V | 1] (B, G, d, d+1) carries both KV and Σφ(K); φ(Q) @ it gives numerator and
    denominator at once; divide (+ eps)."""
    phi = _feature_map(c)
    G, d, C = c.G, c.d, c.C
    eps = c.b.spec.normalization.eps
    p = c.P

    def fn(x):
        B, H, W, _ = x.shape
        N = H * W
        t = F.linear(x.reshape(B, N, C), p["attn.qkv.weight"], p["attn.qkv.bias"]) \
            .view(B, N, 3, G, d).permute(2, 0, 3, 1, 4)             # (3, B, G, N, d)
        Q, K, v = phi(t[0]), phi(t[1]), t[2]
        v1 = torch.cat([v, v.new_ones(B, G, N, 1)], dim=-1)
        out = Q @ (K.transpose(-2, -1) @ v1)                         # (B, G, N, d+1)
        y = out[..., :d] / (out[..., d:] + eps)
        return F.linear(y.transpose(1, 2).reshape(B, H, W, C), p["attn.proj.weight"],
                        p["attn.proj.bias"])
    return fn


# ---------------------------------------------------------------- sigmoid attention
def _sigmoid_bias(c: Ctx, n_keys: int) -> float:
    b = c.b.spec.normalization.bias
    return -math.log(n_keys) if isinstance(b, str) else float(b)


def sigmoid_reference(c: Ctx) -> Fn:
    """Sigmoid attention as the paper's reference code writes it (no FlashSigmoid on CPU):
    qkv, sigmoid(q @ kᵀ·scale + b) with b = −log n, @ v, proj."""
    G, d, s, C = c.G, c.d, c.scale, c.C
    p = c.P

    def fn(x):
        B, H, W, _ = x.shape
        N = H * W
        q, k, v = F.linear(x.reshape(B, N, C), p["attn.qkv.weight"], p["attn.qkv.bias"]) \
            .reshape(B, N, 3, G, d).permute(2, 0, 3, 1, 4).unbind(0)
        attn = torch.sigmoid(q @ k.transpose(-2, -1) * s + _sigmoid_bias(c, N))
        y = (attn @ v).transpose(1, 2).reshape(B, N, C)
        return F.linear(y, p["attn.proj.weight"], p["attn.proj.bias"]).reshape(B, H, W, C)
    return fn


def sigmoid_baddbmm(c: Ctx, chunk: int | None = 1024) -> Fn:
    """Eager, memory-aware: per block of `chunk` queries, one baddbmm (the −log n bias as
    its input, the scale as alpha), an in-place sigmoid, one bmm — no N×N tensor beyond a
    block."""
    G, d, s, C = c.G, c.d, c.scale, c.C
    p = c.P

    def fn(x):
        B, H, W, _ = x.shape
        N = H * W
        t = F.linear(x.reshape(B, N, C), p["attn.qkv.weight"], p["attn.qkv.bias"]) \
            .view(B, N, 3, G, d).permute(2, 0, 3, 1, 4).reshape(3, B * G, N, d)
        q, k, v = t[0], t[1], t[2]
        kt = k.transpose(1, 2)
        bias = torch.full((1, 1, 1), _sigmoid_bias(c, N), dtype=x.dtype, device=x.device)
        step = chunk or N
        ys = []
        for i in range(0, N, step):
            a = torch.baddbmm(bias, q[:, i:i + step], kt, alpha=s)
            ys.append(torch.bmm(a.sigmoid_(), v))
        y = torch.cat(ys, dim=1) if len(ys) > 1 else ys[0]
        y = y.view(B, G, N, d).transpose(1, 2).reshape(B, H, W, C)
        return F.linear(y, p["attn.proj.weight"], p["attn.proj.bias"])
    return fn


def sigmoid_explicit(c: Ctx) -> Fn:
    """The explicit form written for torch.compile: channels-last qkv, (B, G, N, d) views,
    sigmoid(q @ kᵀ·s + b) @ v (inductor fuses scale, bias and sigmoid into one pass)."""
    G, d, s, C = c.G, c.d, c.scale, c.C
    p = c.P

    def fn(x):
        B, H, W, _ = x.shape
        N = H * W
        t = F.linear(x.reshape(B, N, C), p["attn.qkv.weight"], p["attn.qkv.bias"]) \
            .view(B, N, 3, G, d).permute(2, 0, 3, 1, 4)
        a = torch.sigmoid(t[0] @ t[1].transpose(-2, -1) * s + _sigmoid_bias(c, N))
        y = (a @ t[2]).transpose(1, 2).reshape(B, H, W, C)
        return F.linear(y, p["attn.proj.weight"], p["attn.proj.bias"])
    return fn


# ---------------------------------------------------------------- HaloNet
def _halo_parts(c: Ctx):
    bp = c.b
    geo = bp.geometry
    return bp, geo.block, geo.halo, geo.block + 2 * geo.halo


def _timm_rel_logits_1d(q, rel_k, permute_mask):
    """timm layers/halo_attn.py rel_logits_1d (the Music-Transformer skew)."""
    B, H, W, dim = q.shape
    rel_size = rel_k.shape[0]
    win_size = (rel_size + 1) // 2
    x = q @ rel_k.transpose(-1, -2)
    x = x.reshape(-1, W, rel_size)
    x_pad = F.pad(x, [0, 1]).flatten(1)
    x_pad = F.pad(x_pad, [0, rel_size - W])
    x_pad = x_pad.reshape(-1, W + 1, rel_size)
    x = x_pad[:, :W, win_size - 1:]
    x = x.reshape(B, H, 1, W, win_size).expand(-1, -1, win_size, -1, -1)
    return x.permute(permute_mask)


def halonet_reference(c: Ctx) -> Fn:
    """timm HaloAttn (stride 1, no qkv bias, scale_pos_embed=False) on NCHW: q 1×1 conv,
    blocks by reshape/permute; kv 1×1 conv (channels interleaved [k_g | v_g] per head),
    zero pad by the halo, Tensor.unfold windows; q @ kᵀ·scale + PosEmbedRel(q) (the skewed
    height/width relative logits of the unscaled q), softmax, @ v, fold. attndsl's fused qkv
    and its (2·(b+h)−1)-row tables are converted to timm's conv weights and
    (2·win−1)-row tables (2·halo unused rows in front) once, at build time."""
    bp, blk, halo, win = _halo_parts(c)
    G, C = bp.heads, c.C
    dqk, dv = bp.qk_head_dim, bp.head_dim
    s = bp.scale()
    w_q, w_k, w_v = torch.split(c.p("attn.qkv.weight"), [bp.qk_dim, bp.qk_dim, bp.width])
    Wq = w_q.reshape(G * dqk, C, 1, 1)
    Wkv = torch.cat([w_k.reshape(G, dqk, C), w_v.reshape(G, dv, C)], dim=1).reshape(-1, C, 1, 1)
    pad = torch.zeros(2 * halo, dqk, dtype=w_q.dtype, device=w_q.device)
    height_rel = torch.cat([pad, c.p("attn.rel_pos.height")])
    width_rel = torch.cat([pad, c.p("attn.rel_pos.width")])

    def pos_embed(q):
        B_, BB, HW, _ = q.shape
        q = q.reshape(-1, blk, blk, dqk)
        rel_w = _timm_rel_logits_1d(q, width_rel, permute_mask=(0, 1, 3, 2, 4))
        q = q.transpose(1, 2)
        rel_h = _timm_rel_logits_1d(q, height_rel, permute_mask=(0, 3, 1, 4, 2))
        return (rel_h + rel_w).reshape(B_, BB, HW, -1)

    def fn(x):
        B, H, W, _ = x.shape
        x = x.permute(0, 3, 1, 2)
        nh, nw = H // blk, W // blk
        nb = nh * nw
        q = F.conv2d(x, Wq)
        q = q.reshape(-1, dqk, nh, blk, nw, blk).permute(0, 1, 3, 5, 2, 4)
        q = q.reshape(B * G, dqk, -1, nb).transpose(1, 3)
        kv = F.conv2d(x, Wkv)
        kv = F.pad(kv, [halo, halo, halo, halo])
        kv = kv.unfold(2, win, blk).unfold(3, win, blk).reshape(
            B * G, dqk + dv, nb, -1).permute(0, 2, 3, 1)
        k, v = torch.split(kv, [dqk, dv], dim=-1)
        attn = (q @ k.transpose(-1, -2)) * s + pos_embed(q)
        attn = attn.softmax(dim=-1)
        out = (attn @ v).transpose(1, 3)
        out = out.reshape(-1, blk, blk, nh, nw)
        out = out.permute(0, 3, 1, 4, 2).contiguous().view(B, G * dv, H, W)
        return out.permute(0, 2, 3, 1)
    return fn


def halonet_sdpa(c: Ctx) -> Fn:
    """Channels-last fused qkv GEMM, query blocks by view/permute, k/v windows of the
    halo-padded maps by Tensor.unfold, the relative logits q·r_h[u−i] + q·r_w[t−j] as two
    small einsums against the tables gathered once per (i, u), passed to
    F.scaled_dot_product_attention as a per-call additive float mask."""
    bp, blk, halo, win = _halo_parts(c)
    G = bp.heads
    dqk, dv = bp.qk_head_dim, bp.head_dim
    s = bp.scale()
    Wqkv = c.p("attn.qkv.weight")
    par = bp.spec.parameterization
    sign = -1 if par.rel_pos_orientation == "i_minus_j" else 1
    sy = blk + halo
    u = torch.arange(win)[None, :] - halo
    i = torch.arange(blk)[:, None]
    rows = (sign * (u - i) + sy - 1).to(Wqkv.device)                 # (b, win)
    Rh = c.p("attn.rel_pos.height")[rows]                            # (b, win, dqk)
    Rw = c.p("attn.rel_pos.width")[rows]
    rel_scale = s if par.term("query_rel_pos_hw").scaled else 1.0
    n, m = blk * blk, win * win

    def fn(x):
        B, H, W, C = x.shape
        nh, nw = H // blk, W // blk
        q, k, v = torch.split(F.linear(x, Wqkv), [bp.qk_dim, bp.qk_dim, bp.width], dim=-1)
        q = q.reshape(B, nh, blk, nw, blk, G, dqk).permute(0, 1, 3, 5, 2, 4, 6)   # B nh nw G i j d
        kv = F.pad(torch.cat([k.view(B, H, W, G, dqk), v.view(B, H, W, G, dv)], dim=-1),
                   (0, 0, 0, 0, halo, halo, halo, halo))
        kv = kv.unfold(1, win, blk).unfold(2, win, blk)                # B nh nw G d+dv u t
        kv = kv.permute(0, 1, 2, 3, 5, 6, 4).reshape(B * nh * nw, G, m, dqk + dv)
        k, v = kv[..., :dqk], kv[..., dqk:]
        qb = q.reshape(B * nh * nw, G, blk, blk, dqk)
        lh = torch.einsum("ngijd,iud->ngiju", qb, Rh)
        lw = torch.einsum("ngijd,jtd->ngijt", qb, Rw)
        mask = (lh.unsqueeze(-1) + lw.unsqueeze(-2)).reshape(B * nh * nw, G, n, m)
        if rel_scale != 1.0:
            mask = mask * rel_scale
        y = F.scaled_dot_product_attention(qb.reshape(-1, G, n, dqk), k, v, attn_mask=mask, scale=s)
        y = y.view(B, nh, nw, G, blk, blk, dv).permute(0, 1, 4, 2, 5, 3, 6)
        return y.reshape(B, H, W, G * dv)
    return fn


# ---------------------------------------------------------------- EfficientViT
def _efficientvit_parts(c: Ctx):
    bps = list(c.plan.branches)
    ws = bps[0].spec.application.size
    K = bps[0].spec.projections.q_conv.size
    return bps, ws, K


def _abs_index(ws, device=None):
    """EfficientViT's attention_bias_idxs: |dy|·ws + |dx| (first-seen offset numbering)."""
    ys, xs = torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")
    ys, xs = ys.reshape(-1), xs.reshape(-1)
    return ((ys[:, None] - ys[None, :]).abs() * ws + (xs[:, None] - xs[None, :]).abs()).to(device)


def efficientvit_reference(c: Ctx) -> Fn:
    """MSRA EfficientViT LocalWindowAttention + CascadedGroupAttention (eval, each
    Conv2d_BN folded into one conv with bias): zero-pad to multiples of 7, window partition
    to NCHW windows; per head: feat = chunk_i (+ previous head's output), 1×1 conv to
    q, k, v, 5×5 depthwise conv of q, (qᵀk)·scale + attention_biases[i, idxs], softmax,
    v @ attnᵀ; concat, ReLU, 1×1 proj conv; reverse, crop."""
    bps, ws, K = _efficientvit_parts(c)
    p = c.P
    G = len(bps)
    kd = bps[0].qk_head_dim
    dd = bps[0].head_dim
    s = bps[0].scale()
    idx = _abs_index(ws, p["merge.proj.weight"].device)
    Wproj = p["merge.proj.weight"][:, :, None, None]

    def cga(x):                     # x (B', C, ws, ws)
        B_, C, H, W = x.shape
        feats_in = x.chunk(G, dim=1)
        feats_out = []
        feat = feats_in[0]
        for i, bp in enumerate(bps):
            nm = bp.name
            if i > 0:
                feat = feat + feats_in[i]
            feat = F.conv2d(feat, p[f"{nm}.qkv.weight"][:, :, None, None], p[f"{nm}.qkv.bias"])
            q, k, v = feat.view(B_, -1, H, W).split([kd, kd, dd], dim=1)
            q = F.conv2d(q, p[f"{nm}.q_conv.weight"], p[f"{nm}.q_conv.bias"], padding=K // 2, groups=kd)
            q, k, v = q.flatten(2), k.flatten(2), v.flatten(2)
            ab = p[f"{nm}.rel_pos.bias"][0][idx]
            attn = (q.transpose(-2, -1) @ k) * s + ab
            attn = attn.softmax(dim=-1)
            feat = (v @ attn.transpose(-2, -1)).view(B_, dd, H, W)
            feats_out.append(feat)
        return F.conv2d(torch.relu(torch.cat(feats_out, 1)), Wproj, p["merge.proj.bias"])

    def fn(x):                      # (B, H, W, C) channels-last = the official permute(0, 2, 3, 1)
        B, H, W, C = x.shape
        pad_b, pad_r = (ws - H % ws) % ws, (ws - W % ws) % ws
        if pad_b or pad_r:
            x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        pH, pW = H + pad_b, W + pad_r
        nH, nW = pH // ws, pW // ws
        x = x.view(B, nH, ws, nW, ws, C).transpose(2, 3).reshape(B * nH * nW, ws, ws, C).permute(0, 3, 1, 2)
        x = cga(x)
        x = x.permute(0, 2, 3, 1).view(B, nH, nW, ws, ws, C).transpose(2, 3).reshape(B, pH, pW, C)
        if pad_b or pad_r:
            x = x[:, :H, :W].contiguous()
        return x
    return fn


def efficientvit_sdpa(c: Ctx) -> Fn:
    """Window-major channels-last throughout: pad, partition once to (B·nW, 49, C); per
    head the cascade input (chunk + previous output) → q, k, v by one Linear, the 5×5
    depthwise conv of q on the (B·nW, d, 7, 7) view, SDPA with the static |Δ|-indexed bias
    as the mask; concat, ReLU, proj, reverse, crop."""
    bps, ws, K = _efficientvit_parts(c)
    p = c.P
    G = len(bps)
    kd, dd = bps[0].qk_head_dim, bps[0].head_dim
    s = bps[0].scale()
    idx = _abs_index(ws, p["merge.proj.weight"].device)
    masks = [p[f"{bp.name}.rel_pos.bias"][0][idx].contiguous() for bp in bps]    # (n, n)
    n = ws * ws

    def fn(x):
        B, H, W, C = x.shape
        pad_b, pad_r = (ws - H % ws) % ws, (ws - W % ws) % ws
        if pad_b or pad_r:
            x = F.pad(x, (0, 0, 0, pad_r, 0, pad_b))
        pH, pW = H + pad_b, W + pad_r
        nH, nW = pH // ws, pW // ws
        xw = x.view(B, nH, ws, nW, ws, C).transpose(2, 3).reshape(-1, n, C)
        chunks = xw.chunk(G, dim=-1)
        outs, feat = [], None
        for i, bp in enumerate(bps):
            nm = bp.name
            inp = chunks[i] if feat is None else chunks[i] + feat
            q, k, v = F.linear(inp, p[f"{nm}.qkv.weight"], p[f"{nm}.qkv.bias"]).split([kd, kd, dd], dim=-1)
            q = F.conv2d(q.transpose(1, 2).reshape(-1, kd, ws, ws), p[f"{nm}.q_conv.weight"],
                         p[f"{nm}.q_conv.bias"], padding=K // 2, groups=kd).flatten(2).transpose(1, 2)
            feat = F.scaled_dot_product_attention(q, k, v, attn_mask=masks[i], scale=s)
            outs.append(feat)
        y = F.linear(torch.relu(torch.cat(outs, dim=-1)), p["merge.proj.weight"], p["merge.proj.bias"])
        y = y.view(B, nH, nW, ws, ws, C).transpose(2, 3).reshape(B, pH, pW, C)
        return y[:, :H, :W] if (pad_b or pad_r) else y
    return fn


# ============================================================================ FLOPs
def _proj_flops(N, c_in, c_out):
    return 2.0 * N * c_in * c_out


def flops_for(family: str, m, B: int) -> float:
    """FLOPs of one forward (multiply-add = 2): every projection / conv of the mechanism
    plus the attention core (q·k and A·v over the keys each query attends, as the
    mechanism defines them); softmax, norms, bias adds, gathers are not counted."""
    c = Ctx(m)
    H, W, C, G = c.H, c.W, c.C, c.G
    N = H * W
    fam = FAMILIES[family]
    if fam.kind == "hilo":
        hi, lo, ws = _hilo_geometry(c)
        Np = (-(-H // ws) * ws) * (-(-W // ws) * ws)
        hd, ld = hi.width, lo.width
        f = _proj_flops(Np, C, 3 * hd) + _proj_flops(Np, hd, hd) + 4.0 * Np * ws * ws * hd
        M = Np // (ws * ws)
        f += _proj_flops(Np, C, ld) + _proj_flops(M, C, 2 * ld) + _proj_flops(Np, ld, ld) \
            + 4.0 * Np * M * ld
        return B * f
    b = c.b
    qkv_proj = _proj_flops(N, C, 3 * C) + _proj_flops(N, C, C)       # qkv + out proj
    if fam.kind == "global":
        return B * (qkv_proj + 4.0 * N * N * C)
    if fam.kind in ("window", "window_relu"):
        ws = b.window
        Np = (-(-H // ws) * ws) * (-(-W // ws) * ws)
        return B * (_proj_flops(Np, C, 3 * C) + _proj_flops(N, C, C) + 4.0 * Np * ws * ws * C)
    if fam.kind == "neighbourhood":
        return B * (qkv_proj + 4.0 * N * b.window ** 2 * C)
    if fam.kind == "pooled":
        sr = b.spec.application.ratio
        M = (H // sr) * (W // sr)
        return B * (_proj_flops(N, C, C) + 2.0 * M * C * C * sr * sr + _proj_flops(M, C, 2 * C)
                    + _proj_flops(N, C, C) + 4.0 * N * M * C)
    if fam.kind == "elsa":
        K, Cqk = b.window, b.qk_dim
        gw = b.spec.parameterization.group_width
        return B * (_proj_flops(N, C, 2 * Cqk + C) + _proj_flops(N, C, C)
                    + 2.0 * N * Cqk * gw * K * K + 2.0 * N * Cqk * G * K * K
                    + 2.0 * N * C * K * K)
    if fam.kind == "clusters":
        app = b.spec.application
        keys = app.size + (app.overlap if b.levels else 0)
        # per level: `iterations` × (cosines 4NC + weighted sums 4NC) + final cosines 4NC
        clustering = b.levels * (app.iterations * 8.0 + 4.0) * N * C
        return B * (qkv_proj + 4.0 * N * keys * C + 2.0 * N * C * 9 + clustering)
    if fam.kind == "dwconv":
        return B * 2.0 * N * C * b.window ** 2
    if fam.kind == "unified":
        T = b.window ** 2
        nterms = len(set(b.spec.parameterization.term_kinds) & {"query_key", "query_rel_pos", "key_rel_pos"})
        return B * (qkv_proj + 2.0 * N * T * C * (nterms + 1))
    if fam.kind == "linformer":
        k = b.spec.application.keys
        return B * (qkv_proj + 4.0 * k * N * C + 4.0 * N * k * C)
    if fam.kind == "grid":
        P = b.group
        return B * (qkv_proj + 4.0 * N * P * P * C)
    if fam.kind in ("stripes", "axial"):
        sequential = c.plan.spec.merge.kind == "sequence"
        f = 0.0 if sequential else _proj_flops(N, C, C)              # the shared proj
        for br in c.plan.branches:
            wd = br.width
            f += _proj_flops(N, C, 3 * wd) + (_proj_flops(N, wd, C) if sequential else 0.0)
            if fam.kind == "stripes":
                th, tw = br.geometry.tile
                keys = th * tw
                f += 2.0 * N * wd * br.spec.extras.value_conv.size ** 2
            else:
                keys = W if br.spec.application.axis == "row" else H
            f += 4.0 * N * keys * wd
        return B * f
    if fam.kind == "adaptive_pooled":
        M = b.spec.application.size ** 2
        return B * (_proj_flops(N, C, C) + _proj_flops(M, C, C) + _proj_flops(M, C, 2 * C)
                    + _proj_flops(N, C, C) + 4.0 * N * M * C)
    if fam.kind == "shunted":
        f = 2 * _proj_flops(N, C, C)                                 # q (both halves) + proj
        for br in c.plan.branches:
            r = br.spec.application.ratio
            M = (H // r) * (W // r)
            wd = br.width
            f += 2.0 * M * C * C * r * r + _proj_flops(M, C, 2 * wd) \
                + 2.0 * M * wd * br.spec.extras.value_conv.size ** 2 + 4.0 * N * M * wd
        return B * f
    if fam.kind == "linear":
        return B * (qkv_proj + 4.0 * N * C * c.d + 4.0 * N * C)
    if fam.kind == "halo":
        win = b.geometry.block + 2 * b.geometry.halo
        return B * (_proj_flops(N, C, 2 * b.qk_dim + b.width) + 2.0 * N * win * win * (b.qk_dim + b.width)
                    + 4.0 * N * win * b.qk_dim)
    if fam.kind == "efficientvit":
        ws = b.spec.application.size
        K = b.spec.projections.q_conv.size
        Hp, Wp = -(-H // ws) * ws, -(-W // ws) * ws
        Np = Hp * Wp
        f = _proj_flops(Np, C, C)                                    # proj
        for br in c.plan.branches:
            f += _proj_flops(Np, br.reads, 2 * br.qk_dim + br.width) + 2.0 * Np * br.qk_dim * K * K \
                + 2.0 * Np * ws * ws * (br.qk_dim + br.width)
        return B * f
    raise KeyError(family)


FLOP_FORMULAS = {
    "global": "8·N·C² (qkv + proj) + 4·N²·C (q·k, A·v)",
    "window": "6·Np·C² + 2·N·C² + 4·Np·ws²·C (Np: padded map)",
    "window_relu": "6·Np·C² + 2·N·C² + 4·Np·ws²·C",
    "neighbourhood": "8·N·C² + 4·N·K²·C",
    "pooled": "4·N·C² (q, proj) + 2·M·C²·sr² (sr conv) + 4·M·C² (kv) + 4·N·M·C, M = ⌊H/sr⌋·⌊W/sr⌋",
    "hilo": "Hi-Fi 6·N·C·h + 2·N·h² + 4·N·ws²·h; Lo-Fi 2·N·C·l + 4·M·C·l + 2·N·l² + 4·N·M·l "
            "(h, l: branch widths, M = N/ws²)",
    "elsa": "2·N·C·(2·Cqk + C) + 2·N·C² + 2·N·Cqk·gw·K² (dw) + 2·N·Cqk·G·K² (pw) + 2·N·C·K² (aggregation)",
    "clusters": "8·N·C² + 4·N·(size+overlap)·C + 18·N·C (3×3 value conv) + L·(8·iters+4)·N·C (clustering cosines and centroid sums)",
    "dwconv": "2·N·C·K²",
    "unified": "8·N·C² + 2·N·K²·C·(terms with a dot product + 1)",
    "linformer": "8·N·C² + 4·k·N·C (E·K, F·V) + 4·N·k·C",
    "grid": "8·N·C² + 4·N·G²·C (G: group size; each query sees G² keys)",
    "stripes": "6·N·C² (qkv) + 2·N·C² (proj) + Σ_branches [4·N·(stripe tokens)·c_b + 2·N·c_b·k² (LePE)]",
    "axial": "Σ_branches [6·N·C·c_b (qkv) + 4·N·L_b·c_b] + 2·N·C² per proj (one shared, or one per "
             "sequential step); L_b = W for rows, H for columns",
    "adaptive_pooled": "4·N·C² (q, proj) + 2·M·C² (1×1 sr) + 4·M·C² (kv) + 4·N·M·C, M = P² (P = 7)",
    "shunted": "4·N·C² (q, proj) + Σ_paths [2·M·C²·r² (sr conv) + 4·M·C·c_p (kv) + 18·M·c_p "
               "(value conv) + 4·N·M·c_p], M = ⌊H/r⌋·⌊W/r⌋",
    "linear": "8·N·C² + 4·N·C·d (φ(K)ᵀV, φ(Q)·S) + 4·N·C (Σφ(K), φ(Q)·z)",
    "halo": "2·N·C·(2·C_qk + C) (qkv, no proj) + 2·N·win²·(C_qk + C) + 4·N·win·C_qk (relative "
            "logits), win = block + 2·halo",
    "efficientvit": "Σ_heads [2·Np·(C/G)·(2·d_qk + d) + 2·Np·d_qk·K² (q conv) + 2·Np·ws²·(d_qk + d)] "
                    "+ 2·Np·C² (proj), Np: padded map",
}


# ============================================================================ registry
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


FAMILIES: dict[str, Family] = {f.name: f for f in [
    Family("vit_mhsa", "vit_mhsa", "global", vit_reference,
           [Baseline("sdpa", vit_sdpa)]),
    Family("swin_wmsa", "swin_wmsa", "window", lambda c: swin_reference(c),
           [Baseline("sdpa_bias_mask", lambda c: window_sdpa(c, True)),
            Baseline("flex_compiled", lambda c: window_flex(c, True), compiled=True)]),
    Family("swin_swmsa", "swin_swmsa", "window", lambda c: swin_reference(c),
           [Baseline("sdpa_bias_mask", lambda c: window_sdpa(c, True)),
            Baseline("flex_compiled", lambda c: window_flex(c, True), compiled=True)]),
    Family("nat", "nat", "neighbourhood", nat_reference,
           [Baseline("window_index_compiled", nat_window_index, compiled=True, wrap=True),
            Baseline("gather_compiled", nat_gather, compiled=True, wrap=True),
            Baseline("gather_matmul_compiled", lambda c: nat_gather(c, "matmul"), compiled=True, wrap=True),
            Baseline("sdpa_dense_mask", nat_dense_mask_sdpa),
            Baseline("flex_compiled", nat_flex, compiled=True),
            Baseline("natten", nat_natten)]),
    Family("dinat", "dinat", "neighbourhood", nat_reference,
           [Baseline("window_index_compiled", nat_window_index, compiled=True, wrap=True),
            Baseline("gather_compiled", nat_gather, compiled=True, wrap=True),
            Baseline("gather_matmul_compiled", lambda c: nat_gather(c, "matmul"), compiled=True, wrap=True),
            Baseline("sdpa_dense_mask", nat_dense_mask_sdpa),
            Baseline("flex_compiled", nat_flex, compiled=True),
            Baseline("natten", nat_natten)]),
    Family("twins_gsa", "twins_gsa", "pooled", gsa_reference,
           [Baseline("sdpa_pooled", gsa_sdpa)]),
    Family("twins_lsa", "twins_lsa", "window", twins_lsa_reference,
           [Baseline("sdpa", lambda c: window_sdpa(c, False)),
            Baseline("flex_compiled", lambda c: window_flex(c, False), compiled=True)]),
    Family("hilo", "hilo", "hilo", hilo_reference,
           [Baseline("sdpa", hilo_sdpa),
            Baseline("sdpa_compiled", hilo_sdpa, compiled=True, wrap=True)]),
    Family("elsa", "elsa", "elsa", elsa_reference,
           [Baseline("dwconv_static+unfold", lambda c: elsa_split(c, loop=False)),
            Baseline("dwconv_static+shift_loop_compiled", lambda c: elsa_split(c, loop=True),
                     compiled=True, wrap=True)]),
    Family("boat_fsla", "boat_fsla", "clusters", lambda c: boat_attention(c, sdpa=False),
           [Baseline("clusters_sdpa", lambda c: boat_attention(c, sdpa=True))],
           check_dtype="float64",
           note="checked in float64 at the timed shape (float32 near-ties in the cluster sort "
                "flip whole sub-trees, ZOO.md §3); the timed dtype's agreement is recorded"),
    Family("dwconv", "dwconv", "dwconv", dwconv_reference,
           [Baseline("conv2d_channels_last", dwconv_channels_last)], heads="channels"),
    Family("unified_lsa_rp_sliding_softmax", "unified_lsa_rp_sliding_softmax", "unified",
           unified_reference,
           [Baseline("shift_loop_compiled", unified_shift_loop, compiled=True, wrap=True)]),
    Family("dynconv_relu", "dynconv_relu", "window_relu",
           lambda c: swin_reference(c, norm="relu_mean"),
           [Baseline("bmm_static_bias", window_relu_bmm),
            Baseline("bmm_static_bias_compiled", window_relu_bmm, compiled=True, wrap=True)]),
    Family("linformer", "linformer", "linformer", linformer_reference,
           [Baseline("sdpa", linformer_sdpa)]),
    Family("swin_v2_wmsa", "swin_v2_wmsa", "window", swin_v2_reference,
           both("sdpa_cosine_bias_mask", swin_v2_sdpa)),
    Family("swin_v2_swmsa", "swin_v2_swmsa", "window", swin_v2_reference,
           both("sdpa_cosine_bias_mask", swin_v2_sdpa)),
    Family("cswin", "cswin", "stripes", cswin_reference,
           both("sdpa_stripes", cswin_sdpa),
           heads="spec", note="the spec's 4 heads (2 per stripe direction) at both stages"),
    Family("maxvit_block", "maxvit_block", "window", maxvit_block_reference,
           both("sdpa_bias_mask", lambda c: maxvit_sdpa(c, "block"))),
    Family("maxvit_grid", "maxvit_grid", "grid", maxvit_grid_reference,
           both("sdpa_bias_mask", lambda c: maxvit_sdpa(c, "grid"))),
    Family("axial_parallel", "axial_parallel", "axial", axial_reference,
           both("sdpa_axes", axial_sdpa),
           heads="spec", note="the spec's 4 heads (2 along rows, 2 along columns) at both stages"),
    Family("axial_sequential", "axial_sequential", "axial", axial_reference,
           both("sdpa_axes", axial_sdpa)),
    Family("pvt_v2_linear", "pvt_v2_linear", "adaptive_pooled", pvt_v2_linear_reference,
           both("sdpa_pooled", pvt_v2_linear_sdpa)),
    Family("linear_attention_elu", "linear_attention_elu", "linear", linear_attention_reference,
           both("matmul_ones_column", linear_attention_matmul)),
    Family("linear_attention_relu", "linear_attention_relu", "linear", linear_attention_reference,
           both("matmul_ones_column", linear_attention_matmul)),
    Family("halonet", "halonet", "halo", halonet_reference,
           both("sdpa_rel_mask", halonet_sdpa)),
    Family("shunted", "shunted", "shunted", shunted_reference,
           both("sdpa_pooled", shunted_sdpa),
           heads="spec", note="the spec's 4 heads (2 per key path) at both stages"),
    Family("crossformer_sda", "crossformer_sda", "window", crossformer_sda_reference,
           both("sdpa_bias_mask", lambda c: crossformer_sdpa(c, "block"))),
    Family("crossformer_lda", "crossformer_lda", "grid", crossformer_lda_reference,
           both("sdpa_bias_mask", lambda c: crossformer_sdpa(c, "grid"))),
    Family("sigmoid_attention", "sigmoid_attention", "global", sigmoid_reference,
           [Baseline("baddbmm_sigmoid_chunked", sigmoid_baddbmm),
            Baseline("explicit_compiled", sigmoid_explicit, compiled=True, wrap=True)]),
    Family("dinat_13", "dinat_13", "neighbourhood", nat_reference,
           [Baseline("window_index_compiled", nat_window_index, compiled=True, wrap=True),
            Baseline("gather_compiled", nat_gather, compiled=True, wrap=True),
            Baseline("gather_matmul_compiled", lambda c: nat_gather(c, "matmul"), compiled=True, wrap=True),
            Baseline("sdpa_dense_mask", nat_dense_mask_sdpa),
            Baseline("flex_compiled", nat_flex, compiled=True),
            Baseline("natten", nat_natten)],
           quick_resolution=(28, 28),
           note="13×13 dilation 2: each dilated sub-grid needs ≥ 13 rows (28×28 at the smallest)"),
    Family("efficientvit", "efficientvit", "efficientvit", efficientvit_reference,
           [Baseline("sdpa_bias_mask", efficientvit_sdpa),
            Baseline("sdpa_bias_mask_compiled", efficientvit_sdpa, compiled=True, wrap=True)],
           heads="spec", note="the spec's 3 one-head branches at both stages (d = C/3)"),
]}


def family_names() -> list[str]:
    return list(FAMILIES)


def build_reference(family: str, m) -> Fn:
    return FAMILIES[family].reference(Ctx(m))


def build_baseline(family: str, name: str, m) -> Fn:
    for bl in FAMILIES[family].baselines:
        if bl.name == name:
            return bl.make(Ctx(m))
    raise KeyError(f"{family}: no baseline {name!r}")


def rel_err(y: torch.Tensor, ref: torch.Tensor) -> float:
    """max |y − ref| / max |ref| (both upcast to float64)."""
    y, ref = y.detach().double(), ref.detach().double()
    return float((y - ref).abs().max() / ref.abs().max().clamp_min(1e-30))


__all__ = ["FAMILIES", "FLOP_FORMULAS", "Baseline", "Family", "Ctx", "Skip", "flops_for",
           "build_reference", "build_baseline", "family_names", "rel_err"]
