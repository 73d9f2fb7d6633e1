"""Swin Transformer V2 (shifted) window attention, Liu et al., "Swin Transformer V2: Scaling
Up Capacity and Resolution", CVPR 2022 -- an independent float64 reference.

Mirrors the parameter layout of timm ``timm/models/swin_transformer_v2.py``, class
``WindowAttention`` (= microsoft/Swin-Transformer ``models/swin_transformer_v2.py``), and the
shift / partition / reverse / roll that ``SwinTransformerV2Block._attn`` wraps around it.
A timm state dict for ``layers.i.blocks.j.attn.`` loads here unchanged (prefix stripped).

Math.  x: (B, H, W, C) channels-last, window w, shift s (0 <= s < w), h heads,
d = C/h, head g owns channels [g*d, (g+1)*d) of each of q, k, v.

    x' = roll(x, (-s, -s), dims=(H, W))              -- x'[r, c] = x[(r+s) % H, (c+s) % W]
    windows: w x w tiles of x', tokens n = i*w + j inside a tile (row-major)
    [q | k | v] = x' Wqkv^T + [q_bias | 0 | v_bias]  -- qkv: Linear(C, 3C, bias=False),
                                                        rows [q; k; v]; the k bias is zero
    logit[g, n, m] = cos(q_{g,n}, k_{g,m}) * exp(min(logit_scale[g], ln 100))
                   + 16 * sigmoid( cpb[ idx(n, m), g ] )
                   + mask[n, m]
    o_g = softmax_m(logit[g]) v_g ;  y' = concat_g(o_g) Wproj^T + bproj
    y  = roll(y', (+s, +s))

Continuous position bias: cpb = cpb_mlp(T) with cpb_mlp = Linear(2, 512) -> ReLU ->
Linear(512, h, bias=False) (512 = cpb_hidden) applied to every entry of the (2w-1, 2w-1, 2) table

    T[a, b] = ( f((a - (w-1)) / D), f((b - (w-1)) / D) ),   f(t) = sign(t) log2(8|t| + 1) / log2 8,
    D = pretrained_window - 1 if pretrained_window > 0 else w - 1,

so the centre entry is (0, 0) and the extremes are +-log2(9)/3 ~ +-1.0566 (not +-1) when
D = w - 1.  idx(n, m) = (dy + w-1) * (2w-1) + (dx + w-1) with (dy, dx) = pos(n) - pos(m),
i.e. QUERY minus KEY (timm/Swin orientation), pos inside the window.

Shift mask (Swin v1): label every position of x' by its region (rows [0, H-w), [H-w, H-s),
[H-s, H)) x (same for columns); mask[n, m] = -100 where the labels of n and m differ, 0
otherwise, no mask at all when s = 0.  The mask is ADDITIVE -100, not -inf: since cosine
logits reach +-100 at the clamp and the bias up to 16, masked pairs are not guaranteed to
vanish -- a reference must add exactly -100.

Differences from the timm block kept on purpose: timm shrinks the window to the map (and
drops the shift) when the map is not larger than the window, and pads maps that are not
multiples of w; this module instead requires H, W to be multiples of w and raises.  The
coordinate table is computed in the module dtype (timm computes it in float32 and casts).

State dict (exactly timm's persistent names): logit_scale (h, 1, 1), q_bias (C,),
v_bias (C,), cpb_mlp.0.weight (512, 2), cpb_mlp.0.bias (512,), cpb_mlp.2.weight (h, 512),
qkv.weight (3C, C), proj.weight (C, C), proj.bias (C,).  relative_coords_table
(1, 2w-1, 2w-1, 2), relative_position_index (w^2, w^2) and k_bias (C,) are non-persistent
buffers, as in timm (its checkpoint filter drops them from old checkpoints).
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["SwinV2WindowAttention", "coords_table", "position_index", "region_labels"]


def coords_table(window: int, pretrained_window: int = 0, dtype=torch.float64) -> torch.Tensor:
    """The (1, 2w-1, 2w-1, 2) log-spaced relative coordinate table of Swin-V2."""
    offs = torch.arange(-(window - 1), window, dtype=dtype)
    denom = (pretrained_window - 1) if pretrained_window > 0 else (window - 1)
    t = torch.stack(torch.meshgrid(offs, offs, indexing="ij"), dim=-1)
    # a 1x1 window has no offsets to normalise; dividing would produce 0/0
    t = t / denom if denom > 0 else t
    t = t * 8
    t = torch.sign(t) * torch.log2(t.abs() + 1.0) / math.log2(8)
    return t.unsqueeze(0)


def position_index(window: int) -> torch.Tensor:
    """(w^2, w^2) long: (dy + w-1)(2w-1) + (dx + w-1), (dy, dx) = pos(query) - pos(key)."""
    r = torch.arange(window)
    rows = r.repeat_interleave(window)
    cols = r.repeat(window)
    dy = rows[:, None] - rows[None, :]
    dx = cols[:, None] - cols[None, :]
    return (dy + window - 1) * (2 * window - 1) + (dx + window - 1)


def region_labels(H: int, W: int, window: int, shift: int) -> torch.Tensor:
    """(H, W) long region label of each position of the ROLLED map (Swin v1 slicing)."""
    def band(n):
        i = torch.arange(n)
        return (i >= n - window).long() + (i >= n - shift).long()
    return band(H)[:, None] * 3 + band(W)[None, :]


def randomize_(module: nn.Module, seed: int) -> nn.Module:
    """Seeded fill: weights (>= 2 dims) std fan_in^-1/2, everything else std 0.5.

    logit_scale is drawn around timm's init value ln 10 (std 0.5) so cosine logits have
    their real magnitude; values are drawn in float64 and cast.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            z = torch.randn(p.shape, generator=g, dtype=torch.float64)
            if name == "logit_scale":
                v = math.log(10.0) + 0.5 * z
            elif p.dim() >= 2:
                v = z * (p[0].numel() ** -0.5)
            else:
                v = 0.5 * z
            p.copy_(v.to(p.dtype))
    return module


