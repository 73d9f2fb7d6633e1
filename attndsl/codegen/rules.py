"""Lowering rules: one small function (or class) per axis value, emitting torch ops.

They run under torch.fx symbolic tracing, so tensors here are fx Proxies and every Python
`if` is on a bind-time constant from the plan: the traced graph is straight-line code.

Shape legend (the "blocked" layout shared by every application):
    B batch, G heads, nb query blocks, Lq queries per block, Lk keys per block,
    d channels per head.
    q blocks  (B, G, nb, Lq, d_qk)      k blocks (B, G, nb, Lk, d_qk)
    v blocks  (B, G, nb, Lk, d)
    logits    (B, G, nb, Lq, Lk)        standard kernel: one weight per head
              (B, G, nb, Lq, Lk, d)     depthwise kernel: one weight per channel
The normalization axis is always dim 4 (Lk, normalizations.KEY_AXIS).
"""
from __future__ import annotations

import contextlib
import math

import torch
import torch.fx as fx
import torch.nn.functional as F

from ..applications.base import Selection, to_nchw, to_nhwc
from ..lang import models as m
from ..lang.bind import BranchPlan
from ..normalizations import KEY_AXIS, normalization_of
from ..terms import term_of

# node.meta key: the rule (and its spec axis) that emitted a node, e.g.
# "application: window" or "normalization: softmax" (export names it when an op fails)
PROVENANCE = "attndsl_rule"


class RuleTracer(fx.Tracer):
    """fx's tracer, tagging every node it creates with the rule being lowered."""

    def __init__(self):
        super().__init__()
        self.rules: list[str] = []

    def create_node(self, *args, **kwargs):
        node = super().create_node(*args, **kwargs)
        if self.rules:
            node.meta[PROVENANCE] = self.rules[-1]
        return node


class Ctx:
    """What a rule may use: the traced root (parameters and constants), the branch plan,
    bind-time facts (dtype, device, training) and the engine decisions for this graph
    (autoplan.Engines: whether inductor compiles it, which branch runs in SDPA, the dtype
    of the convolutions)."""

    def __init__(self, root, bp: BranchPlan, params, dtype, device, training: bool, tracer,
                 engines, grid=None):
        self.root, self.bp, self.p = root, bp, params
        self.dtype, self.device, self.training = dtype, device, training
        self.engines = engines
        self.choice = engines.of(bp.name)
        # the grid the rules work on: the plan's, or the input's sizes when the rules run
        # eagerly for a dynamic-resolution export (tracer None)
        self.grid = grid or bp.grid
        self.tracer = tracer

    @property
    def compiled(self) -> bool:
        """The graph will run under inductor: rules may pick forms that only pay off fused.
        Not for a branch FlexAttention runs: its explicit form is dead once the pass has
        rewritten it, so it is the plain form the key set is probed from."""
        return self.engines.compiled and self.choice.engine != "flex"

    @contextlib.contextmanager
    def emitting(self, rule: str):
        """Tag the nodes created inside with `rule` (innermost wins)."""
        rules = getattr(self.tracer, "rules", None)
        if rules is None:
            yield
            return
        rules.append(rule)
        try:
            yield
        finally:
            rules.pop()

    def constant(self, name: str, value: torch.Tensor):
        """Register a bind-time constant (index table, mask) as a buffer of the graph and
        return it as a graph value (a get_attr node), so passes can see where it is used."""
        if self.tracer is None:          # rules running eagerly: the tensor itself
            return value.to(self.device)
        # "_" + …: branch names start with a letter, so a constant never takes the name of
        # a branch's parameter module (branch "a"'s mask vs a branch named "a_mask")
        full = f"_{self.bp.name}__{name}"
        if not hasattr(self.root, full):
            self.root.register_buffer(full, value.to(self.device), persistent=False)
        return self.tracer.create_proxy("get_attr", full, (), {})

    def call_leaf(self, fn, *args):
        """Call `fn` as one node of the graph (not traced into): for functions that decide
        at run time, such as whether autograd needs their custom backward."""
        if self.tracer is None:
            return fn(*args)
        return self.tracer.create_proxy("call_function", fn, args, {})


