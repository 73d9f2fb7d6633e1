"""CrossFormer attention with dynamic position bias (Wang et al., "CrossFormer: A Versatile
Vision Transformer Hinging on Cross-scale Attention", ICLR 2022) -- an independent float64
reference of the SDA / LDA token mixer.

Mirrors ``cheerss/CrossFormer``: parameter layout of ``models/crossformer.py`` (commit
f20000d, the ImageNet release) classes ``Attention`` + ``DynamicPosBias``, grouping of
``CrossFormerBlock`` in that file (LDA with the GROUP SIZE fixed), and the padding /
masking of ``CrossFormerBlock`` in ``models/crossformer_backbone.py`` (commit 4d73aa9, the
v1 detection / segmentation backbone; LDA with the INTERVAL fixed).  Not CrossFormer++
(the HEAD ``models/crossformer.py``, whose LDA fixes both and tiles regions of G*I).

Math (x: (B, H, W, C), h heads, d = C/h, s = d^-1/2):

Grouping.  SDA ("sda"): non-overlapping G x G windows, G = ``group``.
LDA ("lda"): tokens whose coordinates agree modulo an interval I form one group:
group (a, b) = {(a + I*m, b + I*n)}, members ordered row-major by (m, n).
  * ``interval=None`` (classification release): G = ``group`` fixed, I_h = H // G,
    I_w = W // G, group shape (G, G).  H, W must be multiples of G (the official code
    has no padding here; we raise).
  * ``interval=I`` (v1 backbone): I fixed, group shape (Gh, Gw) = (Hp/I, Wp/I).
Both official blocks first do: if min(H, W) <= group: use SDA with G = min(H, W)
(also for LDA).
Padding (v1 backbone): zero-pad on the right / bottom to multiples of
size_div = I (LDA) or G (SDA); padded tokens are zero INPUT vectors (their q, k, v are
the qkv bias), and they are masked as KEYS only: logit += -1e6 (NEG_INF) for every query
whose group contains them; padded queries are computed and cropped away.

Attention in a group of shape (Gh, Gw), tokens t = y*Gw + x inside the group:
    [q | k | v] = x Wqkv^T + bqkv      -- 3C outputs: q, k, v blocks of C, each head-major
    logit_ij = s q_i.k_j + B[idx(i, j)] + mask_j
    B = DPB((dy, dx) for dy in [1-Gh, Gh-1], dx in [1-Gw, Gw-1], row-major)  -> (#, h)
    idx(i, j) = (y_i - y_j + Gh - 1) * (2Gw - 1) + (x_i - x_j + Gw - 1)   (query - key)
    y = concat_heads softmax(logit) v,   out = y Wproj^T + bproj
DPB (residual=False): pos3(pos2(pos1(pos_proj(offset)))) with pos_k = LN -> ReLU -> Linear;
its width is pos_dim = (C // 4) // 4 because Attention passes dim//4 and DynamicPosBias
divides by 4 again (C = 64 gives pos_dim 4; C < 32 gives a degenerate LayerNorm of 1).

State dict: qkv.weight (3C,C) qkv.bias (3C,) | proj.weight (C,C) proj.bias (C,) |
pos.pos_proj.weight (P,2) .bias (P,) | pos.pos1.0.weight/bias (P,) [LayerNorm] |
pos.pos1.2.weight (P,P) .bias (P,) [Linear] | pos.pos2.0.* (P,) | pos.pos2.2.* (P,P),(P,) |
pos.pos3.0.* (P,) | pos.pos3.2.weight (h,P) .bias (h,) | buffers biases ((2G-1)^2, 2)
float and relative_position_index (G^2, G^2) long (persistent in the classification
release; here for the nominal G x G group, recomputed for any other group shape).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["CrossFormerAttention", "DynamicPosBias", "offset_table", "relative_index",
           "NEG_INF", "randomize_"]

NEG_INF = -1000000.0   # the official additive mask value (not -inf)


def randomize_(module: nn.Module, seed: int) -> nn.Module:
    """Seeded fill: std fan_in^-1/2 for >= 2-dim weights, 0.5 for 1-dim ones (drawn in
    float64, then cast, so every dtype sees the same numbers)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in module.named_parameters():
            std = p[0].numel() ** -0.5 if p.dim() >= 2 else 0.5
            p.copy_((torch.randn(p.shape, generator=g, dtype=torch.float64) * std).to(p.dtype))
    return module


