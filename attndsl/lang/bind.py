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
from ..applications import ApplicationKind, Geometry, Where, fits_grid, kind_of
from ..normalizations import NormWhere, normalization_of
from ..terms import TermWhere, term_of
from . import arguments
from . import models as m


@dataclass(frozen=True)
class BranchPlan:
    """One branch with concrete sizes. `channels` is the branch's slice of the model's
    channels (where its output goes, and what `values: input` reads). Every size the
    application derives from the grid is in `geometry` (made by the kind's bind)."""

    spec: m.Branch
    path: str                  # spec path of the branch, for error messages
    heads: int
    head_dim: int              # d: value channels per head
    qk_dim: int                # total width of q (and k)
    channels: tuple[int, int]
    grid: tuple[int, int]      # the token grid the branch sees (after spec-level padding)
    reads: int                 # channels of the branch's input (the model's, or its slice)
    geometry: Geometry
    needs: frozenset = field(default_factory=frozenset)  # subset of {"q", "k", "v"}
    v_dim: int = 0             # total width of v when projections.v_width sets it (0: width)

    def __getattr__(self, name):
        # the kind's own sizes (a window's shift and padded grid, a cluster tree's levels …)
        geometry = self.__dict__.get("geometry")   # absent while unpickling
        if geometry is not None and not name.startswith("__") and hasattr(geometry, name):
            return getattr(geometry, name)
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def kind(self) -> ApplicationKind:
        return kind_of(self.spec.application)

    @property
    def width(self) -> int:
        """The branch's channels: its share of the model's, where its output goes."""
        return self.heads * self.head_dim

    @property
    def value_width(self) -> int:
        """Total width of v and of the attention's output before the projections."""
        return self.v_dim or self.width

    @property
    def value_head_dim(self) -> int:
        return self.value_width // self.heads

    @property
    def output_width(self) -> int:
        """Width of the branch's output: its channels after its own projection, else the
        values'."""
        return self.width if self.spec.projections.out else self.value_width

    @property
    def depthwise(self) -> bool:
        return self.spec.kernel.type == "depthwise"

    @property
    def qk_head_dim(self) -> int:
        return self.qk_dim // self.heads

    @property
    def kv_tokens(self) -> int:
        return self.geometry.kv_tokens

    @property
    def table_size(self) -> int:
        """Rows of the branch's offset-indexed tables (rel-pos terms, static key banks)."""
        return self.geometry.table_size(
            getattr(self.spec.parameterization, "rel_pos_orientation", "j_minus_i"))

    @property
    def window(self) -> int:
        """K of the K×K window or neighbourhood (0 when keys are not one)."""
        return self.geometry.taps

    def scale(self) -> float:
        """head_dim^-0.5 means the q/k width per head, except for Hadamard attention, whose
        logits are not per-head dot products: there ELSA uses (C_v / G)^-0.5."""
        par = self.spec.parameterization
        if par.scale != "head_dim^-0.5":
            return float(par.scale)
        if getattr(par, "similarity", "dot") != "dot":
            return 1.0          # cosine logits carry their own learned scale
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
    # (P, H, W) when the grid is one row of P prefix tokens then an H×W grid row-major
    # (forward_tokens with prefix): rotary positions are read from it (None: the grid's own)
    tokens: tuple[int, int, int] | None = None

    @property
    def rotary(self) -> bool:
        """Some branch rotates q and k by the tokens' grid positions (projections.rope)."""
        return any(bp.spec.projections.rope is not None for bp in self.branches)

    @property
    def query_stride(self) -> int:
        """s when the queries are every s-th token (the output (H/s)×(W/s)); else 1."""
        return max((bp.geometry.query_stride for bp in self.branches), default=1)


# which fused input projections produce q, k, v
LAYOUT_MAKES = {"qkv": "qkv", "q_kv": "qkv", "qk": "qk", "qv": "qv", "q": "q",
                "v": "v", "none": ""}


