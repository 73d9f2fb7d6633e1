"""bind(spec, dim, resolution) → Plan: every size made concrete, every cross-field rule
checked. A pure function of its arguments (cached), so lowering never has to re-derive or
re-check anything.

The rules that need the width, the head count or the resolution live here (dim vs heads,
branch head counts, window vs resolution without a padding policy, cluster size vs token
count, which projections the terms need, …); each raises a `SpecError` naming the field.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

from ..errors import SpecError
from . import arguments
from . import models as m


@dataclass(frozen=True)
class BranchPlan:
    """One branch with concrete sizes. `channels` is the branch's slice of the model's
    channels (where its output goes, and what `values: input` reads)."""

    spec: m.Branch
    path: str                  # spec path of the branch, for error messages
    heads: int
    head_dim: int              # d: value channels per head
    qk_dim: int                # total width of q (and k)
    channels: tuple[int, int]
    grid: tuple[int, int]      # the token grid the branch sees (after spec-level padding)
    window: int = 0            # effective window / neighbourhood size
    shift: int = 0
    padded_grid: tuple[int, int] = (0, 0)   # window padding
    levels: int = 0            # cluster tree depth
    pooled_grid: tuple[int, int] = (0, 0)
    table_size: int = 0        # entries of the offset-indexed tables
    needs: frozenset = field(default_factory=frozenset)  # subset of {"q", "k", "v"}

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def width(self) -> int:
        return self.heads * self.head_dim

    @property
    def depthwise(self) -> bool:
        return self.spec.kernel.type == "depthwise"

    @property
    def qk_head_dim(self) -> int:
        return self.qk_dim // self.heads

    @property
    def kv_tokens(self) -> int:
        a = self.spec.application
        if isinstance(a, m.Pooled):
            return self.pooled_grid[0] * self.pooled_grid[1]
        if isinstance(a, m.SoftSelect):
            return a.keys
        return self.grid[0] * self.grid[1]

    def scale(self) -> float:
        """head_dim^-0.5 means the q/k width per head, except for Hadamard attention, whose
        logits are not per-head dot products: there ELSA uses (C_v / G)^-0.5."""
        par = self.spec.parameterization
        if par.scale != "head_dim^-0.5":
            return float(par.scale)
        d = self.head_dim if isinstance(par, m.Hadamard) else self.qk_head_dim
        return d ** -0.5


@dataclass(frozen=True)
class Plan:
    spec: m.Spec
    dim: int
    resolution: tuple[int, int]
    grid: tuple[int, int]      # after pad_to_multiple
    heads: int
    head_dim: int
    branches: tuple[BranchPlan, ...]


# which fused input projections produce q, k, v
LAYOUT_MAKES = {"qkv": "qkv", "q_kv": "qkv", "qk": "qk", "qv": "qv", "q": "q",
                "v": "v", "none": ""}


def bind(spec: m.Spec, dim: int, resolution, heads: int | None = None) -> Plan:
    """Resolve a spec at a model width and a token grid (H, W)."""
    return _bind(spec, arguments.dim(dim), arguments.resolution(resolution),
                 arguments.heads(heads))


@functools.lru_cache(maxsize=256)
def _bind(spec: m.Spec, dim: int, resolution: tuple[int, int], heads_override) -> Plan:
    if dim < 1:
        raise SpecError(f"dim must be a positive integer, got {dim}", path="dim")
    heads = heads_override if heads_override is not None else spec.heads
    if heads == "channels":
        heads = dim
    if not isinstance(heads, int) or heads < 1:
        raise SpecError(f"heads must be a positive integer or 'channels', got {heads!r}",
                        path="heads")
    if dim % heads:
        divisors = [h for h in range(1, min(dim, 64) + 1) if dim % h == 0]
        raise SpecError(f"dim {dim} is not divisible by heads {heads}; heads dividing {dim}: "
                        f"{divisors}{' …' if dim > 64 else ''} (or 'channels')", path="heads")
    H, W = resolution
    grid = resolution
    if spec.pad_to_multiple:
        p = spec.pad_to_multiple
        fits_grid(p, resolution, "pad_to_multiple", "padding the grid to a multiple of")
        grid = (-(-H // p) * p, -(-W // p) * p)
    for i, pe in enumerate(spec.positional):
        fits_grid(pe.size, resolution, f"positional[{i}].size", "a PEG kernel of")
        if pe.size % 2 == 0:
            raise SpecError(f"PEG kernel size must be odd to keep the grid, got {pe.size}",
                            path=f"positional[{i}].size")
    head_counts = _split_heads(spec, heads)
    d = dim // heads
    plans, start = [], 0
    for index, (branch, g) in enumerate(zip(spec.branches, head_counts)):
        path = "" if spec.single_branch else f"branches[{index}]."
        if g == 0:
            continue  # a branch left with no heads (HiLo with alpha = 1) computes nothing
        plans.append(_bind_branch(branch, path, g, d, (start * d, (start + g) * d), grid, dim))
        start += g
    return Plan(spec=spec, dim=dim, resolution=resolution, grid=grid, heads=heads,
                head_dim=d, branches=tuple(plans))


def fits_grid(size: int, grid: tuple[int, int], path: str, what: str) -> None:
    """A size read against the token grid must not exceed 2·max(H, W) − 1: beyond it every
    extra tap or row is padding (and 10^9 would be allocated or unrolled as given)."""
    limit = 2 * max(grid) - 1
    if size > limit:
        raise SpecError(f"{what} {size} at the {grid[0]}x{grid[1]} grid reads nothing but "
                        f"padding beyond {limit} (2·max(H, W) − 1); valid: 1..{limit}",
                        path=path)


def _split_heads(spec: m.Spec, heads: int) -> list[int]:
    counts: list[int | None] = []
    for i, b in enumerate(spec.branches):
        h = b.heads
        if h == "rest":
            counts.append(None)
        elif isinstance(h, int):
            counts.append(h)
        else:
            exact = heads * h.fraction
            counts.append({"floor": math.floor, "ceil": math.ceil, "round": round}[h.rounding](
                exact))
    rest = [i for i, c in enumerate(counts) if c is None]
    fixed = sum(c for c in counts if c is not None)
    if len(rest) > 1:
        raise SpecError(f"only one branch may take the 'rest' of the heads, got "
                        f"{[spec.branches[i].name for i in rest]}",
                        path=f"branches[{rest[1]}].heads")
    if rest:
        if fixed > heads:
            raise SpecError(f"branch heads add up to {fixed}, more than the spec's {heads} "
                            "heads", path="branches")
        counts[rest[0]] = heads - fixed
    elif fixed != heads:
        raise SpecError(f"branch heads {counts} add up to {fixed}, but the spec has {heads} "
                        "heads; make them add up or give one branch heads: rest",
                        path="branches")
    if all(c == 0 for c in counts):
        raise SpecError("every branch has 0 heads", path="branches")
    return counts  # type: ignore[return-value]


def _needs(b: m.Branch) -> frozenset:
    """Which of q, k, v the branch's terms and value bank read."""
    p, needs = b.parameterization, set()
    if isinstance(p, m.Hadamard):
        needs |= {"q", "k"}
    else:
        if {"query_key", "query_rel_pos", "query_mean"} & set(p.terms):
            needs.add("q")
        if ("query_key" in p.terms and b.kernel_bank.keys == "dynamic") \
                or "key_rel_pos" in p.terms:
            needs.add("k")
    if b.kernel_bank.values == "projected":
        needs.add("v")
    if b.kernel_bank.values == "keys":
        needs.add("k")
    return frozenset(needs)


