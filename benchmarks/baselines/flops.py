"""FLOP counts per family, for the suite's GFLOP/s (FLOP_FORMULAS says each formula).
"""
from __future__ import annotations

from .base import Ctx
from .hilo import _hilo_geometry


def _proj_flops(N, c_in, c_out):
    return 2.0 * N * c_in * c_out


def flops_of(kind: str, m, B: int) -> float:
    """FLOPs of one forward (multiply-add = 2): every projection / conv of the mechanism
    plus the attention core (q·k and A·v over the keys each query attends, as the
    mechanism defines them); softmax, norms, bias adds, gathers are not counted."""
    c = Ctx(m)
    H, W, C, G = c.H, c.W, c.C, c.G
    N = H * W
    if kind == "hilo":
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
    if kind == "global":
        return B * (qkv_proj + 4.0 * N * N * C)
    if kind in ("window", "window_relu"):
        ws = b.window
        Np = (-(-H // ws) * ws) * (-(-W // ws) * ws)
        return B * (_proj_flops(Np, C, 3 * C) + _proj_flops(N, C, C) + 4.0 * Np * ws * ws * C)
    if kind == "neighbourhood":
        return B * (qkv_proj + 4.0 * N * b.window ** 2 * C)
    if kind == "pooled":
        sr = b.spec.application.ratio
        M = (H // sr) * (W // sr)
        return B * (_proj_flops(N, C, C) + 2.0 * M * C * C * sr * sr + _proj_flops(M, C, 2 * C)
                    + _proj_flops(N, C, C) + 4.0 * N * M * C)
    if kind == "elsa":
        K, Cqk = b.window, b.qk_dim
        gw = b.spec.parameterization.group_width
        return B * (_proj_flops(N, C, 2 * Cqk + C) + _proj_flops(N, C, C)
                    + 2.0 * N * Cqk * gw * K * K + 2.0 * N * Cqk * G * K * K
                    + 2.0 * N * C * K * K)
    if kind == "clusters":
        app = b.spec.application
        keys = app.size + (app.overlap if b.levels else 0)
        # per level: `iterations` × (cosines 4NC + weighted sums 4NC) + final cosines 4NC
        clustering = b.levels * (app.iterations * 8.0 + 4.0) * N * C
        return B * (qkv_proj + 4.0 * N * keys * C + 2.0 * N * C * 9 + clustering)
    if kind == "dwconv":
        return B * 2.0 * N * C * b.window ** 2
    if kind == "unified":
        T = b.window ** 2
        nterms = len(set(b.spec.parameterization.term_kinds) & {"query_key", "query_rel_pos", "key_rel_pos"})
        return B * (qkv_proj + 2.0 * N * T * C * (nterms + 1))
    if kind == "linformer":
        k = b.spec.application.keys
        return B * (qkv_proj + 4.0 * k * N * C + 4.0 * N * k * C)
    if kind == "grid":
        rows, columns = b.geometry.group
        return B * (qkv_proj + 4.0 * N * rows * columns * C)
    if kind in ("stripes", "axial"):
        sequential = c.plan.spec.merge.kind == "sequence"
        f = 0.0 if sequential else _proj_flops(N, C, C)              # the shared proj
        for br in c.plan.branches:
            wd = br.width
            f += _proj_flops(N, C, 3 * wd) + (_proj_flops(N, wd, C) if sequential else 0.0)
            if kind == "stripes":
                th, tw = br.geometry.tile
                keys = th * tw
                f += 2.0 * N * wd * br.spec.extras.value_conv.size ** 2
            else:
                keys = W if br.spec.application.axis == "row" else H
            f += 4.0 * N * keys * wd
        return B * f
    if kind == "adaptive_pooled":
        M = b.spec.application.size ** 2
        return B * (_proj_flops(N, C, C) + _proj_flops(M, C, C) + _proj_flops(M, C, 2 * C)
                    + _proj_flops(N, C, C) + 4.0 * N * M * C)
    if kind == "shunted":
        f = 2 * _proj_flops(N, C, C)                                 # q (both halves) + proj
        for br in c.plan.branches:
            r = br.spec.application.ratio
            M = (H // r) * (W // r)
            wd = br.width
            f += 2.0 * M * C * C * r * r + _proj_flops(M, C, 2 * wd) \
                + 2.0 * M * wd * br.spec.extras.value_conv.size ** 2 + 4.0 * N * M * wd
        return B * f
    if kind == "linear":
        return B * (qkv_proj + 4.0 * N * C * c.d + 4.0 * N * C)
    if kind == "halo":
        win = b.geometry.block + 2 * b.geometry.halo
        return B * (_proj_flops(N, C, 2 * b.qk_dim + b.width) + 2.0 * N * win * win * (b.qk_dim + b.width)
                    + 4.0 * N * win * b.qk_dim)
    if kind == "efficientvit":
        ws = b.spec.application.size
        K = b.spec.projections.q_conv.size
        Hp, Wp = -(-H // ws) * ws, -(-W // ws) * ws
        Np = Hp * Wp
        f = _proj_flops(Np, C, C)                                    # proj
        for br in c.plan.branches:
            f += _proj_flops(Np, br.reads, 2 * br.qk_dim + br.width) + 2.0 * Np * br.qk_dim * K * K \
                + 2.0 * Np * ws * ws * (br.qk_dim + br.width)
        return B * f
    raise KeyError(kind)


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
