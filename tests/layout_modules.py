"""Independent reference modules in the foreign checkpoint layouts (timm, LITv2, ELSA, BOAT).

Each holds its parameters under the layout's own names and shapes and computes its output
with the math of reference.py (written from ZOO.md; it shares no code with attndsl), so
that a converted state dict is checked end to end: same weights, same output. Inputs are
(B, H, W, C) like attndsl's modules.
"""
from __future__ import annotations

import torch
from torch import nn

import reference as ref
from tiny_swin import swin_index   # Swin's index by its definition (examples/)


def _randomize(module: nn.Module, seed: int) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            fan_in = p[0].numel() if p.dim() >= 2 else 0
            std = fan_in ** -0.5 if fan_in else 0.5
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * std)
    return module


class TimmWindowAttention(nn.Module):
    """timm SwinTransformer WindowAttention's parameters; the block's shift (and its mask)
    applied around it as timm's SwinTransformerBlock does."""

    def __init__(self, dim, heads, ws, shift=0, seed=0, dtype=torch.float64):
        super().__init__()
        self.heads, self.ws, self.shift = heads, ws, shift
        self.qkv = nn.Linear(dim, 3 * dim, dtype=dtype)
        self.proj = nn.Linear(dim, dim, dtype=dtype)
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * ws - 1) ** 2, heads, dtype=dtype))
        # timm ≥ 1.0 keeps the index out of the state dict (persistent=False)
        self.register_buffer("relative_position_index", swin_index(ws), persistent=False)
        _randomize(self, seed)

    def forward(self, x):
        return ref.window_attention(
            x, heads=self.heads, ws=self.ws, shift=self.shift,
            scale=(x.shape[-1] // self.heads) ** -0.5, table=self.relative_position_bias_table,
            w_qkv=self.qkv.weight, b_qkv=self.qkv.bias, w_proj=self.proj.weight,
            b_proj=self.proj.bias)


class TimmGcvitLocalAttention(nn.Module):
    """timm GCViT WindowAttentionGlobal (use_global=False) as its block calls it: qkv, proj
    and RelPosBias's table under rel_pos.; unshifted windows of the map."""

    def __init__(self, dim, heads, ws, seed=0, dtype=torch.float64):
        super().__init__()
        self.heads, self.ws = heads, ws
        self.qkv = nn.Linear(dim, 3 * dim, dtype=dtype)
        self.proj = nn.Linear(dim, dim, dtype=dtype)
        self.rel_pos = nn.Module()
        self.rel_pos.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * ws - 1) ** 2, heads, dtype=dtype))
        self.rel_pos.register_buffer("relative_position_index", swin_index(ws).flatten(),
                                     persistent=False)
        _randomize(self, seed)

    def forward(self, x):
        return ref.window_attention(
            x, heads=self.heads, ws=self.ws, shift=0,
            scale=(x.shape[-1] // self.heads) ** -0.5,
            table=self.rel_pos.relative_position_bias_table, w_qkv=self.qkv.weight,
            b_qkv=self.qkv.bias, w_proj=self.proj.weight, b_proj=self.proj.bias)


class TimmLocallyGroupedAttn(nn.Module):
    """timm Twins LocallyGroupedAttn (qkv, proj): window attention, no bias, no shift."""

    def __init__(self, dim, heads, ws, seed=0, dtype=torch.float64):
        super().__init__()
        self.heads, self.ws = heads, ws
        self.qkv = nn.Linear(dim, 3 * dim, dtype=dtype)
        self.proj = nn.Linear(dim, dim, dtype=dtype)
        _randomize(self, seed)

    def forward(self, x):
        return ref.twins_lsa(x, heads=self.heads, ws=self.ws,
                             scale=(x.shape[-1] // self.heads) ** -0.5, masked=False,
                             w_qkv=self.qkv.weight, b_qkv=self.qkv.bias,
                             w_proj=self.proj.weight, b_proj=self.proj.bias)


class TimmGlobalSubSampleAttn(nn.Module):
    """timm Twins GlobalSubSampleAttn / PVT-v2 Attention: q, kv, proj, sr (conv), norm."""

    def __init__(self, dim, heads, sr, seed=0, dtype=torch.float64):
        super().__init__()
        self.heads, self.sr_ratio = heads, sr
        self.q = nn.Linear(dim, dim, dtype=dtype)
        self.kv = nn.Linear(dim, 2 * dim, dtype=dtype)
        self.proj = nn.Linear(dim, dim, dtype=dtype)
        self.sr = nn.Conv2d(dim, dim, sr, stride=sr, dtype=dtype)
        self.norm = nn.LayerNorm(dim, dtype=dtype)
        _randomize(self, seed)

    def forward(self, x):
        return ref.gsa(x, heads=self.heads, sr=self.sr_ratio,
                       scale=(x.shape[-1] // self.heads) ** -0.5,
                       w_q=self.q.weight, b_q=self.q.bias, w_kv=self.kv.weight,
                       b_kv=self.kv.bias, w_sr=self.sr.weight, b_sr=self.sr.bias,
                       ln_w=self.norm.weight, ln_b=self.norm.bias,
                       w_proj=self.proj.weight, b_proj=self.proj.bias)


class TimmPosConv(nn.Module):
    """timm Twins PosConv (PEG): proj = Sequential(Conv2d(C, C, 3, 1, 1, groups=C))."""

    def __init__(self, dim, seed=0, dtype=torch.float64):
        super().__init__()
        self.proj = nn.Sequential(nn.Conv2d(dim, dim, 3, 1, 1, groups=dim, dtype=dtype))
        _randomize(self, seed)

    def forward(self, x):
        return ref.peg(x, w=self.proj[0].weight, b=self.proj[0].bias)


class TimmVitAttention(nn.Module):
    """timm VisionTransformer Attention (qkv, proj; with qk_norm: q_norm / k_norm, a
    LayerNorm(d, eps=1e-6) of each head's q and k before the scaled product)."""

    def __init__(self, dim, heads, qk_norm=False, seed=0, dtype=torch.float64):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, dtype=dtype)
        self.proj = nn.Linear(dim, dim, dtype=dtype)
        if qk_norm:
            self.q_norm = nn.LayerNorm(dim // heads, eps=1e-6, dtype=dtype)
            self.k_norm = nn.LayerNorm(dim // heads, eps=1e-6, dtype=dtype)
        self.qk_norm = qk_norm
        _randomize(self, seed)

    def forward(self, x):
        scale = (x.shape[-1] // self.heads) ** -0.5
        if not self.qk_norm:
            return ref.global_attention(x, heads=self.heads, scale=scale,
                                        w_qkv=self.qkv.weight, b_qkv=self.qkv.bias,
                                        w_proj=self.proj.weight, b_proj=self.proj.bias)
        B, H, W, C = x.shape
        q, k, v = self.qkv(x.reshape(B, H * W, C)).split(C, dim=-1)
        q, k, v = (ref._split_heads(t, self.heads) for t in (q, k, v))   # (B, G, N, d)
        q = ref.layer_norm(q, self.q_norm.weight, self.q_norm.bias, 1e-6)
        k = ref.layer_norm(k, self.k_norm.weight, self.k_norm.bias, 1e-6)
        y = ref._merge_heads(ref._softmax_attention(q, k, v, scale))
        return self.proj(y).reshape(B, H, W, C)


class LitV2HiLo(nn.Module):
    """Official LITv2 HiLo: l_heads = int(heads·alpha) Lo-Fi heads, the rest Hi-Fi."""

    def __init__(self, dim, heads, ws=2, alpha=0.9, seed=0, dtype=torch.float64):
        super().__init__()
        self.heads, self.ws, self.alpha = heads, ws, alpha
        d = dim // heads
        l_dim = int(heads * alpha) * d
        h_dim = dim - l_dim
        self.h_qkv = nn.Linear(dim, 3 * h_dim, dtype=dtype)
        self.h_proj = nn.Linear(h_dim, h_dim, dtype=dtype)
        self.l_q = nn.Linear(dim, l_dim, dtype=dtype)
        self.l_kv = nn.Linear(dim, 2 * l_dim, dtype=dtype)
        self.l_proj = nn.Linear(l_dim, l_dim, dtype=dtype)
        _randomize(self, seed)

    def forward(self, x):
        return ref.hilo(x, heads=self.heads, alpha=self.alpha, ws=self.ws,
                        scale=(x.shape[-1] // self.heads) ** -0.5,
                        h_qkv_w=self.h_qkv.weight, h_qkv_b=self.h_qkv.bias,
                        h_proj_w=self.h_proj.weight, h_proj_b=self.h_proj.bias,
                        l_q_w=self.l_q.weight, l_q_b=self.l_q.bias,
                        l_kv_w=self.l_kv.weight, l_kv_b=self.l_kv.bias,
                        l_proj_w=self.l_proj.weight, l_proj_b=self.l_proj.bias)


class ElsaOfficial(nn.Module):
    """damo-cv/ELSA `ELSA`: pre_proj a 1×1 Conv2d, attn = (grouped K×K conv, GELU, 1×1
    conv to G·K²), ghost_head stacked [M; S] (2, 1, C, K, K) when lam and gamma are both
    non-zero, else the one in use as (1, C, K, K); post_proj a Linear."""

    def __init__(self, dim, heads, kernel=7, group_width=8, lam=0, gamma=1.0, scale=1.0,
                 seed=0, dtype=torch.float64):
        super().__init__()
        self.heads, self.kernel, self.gw = heads, kernel, group_width
        self.lam, self.gamma, self.scale = lam, gamma, scale
        qk = dim // 3 * 2
        self.qk = -(-qk // group_width) * group_width
        self.pre_proj = nn.Conv2d(dim, 2 * self.qk + dim, 1, dtype=dtype)
        self.attn = nn.Sequential(
            nn.Conv2d(self.qk, self.qk, kernel, padding=kernel // 2,
                      groups=self.qk // group_width, dtype=dtype),
            nn.GELU(), nn.Conv2d(self.qk, kernel * kernel * heads, 1, dtype=dtype))
        n = 2 if (lam != 0 and gamma != 0) else 1
        shape = (2, 1, dim, kernel, kernel) if n == 2 else (1, dim, kernel, kernel)
        self.ghost_head = nn.Parameter(torch.zeros(shape, dtype=dtype))
        self.post_proj = nn.Linear(dim, dim, dtype=dtype)
        _randomize(self, seed)

    def forward(self, x):
        gh = self.ghost_head
        if self.lam != 0 and self.gamma != 0:
            mul, add = gh[0, 0], gh[1, 0]
        elif self.lam == 0:
            mul, add = None, gh[0]
        else:
            mul, add = gh[0], None
        dw, pw = self.attn[0], self.attn[2]
        return ref.elsa(x, heads=self.heads, kernel=self.kernel, group_width=self.gw,
                        scale=self.scale, lam=self.lam, gamma=self.gamma,
                        w_qkv=self.pre_proj.weight.flatten(1), b_qkv=self.pre_proj.bias,
                        qk_dim=self.qk, w_dw=dw.weight, b_dw=dw.bias, w_pw=pw.weight,
                        b_pw=pw.bias, ghost_mul=mul, ghost_add=add,
                        w_proj=self.post_proj.weight, b_proj=self.post_proj.bias)


class BoatContentAttention(nn.Module):
    """pytorch-boat ContentAttention: qkv, proj and get_v, the depthwise 3×3 conv on V."""

    def __init__(self, dim, heads, seed=0, dtype=torch.float64):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, dtype=dtype)
        self.proj = nn.Linear(dim, dim, dtype=dtype)
        self.get_v = nn.Conv2d(dim, dim, 3, padding=1, groups=dim, dtype=dtype)
        _randomize(self, seed)

    def forward(self, x):
        return ref.boat_fsla(x, heads=self.heads, cluster_size=49, overlap=20, iterations=2,
                             temperature=100.0, scale=(x.shape[-1] // self.heads) ** -0.5,
                             w_qkv=self.qkv.weight, b_qkv=self.qkv.bias,
                             w_dw=self.get_v.weight, b_dw=self.get_v.bias,
                             w_proj=self.proj.weight, b_proj=self.proj.bias)
