"""Self-checks of the published-mechanism references in tests/published/ (part A):
Swin-V2, MaxViT, CSWin, PVT-v2 linear SRA and HaloNet.

Every module is checked against a naive per-query loop written here from the papers' /
official code's formulas (sharing no code with the module), plus structural facts that
could fail: coordinate tables, masks, partition equivalences, pooling bins, padding.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from published import cswin, halonet, maxvit, pvt_v2, swin_v2

DT = torch.float64
TOL = 1e-10


def rand_map(B, H, W, C, seed=123):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, H, W, C, generator=g, dtype=DT)


def smax(v):
    e = torch.exp(v - v.max())
    return e / e.sum()


def lin(x, w, b=None):
    y = x @ w.T
    return y if b is None else y + b


def assert_close(a, b, tol=TOL):
    assert a.shape == b.shape, (a.shape, b.shape)
    err = (a - b).abs().max().item()
    assert err < tol, err


def keys_shapes(m):
    return {k: tuple(v.shape) for k, v in m.state_dict().items()}


# --------------------------------------------------------------------------------------
# Swin-V2
# --------------------------------------------------------------------------------------


def naive_swin_v2(m, x):
    B, H, W, C = x.shape
    w, s, h = m.window, m.shift, m.heads
    d = C // h
    Wq, Wk, Wv = m.qkv.weight.split(C, dim=0)
    Q, K, V = lin(x, Wq, m.q_bias), lin(x, Wk), lin(x, Wv, m.v_bias)
    D = (m.pretrained_window - 1) if m.pretrained_window > 0 else (w - 1)

    def f(t):
        t = 8 * t / D
        return math.copysign(math.log2(abs(t) + 1) / 3, t)

    def region(i, n):
        return 0 if i < n - w else (1 if i < n - s else 2)

    def cpb(dy, dx):
        hid = torch.relu(lin(torch.tensor([f(dy), f(dx)], dtype=DT),
                             m.cpb_mlp[0].weight, m.cpb_mlp[0].bias))
        return 16 * torch.sigmoid(lin(hid, m.cpb_mlp[2].weight))          # (h,)

    scale = [math.exp(min(m.logit_scale[g].item(), math.log(100))) for g in range(h)]
    out = torch.zeros(B, H, W, C, dtype=DT)
    for b in range(B):
        for r in range(H):
            for c in range(W):
                rs, cs = (r - s) % H, (c - s) % W                 # position in rolled frame
                r0, c0 = rs // w * w, cs // w * w
                keys = [(r0 + u, c0 + t) for u in range(w) for t in range(w)]
                orig = [((ku + s) % H, (kt + s) % W) for ku, kt in keys]
                bias = torch.stack([cpb(rs - ku, cs - kt) for ku, kt in keys], dim=1)
                mask = torch.tensor([0.0 if (region(rs, H), region(cs, W)) ==
                                     (region(ku, H), region(kt, W)) else -100.0
                                     for ku, kt in keys], dtype=DT)
                o = []
                for g in range(h):
                    sl = slice(g * d, (g + 1) * d)
                    q = Q[b, r, c, sl]
                    logits = torch.stack([
                        torch.dot(q, K[b, kr, kc, sl]) / (q.norm() * K[b, kr, kc, sl].norm())
                        for kr, kc in orig]) * scale[g] + bias[g] + mask
                    p = smax(logits)
                    o.append(sum(p[i] * V[b, kr, kc, sl] for i, (kr, kc) in enumerate(orig)))
                out[b, r, c] = lin(torch.cat(o), m.proj.weight, m.proj.bias)
    return out


@pytest.mark.parametrize("shift,pretrained", [(0, 0), (2, 0), (1, 6)])
def test_swin_v2_matches_naive(shift, pretrained):
    m = swin_v2.SwinV2WindowAttention(16, 2, 4, shift=shift, pretrained_window=pretrained,
                                      cpb_hidden=32, seed=1)
    with torch.no_grad():
        m.logit_scale[1] = 6.0          # above ln 100: exercises the clamp
    x = rand_map(1, 8, 8, 16)
    assert_close(m(x), naive_swin_v2(m, x))


def test_swin_v2_state_dict_layout():
    m = swin_v2.SwinV2WindowAttention(24, 3, 4)
    assert keys_shapes(m) == {
        "logit_scale": (3, 1, 1), "q_bias": (24,), "v_bias": (24,),
        "cpb_mlp.0.weight": (512, 2), "cpb_mlp.0.bias": (512,), "cpb_mlp.2.weight": (3, 512),
        "qkv.weight": (72, 24), "proj.weight": (24, 24), "proj.bias": (24,)}
    assert m.relative_coords_table.shape == (1, 7, 7, 2)
    assert m.relative_position_index.shape == (16, 16)
    assert all(p.dtype == DT for p in m.parameters())


def test_swin_v2_coords_table_values():
    w = 5
    t = swin_v2.coords_table(w)[0]
    assert t[w - 1, w - 1].abs().max() == 0                     # centre offset (0, 0)
    ext = math.log2(9) / 3                                       # 8 * 1 -> log2(9)/log2(8)
    assert_close(t[0, 0], torch.tensor([-ext, -ext], dtype=DT))
    assert_close(t[-1, -1], torch.tensor([ext, ext], dtype=DT))
    assert_close(t[w - 1, -1], torch.tensor([0.0, ext], dtype=DT))   # (dy, dx) order
    assert ext > 1.05                                           # i.e. not +-1
    # offset +1 of 4: 8 * 1/4 = 2 -> log2(3)/3
    assert abs(t[w, w - 1, 0].item() - math.log2(3) / 3) < 1e-15
    # pretrained window 8 rescales by 1/(8-1), so the extremes shrink
    tp = swin_v2.coords_table(w, pretrained_window=8)[0]
    assert abs(tp[-1, -1, 1].item() - math.log2(8 * 4 / 7 + 1) / 3) < 1e-15
    # monotone and odd along each axis
    assert (t[1:, 0, 0] > t[:-1, 0, 0]).all()
    assert_close(t.flip(0).flip(1), -t)


def test_swin_v2_position_index_orientation():
    w = 3
    idx = swin_v2.position_index(w)
    centre = (w - 1) * (2 * w - 1) + (w - 1)
    assert (idx.diagonal() == centre).all()
    # query (0,0), key (2,2): dy = dx = -2 (query minus key) -> row 0, col 0
    assert idx[0, w * w - 1] == 0
    assert idx[w * w - 1, 0] == (2 * w - 1) ** 2 - 1
    # query (0,1), key (0,0): dx = +1
    assert idx[1, 0] == centre + 1


def test_swin_v2_no_shift_no_mask_and_window_permutation():
    m = swin_v2.SwinV2WindowAttention(16, 2, 4, shift=0, cpb_hidden=32, seed=3)
    assert m.shift_mask(8, 8) is None
    x = rand_map(2, 8, 12, 16)
    y = m(x)
    # permute the 2x3 window tiles: output tiles follow, since windows are independent
    def tiles(t):
        return t.reshape(2, 2, 4, 3, 4, 16).permute(0, 1, 3, 2, 4, 5).reshape(2, 6, 4, 4, 16)

    def untiles(t):
        return t.reshape(2, 2, 3, 4, 4, 16).permute(0, 1, 3, 2, 4, 5).reshape(2, 8, 12, 16)
    perm = torch.tensor([4, 0, 5, 2, 1, 3])
    assert_close(m(untiles(tiles(x)[:, perm])), untiles(tiles(y)[:, perm]))


def test_swin_v2_shift_mask_structure():
    m = swin_v2.SwinV2WindowAttention(8, 2, 4, shift=2, cpb_hidden=8)
    mask = m.shift_mask(8, 8)                                   # 4 windows
    assert mask.shape == (4, 16, 16)
    assert set(mask.unique().tolist()) == {0.0, -100.0}
    assert (mask[0] == 0).all()                                 # top-left window: one region
    assert (mask[3] != 0).any()                                 # bottom-right: four regions
    assert (mask[3] == -100).sum() == 16 * 16 - 4 * 4 * 4        # 4 regions of 4 tokens


def test_swin_v2_shift_mask_changes_result():
    # a shifted module is NOT just the unshifted one on the rolled map: the -100 mask
    # separates the wrapped-around regions inside the (here single) window
    m0 = swin_v2.SwinV2WindowAttention(8, 2, 4, shift=0, cpb_hidden=8, seed=5)
    m2 = swin_v2.SwinV2WindowAttention(8, 2, 4, shift=2, cpb_hidden=8, seed=5)
    x = rand_map(1, 4, 4, 8)
    rolled = torch.roll(m0(torch.roll(x, (-2, -2), (1, 2))), (2, 2), (1, 2))
    assert (m2(x) - rolled).abs().max() > 1e-3


def test_swin_v2_rejects_bad_sizes():
    m = swin_v2.SwinV2WindowAttention(8, 2, 4)
    with pytest.raises(ValueError):
        m(rand_map(1, 6, 8, 8))
    with pytest.raises(ValueError):
        swin_v2.SwinV2WindowAttention(8, 2, 4, shift=4)


# --------------------------------------------------------------------------------------
# MaxViT
# --------------------------------------------------------------------------------------


def naive_maxvit(m, x):
    B, H, W, C = x.shape
    P, h = m.partition, m.heads
    d = C // h
    Wt, bt = m.qkv.weight, m.qkv.bias
    table = m.rel_pos.relative_position_bias_table

    def rows(g, which):                                        # which: 0 q, 1 k, 2 v
        if m.head_first:
            start = g * 3 * d + which * d
        else:
            start = which * C + g * d
        return slice(start, start + d)

    sH, sW = H // P, W // P
    out = torch.zeros(B, H, W, C, dtype=DT)
    for b in range(B):
        for r in range(H):
            for c in range(W):
                if m.mode == "block":
                    qa, qb = r % P, c % P
                    keys = [((r // P) * P + u, (c // P) * P + t, u, t)
                            for u in range(P) for t in range(P)]
                else:
                    qa, qb = r // sH, c // sW
                    keys = [(u * sH + r % sH, t * sW + c % sW, u, t)
                            for u in range(P) for t in range(P)]
                o = []
                for g in range(h):
                    q = lin(x[b, r, c], Wt[rows(g, 0)], bt[rows(g, 0)]) * d ** -0.5
                    logits, vals = [], []
                    for kr, kc, u, t in keys:
                        k = lin(x[b, kr, kc], Wt[rows(g, 1)], bt[rows(g, 1)])
                        idx = (qa - u + P - 1) * (2 * P - 1) + (qb - t + P - 1)
                        logits.append(torch.dot(q, k) + table[idx, g])
                        vals.append(lin(x[b, kr, kc], Wt[rows(g, 2)], bt[rows(g, 2)]))
                    p = smax(torch.stack(logits))
                    o.append((p[:, None] * torch.stack(vals)).sum(0))
                out[b, r, c] = lin(torch.cat(o), m.proj.weight, m.proj.bias)
    return out


@pytest.mark.parametrize("mode,head_first", [("block", True), ("grid", True), ("grid", False)])
def test_maxvit_matches_naive(mode, head_first):
    m = maxvit.MaxVitPartitionAttention(16, 2, 3, mode, seed=2, head_first=head_first)
    x = rand_map(1, 6, 9, 16)
    assert_close(m(x), naive_maxvit(m, x))


def test_maxvit_state_dict_layout():
    m = maxvit.MaxVitPartitionAttention(32, 4, 4, "grid")
    assert keys_shapes(m) == {
        "qkv.weight": (96, 32), "qkv.bias": (96,),
        "rel_pos.relative_position_bias_table": (49, 4),
        "proj.weight": (32, 32), "proj.bias": (32,)}
    assert m.rel_pos.relative_position_index.shape == (256,)


def test_maxvit_grid_is_block_on_permuted_map():
    P, H, W = 3, 6, 12
    grid = maxvit.MaxVitPartitionAttention(16, 2, P, "grid", seed=4)
    block = maxvit.MaxVitPartitionAttention(16, 2, P, "block", seed=4)
    x = rand_map(2, H, W, 16)

    def perm(n):
        # old index a*(n/P) + i -> new index i*P + a: grid groups become contiguous tiles
        s = n // P
        return torch.tensor([a * s + i for i in range(s) for a in range(P)])
    pr, pc = perm(H), perm(W)
    xp = x[:, pr][:, :, pc]
    inv_r, inv_c = torch.argsort(pr), torch.argsort(pc)
    assert_close(block(xp)[:, inv_r][:, :, inv_c], grid(x))
    assert (block(x) - grid(x)).abs().max() > 1e-3


def test_maxvit_head_first_is_a_row_permutation():
    a = maxvit.MaxVitPartitionAttention(16, 4, 2, "block", seed=6, head_first=True)
    b = maxvit.MaxVitPartitionAttention(16, 4, 2, "block", seed=7, head_first=False)
    h, d = 4, 4
    # head-first row (g, s, j) = g*3d + s*d + j  <->  standard row s*C + g*d + j (C = h*d)
    src = torch.tensor([g * 3 * d + s * d + j for s in range(3) for g in range(h)
                        for j in range(d)])
    sd = a.state_dict()
    sd["qkv.weight"], sd["qkv.bias"] = sd["qkv.weight"][src], sd["qkv.bias"][src]
    b.load_state_dict(sd)
    x = rand_map(1, 4, 4, 16)
    assert_close(a(x), b(x))


def test_maxvit_rejects_bad_sizes():
    with pytest.raises(ValueError):
        maxvit.MaxVitPartitionAttention(16, 2, 4, "grid")(rand_map(1, 8, 6, 16))
    with pytest.raises(ValueError):
        maxvit.MaxVitPartitionAttention(16, 2, 4, "dilated")


# --------------------------------------------------------------------------------------
# CSWin
# --------------------------------------------------------------------------------------


def naive_cswin(m, x):
    B, R, _, C = x.shape
    S = m.split
    Wq, Wk, Wv = m.qkv.weight.split(C, dim=0)
    bq, bk, bv = m.qkv.bias.split(C)
    Q, K, V = lin(x, Wq, bq), lin(x, Wk, bk), lin(x, Wv, bv)
    if m.last_stage:
        branches = [(0, C, m.heads, lambda r, c: (0, R, 0, R))]
    else:
        branches = [(0, C // 2, m.heads // 2, lambda r, c: (0, R, c // S * S, c // S * S + S)),
                    (C // 2, C, m.heads // 2, lambda r, c: (r // S * S, r // S * S + S, 0, R))]
    out = torch.zeros(B, R, R, C, dtype=DT)
    for b in range(B):
        for r in range(R):
            for c in range(R):
                o = []
                for bi, (c0, c1, hb, stripe) in enumerate(branches):
                    r0, r1, s0, s1 = stripe(r, c)
                    conv = m.attns[bi].get_v
                    d = (c1 - c0) // hb
                    keys = [(u, t) for u in range(r0, r1) for t in range(s0, s1)]
                    # LePE: taps outside the stripe read zero
                    lepe = conv.bias.clone()
                    for dy in (-1, 0, 1):
                        for dx in (-1, 0, 1):
                            u, t = r + dy, c + dx
                            if r0 <= u < r1 and s0 <= t < s1:
                                lepe = lepe + conv.weight[:, 0, dy + 1, dx + 1] * V[b, u, t, c0:c1]
                    for g in range(hb):
                        sl = slice(c0 + g * d, c0 + (g + 1) * d)
                        q = Q[b, r, c, sl] * d ** -0.5
                        p = smax(torch.stack([torch.dot(q, K[b, u, t, sl]) for u, t in keys]))
                        av = sum(p[i] * V[b, u, t, sl] for i, (u, t) in enumerate(keys))
                        o.append(av + lepe[g * d:(g + 1) * d])
                out[b, r, c] = lin(torch.cat(o), m.proj.weight, m.proj.bias)
    return out


@pytest.mark.parametrize("split,last", [(2, False), (3, False), (6, True)])
def test_cswin_matches_naive(split, last):
    m = cswin.CSWinAttention(16, 4, split, 6, last_stage=last, seed=8)
    x = rand_map(1, 6, 6, 16)
    assert_close(m(x), naive_cswin(m, x))


def test_cswin_state_dict_layout():
    m = cswin.CSWinAttention(32, 4, 2, 8)
    assert keys_shapes(m) == {
        "qkv.weight": (96, 32), "qkv.bias": (96,), "proj.weight": (32, 32), "proj.bias": (32,),
        "attns.0.get_v.weight": (16, 1, 3, 3), "attns.0.get_v.bias": (16,),
        "attns.1.get_v.weight": (16, 1, 3, 3), "attns.1.get_v.bias": (16,)}
    assert (m.attns[0].H_sp, m.attns[0].W_sp) == (8, 2)        # idx 0: full height
    assert (m.attns[1].H_sp, m.attns[1].W_sp) == (2, 8)        # idx 1: full width
    # split == resolution: the official block switches to the single global branch
    g = cswin.CSWinAttention(32, 4, 8, 8)
    assert g.last_stage and keys_shapes(g)["attns.0.get_v.weight"] == (32, 1, 3, 3)
    assert "attns.1.get_v.weight" not in keys_shapes(g)


def test_cswin_two_global_branches_equal_last_stage():
    R, C = 6, 16
    two = cswin.CSWinAttention(C, 4, 2, R, seed=9)
    for a in two.attns:                                         # widen both stripes to the map
        a.H_sp = a.W_sp = R
    one = cswin.CSWinAttention(C, 4, R, R, seed=10)
    sd = dict(two.state_dict())
    for name in ("weight", "bias"):
        sd[f"attns.0.get_v.{name}"] = torch.cat([sd.pop(f"attns.0.get_v.{name}"),
                                                 sd.pop(f"attns.1.get_v.{name}")])
    one.load_state_dict(sd)
    x = rand_map(2, R, R, C)
    assert_close(two(x), one(x))
    # and global attention + whole-map LePE, written with F.conv2d over the map
    Wq, Wk, Wv = one.qkv.weight.split(C)
    bq, bk, bv = one.qkv.bias.split(C)
    q, k, v = (lin(x, w_, b_).reshape(2, R * R, 4, 4).transpose(1, 2)
               for w_, b_ in ((Wq, bq), (Wk, bk), (Wv, bv)))
    att = torch.softmax(q @ k.transpose(-1, -2) / 2.0, -1) @ v
    lepe = F.conv2d(lin(x, Wv, bv).permute(0, 3, 1, 2), one.attns[0].get_v.weight,
                    one.attns[0].get_v.bias, padding=1, groups=C)
    o = att.transpose(1, 2).reshape(2, R, R, C) + lepe.permute(0, 2, 3, 1)
    assert_close(one(x), lin(o, one.proj.weight, one.proj.bias))


def test_cswin_lepe_does_not_cross_stripes():
    m = cswin.CSWinAttention(16, 4, 2, 6, seed=11)
    x = rand_map(1, 6, 6, 16)
    y = m(x)
    for a in m.attns:                                           # whole-map conv would differ
        a.H_sp = a.W_sp = 6
    y_global = m(x)
    assert (y - y_global).abs().max() > 1e-3


def test_cswin_rejects_bad_sizes():
    m = cswin.CSWinAttention(16, 4, 2, 6)
    with pytest.raises(ValueError):
        m(rand_map(1, 6, 8, 16))
    with pytest.raises(ValueError):
        cswin.CSWinAttention(16, 4, 4, 6)


# --------------------------------------------------------------------------------------
# PVT-v2 linear SRA
# --------------------------------------------------------------------------------------


def naive_pvt(m, x):
    B, H, W, C = x.shape
    P, h = m.pool_size, m.heads
    d = C // h
    out = torch.zeros(B, H, W, C, dtype=DT)
    for b in range(B):
        toks = []
        for i in range(P):
            for j in range(P):
                r0, r1 = math.floor(i * H / P), math.ceil((i + 1) * H / P)
                c0, c1 = math.floor(j * W / P), math.ceil((j + 1) * W / P)
                acc = torch.zeros(C, dtype=DT)
                for r in range(r0, r1):
                    for c in range(c0, c1):
                        acc = acc + x[b, r, c]
                p = acc / ((r1 - r0) * (c1 - c0))
                z = lin(p, m.sr.weight[:, :, 0, 0], m.sr.bias)
                z = (z - z.mean()) / torch.sqrt(((z - z.mean()) ** 2).mean() + 1e-5)
                z = z * m.norm.weight + m.norm.bias
                toks.append(0.5 * z * (1 + torch.erf(z / math.sqrt(2))))
        kv = [lin(t, m.kv.weight, m.kv.bias) for t in toks]
        for r in range(H):
            for c in range(W):
                q = lin(x[b, r, c], m.q.weight, m.q.bias)
                o = []
                for g in range(h):
                    sl = slice(g * d, (g + 1) * d)
                    p = smax(torch.stack([torch.dot(q[sl], t[:C][sl]) for t in kv]) * d ** -0.5)
                    o.append(sum(p[i] * t[C:][sl] for i, t in enumerate(kv)))
                out[b, r, c] = lin(torch.cat(o), m.proj.weight, m.proj.bias)
    return out


@pytest.mark.parametrize("H,W,P", [(10, 13, 7), (8, 8, 4), (5, 3, 4)])
def test_pvt_v2_matches_naive(H, W, P):
    m = pvt_v2.PvtV2LinearAttention(16, 2, pool=P, seed=12)
    x = rand_map(1, H, W, 16)
    assert_close(m(x), naive_pvt(m, x))


@pytest.mark.parametrize("H,W", [(10, 13), (12, 12), (7, 7), (5, 3), (14, 9), (23, 16)])
def test_pvt_v2_pool_equals_torch_adaptive(H, W):
    x = rand_map(2, H, W, 5)
    ref = F.adaptive_avg_pool2d(x.permute(0, 3, 1, 2), 7).permute(0, 2, 3, 1)
    assert_close(pvt_v2.adaptive_avg_pool(x, 7), ref, 1e-13)


def test_pvt_v2_pool_bins_overlap_when_not_divisible():
    assert pvt_v2.pool_bins(10, 7) == [(0, 2), (1, 3), (2, 5), (4, 6), (5, 8), (7, 9), (8, 10)]
    assert pvt_v2.pool_bins(14, 7) == [(2 * i, 2 * i + 2) for i in range(7)]


def test_pvt_v2_state_dict_layout():
    m = pvt_v2.PvtV2LinearAttention(32, 2)
    assert keys_shapes(m) == {
        "q.weight": (32, 32), "q.bias": (32,), "kv.weight": (64, 32), "kv.bias": (64,),
        "proj.weight": (32, 32), "proj.bias": (32,), "sr.weight": (32, 32, 1, 1),
        "sr.bias": (32,), "norm.weight": (32,), "norm.bias": (32,)}
    assert m.norm.eps == 1e-5


# --------------------------------------------------------------------------------------
# HaloNet
# --------------------------------------------------------------------------------------


def naive_halo(m, x):
    B, H, W, C = x.shape
    b_, a, win, h = m.block, m.halo, m.win, m.heads
    dk, dv = m.dim_head_qk, m.dim_head_v
    Wq, Wkv = m.q.weight[:, :, 0, 0], m.kv.weight[:, :, 0, 0]
    hr, wr = m.pos_embed.height_rel, m.pos_embed.width_rel
    out = torch.zeros(B, H, W, h * dv, dtype=DT)
    for b in range(B):
        for r in range(H):
            for c in range(W):
                I, i, J, j = r // b_, r % b_, c // b_, c % b_
                for g in range(h):
                    q = lin(x[b, r, c], Wq[g * dk:(g + 1) * dk])
                    base = g * (dk + dv)                        # head-interleaved kv rows
                    logits, vals = [], []
                    for u in range(win):
                        for t in range(win):
                            pr, pc = I * b_ - a + u, J * b_ - a + t
                            if 0 <= pr < H and 0 <= pc < W:
                                kvv = lin(x[b, pr, pc], Wkv[base:base + dk + dv])
                            else:
                                kvv = torch.zeros(dk + dv, dtype=DT)   # padded, not masked
                            logit = (torch.dot(q, kvv[:dk]) * dk ** -0.5     # unscaled q below
                                     + torch.dot(q, hr[u - i + win - 1])
                                     + torch.dot(q, wr[t - j + win - 1]))
                            logits.append(logit)
                            vals.append(kvv[dk:])
                    p = smax(torch.stack(logits))
                    out[b, r, c, g * dv:(g + 1) * dv] = (p[:, None] * torch.stack(vals)).sum(0)
    return out


@pytest.mark.parametrize("block,halo,dim_head", [(4, 1, None), (2, 1, 6), (4, 2, None)])
def test_halo_matches_naive(block, halo, dim_head):
    m = halonet.HaloAttention(16, 2, block, halo, dim_head=dim_head, seed=14)
    x = rand_map(1, 8, 8, 16)
    assert_close(m(x), naive_halo(m, x))


def test_halo_state_dict_layout():
    m = halonet.HaloAttention(32, 4, 4, 2)                        # dk = 32 // 4 = 8, dv = 8
    assert keys_shapes(m) == {
        "q.weight": (32, 32, 1, 1), "kv.weight": (64, 32, 1, 1),
        "pos_embed.height_rel": (15, 8), "pos_embed.width_rel": (15, 8)}
    m = halonet.HaloAttention(24, 2, 4, 1, dim_head=16)           # dk 16, dv 12
    assert keys_shapes(m)["kv.weight"] == (2 * (16 + 12), 24, 1, 1)
    assert halonet.HaloAttention(20, 2, 4, 1).dim_head_qk == 12   # make_divisible(20) = 24


def test_halo_rel_rows_match_skew_trick():
    # the Music-Transformer "relative to absolute" skew that timm uses, written out here:
    # pad a zero column, flatten, pad, re-read with row length R, keep the last `win` cols
    block, win = 4, 8
    R = 2 * win - 1
    rel = torch.randn(block, R, generator=torch.Generator().manual_seed(0), dtype=DT)
    flat = F.pad(F.pad(rel, (0, 1)).flatten(), (0, R - block))
    absolute = flat.reshape(block + 1, R)[:block, win - 1:]     # (block, win)
    assert torch.equal(absolute, rel.gather(1, halonet.rel_rows(block, win)))
    rows = halonet.rel_rows(block, win)
    assert rows.min() == win - block and rows.max() == R - 1    # rows 0..2*halo-1 unused


def test_halo_zero_halo_is_block_attention_with_rel_logits():
    m = halonet.HaloAttention(16, 2, 4, 0, seed=15)
    x = rand_map(2, 8, 12, 16)
    dk = dv = 8
    q = lin(x, m.q.weight[:, :, 0, 0]).reshape(2, 2, 4, 3, 4, 2, dk)
    kv = lin(x, m.kv.weight[:, :, 0, 0]).reshape(2, 2, 4, 3, 4, 2, dk + dv)
    q, kv = (t.permute(0, 1, 3, 5, 2, 4, 6).reshape(2, 2, 3, 2, 16, -1) for t in (q, kv))
    k, v = kv[..., :dk], kv[..., dk:]
    off = torch.arange(4)[None, :] - torch.arange(4)[:, None] + 3   # [qi, ki]
    Rh = m.pos_embed.height_rel[off]                                 # (4, 4, dk)
    Rw = m.pos_embed.width_rel[off]
    qg = q.reshape(2, 2, 3, 2, 4, 4, dk)
    rel = (torch.einsum("...ijd,iud->...iju", qg, Rh)[..., None]
           + torch.einsum("...ijd,jtd->...ijt", qg, Rw)[..., None, :]).reshape(2, 2, 3, 2, 16, 16)
    o = torch.softmax(q @ k.transpose(-1, -2) * dk ** -0.5 + rel, -1) @ v
    y = o.reshape(2, 2, 3, 2, 4, 4, dv).permute(0, 1, 4, 2, 5, 3, 6).reshape(2, 8, 12, 16)
    assert_close(m(x), y)


def test_halo_big_halo_sees_all_tokens_plus_padding():
    # block 4, halo 4 on an 8x8 map: each 12x12 window covers all 64 pixels + 80 pads
    m = halonet.HaloAttention(16, 2, 4, 4, seed=16)
    with torch.no_grad():
        m.pos_embed.height_rel.zero_()
        m.pos_embed.width_rel.zero_()
    x = rand_map(1, 8, 8, 16)
    dk = dv = 8
    q = lin(x, m.q.weight[:, :, 0, 0]).reshape(1, 64, 2, dk).transpose(1, 2)
    kv = lin(x, m.kv.weight[:, :, 0, 0]).reshape(1, 64, 2, dk + dv).transpose(1, 2)
    k, v = kv[..., :dk], kv[..., dk:]
    e = torch.exp(q @ k.transpose(-1, -2) * dk ** -0.5)
    # padded keys: logit exactly 0 (zero key, zero rel table) -> weight e^0 = 1 each
    y = (e @ v) / (e.sum(-1, keepdim=True) + 80.0)
    assert_close(m(x), y.transpose(1, 2).reshape(1, 8, 8, 16))


def test_halo_rejects_bad_sizes():
    with pytest.raises(ValueError):
        halonet.HaloAttention(16, 2, 4, 1)(rand_map(1, 8, 6, 16))


# --------------------------------------------------------------------------------------
# common conventions
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [
    lambda s: swin_v2.SwinV2WindowAttention(8, 2, 2, cpb_hidden=8, seed=s),
    lambda s: maxvit.MaxVitPartitionAttention(8, 2, 2, "block", seed=s),
    lambda s: cswin.CSWinAttention(8, 2, 2, 4, seed=s),
    lambda s: pvt_v2.PvtV2LinearAttention(8, 2, pool=2, seed=s),
    lambda s: halonet.HaloAttention(8, 2, 2, 1, seed=s),
])
def test_seeded_realistic_parameters(make):
    a, b, c = make(0), make(0), make(1)
    for (n, pa), pb, pc in zip(a.named_parameters(), b.parameters(), c.parameters()):
        assert pa.dtype == DT
        assert torch.equal(pa, pb), n                           # deterministic per seed
        assert not torch.equal(pa, pc), n                       # seed matters
        assert pa.abs().mean() > 0.02, n                        # nothing left near zero
    f32 = make(0).to(torch.float32)
    assert f32(rand_map(1, 4, 4, 8).float()).shape == (1, 4, 4, 8)


def test_swin_v2_shift_is_off_when_the_map_is_no_larger_than_the_window():
    """timm and the official Swin-V2 turn the shift off at a map ≤ the window (stage 4 of
    every *_window8_256 model): the zoo's shifted spec then equals the unshifted one."""
    import attndsl
    shifted = attndsl.compile("swin_v2_swmsa", dim=24, heads=3, resolution=(7, 7),
                              backend="eager").double()
    plain = attndsl.compile("swin_v2_wmsa", dim=24, heads=3, resolution=(7, 7),
                            backend="eager").double()
    plain.load_state_dict(shifted.state_dict())
    x = torch.randn(2, 7, 7, 24, dtype=torch.float64)
    assert_close(shifted(x), plain(x))