def bind(spec: m.Spec, dim: int, resolution, heads: int | None = None) -> Plan:
    """Resolve a spec at a model width and a token grid (H, W). An error names the field,
    and its file and YAML line when the spec was loaded from YAML."""
    try:
        return _bind(spec, arguments.dim(dim), arguments.resolution(resolution),
                     arguments.heads(heads))
    except SpecError as exc:
        from .io import locate
        located = locate(spec, exc)
        if located is exc:
            raise
        raise located from None


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
    sequence = spec.merge.kind == "sequence"
    head_counts = [heads] * len(spec.branches) if sequence else _split_heads(spec, heads)
    d = dim // heads
    plans, start = [], 0
    for index, (branch, g) in enumerate(zip(spec.branches, head_counts)):
        path = "" if spec.single_branch else f"branches[{index}]."
        if sequence and branch.heads != "rest":
            raise SpecError("in a sequence every branch owns all the heads (each reads the "
                            "previous one's output); leave out its heads",
                            path=f"{path}heads")
        if g == 0:
            continue  # a branch left with no heads (HiLo with alpha = 1) computes nothing
        channels = (0, dim) if sequence else (start * d, (start + g) * d)
        reads = g * d if spec.merge.kind == "cascade" else dim
        plans.append(_bind_branch(branch, path, g, d, channels, grid, dim, reads))
        start += g
    _check_merge(spec, plans, dim)
    _check_query_stride(spec, plans)
    return Plan(spec=spec, dim=dim, resolution=resolution, grid=grid, heads=heads,
                head_dim=d, branches=tuple(plans))


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
        for t in p.terms:
            needs |= term_of(t).reads(t, b)
    if b.kernel_bank.values == "projected":
        needs.add("v")
    if b.kernel_bank.values == "keys":
        needs.add("k")
    return frozenset(needs)


def _check_rope(b: m.Branch, path: str, kind, qk_head_dim: int) -> None:
    """Rotary embeddings rotate projected q and k by their tokens' grid positions, for the
    dot product of the query_key term."""
    where = f"{path}projections.rope"
    par = b.parameterization
    if not isinstance(par, m.Additive) or "query_key" not in par.term_kinds \
            or b.kernel_bank.keys != "dynamic":
        raise SpecError("rope rotates q and k for the q·k of the 'query_key' term with dynamic "
                        "keys, which this branch lacks", path=where)
    if qk_head_dim % 4:
        raise SpecError(f"2-D rope rotates pairs of channels, half of them by the row and half "
                        f"by the column, so a head's q/k width must be a multiple of 4; it is "
                        f"{qk_head_dim}", path=where)
    if not kind.grid_keys or kind.prefix_queries:
        raise SpecError(f"rope reads the grid positions of q's and k's tokens; application "
                        f"'{kind.name}' makes its {'queries' if kind.prefix_queries else 'keys'}"
                        f" elsewhere (valid applications: {kinds_with('grid_keys')})",
                        path=where)


def _check_query_stride(spec: m.Spec, plans: list) -> None:
    """A branch whose output is smaller than its input (HaloNet's stride-2 queries, class
    attention's class tokens): whatever adds a map of the input's grid to its output can't,
    nor can branches of other grids be concatenated."""
    bp = next((bp for bp in plans if bp.geometry.query_stride > 1 or bp.kind.prefix_queries),
              None)
    if bp is None:
        return
    if bp.kind.prefix_queries:
        s = None
        where = f"{bp.path}application"
        output = "the class tokens' alone"
        use = "or use another application"
    else:
        s = bp.geometry.query_stride
        where = f"{bp.path}application.stride"
        output = f"(H/{s})×(W/{s})"
        use = "or use stride 1"
    if len(spec.branches) > 1:
        raise SpecError(f"{'class attention' if s is None else f'a stride of {s}'} makes this "
                        f"branch's output {output}; such a spec has that one branch (branches "
                        "of different grids can't be merged)", path=where)
    b = bp.spec
    for refused, what in ((b.extras.residual, "extras.residual (adds the input)"),
                          (b.extras.value_conv is not None,
                           "extras.value_conv (adds a conv of the value map)"),
                          (b.kernel.size > 1, "kernel.size > 1 (K×K keys of each query)"),
                          (bool(spec.pad_to_multiple), "pad_to_multiple (crops to the input)"),
                          (bool(spec.positional) and s is None,
                           "a positional encoding (convolves the grid, not the tokens' row)")):
        if refused:
            raise SpecError(f"{'class attention' if s is None else f'a stride of {s}'} makes "
                            f"the output {output}, which {what} needs at the input's grid: "
                            f"leave it out, {use}", path=where)


