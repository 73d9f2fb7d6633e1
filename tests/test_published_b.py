"""Self-checks of the published-mechanism references in tests/published (batch B):
Shunted SSA, CrossFormer SDA/LDA + DPB, EfficientViT cascaded group attention, axial,
linear and sigmoid attention.

Each reference is checked against a naive per-query loop written here from the papers'
formulas (explicit conv / norm / softmax arithmetic, explicit group membership by
coordinates), plus structural facts: state-dict names and shapes, key-grid sizes,
masking of padded tokens, BN folding, bias invariances.  float64, small sizes.
"""

import itertools
import math

import pytest
import torch

from published import axial, crossformer, efficientvit, linear_attention, shunted, sigmoid_attention

D = torch.float64
TOL = 1e-10


def rand(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=D)


def close(a, b, tol=TOL):
    err = (a - b).abs().max().item()
    assert err < tol, err


def layer_norm(t, w, b, eps=1e-5):
    mu = t.mean(-1, keepdim=True)
    var = ((t - mu) ** 2).mean(-1, keepdim=True)
    return (t - mu) / torch.sqrt(var + eps) * w + b


def gelu(t):
    return 0.5 * t * (1 + torch.erf(t / math.sqrt(2)))


def softmax(v):
    e = torch.exp(v - v.max())
    return e / e.sum()


def shapes(module):
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


# --------------------------------------------------------------------------------------
# Shunted self-attention
# --------------------------------------------------------------------------------------


