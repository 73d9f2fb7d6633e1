"""What an application kind is made of, and the helpers its lowering rule uses.

The application axis decides S(i), which keys j each query i sees. Each kind lives in one
module of this package and defines, next to each other:

  * its spec component: a `Component` whose `kind` literal names the kind;
  * its `Geometry`: every size the kind derives from the grid (block shape, padded grid,
    table size, …), made once by `bind` so that nothing after binding reads raw spec
    fields or re-derives a size;
  * an `ApplicationKind` registered with `@register`: its bind-time checks, its
    parameters, its lowering rule (a `Selection`), whether a program can take a symbolic
    resolution (and why not), its docs line, and the facts the other axes check against
    (offset-indexed keys for relative-position terms, keys on the token grid for K×K
    keys, …).

Nothing here imports the rest of attndsl beyond the spec component and the errors: the
spec models build the `application` axis from this registry.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import SpecError


# ====================================================================== geometry
@dataclass(frozen=True, kw_only=True)
class Geometry:
    """The sizes an application derives from the bound grid.

    blocks     (nb, Lq, Lk): query blocks, queries per block and keys per block — the
               "blocked" layout every rule shares (B, G, nb, L, d);
    map_grid   (h, w) of the q/k/v maps the projections make (padded for windows);
    kv_tokens  key/value tokens projected per image (pooled grid, Linformer keys, …);
    offset_span (sy, sx): the (query, key) offsets (dy, dx) the keys can have, |dy| < sy and
               |dx| < sx, in grid steps; (0, 0) when keys have no grid offset. Tables indexed
               by offset have (2sy−1)(2sx−1) rows (sy·sx by |offset|);
    taps       K of a K×K window or neighbourhood (filter_norm divides by it; 0: none);
    conv_taps  (K, dilation) when S(i) is exactly the zero-padded taps of a K×K conv
               centred on i: static filters, ELSA's Hadamard logits and the ghost head
               need that (None otherwise);
    masked     whether the rule adds a logits mask (so forms that drop the logits, such as
               linear attention's associative form, don't apply);
    query_stride s: the queries are the tokens (s·i, s·j), so the output is (H/s)×(W/s)
               (1: every token is a query and the output keeps the grid).
    """

    blocks: tuple[int, int, int]
    map_grid: tuple[int, int]
    kv_tokens: int
    offset_span: tuple[int, int] = (0, 0)
    taps: int = 0
    conv_taps: tuple[int, int] | None = None
    masked: bool = False          # the rule adds a logits mask (shift regions, padding)
    query_stride: int = 1         # queries (and the output) on every s-th row and column:
    #                               the output grid is the input's / s (HaloNet's stride 2)

    def table_size(self, orientation: str = "j_minus_i") -> int:
        """Rows of a table indexed by the offset (signed), or by its absolute value."""
        sy, sx = self.offset_span
        return sy * sx if orientation == "abs" else (2 * sy - 1) * (2 * sx - 1)

    @property
    def queries(self) -> int:
        return self.blocks[0] * self.blocks[1]

    @property
    def keys_per_query(self) -> int:
        return self.blocks[2]

    def replace(self, **changes) -> "Geometry":
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class Where:
    """What a kind's bind-time checks may read: the branch spec, its spec path prefix
    (for error messages), the token grid it sees, and the model width."""

    branch: Any                 # lang.models.Branch
    path: str                   # "" or "branches[i]."
    grid: tuple[int, int]
    dim: int
    heads: int
    head_dim: int = 0           # d: value channels per head

    def field(self, name: str) -> str:
        """The spec path of an application field."""
        return f"{self.path}application{'.' + name if name else ''}"


def fits_grid(size: int, grid: tuple[int, int], path: str, what: str) -> None:
    """A size read against the token grid must not exceed 2·max(H, W) − 1: beyond it every
    extra tap or row is padding (and 10^9 would be allocated or unrolled as given)."""
    limit = 2 * max(grid) - 1
    if size > limit:
        raise SpecError(f"{what} {size} at the {grid[0]}x{grid[1]} grid reads nothing but "
                        f"padding beyond {limit} (2·max(H, W) − 1); valid: 1..{limit}",
                        path=path)


# ====================================================================== kinds
class ApplicationKind:
    """Everything attndsl knows about one application kind (subclass per kind module)."""

    model: ClassVar[type]                 # the spec component; model's `kind` is the name
    doc: ClassVar[str]                    # one line: what S(i) is, and the papers
    # facts the other axes check against
    offsets: ClassVar[bool] = False       # keys sit at grid offsets j − i from the query:
    #                                       relative-position terms and static key banks
    grid_keys: ClassVar[bool] = True      # keys are tokens of the grid (K×K keys unfold them)
    value_map: ClassVar[bool] = False     # values and outputs stay on the input's token grid
    #                                       (value_conv adds a conv of the value map)
    shared_keys: ClassVar[bool] = True    # the queries of a block share one key set, so
    #                                       softmax attention can run in a fused kernel (SDPA)
    static_keys: ClassVar[bool] = True    # S(i) is fixed by the grid, not by the data: the
    #                                       key set can be a BlockMask built once per grid
    tiles: ClassVar[bool] = False         # blocks are rectangular tiles of the map: the rule
    #                                       has to_tiles / from_tiles (a value conv per block)
    prefix_tokens: ClassVar[bool] = False  # class / register tokens before the grid's
    #                                       tokens are attended like any token (ViT, DeiT:
    #                                       every query sees them, they see every key); a
    #                                       kind without a rule for them refuses them
    prefix_queries: ClassVar[bool] = False  # only the prefix (class) tokens query, and the
    #                                       output is theirs: forward_tokens(prefix=…) only

    @property
    def name(self) -> str:
        return self.model.model_fields["kind"].default

    def bind(self, app, where: Where) -> Geometry:
        """Check the kind's fields against the grid and derive its sizes."""
        raise NotImplementedError

    def parameters(self, app, bp, dim: int) -> dict[str, nn.Module]:
        """Parameter modules of the kind, by attribute name on the branch module."""
        return {}

    def rule(self, ctx) -> "Selection":
        """The lowering rule of the kind for one branch."""
        raise NotImplementedError

    def dynamic_resolution(self, bp) -> str | None:
        """Why a program of this kind can't take a symbolic H and W (None: it can)."""
        return None