def offset_table(gh, gw, dtype=torch.float64):
    """((2gh-1)(2gw-1), 2) float offsets (dy, dx), dy-major, as the DPB input."""
    dy = torch.arange(1 - gh, gh)
    dx = torch.arange(1 - gw, gw)
    grid = torch.stack(torch.meshgrid(dy, dx, indexing="ij"), dim=-1)
    return grid.reshape(-1, 2).to(dtype)


def relative_index(gh, gw):
    """(gh*gw, gh*gw) long: row of offset_table for (query i, key j) = coord_i - coord_j."""
    ys, xs = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
    ys, xs = ys.reshape(-1), xs.reshape(-1)
    dy = ys[:, None] - ys[None, :]
    dx = xs[:, None] - xs[None, :]
    return (dy + gh - 1) * (2 * gw - 1) + (dx + gw - 1)


class DynamicPosBias(nn.Module):
    """Official DPB: ``dim`` is what Attention passes (C // 4); width is dim // 4."""

    def __init__(self, dim, num_heads, residual=False, dtype=torch.float64):
        super().__init__()
        self.residual = residual
        self.pos_dim = dim // 4
        P, kw = self.pos_dim, dict(dtype=dtype)
        self.pos_proj = nn.Linear(2, P, **kw)
        # Sequential indices 0 (LayerNorm), 1 (ReLU, no params), 2 (Linear) as in the checkpoint
        self.pos1 = nn.Sequential(nn.LayerNorm(P, **kw), nn.ReLU(), nn.Linear(P, P, **kw))
        self.pos2 = nn.Sequential(nn.LayerNorm(P, **kw), nn.ReLU(), nn.Linear(P, P, **kw))
        self.pos3 = nn.Sequential(nn.LayerNorm(P, **kw), nn.ReLU(), nn.Linear(P, num_heads, **kw))

    def forward(self, offsets):
        pos = self.pos_proj(offsets)
        if self.residual:
            pos = pos + self.pos1(pos)
            pos = pos + self.pos2(pos)
            return self.pos3(pos)
        return self.pos3(self.pos2(self.pos1(pos)))


