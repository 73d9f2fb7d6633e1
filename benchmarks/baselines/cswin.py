"""CSWin: the paper-style reference and the hand-picked baselines.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Ctx, Fn


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