# ====================================================================== helpers
def head_norm(t, norm, heads: int):
    """A per-head norm of a (B, h, w, G·d) map (timm's q_norm / k_norm)."""
    return norm(t.unflatten(-1, (heads, -1))).flatten(-2)


def rope_tables(ctx, d: int, map_grid):
    """cos and sin of every channel's rotation angle, (n, d) in the spec's pair layout, for
    the n tokens of the (h, w) q/k maps, as graph constants. The token at row y, column x
    turns by [y·f_0 … y·f_{b−1}, x·f_0 … x·f_{b−1}], f_i = temperature^(−i/b), b = d/4
    (positions times reference_grid / (H, W) when given, H×W the grid the spec is bound
    at: padded rows and columns continue it). When the plan's `tokens` is (P, H, W) the map
    is one row of P prefix tokens (angle 0: not rotated) then the H×W grid. Built in
    float64; H and W may be symbolic (a dynamic-resolution export)."""
    rope = ctx.bp.spec.projections.rope
    plan = ctx.root.plan
    # a traced graph is for the plan's grid; rules run eagerly read the input's (ctx.grid)
    P, (h, w), (H, W) = 0, map_grid, plan.resolution if ctx.tracer is not None else ctx.grid
    if plan.tokens is not None:
        P, H, W = plan.tokens
        h, w = H, W
    ys = torch.arange(h, device=ctx.device, dtype=torch.float64)
    xs = torch.arange(w, device=ctx.device, dtype=torch.float64)
    if rope.reference_grid is not None:
        ys, xs = ys * (rope.reference_grid[0] / H), xs * (rope.reference_grid[1] / W)
    ys, xs = (t.flatten()[:, None] for t in torch.meshgrid(ys, xs, indexing="ij"))
    b = d // 4
    bands = rope.temperature ** -(torch.arange(b, device=ctx.device, dtype=torch.float64) / b)
    angles = torch.cat([ys * bands, xs * bands], dim=-1)              # (h·w, 2b)
    if P:
        angles = torch.cat([angles.new_zeros(P, 2 * b), angles])
    # each angle turns one pair: channels (2i, 2i+1) (interleaved) or (i, i + d/2) (halves)
    angles = angles.repeat_interleave(2, -1) if rope.pairs == "interleaved" \
        else torch.cat([angles, angles], -1)
    return (ctx.constant("rope_cos", angles.cos().to(ctx.dtype)),
            ctx.constant("rope_sin", angles.sin().to(ctx.dtype)))


def rotate_pairs(t, pairs: str):
    """The pair partner of every channel with the sign of a quarter turn: [−t1, t0, −t3, t2,
    …] (interleaved) or [−t_{d/2…}, t_{0…d/2}] (halves)."""
    if pairs == "interleaved":
        t = t.unflatten(-1, (-1, 2))
        return torch.stack([-t[..., 1], t[..., 0]], dim=-1).flatten(-2)
    first, second = t.chunk(2, dim=-1)
    return torch.cat([-second, first], dim=-1)


def rope(ctx, q, k, heads: int):
    """Rotate each head's q and k channels by their tokens' angles: t·cos + rot(t)·sin on the
    (B, h, w, G·d) maps (the (h·w, d) tables shared by the heads)."""
    d = ctx.bp.qk_head_dim
    # static sizes in a traced graph; the input's (maybe symbolic) ones when run eagerly
    h, w = ctx.sel.map_grid if ctx.tracer is not None else (q.shape[1], q.shape[2])
    cos, sin = rope_tables(ctx, d, (h, w))
    pairs = ctx.bp.spec.projections.rope.pairs

    def turn(t):
        t = t.flatten(1, 2).unflatten(-1, (heads, d))               # (B, n, G, d)
        t = t * cos[:, None] + rotate_pairs(t, pairs) * sin[:, None]
        return t.flatten(-2).unflatten(1, (h, w))
    return turn(q), turn(k)