class CrossFormerAttention(nn.Module):
    """SDA / LDA mixer with DPB; forward takes the (already normalised) (B, H, W, C) map.

    kind: "sda" or "lda"; group: the group size G; interval: None (LDA fixes G, the
    classification release) or I (LDA fixes the interval, the v1 backbone).
    After a call, ``last_attn`` holds the attention weights (B*nG, h, N, N),
    ``last_mask`` the additive (nG, N, N) mask or None, ``last_geometry`` a dict.
    """

    def __init__(self, dim, heads, group, kind, interval=None, qkv_bias=True, seed=0,
                 dtype=torch.float64):
        super().__init__()
        if kind not in ("sda", "lda"):
            raise ValueError(f"kind must be 'sda' or 'lda', got {kind!r}")
        if dim % heads:
            raise ValueError(f"dim {dim} not divisible by heads {heads}")
        self.dim, self.heads, self.group, self.kind, self.interval = dim, heads, group, kind, interval
        self.scale = (dim // heads) ** -0.5
        self.pos = DynamicPosBias(dim // 4, heads, residual=False, dtype=dtype)
        self.register_buffer("biases", offset_table(group, group, dtype))
        self.register_buffer("relative_position_index", relative_index(group, group))
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias, dtype=dtype)
        self.proj = nn.Linear(dim, dim, dtype=dtype)
        randomize_(self, seed)
        self.last_attn = self.last_mask = self.last_geometry = None

    # -- geometry ---------------------------------------------------------------------------
    def geometry(self, H, W):
        """Decide the grouping for an H x W map exactly as the official blocks do."""
        kind, G = self.kind, self.group
        if min(H, W) <= G:
            kind, G = "sda", min(H, W)
        if kind == "sda":
            size_h = size_w = G
        elif self.interval is None:
            if H % G or W % G:
                raise ValueError(f"LDA with fixed group size {G} needs H, W multiples of it "
                                 f"(the classification release has no padding); got {H}x{W}")
            size_h, size_w = H // G, W // G          # the intervals
        else:
            size_h = size_w = self.interval
        Hp = -(-H // size_h) * size_h
        Wp = -(-W // size_w) * size_w
        if kind == "sda":
            gh = gw = G
        else:
            gh, gw = Hp // size_h, Wp // size_w
        return dict(kind=kind, Hp=Hp, Wp=Wp, gh=gh, gw=gw, ih=size_h, iw=size_w,
                    pad_b=Hp - H, pad_r=Wp - W)

    def _group(self, t, geo):
        """(B, Hp, Wp, ...) -> (B * nG, gh*gw, ...), and the inverse via _ungroup."""
        B, Hp, Wp = t.shape[:3]
        rest = t.shape[3:]
        gh, gw = geo["gh"], geo["gw"]
        if geo["kind"] == "sda":
            t = t.reshape(B, Hp // gh, gh, Wp // gw, gw, *rest).transpose(2, 3)
        else:
            # row = m * I + a: member index m is the outer factor, group id a the inner one
            t = t.reshape(B, gh, geo["ih"], gw, geo["iw"], *rest).permute(
                0, 2, 4, 1, 3, *range(5, 5 + len(rest)))
        return t.reshape(-1, gh * gw, *rest)

    def _ungroup(self, t, geo, B):
        gh, gw, Hp, Wp = geo["gh"], geo["gw"], geo["Hp"], geo["Wp"]
        C = t.shape[-1]
        if geo["kind"] == "sda":
            t = t.reshape(B, Hp // gh, Wp // gw, gh, gw, C).transpose(2, 3)
        else:
            t = t.reshape(B, geo["ih"], geo["iw"], gh, gw, C).permute(0, 3, 1, 4, 2, 5)
        return t.reshape(B, Hp, Wp, C)

    def position_bias(self, gh, gw):
        """(h, gh*gw, gh*gw) bias for a gh x gw group."""
        if (gh, gw) == (self.group, self.group):
            table, idx = self.biases.to(self.qkv.weight.dtype), self.relative_position_index
        else:
            table, idx = offset_table(gh, gw, self.qkv.weight.dtype), relative_index(gh, gw)
        pos = self.pos(table)                               # (#offsets, h)
        return pos[idx.reshape(-1)].reshape(gh * gw, gh * gw, -1).permute(2, 0, 1)

    # -- forward ----------------------------------------------------------------------------
    def forward(self, x):
        B, H, W, C = x.shape
        geo = self.geometry(H, W)
        self.last_geometry = geo
        xp = F.pad(x, (0, 0, 0, geo["pad_r"], 0, geo["pad_b"]))
        groups = self._group(xp, geo)                       # (B*nG, N, C)
        Bn, N, _ = groups.shape
        nG = Bn // B
        d = C // self.heads
        qkv = self.qkv(groups).reshape(Bn, N, 3, self.heads, d).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        logits = (q * self.scale) @ k.transpose(-2, -1)
        logits = logits + self.position_bias(geo["gh"], geo["gw"]).unsqueeze(0)
        mask = None
        if geo["pad_b"] or geo["pad_r"]:
            padded = torch.zeros(1, geo["Hp"], geo["Wp"], dtype=torch.bool)
            padded[:, H:, :] = True
            padded[:, :, W:] = True
            key_pad = self._group(padded, geo)                # (nG, N): padded keys per group
            mask = torch.zeros(nG, N, N, dtype=logits.dtype)
            mask = mask.masked_fill(key_pad[:, None, :], NEG_INF)
            logits = (logits.reshape(B, nG, self.heads, N, N) + mask[None, :, None]).reshape(Bn, self.heads, N, N)
        attn = torch.softmax(logits, dim=-1)
        self.last_attn, self.last_mask = attn, mask
        y = (attn @ v).transpose(1, 2).reshape(Bn, N, C)
        y = self.proj(y)
        y = self._ungroup(y, geo, B)
        return y[:, :H, :W].contiguous()
