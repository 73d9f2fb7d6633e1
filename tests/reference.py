"""Independent plain-PyTorch reference implementations of the attention zoo.

These functions are the ground truth the ``attndsl`` compiler is checked against.
They follow ``docs/mechanisms.md`` literally and deliberately share no code with the compiler:
they depend on ``torch`` and ``math`` only, and they favour obviously-correct code
(explicit padding, explicit index tables, Python loops over windows / clusters /
offsets) over speed.  They are meant to be run at tiny sizes (e.g. B=2, 14x14, C=24).

Common conventions
------------------
* ``x`` is a channels-last token grid of shape (B, H, W, C); token n = h*W + w.
  Every function returns (B, H, W, C_out) (C_out = C except where noted).
* Linear weights are nn.Linear style ``(out, in)``, biases ``(out,)`` or None.
* G heads; head g owns channels [g*d, (g+1)*d), d = C/G.  A ``qkv`` weight (3C, C)
  has rows [q; k; v]; a ``kv`` weight (2C, C) rows [k; v].
* Offsets "j - i" are (dy, dx) = (row_j - row_i, col_j - col_i).
* Offset tables, j - i orientation unless said otherwise:
    - sliding K x K (r = K//2): index (dy + r)*K + (dx + r), K*K entries;
    - window  K x K:            index (dy + K-1)*(2K-1) + (dx + K-1), (2K-1)^2 entries.
* Everything works in float32 and float64 and is differentiable wherever the math is
  (BOAT's clustering is done under no_grad: assignments are constants).
"""


import torch
import torch.nn.functional as F

__all__ = [
    "unified_local",
    "elsa",
    "boat_fsla",
    "twins_lsa",
    "gsa",
    "peg",
    "hilo",
    "window_attention",
    "global_attention",
    "neighborhood_attention",
    "linformer",
    "depthwise_self_attention",
    "kernel_size_attention",
    # helpers that tests may find handy
    "layer_norm",
    "sliding_offsets",
    "window_offset_index",
]


# --------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------


def _linear(x, w, b=None):
    """nn.Linear: x @ w^T + b, w (out, in)."""
    y = torch.matmul(x, w.transpose(0, 1))
    if b is not None:
        y = y + b
    return y


def layer_norm(x, weight=None, bias=None, eps=1e-5):
    """LayerNorm over the last axis: (x - mean) / sqrt(biased var + eps) * weight + bias."""
    mean = x.mean(dim=-1, keepdim=True)
    var = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    y = (x - mean) / torch.sqrt(var + eps)
    if weight is not None:
        y = y * weight
    if bias is not None:
        y = y + bias
    return y


def _check_div(total, parts, what):
    if parts <= 0 or total % parts != 0:
        raise ValueError(f"{what}: {total} is not divisible by {parts}")
    return total // parts


def _split_heads(t, heads):
    """(..., n, G*d) -> (..., G, n, d)."""
    d = _check_div(t.shape[-1], heads, "channels per head")
    t = t.reshape(*t.shape[:-1], heads, d)
    return t.transpose(-3, -2)


def _merge_heads(t):
    """(..., G, n, d) -> (..., n, G*d)."""
    t = t.transpose(-3, -2)
    return t.reshape(*t.shape[:-2], t.shape[-2] * t.shape[-1])


def _softmax_attention(q, k, v, scale, bias=None):
    """softmax(q k^T * scale + bias) v over the last key axis."""
    logits = torch.matmul(q, k.transpose(-1, -2)) * scale
    if bias is not None:
        logits = logits + bias
    return torch.matmul(torch.softmax(logits, dim=-1), v)


def _pad_bottom_right(x, ws):
    """Zero-pad a (B, H, W, C) map at the bottom/right up to multiples of ws."""
    H, W = x.shape[1], x.shape[2]
    ph = (ws - H % ws) % ws
    pw = (ws - W % ws) % ws
    if ph == 0 and pw == 0:
        return x
    return F.pad(x, (0, 0, 0, pw, 0, ph))