KINDS: dict[str, ApplicationKind] = {}


def register(cls: type[ApplicationKind]) -> type[ApplicationKind]:
    """Class decorator: make a kind known by the name its spec component's `kind` gives."""
    kind = cls()
    if kind.name in KINDS:
        raise RuntimeError(f"application kind '{kind.name}' is defined twice "
                           f"({type(KINDS[kind.name]).__module__} and {cls.__module__})")
    KINDS[kind.name] = kind
    return cls


def kind_of(app) -> ApplicationKind:
    return KINDS[app.kind]


# ====================================================================== lowering helpers
# (flatten / unflatten with static sizes keep the generated code free of shape queries)
def split_heads(t, heads: int):
    """(B, h, w, heads·c) → (B, heads, h·w, c)."""
    return t.flatten(1, 2).unflatten(-1, (heads, -1)).permute(0, 2, 1, 3)


def merge_heads(t, h: int, w: int):
    """(B, heads, h·w, c) → (B, h, w, heads·c)."""
    return t.permute(0, 2, 1, 3).flatten(2).unflatten(1, (h, w))


def to_nchw(t):
    return t.permute(0, 3, 1, 2)


def to_nhwc(t):
    return t.permute(0, 2, 3, 1)


def offset_index(dy: torch.Tensor, dx: torch.Tensor, span_y: int, span_x: int):
    """Index of offset (dy, dx) in a (2·span_y−1)×(2·span_x−1) table, row-major."""
    return (dy + span_y - 1) * (2 * span_x - 1) + (dx + span_x - 1)


def pair_offsets(ys: torch.Tensor, xs: torch.Tensor):
    """(dy, dx) = j − i of every (query i, key j) pair of the tokens at rows ys, columns xs
    (one block whose queries are its keys), shaped (1, L, L)."""
    return (ys[None, :] - ys[:, None])[None], (xs[None, :] - xs[:, None])[None]


def table_index(dy: torch.Tensor, dx: torch.Tensor, span: tuple[int, int], orientation: str):
    """Row of an offset-indexed table for offsets j − i: row-major over (2sy−1)(2sx−1)
    signed offsets (negated for tables written i − j), or over sy·sx absolute offsets
    (EfficientViT's attention biases: |dy|·sx + |dx|)."""
    sy, sx = span
    if orientation == "abs":
        return dy.abs() * sx + dx.abs()
    if orientation == "i_minus_j":
        dy, dx = -dy, -dx
    return offset_index(dy, dx, sy, sx)