def q_conv(ctx, q):
    """The depthwise conv of the projected q map, over the map or inside each block."""
    conv = ctx.p.q_conv
    if ctx.bp.spec.projections.q_conv.scope == "block":
        tiles = to_nchw(ctx.sel.to_tiles(q))
        return ctx.sel.from_tiles(to_nhwc(conv_module(ctx, conv, tiles)))
    return to_nhwc(conv_module(ctx, conv, to_nchw(q)))


def selection_for(ctx: Ctx) -> Selection:
    """The application's lowering rule (attndsl/applications/<kind>.py)."""
    return ctx.bp.kind.rule(ctx)


# ====================================================================== kernel size
def unfold_kernel(t, grid: tuple[int, int], size: int):
    """K×K keys (dynamic-conv paper): each q/k vector becomes its zero-padded K×K
    neighbourhood, (B, h, w, G·c) → (B, h, w, G·c·K²), kept grouped by head."""
    h, w = grid
    cols = F.unfold(to_nchw(t), size, padding=size // 2)      # (B, C·K², h·w), c-major
    return to_nhwc(cols.unflatten(-1, (h, w)))


# ====================================================================== parameterization
def cosine_similarity(ctx, q, k):
    """Swin-V2: normalize(q)·exp(min(τ_g, log max_scale)) (XCiT: ·τ_g) and normalize(k), so
    that the query_key term's q·kᵀ (scale 1) is the scaled cosine; written on q so that a
    fused attention kernel still takes it (blocks (B, G, nb, L, d))."""
    sim = ctx.bp.spec.parameterization.similarity
    if sim.scale_parameter == "log":
        tau = torch.clamp(ctx.p.logit_scale, max=math.log(sim.max_scale)).exp()   # (G, 1, 1)
    else:
        tau = ctx.p.logit_scale         # XCiT's temperature, as it is
    ctx.cosine_scale = tau      # the FlexAttention pass applies it on the token layout
    return F.normalize(q, dim=-1) * tau.unsqueeze(1), F.normalize(k, dim=-1)


def additive_logits(ctx, sel, q, k):
    """(scores, bias): scores = s·q·kᵀ from a dynamic query_key term (None without one),
    bias = the sum of every other term (None without any). Kept apart so that a pass can
    hand `scores` to a fused attention kernel and `bias` to its mask."""
    scale = ctx.bp.scale()
    scores = bias = None
    for term in ctx.bp.spec.parameterization.terms:
        with ctx.emitting(f"parameterization: {term.kind}"):
            value = term_of(term).lower(ctx, sel, term, q, k, scale)
        if term.kind == "query_key" and ctx.bp.spec.kernel_bank.keys == "dynamic":
            scores = value
        else:
            bias = add(bias, value)
    return scores, bias


def add(a, b):
    """a + b where either may be absent (None)."""
    return b if a is None else a if b is None else a + b


ACTIVATIONS = {"gelu": F.gelu, "relu": F.relu, "hardswish": F.hardswish,
               "identity": lambda t: t}


def hadamard_logits(ctx, q_map, k_map):
    """ELSA: logits = PW(act(DW(q ⊙ k · s))), G·K² channels per pixel → (B, G, N, 1, K²)."""
    bp, par = ctx.bp, ctx.bp.spec.parameterization
    h = q_map * k_map
    s = bp.scale()
    if s != 1.0:
        h = h * s
    h = ACTIVATIONS[par.activation](conv_module(ctx, ctx.p.hadamard.dw, to_nchw(h)))
    logits = ctx.p.hadamard.pw(h)                        # (B, G·K², H, W)
    kk = bp.window * bp.window
    return logits.unflatten(1, (bp.heads, kk)).flatten(3).permute(0, 1, 3, 2).unsqueeze(3)


# ====================================================================== normalization
def normalize(ctx, w):
    """The branch's normalization over the keys (attndsl/normalizations/<kind>.py)."""
    norm = ctx.bp.spec.normalization
    return normalization_of(norm).lower(ctx, norm, w)


FEATURE_MAPS = {"elu_plus_one": lambda t: F.elu(t) + 1, "relu": F.relu}


def linear_aggregate(ctx, q, k, v):
    """Σ_j w_ij v_j / (Σ_j w_ij + eps) with w_ij = s·q_i·k_j, associatively:
    s·q_i(Σ_j k_jᵀ v_j) / (s·q_i·Σ_j k_j + eps) — O(L·d²) per block, the (Lq × Lk) weights
    never exist (autoplan's "linear" engine). q (B, G, nb, Lq, d_qk), k (…, Lk, d_qk),
    v (…, Lk, d) → (B, G, nb, Lq, d)."""
    s, eps = ctx.bp.scale(), ctx.bp.spec.normalization.eps
    kv = k.transpose(-1, -2) @ v                       # (B, G, nb, d_qk, d)
    k_sum = k.sum(-2, keepdim=True)                    # (B, G, nb, 1, d_qk)
    num = q @ kv
    den = (q * k_sum).sum(-1, keepdim=True)
    if s != 1.0:
        num, den = s * num, s * den
    return num / (den + eps)


# ====================================================================== kernel expansion
def _per_channel(ctx, table):
    """A (width, K, K) per-channel table → (G, 1, 1, K², d), broadcasting over blocks."""
    bp = ctx.bp
    return table.reshape(bp.heads, bp.head_dim, -1).permute(0, 2, 1)[:, None, None]


def _ghost_mul(ctx):
    lam = ctx.bp.spec.kernel.expand.lam
    return ctx.p.ghost.mul if lam == 1 else ctx.p.ghost.mul ** lam


def ghost_head(ctx, a):
    """F[c,k] = M[c,k]^λ · A[g,k] + γ·S[c,k]: per-head filters (B, G, N, 1, K²) →
    per-channel filters (B, G, N, 1, K², d). Only used where attention dropout must drop
    entries of F itself (training); otherwise `ghost_head_aggregate` never builds F."""
    bp, ex = ctx.bp, ctx.bp.spec.kernel.expand
    out = a.unsqueeze(-1)
    if ex.lam != 0:
        out = out * _per_channel(ctx, _ghost_mul(ctx))
    else:
        out = out.expand(-1, -1, -1, -1, -1, bp.head_dim)
    if ex.gamma != 0:
        out = out + ex.gamma * _per_channel(ctx, ctx.p.ghost.add)
    return out


def ghost_head_splits(ctx) -> bool:
    """Σ_k F[c,k]·v[c,k] = Σ_k A[g,k]·(M[c,k]^λ·v[c,k]) + Σ_k γ·S[c,k]·v[c,k] is exact,
    and avoids the per-channel filter tensor F (K²·C per pixel) — unless attention dropout
    has to drop entries of F."""
    b = ctx.bp.spec
    return b.kernel.expand is not None and not (ctx.training and b.dropout.attention > 0)


def ghost_head_aggregate(ctx, sel, a, v, v_map):
    """The ghost head, split: head-shared weights A over M^λ-scaled values (one weighted
    sum per head, which inductor fuses with the neighbourhood loads), plus the static
    filter γ·S as a depthwise convolution (bind allows the ghost head only on zero-padded
    sliding neighbourhoods, where Σ_k S[c,k]·v[c,p+k] is exactly that).
    a (B, G, N, 1, K²), v (B, G, N, K², d) → (B, H, W, width)."""
    ex = ctx.bp.spec.kernel.expand
    if sel.weighs_windows:
        bp, k = ctx.bp, sel.k
        mul = _ghost_mul(ctx).reshape(bp.heads, bp.head_dim, k, k) if ex.lam != 0 else None
        y = sel.weigh_windows(a, v_map, tap_scale=mul)
    else:
        v_dyn = v * _per_channel(ctx, _ghost_mul(ctx))[:, 0] if ex.lam != 0 else v
        y = sel.unblock(aggregate(a, v_dyn, per_channel=False, single_query=True))
    if ex.gamma != 0:
        kernel = (ex.gamma * ctx.p.ghost.add).unsqueeze(1)          # (width, 1, K, K)
        y = y + depthwise_conv(ctx, v_map, kernel, sel.dil)
    return y


# ====================================================================== static filters
def static_filter_branch(bp: BranchPlan) -> bool:
    """w_ij = Norm(r^b[j−i]) alone on keys that are a zero-padded conv's taps: the weights
    do not depend on the input, so the whole branch is a depthwise convolution (also
    autoplan's rule)."""
    b = bp.spec
    return (isinstance(b.parameterization, m.Additive)
            and b.parameterization.term_kinds == ("rel_pos_bias",)
            and bp.geometry.conv_taps is not None
            and b.kernel.type == "standard" and b.kernel.expand is None)


def is_static_filter(ctx) -> bool:
    """static_filter_branch, unless attention dropout must drop individual weights."""
    return static_filter_branch(ctx.bp) and not (ctx.training
                                                 and ctx.bp.spec.dropout.attention > 0)


def static_filter_conv(ctx, sel, v_map, bias=None):
    """The normalized K×K table of each head as the kernel of F.conv2d (groups = channels):
    conv2d is cross-correlation, y[i] = Σ_δ w[δ]·v[i+δ], and the table is indexed by
    δ = j − i in the same (dy+r)·K + (dx+r) order (flipped for i_minus_j tables)."""
    bp, k, dil = ctx.bp, sel.k, sel.dil
    table = ctx.p.rel_pos.bias                                   # (G, K²)
    if bp.spec.parameterization.rel_pos_orientation == "i_minus_j":
        table = table.flip(-1)
    weights = normalize(ctx, table[None, :, None, None])
    kernel = weights.reshape(bp.heads, 1, k, k)
    if bp.head_dim > 1:   # a head's filter serves each of its channels
        kernel = kernel.repeat_interleave(bp.head_dim, dim=0)
    return depthwise_conv(ctx, v_map, kernel, dil, bias)


def depthwise_conv(ctx, v_map, kernel, dil: int, bias=None):
    """Zero-padded depthwise K×K cross-correlation of a (B, H, W, width) map with a
    (width, 1, K, K) kernel → (B, H, W, width)."""
    k, width = ctx.bp.window, ctx.bp.width       # static sizes: no shape queries in the graph
    return to_nhwc(grouped_conv(ctx, to_nchw(v_map), kernel, bias, padding=dil * (k // 2),
                                dilation=dil, groups=width))


def grouped_conv(ctx, x, weight, bias=None, **kw):
    """F.conv2d for the depthwise / grouped convs of the zoo (static filters, ELSA's
    Hadamard conv, BOAT's value conv, PEG), in the dtype autoplan decided (float32 for
    low precision on a CPU: autoplan.EVIDENCE["cpu_low_precision_conv"])."""
    conv_dtype = ctx.engines.conv_dtype
    if conv_dtype is not None and conv_dtype != ctx.dtype:
        bias = bias.to(conv_dtype) if bias is not None else None
        return F.conv2d(x.to(conv_dtype), weight.to(conv_dtype), bias, **kw).to(ctx.dtype)
    return F.conv2d(x, weight, bias, **kw)


def conv_module(ctx, conv, x):
    """An nn.Conv2d parameter module applied through grouped_conv (same arguments)."""
    return grouped_conv(ctx, x, conv.weight, conv.bias, stride=conv.stride,
                        padding=conv.padding, dilation=conv.dilation, groups=conv.groups)


# ====================================================================== aggregation
def aggregate(w, v, per_channel: bool, single_query: bool = False):
    """y_i = Σ_j w_ij ⊙ v_j, for one weight per head (matmul) or per channel; with one
    query per block as a multiply-and-sum (see term_query_key)."""
    if single_query and not per_channel:
        return (w.transpose(-1, -2) * v).sum(-2, keepdim=True)
    if not per_channel:
        return w @ v
    return (w * v.unsqueeze(3)).sum(KEY_AXIS)


def dropout(ctx, t, p: float):
    return F.dropout(t, p, training=True) if (ctx.training and p > 0) else t


def mask_like(mask, per_channel: bool):
    return mask.unsqueeze(-1) if per_channel else mask


__all__ = ["Ctx", "selection_for", "normalize", "unfold_kernel",
           "additive_logits", "hadamard_logits", "ghost_head", "ghost_head_splits",
           "ghost_head_aggregate", "depthwise_conv", "aggregate", "dropout",
           "mask_like"]