def _check_merge(spec: m.Spec, plans: list, dim: int) -> None:
    merge = spec.merge
    if merge.kind == "sequence":
        for bp in plans:
            if not bp.spec.projections.out:
                raise SpecError("in a sequence each branch's output is the next one's input "
                                "and needs its own output projection (projections.out: true)",
                                path=f"{bp.path}projections.out")
    if merge.kind == "cascade":
        for bp in plans:
            if bp.spec.kernel_bank.values == "input":
                raise SpecError("kernel_bank.values 'input' reads the model's channels; in a "
                                "cascade a branch reads only its own slice (use projected "
                                "values)", path=f"{bp.path}kernel_bank.values")
        widths = {bp.width for bp in plans}
        if len(widths) > 1:
            raise SpecError(f"a cascade adds each branch's output to the next branch's input "
                            f"slice, so the branches need equal widths; got "
                            f"{[bp.width for bp in plans]} (give them equal heads)",
                            path="branches")
    # values of another width (v_width) leave a branch at their width unless its own
    # projection brings them back; the merged output must be the model's width, or merge.out
    # must project it there
    for bp in plans:
        if bp.output_width != bp.width and merge.kind in ("sequence", "cascade"):
            raise SpecError(f"v_width makes this branch's output {bp.output_width} wide, and "
                            f"a {merge.kind} feeds it to the next branch at {bp.width}: give "
                            "the branch its projection (projections.out: true)",
                            path=f"{bp.path}projections.out")
    merged = sum(bp.output_width for bp in plans) if merge.kind != "sequence" else dim
    if merged != dim and not merge.out and any(bp.v_dim for bp in plans):
        raise SpecError(f"v_width makes the merged output {merged} wide, not the model's "
                        f"{dim}: project it back (projections.out: true, or merge.out: true)",
                        path="merge.out")