def require_q_kv(where: Where, what: str) -> None:
    """Keys from a reduced copy of the input are projected by the `kv` linear of layout
    q_kv (the pooled kinds)."""
    layout = where.branch.projections.layout
    if layout != "q_kv":
        raise SpecError(f"{what} keys are projected from the pooled input, so the projection "
                        f"layout must be 'q_kv', got '{layout}'",
                        path=f"{where.path}projections.layout")


def norm_and_activation(pooled, app, params):
    """The LayerNorm and GELU that follow a key/value reduction (PVT, Shunted): a
    channels-last (B, h, w, C) map through `params.pool.norm` and the activation."""
    if app.norm == "layernorm":
        pooled = params.pool.norm(pooled)
    return F.gelu(pooled) if app.activation == "gelu" else pooled


class PooledKeysSelection:
    """Mixin of the pooled kinds: one block of every query against the pooled keys (every
    size but the key count read from the context's grid)."""

    @property
    def block_shape(self):
        return 1, self.H * self.W, self.geo.kv_tokens


def table_parameter(*shape) -> nn.Parameter:
    """A learned table, initialised as timm initialises relative-position tables."""
    return nn.Parameter(nn.init.trunc_normal_(torch.empty(*shape), std=0.02))


class Selection:
    """Base of the lowering rules of the application axis: which keys each query sees.

    inputs(x)        → (x for queries, x for keys/values), both (B, h, w, C)
    block_q/k/v(t)   → maps (B, h, w, G·c) to blocks (B, G, nb, L, c)
    unblock(y)       → output blocks back to (B, H, W, G·d)
    offsets()        (dy, dx) = j − i of every (query, key) pair, long tensors broadcasting
                     as (nb, Lq, Lk); None when the application has no offsets
    rel_index()      the rows of the branch's offset-indexed tables for those pairs
    mask()           additive logits mask broadcasting as (nb, Lq, Lk), or None
    Static sizes come from the plan's geometry; H, W from the context's grid (the plan's,
    or the input's sizes when the rules run for a dynamic-resolution export).
    """

    # whether aggregation weighs strided window views of the value map (sliding only)
    weighs_windows = False

    def __init__(self, ctx):
        self.ctx, self.bp = ctx, ctx.bp
        self.app = ctx.bp.spec.application
        self.geo: Geometry = ctx.bp.geometry
        self.H, self.W = ctx.grid

    @property
    def orientation(self) -> str:
        return getattr(self.bp.spec.parameterization, "rel_pos_orientation", "j_minus_i")

    def inputs(self, x):
        return x, x

    @property
    def map_grid(self) -> tuple[int, int]:
        """(h, w) of the q/k maps that `inputs` leads to."""
        return self.H, self.W

    def block_q(self, t):
        return split_heads(t, self.bp.heads).unsqueeze(2)

    def block_k(self, t):
        return self.block_q(t)

    def block_v(self, t):
        return self.block_k(t)

    def block_kv(self, k, v):
        """Keys and values blocked together: kinds whose blocking copies (halo windows)
        do it once for both; the default blocks them one by one."""
        return self.block_k(k), self.block_v(v)

    def unblock(self, y):
        return merge_heads(y.squeeze(2), self.H, self.W)

    @property
    def key_count(self) -> int:
        """|S(i)|, static."""
        return self.geo.blocks[2]

    @property
    def block_shape(self) -> tuple[int, int, int]:
        return self.geo.blocks

    @property
    def key_grid(self) -> tuple[int, int] | None:
        """(kh, kw) when every block's keys are a kh × kw grid in row-major order (a
        separable relative-position term splits over it), else None."""
        return None

    @property
    def one_query_per_block(self) -> bool:
        """Blocks of one query each (sliding neighbourhoods): the logits and the aggregation
        are broadcast multiply-and-sums, which inductor fuses with the key gather."""
        return self.block_shape[1] == 1

    def offsets(self):
        return None

    def to_tiles(self, t):
        """(B, H, W, c) → (B·nb, th, tw, c): each block as its own image (kinds with
        `tiles`)."""
        raise NotImplementedError

    def from_tiles(self, t):
        """The inverse of to_tiles."""
        raise NotImplementedError

    def rel_index(self):
        offsets = self.offsets()
        if offsets is None:
            return None
        index = table_index(*offsets, self.geo.offset_span, self.orientation)
        return self.ctx.constant("rel_index", index)

    def mask(self):
        return None