def _window_partition(x, ws):
    """(B, H, W, C) -> (B, nWin, ws*ws, C).

    Windows are listed row-major over the window grid; tokens row-major inside a window.
    Written as an explicit loop on purpose.
    """
    B, H, W, C = x.shape
    if H % ws or W % ws:
        raise ValueError(f"map {H}x{W} is not a multiple of the window {ws}")
    wins = []
    for a in range(H // ws):
        for b in range(W // ws):
            wins.append(x[:, a * ws:(a + 1) * ws, b * ws:(b + 1) * ws, :].reshape(B, ws * ws, C))
    return torch.stack(wins, dim=1)


def _window_reverse(t, ws, H, W):
    """Inverse of _window_partition: (B, nWin, ws*ws, C) -> (B, H, W, C)."""
    B, C = t.shape[0], t.shape[-1]
    nh, nw = H // ws, W // ws
    rows = []
    for a in range(nh):
        row = [t[:, a * nw + b].reshape(B, ws, ws, C) for b in range(nw)]
        rows.append(torch.cat(row, dim=2))
    return torch.cat(rows, dim=1)


def sliding_offsets(K):
    """Offsets (dy, dx) of a sliding K x K neighbourhood, in table order.

    Entry t = (dy + r)*K + (dx + r) with r = K//2 and dy, dx in [-r, K-1-r].
    """
    r = K // 2
    return [(dy, dx) for dy in range(-r, K - r) for dx in range(-r, K - r)]


def window_offset_index(ws):
    """(ws*ws, ws*ws) long table: [i, j] = (yj - yi + ws-1)*(2ws-1) + (xj - xi + ws-1).

    i, j are in-window token indices (row-major).  Transpose it for the i - j (Swin)
    orientation.
    """
    idx = torch.empty(ws * ws, ws * ws, dtype=torch.long)
    for i in range(ws * ws):
        yi, xi = divmod(i, ws)
        for j in range(ws * ws):
            yj, xj = divmod(j, ws)
            idx[i, j] = (yj - yi + ws - 1) * (2 * ws - 1) + (xj - xi + ws - 1)
    return idx


def _shift_view(tp, pad, dy, dx, H, W):
    """tp is a map zero-padded by `pad` on top/left (and enough at bottom/right) along
    axes 1, 2.  Returns s with s[:, y, x] = t[:, y + dy, x + dx] (zero outside)."""
    return tp[:, pad + dy:pad + dy + H, pad + dx:pad + dx + W]


def _pad_hw(t, pad):
    """Zero-pad axes 1 and 2 (H, W) of a tensor (B, H, W, ...) by `pad` on both sides."""
    extra = t.dim() - 3  # trailing axes after W
    spec = (0, 0) * extra + (pad, pad, pad, pad)
    return F.pad(t, spec)


_UNIFIED_TERMS = ("query_key", "query_rel_pos", "key_rel_pos", "rel_pos_bias")


def _normalize_unified(w, normalization, gain, K):
    """Norm over the last axis (the neighbourhood j)."""
    if normalization == "softmax":
        return torch.softmax(w, dim=-1)
    if normalization == "identity":
        return w
    if normalization == "filter_norm":
        mean = w.mean(dim=-1, keepdim=True)
        std = w.std(dim=-1, keepdim=True, unbiased=True)
        return (w - mean) / (std + 1e-10) * gain / K
    raise ValueError(f"unknown normalization {normalization!r}")


# --------------------------------------------------------------------------------------
# 1. unified local operators
# --------------------------------------------------------------------------------------


def unified_local(
    x,
    *,
    heads,
    kernel,
    application,
    terms,
    normalization,
    scale,
    gain=1.0,
    w_q=None,
    b_q=None,
    w_k=None,
    b_k=None,
    w_v=None,
    b_v=None,
    r_k=None,
    r_q=None,
    r_b=None,
    w_out=None,
    b_out=None,
    out_bias=None,
    residual=False,
):
    """Unified local operator (ZOO section 1).

        y_i = sum_{j in Phi(i)} Norm_j(w_{i->j}) * v_j       (one weight per head)

        w_{i->j} = sum of the chosen terms:
            "query_key"     : s * q_i . k_j
            "query_rel_pos" : s * q_i . r_k[g, j-i]
            "key_rel_pos"   : s * k_j . r_q[g, j-i]
            "rel_pos_bias"  : r_b[g, j-i]

    Phi(i):
      * application="sliding": the K x K positions (dy, dx in [-r, K-1-r], r = K//2)
        around i.  Out-of-image neighbours are zero vectors after projection (k = v = 0)
        and still take part in Norm; q.r_k and r_b still apply there, k.r_q is 0.
        Tables have T = K*K entries, index (dy+r)*K + (dx+r).
      * application="window": the non-overlapping K x K window containing i (H, W must
        be multiples of K).  Tables have T = (2K-1)^2 entries, index
        (dy+K-1)*(2K-1) + (dx+K-1).

    Norm over j: "softmax", "identity", or "filter_norm" =
    (w - mean_j w) / (std_j w + 1e-10) * gain / K with the unbiased std over the T
    neighbourhood entries.

    Projections: q = x w_q^T + b_q (w_q (Cqk, C)), likewise k (w_k (Cqk, C)) and
    v (w_v (Cv, C)); a None weight means the identity (q/k/v = x).  Per head
    dq = Cqk/G, dv = Cv/G.  Tables: r_b (G, T), r_k (G, T, dq), r_q (G, T, dq).
    Output: concat heads (Cv channels), then x w_out^T + b_out if w_out is given
    (w_out (Cout, Cv)), then + out_bias (Cout,), then + x if residual.
    """
    B, H, W, C = x.shape
    G = heads
    K = kernel
    terms = set(terms)
    bad = terms - set(_UNIFIED_TERMS)
    if bad or not terms:
        raise ValueError(f"bad terms {terms}")
    if application not in ("sliding", "window"):
        raise ValueError(f"unknown application {application!r}")
    need_q = bool(terms & {"query_key", "query_rel_pos"})
    need_k = bool(terms & {"query_key", "key_rel_pos"})

    def proj(w, b):
        return x if w is None else _linear(x, w, b)

    def per_head(t):  # (B, H, W, G*d) -> (B, H, W, G, d)
        d = _check_div(t.shape[-1], G, "channels per head")
        return t.reshape(B, H, W, G, d)

    q = per_head(proj(w_q, b_q)) if need_q else None
    k = per_head(proj(w_k, b_k)) if need_k else None
    v = per_head(proj(w_v, b_v))
    dv = v.shape[-1]

    if application == "sliding":
        offsets = sliding_offsets(K)
        pad = K // 2
        kp = _pad_hw(k, pad) if need_k else None
        vp = _pad_hw(v, pad)
        logits = []
        for t, (dy, dx) in enumerate(offsets):
            w_t = x.new_zeros(B, H, W, G)
            kj = _shift_view(kp, pad, dy, dx, H, W) if need_k else None
            if "query_key" in terms:
                w_t = w_t + scale * (q * kj).sum(-1)
            if "query_rel_pos" in terms:
                w_t = w_t + scale * (q * r_k[:, t, :]).sum(-1)
            if "key_rel_pos" in terms:
                w_t = w_t + scale * (kj * r_q[:, t, :]).sum(-1)
            if "rel_pos_bias" in terms:
                w_t = w_t + r_b[:, t]
            logits.append(w_t)
        A = _normalize_unified(torch.stack(logits, dim=-1), normalization, gain, K)  # (B,H,W,G,T)
        y = x.new_zeros(B, H, W, G, dv)
        for t, (dy, dx) in enumerate(offsets):
            vj = _shift_view(vp, pad, dy, dx, H, W)
            y = y + A[..., t].unsqueeze(-1) * vj
        y = y.reshape(B, H, W, G * dv)
    else:  # window
        if H % K or W % K:
            raise ValueError(f"window application needs H, W multiples of K={K}, got {H}x{W}")
        n = K * K
        idx = window_offset_index(K)  # (n, n), j - i

        def win(t):  # (B, H, W, G, d) -> (B, nW, G, n, d)
            d = t.shape[-1]
            tw = _window_partition(t.reshape(B, H, W, G * d), K)  # (B, nW, n, G*d)
            return _split_heads(tw, G)

        vw = win(v)
        nW = vw.shape[1]
        logits = x.new_zeros(B, nW, G, n, n)
        qw = win(q) if need_q else None
        kw = win(k) if need_k else None
        if "query_key" in terms:
            logits = logits + scale * torch.matmul(qw, kw.transpose(-1, -2))
        if "query_rel_pos" in terms:
            R = r_k[:, idx]  # (G, n, n, dq)
            logits = logits + scale * torch.einsum("bwgid,gijd->bwgij", qw, R)
        if "key_rel_pos" in terms:
            R = r_q[:, idx]  # (G, n, n, dq)
            logits = logits + scale * torch.einsum("bwgjd,gijd->bwgij", kw, R)
        if "rel_pos_bias" in terms:
            logits = logits + r_b[:, idx]  # (G, n, n)
        A = _normalize_unified(logits, normalization, gain, K)
        yw = torch.matmul(A, vw)  # (B, nW, G, n, dv)
        y = _window_reverse(_merge_heads(yw), K, H, W)

    if w_out is not None:
        y = _linear(y, w_out, b_out)
    if out_bias is not None:
        y = y + out_bias
    if residual:
        y = y + x
    return y


# --------------------------------------------------------------------------------------
# 2. ELSA
# --------------------------------------------------------------------------------------


def elsa(
    x,
    *,
    heads,
    kernel,
    group_width,
    scale,
    lam,
    gamma,
    w_qkv,
    b_qkv,
    qk_dim,
    w_dw,
    b_dw,
    w_pw,
    b_pw,
    ghost_mul=None,
    ghost_add=None,
    w_proj,
    b_proj,
):
    """ELSA: Hadamard attention + ghost head (ZOO section 2).

        q, k, v = split(x w_qkv^T + b_qkv)      w_qkv (2*qk_dim + C, C), rows [q; k; v]
        h       = q * k * scale                  (per pixel, elementwise; (B, qk_dim, H, W))
        logits  = PW(GELU(DW(h)))                DW: Conv2d(qk_dim, qk_dim, K, pad K//2,
                                                     groups=qk_dim//group_width),
                                                     w_dw (qk_dim, group_width, K, K), b_dw
                                                 GELU exact (erf)
                                                 PW: 1x1 conv, w_pw (G*K*K, qk_dim, 1, 1), b_pw
                                                 channel g*K*K + k, k = (dy+r)*K + (dx+r)
        A[g, k, p] = softmax_k(logits[g*K*K + k, p])
        F[c, k, p] = M[c, k]^lam * A[g(c), k, p] + gamma * S[c, k],   g(c) = c // (C/G)
                     M = ghost_mul (C, K, K), S = ghost_add (C, K, K), flattened row-major
                     lam = 0 -> factor 1 (ghost_mul may be None); gamma = 0 or S None -> no S
        y[c, p]    = sum_k F[c, k, p] * v[c, p + offset_k]     (v zero-padded)
        out        = y w_proj^T + b_proj                        w_proj (C, C)

    K must be odd.  A non-integer lam with negative entries of M raises ValueError
    (it is NaN in the official code).
    """
    B, H, W, C = x.shape
    G = heads
    K = kernel
    if K % 2 != 1:
        raise ValueError("elsa needs an odd kernel")
    _check_div(qk_dim, group_width, "qk_dim / group_width")
    d = _check_div(C, G, "channels per head")
    T = K * K
    r = K // 2

    qkv = _linear(x, w_qkv, b_qkv)
    if qkv.shape[-1] != 2 * qk_dim + C:
        raise ValueError("w_qkv must have 2*qk_dim + C rows")
    q = qkv[..., :qk_dim]
    k = qkv[..., qk_dim:2 * qk_dim]
    v = qkv[..., 2 * qk_dim:]

    h = (q * k * scale).permute(0, 3, 1, 2)  # (B, qk_dim, H, W)
    h = F.conv2d(h, w_dw, b_dw, padding=r, groups=qk_dim // group_width)
    h = F.gelu(h)  # exact erf GELU
    logits = F.conv2d(h, w_pw, b_pw)  # (B, G*T, H, W)
    A = torch.softmax(logits.reshape(B, G, T, H, W), dim=2)

    # ghost head: expand the G head filters to C channel filters
    Fc = A.repeat_interleave(d, dim=1)  # (B, C, T, H, W); channel c <- head c // d
    if lam != 0:
        if ghost_mul is None:
            raise ValueError("lam != 0 needs ghost_mul")
        M = ghost_mul.reshape(C, T)
        if float(lam) != float(int(lam)) and bool((M < 0).any()):
            raise ValueError("non-integer lam with negative ghost_mul entries is NaN")
        Fc = Fc * torch.pow(M, lam)[None, :, :, None, None]
    if gamma != 0 and ghost_add is not None:
        S = ghost_add.reshape(C, T)
        Fc = Fc + gamma * S[None, :, :, None, None]

    vp = F.pad(v.permute(0, 3, 1, 2), (r, r, r, r))  # (B, C, H+2r, W+2r)
    y = x.new_zeros(B, C, H, W)
    for t, (dy, dx) in enumerate(sliding_offsets(K)):
        y = y + Fc[:, :, t] * vp[:, :, r + dy:r + dy + H, r + dx:r + dx + W]
    y = y.permute(0, 2, 3, 1)
    return _linear(y, w_proj, b_proj)


# --------------------------------------------------------------------------------------
# 3. BOAT feature-space local attention
# --------------------------------------------------------------------------------------


def _boat_levels(N, cluster_size):
    if cluster_size <= 0 or N % cluster_size:
        raise ValueError(f"BOAT needs N = cluster_size * 2^L, got N={N}, cluster_size={cluster_size}")
    ratio = N // cluster_size
    L = 0
    while (1 << L) < ratio:
        L += 1
    if (1 << L) != ratio:
        raise ValueError(f"BOAT needs N = cluster_size * 2^L, got N={N}, cluster_size={cluster_size}")
    return L


def _boat_cluster(q, levels, iterations, temperature):
    """Balanced hierarchical clustering of one image/head's queries q (N, d).

    Returns the list of 2^levels leaves (LongTensors of token indices), in order.
    """
    N = q.shape[0]
    qn = F.normalize(q, dim=-1, eps=1e-12)
    groups = [torch.arange(N, device=q.device)]
    for _ in range(levels):
        new_groups = []
        for idx in groups:
            n = idx.numel()
            half = n // 2
            qg = q[idx]  # raw queries (means / weighted sums)
            qng = qn[idx]  # normalised queries (cosines)
            c = torch.stack([qg[:half].mean(dim=0), qg[half:].mean(dim=0)], dim=0)  # (2, d)
            c = F.normalize(c, dim=-1, eps=1e-12)
            for _it in range(iterations):
                a = torch.softmax(temperature * torch.matmul(qng, c.t()), dim=-1)  # (n, 2)
                c = F.normalize(torch.matmul(a.t(), qg), dim=-1, eps=1e-12)  # (2, d)
            cos = torch.matmul(qng, c.t())  # (n, 2)
            ratio = (1.0 + cos[:, 0]) / (1.0 + cos[:, 1])
            order = torch.sort(ratio, descending=True, stable=True).indices
            sorted_idx = idx[order]
            new_groups.append(sorted_idx[:half])
            new_groups.append(sorted_idx[half:])
        groups = new_groups
    return groups


def boat_fsla(
    x,
    *,
    heads,
    cluster_size,
    overlap,
    iterations,
    temperature,
    scale,
    w_qkv,
    b_qkv,
    w_dw,
    b_dw,
    w_proj,
    b_proj,
):
    """BOAT feature-space local attention (ZOO section 3).

    q, k, v = split(x w_qkv^T + b_qkv), w_qkv (3C, C).  For each image and head, on that
    head's queries q (N, d), under torch.no_grad:
      L = log2(N / cluster_size) levels (ValueError unless N = cluster_size * 2^L).
      At each level every group (in its current order) splits in two: centroids = means
      of the first / second half of the group's raw q, L2-normalised; `iterations` times:
      a = softmax(temperature * cos(q, c)) over the 2 centroids, c = normalise(sum_t a_t q_t)
      (raw q); then r = (1 + cos(q, c_a)) / (1 + cos(q, c_b)); the group is sorted by r
      descending (stable); first half -> child a (placed first), rest -> child b.
      cos uses F.normalize(q, eps=1e-12).
    Leaves: 2^L clusters of cluster_size tokens.  Keys/values of leaf 2p = own tokens +
    first `overlap` tokens of leaf 2p+1; of leaf 2p+1 = own tokens + last `overlap`
    tokens of leaf 2p (L = 0: one leaf, no sibling, overlap unused).
    Softmax attention (scale) of each leaf's queries over its keys; outputs scattered back
    to the original token positions; concat heads; + DWConv3x3(v) (depthwise on the
    (B, C, H, W) map of v, w_dw (C, 1, 3, 3), b_dw, padding 1); then x w_proj^T + b_proj.
    """
    B, H, W, C = x.shape
    G = heads
    N = H * W
    L = _boat_levels(N, cluster_size)
    if not 0 <= overlap <= cluster_size:
        raise ValueError("overlap must be in [0, cluster_size]")

    qkv = _linear(x.reshape(B, N, C), w_qkv, b_qkv)
    q = _split_heads(qkv[..., :C], G)  # (B, G, N, d)
    k = _split_heads(qkv[..., C:2 * C], G)
    v = _split_heads(qkv[..., 2 * C:], G)

    per_image = []
    for b in range(B):
        per_head = []
        for g in range(G):
            with torch.no_grad():
                leaves = _boat_cluster(q[b, g].detach(), L, iterations, temperature)
            outs = []
            for p, own in enumerate(leaves):
                if L > 0 and overlap > 0:
                    sib = leaves[p ^ 1]
                    extra = sib[:overlap] if p % 2 == 0 else sib[sib.numel() - overlap:]
                    kv_idx = torch.cat([own, extra])
                else:
                    kv_idx = own
                outs.append(_softmax_attention(q[b, g][own], k[b, g][kv_idx], v[b, g][kv_idx], scale))
            perm = torch.cat(leaves)  # token index of each row of cat(outs)
            inv = torch.argsort(perm)
            per_head.append(torch.cat(outs, dim=0)[inv])  # (N, d), original order
        per_image.append(torch.stack(per_head, dim=0))
    attn = _merge_heads(torch.stack(per_image, dim=0)).reshape(B, H, W, C)

    vmap = _merge_heads(v).reshape(B, H, W, C).permute(0, 3, 1, 2)
    local = F.conv2d(vmap, w_dw, b_dw, padding=1, groups=C).permute(0, 2, 3, 1)
    return _linear(attn + local, w_proj, b_proj)


# --------------------------------------------------------------------------------------
# 4. Twins-SVT: LSA, GSA, PEG
# --------------------------------------------------------------------------------------


def twins_lsa(x, *, heads, ws, scale, masked, w_qkv, b_qkv, w_proj, b_proj):
    """Twins locally-grouped self-attention (ZOO section 4).

    x is zero-padded bottom/right to multiples of ws BEFORE the qkv projection (padded
    keys/values are therefore the qkv bias), window MHSA in non-overlapping ws x ws
    windows (no shift, no position bias), crop back to H x W, then x w_proj^T + b_proj.
    masked=True gives padded keys -inf logits (excluded from the softmax).
    w_qkv (3C, C), w_proj (C, C).
    """
    B, H, W, C = x.shape
    G = heads
    xp = _pad_bottom_right(x, ws)
    Hp, Wp = xp.shape[1], xp.shape[2]
    qkv = _linear(xp, w_qkv, b_qkv)
    qw = _split_heads(_window_partition(qkv[..., :C], ws), G)  # (B, nW, G, n, d)
    kw = _split_heads(_window_partition(qkv[..., C:2 * C], ws), G)
    vw = _split_heads(_window_partition(qkv[..., 2 * C:], ws), G)
    logits = torch.matmul(qw, kw.transpose(-1, -2)) * scale  # (B, nW, G, n, n)
    if masked:
        valid = torch.zeros(1, Hp, Wp, 1, dtype=torch.bool, device=x.device)
        valid[:, :H, :W] = True
        key_valid = _window_partition(valid, ws)[..., 0]  # (1, nW, n)
        logits = logits.masked_fill(~key_valid[:, :, None, None, :], float("-inf"))
    out = torch.matmul(torch.softmax(logits, dim=-1), vw)
    out = _window_reverse(_merge_heads(out), ws, Hp, Wp)[:, :H, :W]
    return _linear(out, w_proj, b_proj)


def gsa(x, *, heads, sr, scale, w_q, b_q, w_kv, b_kv, w_sr=None, b_sr=None, ln_w=None, ln_b=None,
        w_proj, b_proj):
    """Twins global sub-sampled attention = PVT spatial-reduction attention (ZOO section 4).

        q  = x w_q^T + b_q over all N tokens                 w_q (C, C)
        x' = LayerNorm(Conv2d(C, C, kernel=stride=sr)(x))     w_sr (C, C, sr, sr), b_sr,
             (eps 1e-5, affine ln_w/ln_b, leftover rows/cols dropped); sr = 1: x' = x
        k, v = split(x' w_kv^T + b_kv)                       w_kv (2C, C), rows [k; v]
        out = MHSA(q, k, v) w_proj^T + b_proj
    """
    B, H, W, C = x.shape
    G = heads
    N = H * W
    q = _split_heads(_linear(x.reshape(B, N, C), w_q, b_q), G)
    if sr == 1:
        xs = x.reshape(B, N, C)
    else:
        if H < sr or W < sr:
            raise ValueError("map smaller than the sub-sampling ratio")
        xc = F.conv2d(x.permute(0, 3, 1, 2), w_sr, b_sr, stride=sr)  # (B, C, H//sr, W//sr)
        xs = xc.permute(0, 2, 3, 1).reshape(B, -1, C)
        xs = layer_norm(xs, ln_w, ln_b, 1e-5)
    kv = _linear(xs, w_kv, b_kv)
    k = _split_heads(kv[..., :C], G)
    v = _split_heads(kv[..., C:], G)
    out = _merge_heads(_softmax_attention(q, k, v, scale)).reshape(B, H, W, C)
    return _linear(out, w_proj, b_proj)


def peg(x, *, w, b):
    """Twins PEG: y = DWConv3x3(x) + x; w (C, 1, 3, 3), b (C,) or None, padding 1."""
    C = x.shape[-1]
    y = F.conv2d(x.permute(0, 3, 1, 2), w, b, padding=1, groups=C).permute(0, 2, 3, 1)
    return y + x


# --------------------------------------------------------------------------------------
# 5. LITv2 HiLo
# --------------------------------------------------------------------------------------


def hilo(x, *, heads, alpha, ws, scale, h_qkv_w=None, h_qkv_b=None, h_proj_w=None, h_proj_b=None,
         l_q_w=None, l_q_b=None, l_kv_w=None, l_kv_b=None, l_proj_w=None, l_proj_b=None):
    """LITv2 HiLo attention (ZOO section 5).

    d = C/heads; l_heads = int(heads*alpha), h_heads = heads - l_heads; ws = 1 means
    l_heads = heads, h_heads = 0.  h_dim = h_heads*d, l_dim = l_heads*d.
    Non-divisible maps: x zero-padded bottom/right to multiples of ws before both branches
    (unmasked), output cropped.
      Hi-Fi: qkv = x h_qkv_w^T + h_qkv_b, h_qkv_w (3*h_dim, C) rows [q; k; v];
             softmax attention (scale) inside ws x ws windows; h_proj_w (h_dim, h_dim).
      Lo-Fi: q = x l_q_w^T + l_q_b (l_dim, C) on all tokens; x' = AvgPool2d(ws)(x)
             (x' = x for ws = 1); k, v = split(x' l_kv_w^T + l_kv_b), l_kv_w (2*l_dim, C)
             rows [k; v]; global softmax attention; l_proj_w (l_dim, l_dim).
      out = concat[Hi-Fi, Lo-Fi] on channels (no shared projection); a branch with 0
      heads is dropped.
    """
    B, H, W, C = x.shape
    d = _check_div(C, heads, "channels per head")
    if ws == 1:
        l_heads, h_heads = heads, 0
    else:
        l_heads = int(heads * alpha)
        h_heads = heads - l_heads
    h_dim, l_dim = h_heads * d, l_heads * d

    xp = _pad_bottom_right(x, ws)
    Hp, Wp = xp.shape[1], xp.shape[2]
    parts = []
    if h_heads > 0:
        qkv = _linear(xp, h_qkv_w, h_qkv_b)
        qw = _split_heads(_window_partition(qkv[..., :h_dim], ws), h_heads)
        kw = _split_heads(_window_partition(qkv[..., h_dim:2 * h_dim], ws), h_heads)
        vw = _split_heads(_window_partition(qkv[..., 2 * h_dim:], ws), h_heads)
        hi = _window_reverse(_merge_heads(_softmax_attention(qw, kw, vw, scale)), ws, Hp, Wp)
        parts.append(_linear(hi, h_proj_w, h_proj_b))
    if l_heads > 0:
        q = _split_heads(_linear(xp.reshape(B, Hp * Wp, C), l_q_w, l_q_b), l_heads)
        if ws > 1:
            xs = F.avg_pool2d(xp.permute(0, 3, 1, 2), ws).permute(0, 2, 3, 1).reshape(B, -1, C)
        else:
            xs = xp.reshape(B, Hp * Wp, C)
        kv = _linear(xs, l_kv_w, l_kv_b)
        k = _split_heads(kv[..., :l_dim], l_heads)
        v = _split_heads(kv[..., l_dim:], l_heads)
        lo = _merge_heads(_softmax_attention(q, k, v, scale)).reshape(B, Hp, Wp, l_dim)
        parts.append(_linear(lo, l_proj_w, l_proj_b))
    out = torch.cat(parts, dim=-1)
    return out[:, :H, :W]


# --------------------------------------------------------------------------------------
# 6/7. Swin window attention (and the dynamic-conv normalisation variants)
# --------------------------------------------------------------------------------------


def _kernel_axis_norm(w, normalization, n_keys):
    """Normalisation over the last (key / kernel) axis."""
    if normalization == "softmax":
        return torch.softmax(w, dim=-1)
    if normalization == "relu":
        return torch.relu(w)
    if normalization == "relu_mean":
        return torch.relu(w) / n_keys
    if normalization == "layernorm":
        mean = w.mean(dim=-1, keepdim=True)
        var = ((w - mean) ** 2).mean(dim=-1, keepdim=True)
        return (w - mean) / torch.sqrt(var + 1e-5)
    if normalization == "sigmoid":
        return torch.sigmoid(w)
    if normalization == "l1":
        return w / torch.clamp(w.abs().sum(dim=-1, keepdim=True), min=1e-12)
    raise ValueError(f"unknown normalization {normalization!r}")


def _swin_region_ids(Hp, Wp, ws, shift):
    """Swin's shifted-window region labels on the padded (Hp, Wp) map."""
    ids = torch.zeros(Hp, Wp, dtype=torch.long)
    h_sl = ((0, Hp - ws), (Hp - ws, Hp - shift), (Hp - shift, Hp))
    w_sl = ((0, Wp - ws), (Wp - ws, Wp - shift), (Wp - shift, Wp))
    cnt = 0
    for h0, h1 in h_sl:
        for w0, w1 in w_sl:
            ids[h0:h1, w0:w1] = cnt  # Hp - ws >= 0, so all bounds are valid
            cnt += 1
    return ids


def window_attention(x, *, heads, ws, shift, scale, table, w_qkv, b_qkv, w_proj, b_proj,
                     order="roll_then_pad", normalization="softmax"):
    """Swin W-MSA / SW-MSA (ZOO section 6) with the section-7 normalisation variants.

        A = Norm(q k^T * s + B_g[i - j] + mask),  out = (A v) w_proj^T + b_proj

    table ((2ws-1)^2, G) (or None) indexed by the REVERSED offset i - j:
    (yi - yj + ws-1)*(2ws-1) + (xi - xj + ws-1).  If min(H, W) <= ws the window becomes
    min(H, W) and shift 0 (the table must then have the matching smaller size).
    shift > 0: roll by -shift on both axes; tokens of different regions (regions built as
    in Swin on the PADDED map: slices (0, Hp-ws), (Hp-ws, Hp-shift), (Hp-shift, Hp), same
    for W) get an additive -100; crop; roll back by +shift.
    Non-divisible maps: zero-pad bottom/right (after the roll for order="roll_then_pad",
    timm; before it for "pad_then_roll", official detection code), padded tokens not
    masked, crop.  Padding happens before the qkv projection (padded keys = qkv bias).
    normalization: "softmax", "relu", "relu_mean" (ReLU / ws^2), "layernorm" over the keys
    of each query ((w - mean)/sqrt(biased var + 1e-5), no affine), "sigmoid",
    "l1" (w / max(sum |w|, 1e-12)).  The -100 mask is added before any normalisation.
    w_qkv (3C, C), w_proj (C, C).
    """
    B, H, W, C = x.shape
    G = heads
    if min(H, W) <= ws:
        ws = min(H, W)
        shift = 0
    if not 0 <= shift < ws:
        raise ValueError("need 0 <= shift < ws")
    if order not in ("roll_then_pad", "pad_then_roll"):
        raise ValueError(f"unknown order {order!r}")

    if order == "roll_then_pad":
        xs = torch.roll(x, shifts=(-shift, -shift), dims=(1, 2)) if shift else x
        xp = _pad_bottom_right(xs, ws)
    else:
        xp = _pad_bottom_right(x, ws)
        if shift:
            xp = torch.roll(xp, shifts=(-shift, -shift), dims=(1, 2))
    Hp, Wp = xp.shape[1], xp.shape[2]
    n = ws * ws

    qkv = _linear(xp, w_qkv, b_qkv)
    qw = _split_heads(_window_partition(qkv[..., :C], ws), G)  # (B, nW, G, n, d)
    kw = _split_heads(_window_partition(qkv[..., C:2 * C], ws), G)
    vw = _split_heads(_window_partition(qkv[..., 2 * C:], ws), G)
    logits = torch.matmul(qw, kw.transpose(-1, -2)) * scale
    if table is not None:
        if table.shape[0] != (2 * ws - 1) ** 2:
            raise ValueError(f"table has {table.shape[0]} rows, window {ws} needs {(2 * ws - 1) ** 2}")
        idx_ij = window_offset_index(ws).t()  # [i, j] -> index of the offset i - j
        bias = table[idx_ij]  # (n, n, G)
        logits = logits + bias.permute(2, 0, 1)
    if shift > 0:
        ids = _swin_region_ids(Hp, Wp, ws, shift)
        idw = _window_partition(ids[None, :, :, None], ws)[0, :, :, 0]  # (nW, n)
        diff = idw[:, :, None] != idw[:, None, :]  # (nW, n, n)
        mask = torch.zeros(diff.shape, dtype=x.dtype, device=x.device).masked_fill(diff, -100.0)
        logits = logits + mask[None, :, None, :, :]
    A = _kernel_axis_norm(logits, normalization, n)
    out = _window_reverse(_merge_heads(torch.matmul(A, vw)), ws, Hp, Wp)

    if order == "roll_then_pad":
        out = out[:, :H, :W]
        if shift:
            out = torch.roll(out, shifts=(shift, shift), dims=(1, 2))
    else:
        if shift:
            out = torch.roll(out, shifts=(shift, shift), dims=(1, 2))
        out = out[:, :H, :W]
    return _linear(out, w_proj, b_proj)


# --------------------------------------------------------------------------------------
# 8. ViT global attention, neighbourhood attention, Linformer
# --------------------------------------------------------------------------------------


def global_attention(x, *, heads, scale, w_qkv, b_qkv, w_proj, b_proj):
    """ViT MHSA: q, k, v = split(x w_qkv^T + b_qkv) (w_qkv (3C, C)); softmax(q k^T s) v
    per head over all N tokens; then x w_proj^T + b_proj."""
    B, H, W, C = x.shape
    G = heads
    qkv = _linear(x.reshape(B, H * W, C), w_qkv, b_qkv)
    q = _split_heads(qkv[..., :C], G)
    k = _split_heads(qkv[..., C:2 * C], G)
    v = _split_heads(qkv[..., 2 * C:], G)
    out = _merge_heads(_softmax_attention(q, k, v, scale)).reshape(B, H, W, C)
    return _linear(out, w_proj, b_proj)


def _natten_starts(L, K):
    """Start of the clamped neighbourhood along one axis: clamp(i - K//2, 0, L - K)."""
    return [min(max(i - K // 2, 0), L - K) for i in range(L)]


def _na_dilation1(q, k, v, K, scale, rpb):
    """Dilation-1 NATTEN attention on a (B, h, w, G, d) grid; returns (B, h, w, G*d)."""
    B, h, w, G, d = q.shape
    if h < K or w < K:
        raise ValueError(f"neighbourhood attention needs a map of at least {K}x{K}, got {h}x{w}")
    sy = _natten_starts(h, K)
    sx = _natten_starts(w, K)
    nbr = torch.empty(h * w, K * K, dtype=torch.long)
    bidx = torch.empty(h * w, K * K, dtype=torch.long)
    for yi in range(h):
        for xi in range(w):
            i = yi * w + xi
            t = 0
            for yj in range(sy[yi], sy[yi] + K):
                for xj in range(sx[xi], sx[xi] + K):
                    nbr[i, t] = yj * w + xj
                    bidx[i, t] = (yj - yi + K - 1) * (2 * K - 1) + (xj - xi + K - 1)
                    t += 1
    nbr = nbr.to(q.device)
    bidx = bidx.to(q.device)
    qf = q.reshape(B, h * w, G, d).permute(0, 2, 1, 3)  # (B, G, N, d)
    kf = k.reshape(B, h * w, G, d).permute(0, 2, 1, 3)
    vf = v.reshape(B, h * w, G, d).permute(0, 2, 1, 3)
    kn = kf[:, :, nbr]  # (B, G, N, K*K, d)
    vn = vf[:, :, nbr]
    logits = torch.einsum("bgnd,bgnkd->bgnk", qf, kn) * scale
    if rpb is not None:
        logits = logits + rpb.reshape(G, -1)[:, bidx]  # (G, N, K*K)
    A = torch.softmax(logits, dim=-1)
    out = torch.einsum("bgnk,bgnkd->bgnd", A, vn)  # (B, G, N, d)
    return out.permute(0, 2, 1, 3).reshape(B, h, w, G * d)


def neighborhood_attention(x, *, heads, kernel, dilation, scale, rpb, w_qkv, b_qkv, w_proj, b_proj):
    """Neighbourhood attention, NATTEN semantics (ZOO section 8).

    Dilation 1: along each axis the neighbourhood of i is [start, start + K) with
    start = clamp(i - K//2, 0, L - K) (clamped inside the image, never padded).
    logit_ij = s q_i . k_j + rpb[g, (yj - yi) + K-1, (xj - xi) + K-1] (rpb (G, 2K-1, 2K-1)
    or None); softmax over the K*K neighbours.
    Dilation delta: qkv on the full map, then each of the delta x delta interleaved
    sub-grids [:, a::delta, b::delta] runs dilation-1 attention (offsets in sub-grid
    units; each sub-grid needs >= K rows and cols, else ValueError); outputs interleaved
    back; then x w_proj^T + b_proj.  w_qkv (3C, C).
    """
    B, H, W, C = x.shape
    G = heads
    d = _check_div(C, G, "channels per head")
    qkv = _linear(x, w_qkv, b_qkv)
    q = qkv[..., :C].reshape(B, H, W, G, d)
    k = qkv[..., C:2 * C].reshape(B, H, W, G, d)
    v = qkv[..., 2 * C:].reshape(B, H, W, G, d)
    dl = dilation
    out = x.new_zeros(B, H, W, C)
    for a in range(dl):
        for b in range(dl):
            sub = _na_dilation1(q[:, a::dl, b::dl], k[:, a::dl, b::dl], v[:, a::dl, b::dl], kernel, scale, rpb)
            out[:, a::dl, b::dl] = sub
    return _linear(out, w_proj, b_proj)


def linformer(x, *, heads, k, scale, w_qkv, b_qkv, e, f, w_proj, b_proj):
    """Linformer: per head K' = E K, V' = F V with e, f (k, N) shared by all heads;
    softmax(q K'^T s) V'; then x w_proj^T + b_proj.  w_qkv (3C, C)."""
    B, H, W, C = x.shape
    G = heads
    N = H * W
    if tuple(e.shape) != (k, N) or tuple(f.shape) != (k, N):
        raise ValueError(f"e and f must be ({k}, {N})")
    qkv = _linear(x.reshape(B, N, C), w_qkv, b_qkv)
    q = _split_heads(qkv[..., :C], G)  # (B, G, N, d)
    kk = _split_heads(qkv[..., C:2 * C], G)
    vv = _split_heads(qkv[..., 2 * C:], G)
    kp = torch.matmul(e, kk)  # (B, G, k, d)
    vp = torch.matmul(f, vv)
    out = _merge_heads(_softmax_attention(q, kp, vp, scale)).reshape(B, H, W, C)
    return _linear(out, w_proj, b_proj)


# --------------------------------------------------------------------------------------
# 7. dynamic-convolution view: depthwise self-attention, kernel-size axis
# --------------------------------------------------------------------------------------


def depthwise_self_attention(x, *, heads, ws, w_qk, b_qk, p, w_proj, b_proj):
    """Depthwise self-attention, window variant (ZOO section 7).

        q, k = split(x w_qk^T + b_qk)         w_qk (2C, C), rows [q; k]
        kbar_i = mean_{j in window(i)} k_j    (non-overlapping ws x ws windows)
        o_i = q_i * kbar_i + sum_{j in window(i)} p[g(c), j - i] * k_j     (per channel c)
        out = o w_proj^T + b_proj
    p (G, (2ws-1)^2), j - i window indexing; g(c) = c // (C/G).  No value bank, no scale.
    """
    B, H, W, C = x.shape
    G = heads
    d = _check_div(C, G, "channels per head")
    qk = _linear(x, w_qk, b_qk)
    qw = _window_partition(qk[..., :C], ws)  # (B, nW, n, C)
    kw = _window_partition(qk[..., C:], ws)
    kbar = kw.mean(dim=2, keepdim=True)
    o = qw * kbar
    if p is not None:
        P = p[:, window_offset_index(ws)]  # (G, n, n): [g, i, j] = p[g, j - i]
        Pc = P.repeat_interleave(d, dim=0)  # (C, n, n)
        o = o + torch.einsum("cij,bwjc->bwic", Pc, kw)
    out = _window_reverse(o, ws, H, W)
    return _linear(out, w_proj, b_proj)


def kernel_size_attention(x, *, heads, ws, ksize, scale, w_qkv, b_qkv, table, w_proj, b_proj):
    """Window attention whose keys are ksize x ksize kernels (ZOO section 7, kernel size).

        logit_ij = s * sum_{delta in ksize x ksize} q_{i+delta} . k_{j+delta}
                   + table[g, j - i]
    i, j in the same non-overlapping ws x ws window; delta = (dy, dx), dy, dx in
    [-r, ksize-1-r], r = ksize//2; q, k maps zero-padded at the image border (neighbours
    outside the window count).  table (G, (2ws-1)^2) j - i window indexing, or None.
    Softmax over j; values v_j (1x1); then x w_proj^T + b_proj.  w_qkv (3C, C).
    """
    B, H, W, C = x.shape
    G = heads
    if H % ws or W % ws:
        raise ValueError("kernel_size_attention needs H, W multiples of ws")
    qkv = _linear(x, w_qkv, b_qkv)
    q, k, v = qkv[..., :C], qkv[..., C:2 * C], qkv[..., 2 * C:]
    pad = ksize // 2
    qp = _pad_hw(q, pad)
    kp = _pad_hw(k, pad)
    logits = None
    for dy, dx in sliding_offsets(ksize):
        qd = _split_heads(_window_partition(_shift_view(qp, pad, dy, dx, H, W), ws), G)
        kd = _split_heads(_window_partition(_shift_view(kp, pad, dy, dx, H, W), ws), G)
        term = torch.matmul(qd, kd.transpose(-1, -2))
        logits = term if logits is None else logits + term
    logits = logits * scale
    if table is not None:
        logits = logits + table[:, window_offset_index(ws)]  # (G, n, n)
    vw = _split_heads(_window_partition(v, ws), G)
    out = _window_reverse(_merge_heads(torch.matmul(torch.softmax(logits, dim=-1), vw)), ws, H, W)
    return _linear(out, w_proj, b_proj)