class SwinV2WindowAttention(nn.Module):
    def __init__(self, dim, heads, window, shift=0, pretrained_window=0, cpb_hidden=512,
                 seed=0, dtype=torch.float64):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} not divisible by heads {heads}")
        if not 0 <= shift < window:
            raise ValueError(f"shift {shift} must be in [0, window={window})")
        self.dim, self.heads, self.window, self.shift = dim, heads, window, shift
        self.pretrained_window = pretrained_window
        dd = dict(dtype=dtype)
        self.logit_scale = nn.Parameter(torch.empty(heads, 1, 1, **dd))
        self.cpb_mlp = nn.Sequential(
            nn.Linear(2, cpb_hidden, bias=True, **dd),
            nn.ReLU(),
            nn.Linear(cpb_hidden, heads, bias=False, **dd),
        )
        self.qkv = nn.Linear(dim, 3 * dim, bias=False, **dd)
        self.q_bias = nn.Parameter(torch.empty(dim, **dd))
        self.register_buffer("k_bias", torch.zeros(dim, **dd), persistent=False)
        self.v_bias = nn.Parameter(torch.empty(dim, **dd))
        self.proj = nn.Linear(dim, dim, **dd)
        self.register_buffer("relative_coords_table",
                             coords_table(window, pretrained_window, dtype), persistent=False)
        self.register_buffer("relative_position_index", position_index(window),
                             persistent=False)
        randomize_(self, seed)

    def position_bias(self) -> torch.Tensor:
        """(h, w^2, w^2): 16 * sigmoid(cpb_mlp(T))[idx]."""
        n = self.window * self.window
        table = self.cpb_mlp(self.relative_coords_table).reshape(-1, self.heads)
        bias = table[self.relative_position_index.reshape(-1)].reshape(n, n, self.heads)
        return 16 * torch.sigmoid(bias.permute(2, 0, 1))

    def shift_mask(self, H: int, W: int):
        """(num_windows, w^2, w^2) additive mask, or None when there is no shift."""
        if self.shift == 0:
            return None
        w = self.window
        lab = region_labels(H, W, w, self.shift)
        lab = lab.reshape(H // w, w, W // w, w).permute(0, 2, 1, 3).reshape(-1, w * w)
        diff = lab[:, :, None] != lab[:, None, :]
        zero = torch.zeros((), dtype=self.proj.weight.dtype)
        return torch.where(diff, zero - 100.0, zero)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, H, W, C = x.shape
        w, s, h = self.window, self.shift, self.heads
        if H % w or W % w:
            raise ValueError(f"map {H}x{W} is not a multiple of the window {w}")
        if s:
            x = torch.roll(x, shifts=(-s, -s), dims=(1, 2))
        nh, nw, n = H // w, W // w, w * w
        win = x.reshape(B, nh, w, nw, w, C).permute(0, 1, 3, 2, 4, 5).reshape(B, nh * nw, n, C)

        bias = torch.cat([self.q_bias, self.k_bias, self.v_bias])
        qkv = F.linear(win, self.qkv.weight, bias).reshape(B, nh * nw, n, 3, h, C // h)
        q, k, v = qkv.permute(3, 0, 1, 4, 2, 5).unbind(0)      # (B, nW, h, n, d)

        scale = torch.clamp(self.logit_scale, max=math.log(100.0)).exp()   # (h, 1, 1)
        logits = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-1, -2) * scale
        logits = logits + self.position_bias()
        mask = self.shift_mask(H, W)
        if mask is not None:
            logits = logits + mask[None, :, None]
        o = torch.softmax(logits, dim=-1) @ v                   # (B, nW, h, n, d)
        o = self.proj(o.transpose(2, 3).reshape(B, nh * nw, n, C))

        y = o.reshape(B, nh, nw, w, w, C).permute(0, 1, 3, 2, 4, 5).reshape(B, H, W, C)
        if s:
            y = torch.roll(y, shifts=(s, s), dims=(1, 2))
        return y