def _bind_branch(b: m.Branch, path: str, heads: int, d: int, channels, grid, dim) -> BranchPlan:
    H, W = grid
    app, par, ker = b.application, b.parameterization, b.kernel
    width = heads * d
    qk_dim = width
    if b.projections.qk_width is not None:
        r = b.projections.qk_width
        qk_dim = -(-(dim // r.den * r.num) // r.multiple_of) * r.multiple_of
    if qk_dim < 1:
        raise SpecError(f"qk_width gives a q/k width of {qk_dim} at dim {dim} "
                        f"({dim} // {b.projections.qk_width.den} * "
                        f"{b.projections.qk_width.num}); use a larger dim or a smaller den",
                        path=f"{path}projections.qk_width")
    needs = _needs(b)
    makes = set(LAYOUT_MAKES[b.projections.layout])
    if b.kernel_bank.values == "input" and "v" in makes:
        raise SpecError("kernel_bank.values is 'input' (values are x itself) but the "
                        f"projection layout '{b.projections.layout}' also makes v; drop v "
                        "from the layout", path=f"{path}projections.layout")
    missing, unused = needs - makes, makes - needs
    if missing or unused:
        valid = [k for k, v in LAYOUT_MAKES.items() if set(v) == needs]
        what = (f"needs {sorted(missing)} which layout '{b.projections.layout}' does not make"
                if missing else f"never reads {sorted(unused)} which layout "
                f"'{b.projections.layout}' makes")
        raise SpecError(f"the branch {what}; valid layouts here: {valid or ['none']}",
                        path=f"{path}projections.layout")
    info: dict = {}
    if b.projections.qk_norm is not None and not {"q", "k"} <= makes:
        raise SpecError(f"qk_norm normalizes projected q and k, but layout "
                        f"'{b.projections.layout}' makes {sorted(makes) or 'nothing'}; "
                        "valid with layouts that make both: qkv, q_kv, qk",
                        path=f"{path}projections.qk_norm")

    if isinstance(par, m.Additive) and "q" in needs and qk_dim % heads:
        raise SpecError(f"q/k width {qk_dim} is not divisible by {heads} heads",
                        path=f"{path}projections.qk_width")

    # -- sizes against the grid: a kernel wider than twice the map reads only padding, and
    # unbounded sizes would allocate (or unroll) without limit
    # (a window that shrinks to the map never reads beyond it: Swin's late stages)
    if isinstance(app, m.Window) and not (app.shrink_to_map and min(grid) <= app.size):
        fits_grid(app.size, grid, f"{path}application.size", "a window of")
    if isinstance(app, m.Sliding):
        fits_grid(app.dilation * (app.size - 1) + 1, grid, f"{path}application.size",
                  f"a neighbourhood of size {app.size} with dilation {app.dilation} spans")
    if isinstance(par, m.Hadamard) and par.dw_kernel:
        fits_grid(par.dw_kernel, grid, f"{path}parameterization.dw_kernel", "a conv kernel of")
    if ker.size > 1:
        fits_grid(ker.size, grid, f"{path}kernel.size", "K×K keys of")
    if b.extras.value_conv is not None:
        fits_grid(b.extras.value_conv.size, grid, f"{path}extras.value_conv.size",
                  "a value conv of")

    # -- application
    if isinstance(app, m.Window):
        ws, shift = app.size, app.shift
        if app.shrink_to_map and min(H, W) <= ws:
            ws, shift = min(H, W), 0
        if shift >= ws:
            raise SpecError(f"window shift {shift} must be smaller than the window {ws}",
                            path=f"{path}application.shift")
        if (H % ws or W % ws) and app.padding == "error":
            raise SpecError(f"window {ws} does not divide the {H}x{W} grid and "
                            "application.padding is 'error'; set it to 'pad_unmasked' or "
                            f"'pad_masked', or use H and W that are multiples of {ws}",
                            path=f"{path}application.padding")
        if app.padding == "pad_masked" and not isinstance(b.normalization, m.Softmax):
            raise SpecError("padding 'pad_masked' excludes padded keys with -inf and needs "
                            f"softmax normalization, got '{b.normalization.kind}'; use "
                            "'pad_unmasked'", path=f"{path}application.padding")
        info.update(window=ws, shift=shift, padded_grid=(-(-H // ws) * ws, -(-W // ws) * ws),
                    table_size=(2 * ws - 1) ** 2)
    elif isinstance(app, m.Sliding):
        k = app.size
        if k % 2 == 0:
            raise SpecError(f"a sliding neighbourhood needs an odd size to be centred, got {k}",
                            path=f"{path}application.size")
        if app.border == "clamp":
            short = min(H, W) // app.dilation
            if short < k:
                raise SpecError(f"neighbourhood {k} with dilation {app.dilation} does not fit "
                                f"the {H}x{W} grid (each dilated sub-grid needs >= {k} rows "
                                f"and columns, smallest has {short}); use a smaller size, "
                                "dilation, or border 'zero_pad'", path=f"{path}application.size")
            info.update(table_size=(2 * k - 1) ** 2)
        else:
            info.update(table_size=k * k)
        info.update(window=k)
    elif isinstance(app, m.Global):
        info.update(table_size=(2 * H - 1) * (2 * W - 1))
    elif isinstance(app, m.Pooled):
        r = app.ratio
        if r > min(H, W):
            raise SpecError(f"pooling ratio {r} is larger than the {H}x{W} grid; valid: 1.."
                            f"{min(H, W)}", path=f"{path}application.ratio")
        if b.projections.layout != "q_kv":
            raise SpecError("pooled keys are projected from the pooled input, so the "
                            f"projection layout must be 'q_kv', got '{b.projections.layout}'",
                            path=f"{path}projections.layout")
        if app.op == "avg" and app.norm != "none":
            raise SpecError("application.norm applies to op 'conv' (strided conv + LN); with "
                            "op 'avg' use norm 'none'", path=f"{path}application.norm")
        info.update(pooled_grid=(H // r, W // r))
    elif isinstance(app, m.Clusters):
        n = H * W
        levels = round(math.log2(n / app.size)) if n >= app.size else -1
        if levels < 0 or app.size * 2 ** levels != n:
            ok = [app.size * 2 ** L for L in range(0, 9)]
            raise SpecError(f"balanced clustering needs N = size·2^L tokens; the {H}x{W} grid "
                            f"has N={n}, cluster size {app.size}; valid N: "
                            f"{ok[:6]} … (or set pad_to_multiple / another cluster size)",
                            path=f"{path}application.size")
        if app.overlap > app.size:
            raise SpecError(f"overlap {app.overlap} exceeds the cluster size {app.size}",
                            path=f"{path}application.overlap")
        info.update(levels=levels)

    # -- parameterization
    uses_tables = False
    if isinstance(par, m.Additive):
        uses_tables = bool({"query_rel_pos", "key_rel_pos", "rel_pos_bias"} & set(par.terms)) \
            or b.kernel_bank.keys == "static"
        if b.kernel_bank.keys == "static":
            if "query_key" not in par.terms:
                raise SpecError("a static key bank is read by the 'query_key' term, which is "
                                "missing", path=f"{path}kernel_bank.keys")
            if "query_rel_pos" in par.terms:
                raise SpecError("with a static key bank 'query_key' already reads the "
                                "offset-indexed key table; drop 'query_rel_pos'",
                                path=f"{path}parameterization.terms")
        if "query_mean" in par.terms and ker.type != "depthwise":
            raise SpecError("'query_mean' makes one weight per channel and needs kernel.type "
                            "'depthwise'", path=f"{path}kernel.type")
    else:  # Hadamard
        if not (isinstance(app, m.Sliding) and app.border == "zero_pad" and app.dilation == 1):
            raise SpecError("hadamard attention makes K² logits per pixel for a zero-padded "
                            "sliding neighbourhood; application must be "
                            "{kind: sliding, border: zero_pad, dilation: 1}",
                            path=f"{path}application")
        if qk_dim % par.group_width:
            raise SpecError(f"q/k width {qk_dim} is not a multiple of group_width "
                            f"{par.group_width}", path=f"{path}parameterization.group_width")
        if (par.dw_kernel or app.size) % 2 == 0:
            raise SpecError("dw_kernel must be odd", path=f"{path}parameterization.dw_kernel")
        if ker.type == "depthwise" and ker.expand is None:
            raise SpecError("hadamard makes one filter per head; a depthwise kernel needs "
                            "kernel.expand: {kind: ghost_head} to make one per channel",
                            path=f"{path}kernel.expand")
    if uses_tables and isinstance(app, (m.Pooled, m.SoftSelect, m.Clusters)):
        raise SpecError(f"relative-position terms and static key banks need offset-indexed "
                        f"keys; application '{app.kind}' has none; valid applications: "
                        "global, window, sliding", path=f"{path}parameterization.terms")

    # -- kernel
    if ker.expand is not None:
        if ker.type != "depthwise":
            raise SpecError("the ghost head expands head filters to channel filters and needs "
                            "kernel.type 'depthwise'", path=f"{path}kernel.type")
        if not (isinstance(app, m.Sliding) and app.border == "zero_pad" and app.dilation == 1):
            raise SpecError("the ghost head's tables are indexed by the K×K offsets of a "
                            "zero-padded sliding neighbourhood; application must be sliding "
                            "with border zero_pad", path=f"{path}kernel.expand")
        if isinstance(par, m.Additive) and set(par.terms) & {"query_mean"}:
            raise SpecError("the ghost head expands per-head filters; 'query_mean' is already "
                            "per channel", path=f"{path}kernel.expand")
    if ker.size > 1:
        if ker.size % 2 == 0:
            raise SpecError(f"kernel size must be odd, got {ker.size}", path=f"{path}kernel.size")
        if not (isinstance(par, m.Additive) and "query_key" in par.terms
                and b.kernel_bank.keys == "dynamic"):
            raise SpecError("K×K keys replace 1×1 query/key vectors by their K×K "
                            "neighbourhoods: they need the 'query_key' term with dynamic keys",
                            path=f"{path}kernel.size")
        if isinstance(app, (m.Pooled, m.SoftSelect)):
            raise SpecError("K×K keys need keys on the token grid; pooled and soft-selected "
                            "keys are not", path=f"{path}kernel.size")
    if ker.type == "depthwise" and isinstance(par, m.Additive) and qk_dim != width \
            and {"query_key", "query_rel_pos", "key_rel_pos"} & set(par.terms):
        raise SpecError(f"a depthwise kernel weighs each value channel by its own q/k channel, "
                        f"so the q/k width ({qk_dim}) must equal the value width ({width})",
                        path=f"{path}projections.qk_width")
    if isinstance(b.normalization, m.FilterNorm) and not isinstance(app, (m.Window, m.Sliding)):
        raise SpecError("filter_norm divides by the kernel size K and needs a window or sliding "
                        f"application, got '{app.kind}'", path=f"{path}normalization")
    if b.extras.value_conv is not None and not isinstance(app, (m.Global, m.Sliding,
                                                                 m.Clusters)):
        raise SpecError("value_conv runs on the value map of the token grid; application "
                        f"'{app.kind}' reshapes it (valid: global, sliding, clusters)",
                        path=f"{path}extras.value_conv")
    if ker.size > 1 and b.kernel_bank.values == "keys":
        raise SpecError("with K×K keys the keys are neighbourhoods and cannot serve as "
                        "values; use values: projected", path=f"{path}kernel_bank.values")
    if b.extras.residual and width != dim:
        raise SpecError(f"residual adds the input to the branch output, which needs the "
                        f"branch to have all {dim} channels, it has {width}",
                        path=f"{path}extras.residual")
    if b.extras.value_conv is not None and b.extras.value_conv.size % 2 == 0:
        raise SpecError("value_conv size must be odd", path=f"{path}extras.value_conv.size")
    return BranchPlan(spec=b, path=path, heads=heads, head_dim=d, qk_dim=qk_dim,
                      channels=channels, grid=grid, needs=needs, **info)