def naive_shunted(m, x):
    sd = m.state_dict()
    B, H, W, C = x.shape
    h, d = m.heads, C // m.heads
    q = x @ sd["q.weight"].T + sd["q.bias"]
    out = torch.zeros(B, H, W, C, dtype=D)

    def dwconv3(vmap, w, b):          # vmap (B, h, w, ch), zero padding 1
        Hm, Wm = vmap.shape[1:3]
        res = torch.zeros_like(vmap) + b
        for a, c in itertools.product(range(Hm), range(Wm)):
            for dy, dx in itertools.product((-1, 0, 1), repeat=2):
                if 0 <= a + dy < Hm and 0 <= c + dx < Wm:
                    res[:, a, c] += vmap[:, a + dy, c + dx] * w[:, 0, dy + 1, dx + 1]
        return res

    if m.sr_ratio > 1:
        half = C // 2
        paths = []
        for p, r in enumerate(shunted.PATH_RATES[m.sr_ratio], start=1):
            Hp, Wp = H // r, W // r
            wgt = sd[f"sr{p}.weight"]
            pooled = torch.zeros(B, Hp, Wp, C, dtype=D)
            for a, c in itertools.product(range(Hp), range(Wp)):
                patch = x[:, a * r:(a + 1) * r, c * r:(c + 1) * r, :]
                pooled[:, a, c] = torch.einsum("bijc,ocij->bo", patch, wgt) + sd[f"sr{p}.bias"]
            t = gelu(layer_norm(pooled, sd[f"norm{p}.weight"], sd[f"norm{p}.bias"]))
            kv = t @ sd[f"kv{p}.weight"].T + sd[f"kv{p}.bias"]
            k, v = kv[..., :half], kv[..., half:]
            v = v + dwconv3(v, sd[f"local_conv{p}.weight"], sd[f"local_conv{p}.bias"])
            paths.append((k.reshape(B, -1, half), v.reshape(B, -1, half)))
        o = torch.zeros(B, H, W, C, dtype=D)
        for b, y, xx, g in itertools.product(range(B), range(H), range(W), range(h)):
            k, v = paths[0] if g < h // 2 else paths[1]
            gg = g % (h // 2)
            logits = k[b, :, gg * d:(gg + 1) * d] @ q[b, y, xx, g * d:(g + 1) * d] * d ** -0.5
            o[b, y, xx, g * d:(g + 1) * d] = softmax(logits) @ v[b, :, gg * d:(gg + 1) * d]
    else:
        kv = x @ sd["kv.weight"].T + sd["kv.bias"]
        k, v = kv[..., :C].reshape(B, -1, C), kv[..., C:]
        o = dwconv3(v, sd["local_conv.weight"], sd["local_conv.bias"])
        v = v.reshape(B, -1, C)
        for b, y, xx, g in itertools.product(range(B), range(H), range(W), range(h)):
            sl = slice(g * d, (g + 1) * d)
            logits = k[b, :, sl] @ q[b, y, xx, sl] * d ** -0.5
            o[b, y, xx, sl] += softmax(logits) @ v[b, :, sl]
    out = o @ sd["proj.weight"].T + sd["proj.bias"]
    return out


@pytest.mark.parametrize("dim,heads,sr,H,W", [
    (16, 2, 8, 16, 16),
    (32, 4, 4, 12, 12),
    (16, 2, 2, 9, 7),        # non-multiple: the strided convs floor, as the official code
    (16, 2, 1, 7, 9),
])
def test_shunted_matches_naive_loop(dim, heads, sr, H, W):
    m = shunted.ShuntedAttention(dim, heads, sr, seed=1)
    x = rand(2, H, W, dim, seed=2)
    close(m(x), naive_shunted(m, x))


def test_shunted_two_key_grids_and_layout():
    m = shunted.ShuntedAttention(16, 2, 8, seed=0)
    x = rand(2, 16, 16, 16)
    m(x)
    N = 256
    a1, a2 = m.last_attn
    assert m.key_grids == ((2, 2), (4, 4))
    assert a1.shape == (2, 1, N, N // 64) and a2.shape == (2, 1, N, N // 16)
    assert shapes(m) == {
        "q.weight": (16, 16), "q.bias": (16,), "proj.weight": (16, 16), "proj.bias": (16,),
        "sr1.weight": (16, 16, 8, 8), "sr1.bias": (16,), "norm1.weight": (16,), "norm1.bias": (16,),
        "sr2.weight": (16, 16, 4, 4), "sr2.bias": (16,), "norm2.weight": (16,), "norm2.bias": (16,),
        "kv1.weight": (16, 16), "kv1.bias": (16,), "kv2.weight": (16, 16), "kv2.bias": (16,),
        "local_conv1.weight": (8, 1, 3, 3), "local_conv1.bias": (8,),
        "local_conv2.weight": (8, 1, 3, 3), "local_conv2.bias": (8,)}
    assert set(shapes(shunted.ShuntedAttention(16, 2, 1))) == {
        "q.weight", "q.bias", "kv.weight", "kv.bias", "local_conv.weight", "local_conv.bias",
        "proj.weight", "proj.bias"}
    # the two halves really use different paths: perturbing path 2 only moves heads >= h/2
    m2 = shunted.ShuntedAttention(16, 2, 8, seed=0)
    with torch.no_grad():
        m2.kv2.weight.add_(0.3)
    y1 = (m(x) @ torch.linalg.inv(m.proj.weight).T)
    y2 = (m2(x) @ torch.linalg.inv(m.proj.weight).T)
    close(y1[..., :8], y2[..., :8])
    assert (y1[..., 8:] - y2[..., 8:]).abs().max() > 1e-3


def test_shunted_seed_and_dtype():
    a = shunted.ShuntedAttention(16, 2, 4, seed=5)
    b = shunted.ShuntedAttention(16, 2, 4, seed=5, dtype=torch.float32)
    c = shunted.ShuntedAttention(16, 2, 4, seed=6)
    assert b.q.weight.dtype == torch.float32
    close(a.q.weight, b.q.weight.double(), 1e-6)
    assert (a.q.weight - c.q.weight).abs().max() > 1e-3
    assert a.q.bias.abs().mean() > 0.1          # biases far from zero


# --------------------------------------------------------------------------------------
# CrossFormer
# --------------------------------------------------------------------------------------


def dpb_naive(sd, off):
    t = off @ sd["pos.pos_proj.weight"].T + sd["pos.pos_proj.bias"]
    for k in (1, 2, 3):
        t = torch.relu(layer_norm(t, sd[f"pos.pos{k}.0.weight"], sd[f"pos.pos{k}.0.bias"]))
        t = t @ sd[f"pos.pos{k}.2.weight"].T + sd[f"pos.pos{k}.2.bias"]
    return t


def naive_crossformer(m, x, kind, G, interval=None):
    """Group membership decided by coordinates; padded tokens are simply not keys."""
    sd = m.state_dict()
    B, H, W, C = x.shape
    h, d = m.heads, C // m.heads
    if min(H, W) <= G:
        kind, G = "sda", min(H, W)
    if kind == "sda":
        gid = lambda y, xx: (y // G, xx // G)
        pos = lambda y, xx: (y % G, xx % G)
    elif interval is not None:
        gid = lambda y, xx: (y % interval, xx % interval)
        pos = lambda y, xx: (y // interval, xx // interval)
    else:
        ih, iw = H // G, W // G
        gid = lambda y, xx: (y % ih, xx % iw)
        pos = lambda y, xx: (y // ih, xx // iw)
    qkv = x @ sd["qkv.weight"].T + sd["qkv.bias"]
    q, k, v = qkv[..., :C], qkv[..., C:2 * C], qkv[..., 2 * C:]
    cache = {}

    def bias(off):
        if off not in cache:
            cache[off] = dpb_naive(sd, torch.tensor(off, dtype=D))
        return cache[off]

    coords = list(itertools.product(range(H), range(W)))
    o = torch.zeros(B, H, W, C, dtype=D)
    for y, xx in coords:
        members = [(a, c) for a, c in coords if gid(a, c) == gid(y, xx)]
        pi = pos(y, xx)
        bvec = torch.stack([bias((pi[0] - pos(a, c)[0], pi[1] - pos(a, c)[1])) for a, c in members])
        K = torch.stack([k[:, a, c] for a, c in members], 1)
        V = torch.stack([v[:, a, c] for a, c in members], 1)
        for b, g in itertools.product(range(B), range(h)):
            sl = slice(g * d, (g + 1) * d)
            logits = K[b, :, sl] @ q[b, y, xx, sl] * d ** -0.5 + bvec[:, g]
            o[b, y, xx, sl] = softmax(logits) @ V[b, :, sl]
    return o @ sd["proj.weight"].T + sd["proj.bias"]


@pytest.mark.parametrize("kind,G,interval,H,W", [
    ("sda", 4, None, 12, 12),
    ("lda", 4, None, 12, 8),      # classification release: G fixed, intervals 3 and 2
    ("lda", 4, 3, 11, 10),        # v1 backbone: I fixed, padded to 12x12, groups 4x4
    ("sda", 4, None, 10, 7),      # padded to 12x8
    ("lda", 6, None, 5, 9),       # min(H, W) <= G: falls back to SDA with G = 5
])
def test_crossformer_matches_naive_loop(kind, G, interval, H, W):
    m = crossformer.CrossFormerAttention(64, 4, G, kind, interval=interval, seed=3)
    x = rand(2, H, W, 64, seed=4)
    close(m(x), naive_crossformer(m, x, kind, G, interval))


def test_crossformer_padding_and_masking():
    m = crossformer.CrossFormerAttention(64, 4, 4, "lda", interval=3, seed=0)
    m(rand(1, 12, 12, 64))
    assert m.last_mask is None and m.last_geometry["pad_b"] == m.last_geometry["pad_r"] == 0
    m(rand(1, 11, 10, 64))
    geo = m.last_geometry
    assert (geo["Hp"], geo["Wp"], geo["gh"], geo["gw"]) == (12, 12, 4, 4)
    assert m.last_mask is not None and m.last_mask.shape == (9, 16, 16)
    # which grouped slots are padding, derived from coordinates: slot (m, n) of group (a, b)
    # is token (a + 3m, b + 3n)
    pad = torch.zeros(9, 16, dtype=torch.bool)
    for a, b, mm, nn in itertools.product(range(3), range(3), range(4), range(4)):
        pad[a * 3 + b, mm * 4 + nn] = (a + 3 * mm >= 11) or (b + 3 * nn >= 10)
    attn = m.last_attn                                   # (9, heads, 16, 16)
    assert pad.any()
    assert (attn.permute(0, 2, 1, 3)[pad[:, None, None, :].expand(9, 16, 4, 16)] == 0).all()
    assert (attn.permute(0, 2, 1, 3)[~pad[:, None, None, :].expand(9, 16, 4, 16)] > 0).all()
    # SDA on a non-multiple pads bottom/right to the group size
    s = crossformer.CrossFormerAttention(64, 4, 4, "sda", seed=0)
    s(rand(1, 10, 7, 64))
    assert (s.last_geometry["Hp"], s.last_geometry["Wp"]) == (12, 8) and s.last_mask is not None
    # LDA without interval (group size fixed) has no official padding
    with pytest.raises(ValueError):
        crossformer.CrossFormerAttention(64, 4, 4, "lda")(rand(1, 10, 12, 64))


def test_crossformer_dpb_and_layout():
    m = crossformer.CrossFormerAttention(64, 4, 4, "sda", seed=0)
    assert m.pos.pos_dim == 4                      # (64 // 4) // 4
    table = crossformer.offset_table(4, 3)
    assert table.shape == (7 * 5, 2) and table[0].tolist() == [-3, -2] and table[-1].tolist() == [3, 2]
    assert m.pos(table).shape == (35, 4)
    # index: (query - key) offsets, dy-major
    idx = crossformer.relative_index(4, 3)
    for i, j in [(0, 11), (11, 0), (5, 7)]:
        dy, dx = i // 3 - j // 3, i % 3 - j % 3
        assert table[idx[i, j]].tolist() == [dy, dx]
    assert shapes(m) == {
        "biases": (49, 2), "relative_position_index": (16, 16),
        "qkv.weight": (192, 64), "qkv.bias": (192,), "proj.weight": (64, 64), "proj.bias": (64,),
        "pos.pos_proj.weight": (4, 2), "pos.pos_proj.bias": (4,),
        "pos.pos1.0.weight": (4,), "pos.pos1.0.bias": (4,), "pos.pos1.2.weight": (4, 4), "pos.pos1.2.bias": (4,),
        "pos.pos2.0.weight": (4,), "pos.pos2.0.bias": (4,), "pos.pos2.2.weight": (4, 4), "pos.pos2.2.bias": (4,),
        "pos.pos3.0.weight": (4,), "pos.pos3.0.bias": (4,), "pos.pos3.2.weight": (4, 4), "pos.pos3.2.bias": (4,)}
    # the position bias matters: zeroing the last DPB layer changes the output
    x = rand(1, 8, 8, 64)
    y = m(x)
    with torch.no_grad():
        m.pos.pos3[2].weight.zero_()
        m.pos.pos3[2].bias.zero_()
    assert (m(x) - y).abs().max() > 1e-3


# --------------------------------------------------------------------------------------
# EfficientViT
# --------------------------------------------------------------------------------------


def bn_naive(sd, prefix, z):          # channels-last
    return ((z - sd[prefix + "running_mean"]) / torch.sqrt(sd[prefix + "running_var"] + 1e-5)
            * sd[prefix + "weight"] + sd[prefix + "bias"])


def naive_cga_window(sd, xw, heads, key_dim, kernels):
    """One window xw (R, R, C), one batch element."""
    R, _, C = xw.shape
    d = C // heads
    outs, prev = [], None
    for i in range(heads):
        inp = xw[..., i * d:(i + 1) * d] + (0 if prev is None else prev)
        qkv = bn_naive(sd, f"qkvs.{i}.bn.", inp @ sd[f"qkvs.{i}.c.weight"][:, :, 0, 0].T)
        q, k, v = qkv[..., :key_dim], qkv[..., key_dim:2 * key_dim], qkv[..., 2 * key_dim:]
        w, r = sd[f"dws.{i}.c.weight"], kernels[i] // 2
        qd = torch.zeros_like(q)
        for y, x in itertools.product(range(R), range(R)):
            for dy, dx in itertools.product(range(-r, r + 1), repeat=2):
                if 0 <= y + dy < R and 0 <= x + dx < R:      # zero padding at the WINDOW border
                    qd[y, x] += q[y + dy, x + dx] * w[:, 0, dy + r, dx + r]
        q = bn_naive(sd, f"dws.{i}.bn.", qd)
        f = torch.zeros(R, R, v.shape[-1], dtype=D)
        ks, vs = k.reshape(-1, key_dim), v.reshape(R * R, -1)
        for y, x in itertools.product(range(R), range(R)):
            ab = torch.tensor([sd["attention_biases"][i, abs(y - yy) * R + abs(x - xx)]
                               for yy, xx in itertools.product(range(R), range(R))], dtype=D)
            f[y, x] = softmax(ks @ q[y, x] * key_dim ** -0.5 + ab) @ vs
        outs.append(f)
        prev = f
    z = torch.relu(torch.cat(outs, -1)) @ sd["proj.1.c.weight"][:, :, 0, 0].T
    return bn_naive(sd, "proj.1.bn.", z)


def naive_lwa(m, x, key_dim, kernels):
    sd = m.attn.state_dict()
    B, R, _, C = x.shape
    w = m.window_resolution
    if R <= w:
        return torch.stack([naive_cga_window(sd, x[b], m.attn.heads, key_dim, kernels) for b in range(B)])
    Rp = -(-R // w) * w
    xp = torch.zeros(B, Rp, Rp, C, dtype=D)
    xp[:, :R, :R] = x
    out = torch.zeros_like(xp)
    for b, a, c in itertools.product(range(B), range(Rp // w), range(Rp // w)):
        win = xp[b, a * w:(a + 1) * w, c * w:(c + 1) * w]
        out[b, a * w:(a + 1) * w, c * w:(c + 1) * w] = naive_cga_window(sd, win, m.attn.heads, key_dim, kernels)
    return out[:, :R, :R]


@pytest.mark.parametrize("dim,key_dim,heads,R,w,kernels", [
    (32, 8, 4, 6, 7, [5, 3, 5, 3]),     # whole map (R <= window)
    (24, 4, 3, 7, 4, [3, 5, 3]),        # padded 8x8, 4 windows, padding NOT masked
])
def test_efficientvit_matches_naive_loop(dim, key_dim, heads, R, w, kernels):
    m = efficientvit.LocalWindowAttention(dim, key_dim, heads, dim / (key_dim * heads), R, w, kernels, seed=5)
    x = rand(2, R, R, dim, seed=6)
    close(m(x), naive_lwa(m, x, key_dim, kernels))


def test_efficientvit_fold_conv_bn_and_eval_bn():
    cb = efficientvit.Conv2dBN(6, 10, 3, 1, 1, groups=2)
    efficientvit.randomize_(cb, 7)
    cb.train()                                   # BN must still use running statistics
    assert (cb.bn.running_var > 0).all() and (cb.bn.running_var - 1).abs().max() > 0.05
    x = rand(2, 6, 5, 5)
    w, b = efficientvit.fold_conv_bn(cb.c.weight, cb.bn)
    folded = torch.nn.functional.conv2d(x, w, b, padding=1, groups=2)
    close(cb(x), folded)
    ref = cb.bn.eval()(cb.c(x))
    close(cb(x), ref)


def test_efficientvit_biases_offsets_and_layout():
    m = efficientvit.CascadedGroupAttention(32, 8, 4, 1.0, 5, [5, 3, 5, 3], seed=2)
    # offsets numbered first-seen over (p1, p2) in product order, offset (|dy|, |dx|)
    seen, idxs = {}, []
    pts = list(itertools.product(range(5), range(5)))
    for p1, p2 in itertools.product(pts, pts):
        off = (abs(p1[0] - p2[0]), abs(p1[1] - p2[1]))
        idxs.append(seen.setdefault(off, len(seen)))
    assert torch.equal(m.attention_bias_idxs, torch.tensor(idxs).view(25, 25))
    assert m.attention_biases.shape == (4, 25)
    x = rand(2, 5, 5, 32)
    y = m(x)
    with torch.no_grad():
        m.attention_biases.fill_(0.7)
    y_const = m(x)
    with torch.no_grad():
        m.attention_biases.zero_()
    close(y_const, m(x))                         # a constant bias cancels in the softmax
    assert (y_const - y).abs().max() > 1e-3      # the random table did matter
    m.train()
    close(m(x), y_const)                         # BN in eval whatever the mode
    assert shapes(m) == {
        **{f"qkvs.{i}.c.weight": (24, 8, 1, 1) for i in range(4)},
        **{f"qkvs.{i}.bn.{s}": (24,) for i in range(4) for s in ("weight", "bias", "running_mean", "running_var")},
        **{f"qkvs.{i}.bn.num_batches_tracked": () for i in range(4)},
        **{f"dws.{i}.c.weight": (8, 1, k, k) for i, k in enumerate([5, 3, 5, 3])},
        **{f"dws.{i}.bn.{s}": (8,) for i in range(4) for s in ("weight", "bias", "running_mean", "running_var")},
        **{f"dws.{i}.bn.num_batches_tracked": () for i in range(4)},
        "proj.1.c.weight": (32, 32, 1, 1),
        **{f"proj.1.bn.{s}": (32,) for s in ("weight", "bias", "running_mean", "running_var")},
        "proj.1.bn.num_batches_tracked": (),
        "attention_biases": (4, 25), "attention_bias_idxs": (25, 25)}
    lwa = efficientvit.LocalWindowAttention(32, 8, 4, 1.0, 10, 4, [5, 3, 5, 3])
    lwa(rand(1, 10, 10, 32))
    assert lwa.last_windows == 9 and all(k.startswith("attn.") for k in lwa.state_dict())


# --------------------------------------------------------------------------------------
# Axial, linear, sigmoid
# --------------------------------------------------------------------------------------


def naive_axial(x, heads, wts, row_heads):
    """Heads < row_heads attend along the row, the rest along the column."""
    B, H, W, C = x.shape
    d = C // heads
    qkv = x @ wts["w_qkv"].T + wts["b_qkv"]
    q, k, v = qkv[..., :C], qkv[..., C:2 * C], qkv[..., 2 * C:]
    o = torch.zeros(B, H, W, C, dtype=D)
    for b, y, xx, g in itertools.product(range(B), range(H), range(W), range(heads)):
        sl = slice(g * d, (g + 1) * d)
        K, V = (k[b, y, :, sl], v[b, y, :, sl]) if g < row_heads else (k[b, :, xx, sl], v[b, :, xx, sl])
        o[b, y, xx, sl] = softmax(K @ q[b, y, xx, sl] * d ** -0.5) @ V
    return o @ wts["w_proj"].T + wts["b_proj"]


def test_axial():
    x = rand(2, 6, 5, 16)
    wa, wb = axial.make_weights(16, seed=1), axial.make_weights(16, seed=2)
    close(axial.row_attention(x, 4, **wa), naive_axial(x, 4, wa, row_heads=4))
    close(axial.column_attention(x, 4, **wa), naive_axial(x, 4, wa, row_heads=0))
    par = axial.axial_parallel(x, 4, **wa)
    close(par, naive_axial(x, 4, wa, row_heads=2))
    close(axial.axial_parallel(x, 4, **wa, row_heads=4), axial.row_attention(x, 4, **wa))
    close(axial.axial_parallel(x, 4, **wa, row_heads=0), axial.column_attention(x, 4, **wa))
    seq = axial.axial_sequential(x, 4, wa, wb)
    close(seq, naive_axial(naive_axial(x, 4, wa, 4), 4, wb, 0))
    assert (seq - par).abs().max() > 1e-2
    # row attention mixes nothing across rows
    x2 = x.clone()
    x2[:, 3] += 1.0
    dy = (axial.row_attention(x2, 4, **wa) - axial.row_attention(x, 4, **wa)).abs().amax(dim=(0, 2, 3))
    assert dy[3] > 1e-3 and torch.all(dy[[0, 1, 2, 4, 5]] == 0)


@pytest.mark.parametrize("fmap", ["elu_plus_one", "relu"])
def test_linear_attention(fmap):
    x = rand(2, 5, 6, 16, seed=3)
    w = linear_attention.make_weights(16, seed=4)
    lin = linear_attention.linear_attention(x, 4, fmap, **w)
    quad = linear_attention.linear_attention_quadratic(x, 4, fmap, **w)
    close(lin, quad)
    # naive loop, no scale
    B, H, W, C = x.shape
    d = 4
    qkv = (x @ w["w_qkv"].T + w["b_qkv"]).reshape(B, H * W, 3 * C)
    phi = linear_attention.feature
    o = torch.zeros(B, H * W, C, dtype=D)
    for b, i, g in itertools.product(range(B), range(H * W), range(4)):
        sl = slice(g * d, (g + 1) * d)
        fq = phi(qkv[b, i, sl], fmap)
        wij = phi(qkv[b, :, C:2 * C][:, sl], fmap) @ fq
        o[b, i, sl] = wij @ qkv[b, :, 2 * C:][:, sl] / (wij.sum() + 1e-6)
    close(lin, o.reshape(B, H, W, C) @ w["w_proj"].T + w["b_proj"])
    if fmap == "elu_plus_one":
        close(phi(torch.tensor([-1.0, 0.0, 2.0], dtype=D), fmap),
              torch.tensor([math.exp(-1.0), 1.0, 3.0], dtype=D))


def naive_sigmoid_group(q, k, v, b):
    n, d = k.shape
    return torch.stack([sum(v[j] / (1 + math.exp(-(q[i] @ k[j]).item() * d ** -0.5 - b)) for j in range(n))
                        for i in range(q.shape[0])])


def test_sigmoid_attention():
    x = rand(1, 4, 4, 16, seed=5)
    w = sigmoid_attention.make_weights(16, seed=6)
    B, H, W, C = x.shape
    qkv = (x @ w["w_qkv"].T + w["b_qkv"]).reshape(H * W, 3 * C)
    for bias in (None, 0.75):
        b = -math.log(16) if bias is None else bias
        o = torch.cat([naive_sigmoid_group(qkv[:, g * 4:(g + 1) * 4], qkv[:, C + g * 4:C + (g + 1) * 4],
                                           qkv[:, 2 * C + g * 4:2 * C + (g + 1) * 4], b) for g in range(4)], -1)
        ref = o.reshape(1, H, W, C) @ w["w_proj"].T + w["b_proj"]
        close(sigmoid_attention.sigmoid_attention(x, 4, **w, bias=bias), ref)
    q, k = rand(3, 5, 8, seed=7), rand(3, 5, 8, seed=8)
    logits = q @ k.transpose(-2, -1) * 8 ** -0.5
    close(sigmoid_attention.sigmoid_weights(q, k, bias=0.3), 1 / (1 + torch.exp(-logits - 0.3)))
    close(sigmoid_attention.sigmoid_weights(q, k), 1 / (1 + torch.exp(-logits + math.log(5))))


def test_sigmoid_window_attention():
    x = rand(2, 6, 4, 16, seed=9)
    w = sigmoid_attention.make_weights(16, seed=10)
    win = sigmoid_attention.sigmoid_window_attention(x, 4, 2, **w)
    C = 16
    qkv = x @ w["w_qkv"].T + w["b_qkv"]
    o = torch.zeros(2, 6, 4, C, dtype=D)
    for b, a, c in itertools.product(range(2), range(3), range(2)):
        t = qkv[b, 2 * a:2 * a + 2, 2 * c:2 * c + 2].reshape(4, 3 * C)
        for g in range(4):
            sl = slice(g * 4, (g + 1) * 4)
            res = naive_sigmoid_group(t[:, sl], t[:, C:][:, sl], t[:, 2 * C:][:, sl], -math.log(4))
            o[b, 2 * a:2 * a + 2, 2 * c:2 * c + 2, sl] = res.reshape(2, 2, 4)
    close(win, o @ w["w_proj"].T + w["b_proj"])
    # one window covering the map is plain sigmoid attention with n = H*W
    x4 = x[:, :4]
    close(sigmoid_attention.sigmoid_window_attention(x4, 4, 4, **w), sigmoid_attention.sigmoid_attention(x4, 4, **w))
    with pytest.raises(ValueError):
        sigmoid_attention.sigmoid_window_attention(rand(1, 5, 4, 16), 4, 2, **w)