def _bind_branch(b: m.Branch, path: str, heads: int, d: int, channels, grid, dim,
                 reads: int | None = None) -> BranchPlan:
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
    v_dim = _value_width(b, path, heads, dim)
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
    if b.projections.qk_norm is not None and not {"q", "k"} <= makes:
        raise SpecError(f"qk_norm normalizes projected q and k, but layout "
                        f"'{b.projections.layout}' makes {sorted(makes) or 'nothing'}; "
                        "valid with layouts that make both: qkv, q_kv, qk",
                        path=f"{path}projections.qk_norm")
    if b.projections.bias == "no_key" and b.projections.layout != "qkv":
        raise SpecError("bias 'no_key' gives q and v a bias and k none inside one fused qkv "
                        f"projection; layout '{b.projections.layout}' is not qkv (use bias: "
                        "true or false there)", path=f"{path}projections.bias")
    if isinstance(par, m.Additive) and par.similarity != "dot" and not (
            "query_key" in par.term_kinds and b.kernel_bank.keys == "dynamic"):
        raise SpecError("cosine similarity normalizes q and k for the 'query_key' term with "
                        "dynamic keys, which this branch lacks",
                        path=f"{path}parameterization.similarity")

    if isinstance(par, m.Additive) and "q" in needs and qk_dim % heads:
        raise SpecError(f"q/k width {qk_dim} is not divisible by {heads} heads",
                        path=f"{path}projections.qk_width")

    # -- the application kind: its own checks and every size it derives from the grid
    kind = kind_of(app)
    geo = kind.bind(app, Where(branch=b, path=path, grid=grid, dim=dim, heads=heads,
                               head_dim=d))
    if b.projections.rope is not None:
        _check_rope(b, path, kind, qk_dim // heads)

    # -- other sizes against the grid: a kernel wider than twice the map reads only
    # padding, and unbounded sizes would allocate (or unroll) without limit
    if isinstance(par, m.Hadamard) and par.dw_kernel:
        fits_grid(par.dw_kernel, grid, f"{path}parameterization.dw_kernel", "a conv kernel of")
    if ker.size > 1:
        fits_grid(ker.size, grid, f"{path}kernel.size", "K×K keys of")
    if b.extras.value_conv is not None:
        fits_grid(b.extras.value_conv.size, grid, f"{path}extras.value_conv.size",
                  "a value conv of")

    # -- parameterization
    uses_tables = False
    if isinstance(par, m.Additive):
        uses_tables = any(term_of(t).offsets for t in par.terms) \
            or b.kernel_bank.keys == "static"
        if b.kernel_bank.keys == "static" and "query_key" not in par.term_kinds:
            raise SpecError("a static key bank is read by the 'query_key' term, which is "
                            "missing", path=f"{path}kernel_bank.keys")
        if uses_tables and not kind.offsets:
            raise SpecError(f"relative-position terms and static key banks need "
                            f"offset-indexed keys; application '{app.kind}' has none; valid "
                            f"applications: {kinds_with('offsets')}",
                            path=f"{path}parameterization.terms")
        for t in par.terms:      # each term's own rules
            if term_of(t).signed and par.rel_pos_orientation == "abs":
                raise SpecError(f"'{t.kind}' reads signed offsets; rel_pos_orientation 'abs' "
                                "has none (use j_minus_i or i_minus_j)",
                                path=f"{path}parameterization.rel_pos_orientation")
            term_of(t).check(TermWhere(term=t, branch=b, path=f"{path}parameterization",
                                       kind=kind, geometry=geo, heads=heads, qk_dim=qk_dim,
                                       width=width))
    else:  # Hadamard
        if geo.conv_taps is None or geo.conv_taps[1] != 1:
            raise SpecError("hadamard attention makes K² logits per pixel for a zero-padded "
                            "sliding neighbourhood; application must be "
                            "{kind: sliding, border: zero_pad, dilation: 1}",
                            path=f"{path}application")
        if qk_dim % par.group_width:
            raise SpecError(f"q/k width {qk_dim} is not a multiple of group_width "
                            f"{par.group_width}", path=f"{path}parameterization.group_width")
        if (par.dw_kernel or geo.taps) % 2 == 0:
            raise SpecError("dw_kernel must be odd", path=f"{path}parameterization.dw_kernel")
        if ker.type == "depthwise" and ker.expand is None:
            raise SpecError("hadamard makes one filter per head; a depthwise kernel needs "
                            "kernel.expand: {kind: ghost_head} to make one per channel",
                            path=f"{path}kernel.expand")

    # -- kernel
    if ker.expand is not None:
        if ker.type != "depthwise":
            raise SpecError("the ghost head expands head filters to channel filters and needs "
                            "kernel.type 'depthwise'", path=f"{path}kernel.type")
        if geo.conv_taps is None or geo.conv_taps[1] != 1:
            raise SpecError("the ghost head's tables are indexed by the K×K offsets of a "
                            "zero-padded sliding neighbourhood; application must be sliding "
                            "with border zero_pad", path=f"{path}kernel.expand")
        if isinstance(par, m.Additive) and "query_mean" in par.term_kinds:
            raise SpecError("the ghost head expands per-head filters; 'query_mean' is already "
                            "per channel", path=f"{path}kernel.expand")
    if ker.size > 1:
        if ker.size % 2 == 0:
            raise SpecError(f"kernel size must be odd, got {ker.size}", path=f"{path}kernel.size")
        if not (isinstance(par, m.Additive) and "query_key" in par.term_kinds
                and b.kernel_bank.keys == "dynamic"):
            raise SpecError("K×K keys replace 1×1 query/key vectors by their K×K "
                            "neighbourhoods: they need the 'query_key' term with dynamic keys",
                            path=f"{path}kernel.size")
        if not kind.grid_keys:
            raise SpecError(f"K×K keys need keys on the token grid; {app.kind} keys are not "
                            f"(valid applications: {kinds_with('grid_keys')})",
                            path=f"{path}kernel.size")
    if ker.type == "depthwise" and isinstance(par, m.Additive) and qk_dim != width \
            and any(term_of(t).reads(t, b) for t in par.terms):
        raise SpecError(f"a depthwise kernel weighs each value channel by its own q/k channel, "
                        f"so the q/k width ({qk_dim}) must equal the value width ({width})",
                        path=f"{path}projections.qk_width")
    normalization_of(b.normalization).check(NormWhere(   # the normalization's own rules
        normalization=b.normalization, branch=b, path=f"{path}normalization", kind=kind,
        geometry=geo))
    if b.extras.value_conv is not None and b.extras.value_conv.scope == "block" \
            and not kind.tiles:
        raise SpecError("a value conv with scope 'block' convolves each query block as an "
                        f"image; application '{app.kind}' has no rectangular blocks (valid: "
                        f"{kinds_with('tiles')})", path=f"{path}extras.value_conv.scope")
    if b.extras.value_conv is not None and b.extras.value_conv.scope == "map" \
            and not kind.value_map:
        raise SpecError("value_conv runs on the value map of the token grid; application "
                        f"'{app.kind}' reshapes it (valid: {kinds_with('value_map')})",
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
    if b.projections.q_conv is not None:
        fits_grid(b.projections.q_conv.size, grid, f"{path}projections.q_conv.size",
                  "a q conv of")
        if "q" not in needs:
            raise SpecError("q_conv convolves the projected q map, which this branch does "
                            "not make", path=f"{path}projections.q_conv")
        if b.projections.q_conv.size % 2 == 0:
            raise SpecError("q_conv size must be odd to keep the grid",
                            path=f"{path}projections.q_conv.size")
        if b.projections.q_conv.scope == "block" and not kind.tiles:
            raise SpecError("a q conv with scope 'block' convolves each query block as an "
                            f"image; application '{app.kind}' has no rectangular blocks "
                            f"(valid: {kinds_with('tiles')})",
                            path=f"{path}projections.q_conv.scope")
    return BranchPlan(spec=b, path=path, heads=heads, head_dim=d, qk_dim=qk_dim,
                      channels=channels, grid=grid, reads=reads or dim, geometry=geo,
                      needs=needs, v_dim=v_dim)


def _value_width(b: m.Branch, path: str, heads: int, dim: int) -> int:
    """The total value width projections.v_width sets (0 without it), and what it refuses:
    whatever reads the values at the branch's channel width."""
    r = b.projections.v_width
    if r is None:
        return 0
    where = f"{path}projections.v_width"
    v_dim = -(-(dim // r.den * r.num) // r.multiple_of) * r.multiple_of
    if v_dim < heads or v_dim % heads:
        raise SpecError(f"v_width gives a value width of {v_dim} at dim {dim} ({dim} // "
                        f"{r.den} * {r.num}), which {heads} heads can't share; valid: a "
                        f"positive multiple of {heads}", path=where)
    par = b.parameterization
    for refused, what in (
            (not isinstance(par, m.Additive) or b.kernel_bank.keys != "dynamic"
             or "query_key" not in par.term_kinds,
             "a parameterization other than the query_key term with dynamic keys"),
            (b.kernel_bank.values != "projected", "kernel_bank.values other than 'projected'"),
            (b.kernel.type == "depthwise", "kernel.type depthwise (a weight per channel)"),
            (b.kernel.expand is not None, "kernel.expand (ghost head: per channel)"),
            (b.extras.value_conv is not None, "extras.value_conv (at the branch's width)"),
            (b.extras.output_bias, "extras.output_bias (at the branch's width)")):
        if refused:
            raise SpecError(f"v_width sets the values' width apart from the branch's "
                            f"channels, which {what} reads: leave one of them out",
                            path=where)
    return v_dim


def kinds_with(fact: str) -> str:
    """The application kinds with a fact (offsets, grid_keys, value_map), for messages."""
    from ..applications import KINDS
    return ", ".join(name for name, kind in KINDS.items() if getattr(kind, fact))
