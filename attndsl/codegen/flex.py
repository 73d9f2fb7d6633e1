"""FlexAttention for softmax attention over a static key set: the branch's blocks, seen
as a relation between the query tokens and the key tokens of the map.

Every application kind lowers to blocks (B, G, nb, L, d) that its Selection makes by
rearranging the q/k/v maps (windows, shifted windows, stripes, grid cells, axial lines,
clamped neighbourhoods …). For FlexAttention the same key sets are a relation on the
map's tokens: query token t sees key token u iff some block holds t as a query and u as
an unmasked key. `token_relation` finds that relation by *probing* the Selection with a
map of token ids instead of features — the rearrangement is the kind's own code, so the
relation is exact for every kind without a per-kind rule — and keeps:

  allowed   (Nq, Nk) bool: the mask_mod, and the BlockMask built from it once per grid;
  position  (Nq, Nk) int32: where the pair sits in the flattened (nb, Lq, Lk) blocks, so
            the score_mod reads the bias the lowering computed for the blocks (rel-pos
            table gathers, CPB / DPB tables, per-sample relative logits) unchanged;
  query_blocks (nb, Lq): the query token of each block slot, to put the token-space
            output back into the blocked layout the rest of the lowering continues from.

Zero keys. A zero-padded neighbourhood (unfold semantics) and HaloNet's halo read keys
and values off the map's edge that are zero after the projection, and they take part in
the softmax: logit 0·q + bias, value 0. No token carries them, but their sum is one term:
Σ_j exp(b_ij) = exp(logsumexp_j b_ij). So the relation gets one extra, virtual key — a
zero vector appended to k and v — that every query with padded keys sees, with the
logsumexp of its padded keys' bias as its score (`pad_slots` lists where those biases
sit); exact, not an approximation.

Token order. FlexAttention's work is the (BLOCK_SIZE queries × BLOCK_SIZE keys) tiles its
BlockMask visits. In row-major order a CSWin stripe or a MaxViT grid cell is spread over
every tile (at 56×56: 100% and 65% of the tiles visited); in the order of the kind's own
blocks (each window, stripe or cell contiguous) 11–12%. The relation keeps whichever
order visits fewer tiles — queries and keys permuted alike, `order` being the row-major
token at each position — and the pass gathers q, k, v into it; the output comes back in
the blocked layout through `query_blocks`, which then indexes the permuted positions.

Relations that tokens cannot express are refused with the reason: data-dependent key
sets (clusters), keys from a reduced input (pooled kinds), a key twice in one block.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from torch.nn.attention.flex_attention import BlockMask, create_block_mask
from torch.nn.attention.flex_attention import flex_attention as torch_flex_attention

from ..applications.base import split_heads
from ..lang.bind import BranchPlan
from .engines import BranchChoice, Engines
from .rules import Ctx

# masked logits at or below this are Swin's −100 (or −inf): e^−100 ≈ 4e−44 of a weight,
# below float64's resolution, so leaving the pair out of the key set changes nothing
MASKED_LOGIT = -100.0
# FlexAttention's tile: the BlockMask marks which (128 queries × 128 keys) tiles to visit
BLOCK_SIZE = 128
# what runs FlexAttention: torch's (a test swaps it to compare with the dense definition)
KERNEL = torch_flex_attention


@dataclass(frozen=True, eq=False)
class TokenRelation:
    """The key set of one branch on its map's tokens (module docstring)."""

    allowed: torch.Tensor        # (Nq, Nk) bool; (Nq, Nk + 1) with the virtual zero key
    position: torch.Tensor       # the same shape, int32: the pair's block slot (0 if none)
    query_blocks: torch.Tensor   # (nb, Lq) long
    # zero keys (module docstring): per query, the block slots of its padded keys (Nq, P)
    # and which of the P are real; None when no query reads padding
    pad_slots: torch.Tensor | None = None
    pad_valid: torch.Tensor | None = None
    # the token order (module docstring): None when row-major visits the fewest tiles
    order: torch.Tensor | None = None
    tiles_visited: tuple[int, int] = (0, 0)     # (visited, all) BlockMask tiles

    @property
    def density(self) -> float:
        return float(self.allowed.float().mean())

    @property
    def complete(self) -> bool:
        """Every query sees every key: no mask at all."""
        return bool(self.allowed.all())


def _probe_ctx(bp: BranchPlan):
    """A rule context that runs the Selection eagerly on the CPU: constants come back as
    tensors, and no engine picks a compiled-only form."""
    engines = Engines(compiled=False, branches=(BranchChoice(bp.name, "eager", "probe"),))
    return Ctx(root=None, bp=bp, params=None, dtype=torch.float64,
               device=torch.device("cpu"), training=False, tracer=None, engines=engines)


@functools.lru_cache(maxsize=64)
def _relation(bp: BranchPlan) -> TokenRelation | str:
    kind = bp.kind
    if not kind.static_keys:
        return (f"{kind.name} keys depend on the data (assigned per input): no key set "
                "fixed by the grid to build a BlockMask from")
    if not kind.grid_keys:
        return (f"{kind.name} keys are projected from a reduced input, not the map's "
                "tokens: there is no sparsity to skip (SDPA serves these)")
    try:
        sel = kind.rule(_probe_ctx(bp))
        h, w = sel.map_grid
        G = bp.heads
        ids = torch.arange(1, h * w + 1, dtype=torch.float64).view(1, h, w, 1)
        ids = ids.expand(1, h, w, G).contiguous()
        qb = sel.block_q(ids)[0, 0, ..., 0].round().long()       # (nb, Lq)
        kb = sel.block_k(ids)[0, 0, ..., 0].round().long()       # (nb, Lk)
        vb = sel.block_v(ids)[0, 0, ..., 0].round().long()
        mask = sel.mask()
    except Exception as exc:          # a kind whose rule needs more than its plan
        return f"the {kind.name} rule could not be probed for its key set ({exc})"
    nb, Lq, Lk = qb.shape[0], qb.shape[1], kb.shape[1]
    n = h * w
    if kb.shape[0] != nb or not torch.equal(kb, vb):
        return f"{kind.name} keys and values come from different positions"
    if not torch.equal(qb.flatten().sort().values, torch.arange(1, n + 1)):
        return f"{kind.name} queries are not each in exactly one block"
    keep = torch.ones(nb, Lq, Lk, dtype=torch.bool)
    if mask is not None:
        keep = (mask.to(torch.float64) > MASKED_LOGIT).expand(nb, Lq, Lk).clone()
    q_tok = (qb - 1)[:, :, None].expand(nb, Lq, Lk)
    k_tok = (kb - 1)[:, None, :].expand(nb, Lq, Lk)
    slot = torch.arange(nb * Lq * Lk).view(nb, Lq, Lk)
    padded = keep & (k_tok < 0)
    keep = keep & (k_tok >= 0)
    pad = _pad_slots(q_tok[padded], slot[padded], n) if bool(padded.any()) else None
    q_tok, k_tok, slot = q_tok[keep], k_tok[keep], slot[keep]
    allowed = torch.zeros(n, n + (pad is not None), dtype=torch.bool)
    allowed[q_tok, k_tok] = True
    if int(allowed.sum()) != q_tok.numel():
        return f"{kind.name} blocks hold a key twice for one query"
    position = torch.zeros(allowed.shape, dtype=torch.int32)
    position[q_tok, k_tok] = slot.to(torch.int32)
    if pad is not None:
        allowed[:, n] = pad[1].any(1)           # the virtual zero key, where padding is read
    query_blocks = qb - 1
    tiles = tiles_visited(allowed)
    block_order = query_blocks.flatten()
    permuted = _permuted(allowed, block_order)
    permuted_tiles = tiles_visited(permuted)
    order = None
    if permuted_tiles[0] < tiles[0]:
        order, tiles = block_order, permuted_tiles
        position = _permuted(position, order)
        allowed = permuted
        query_blocks = torch.argsort(order)[query_blocks]
        if pad is not None:
            pad = (pad[0][order], pad[1][order])
    return TokenRelation(allowed=allowed, position=position, query_blocks=query_blocks,
                         pad_slots=None if pad is None else pad[0],
                         pad_valid=None if pad is None else pad[1], order=order,
                         tiles_visited=tiles)


def _permuted(t: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """Rows and key columns of an (Nq, Nk[+1]) table in `order` (a virtual key stays last)."""
    columns = torch.cat([order, torch.arange(order.numel(), t.shape[1])])
    return t[order][:, columns]


def tiles_visited(allowed: torch.Tensor) -> tuple[int, int]:
    """(tiles with an allowed pair, all tiles) of the BLOCK_SIZE × BLOCK_SIZE tiling."""
    T = BLOCK_SIZE
    nq, nk = allowed.shape
    a = torch.nn.functional.pad(allowed, (0, (-nk) % T, 0, (-nq) % T))
    tiles = a.view(a.shape[0] // T, T, a.shape[1] // T, T).any(3).any(1)
    return int(tiles.sum()), tiles.numel()


def _pad_slots(q_tok: torch.Tensor, slot: torch.Tensor, n: int):
    """Per query token, the block slots of its padded keys: (n, P) slots, (n, P) valid."""
    counts = torch.bincount(q_tok, minlength=n)
    width = int(counts.max())
    order = torch.argsort(q_tok, stable=True)
    q_sorted, s_sorted = q_tok[order], slot[order]
    starts = torch.cumsum(counts, 0) - counts
    column = torch.arange(q_sorted.numel()) - starts[q_sorted]
    slots = torch.zeros(n, width, dtype=torch.long)
    valid = torch.zeros(n, width, dtype=torch.bool)
    slots[q_sorted, column] = s_sorted
    valid[q_sorted, column] = True
    return slots, valid


def token_relation(bp: BranchPlan) -> TokenRelation | str:
    """The branch's key set on the map's tokens, or why FlexAttention can't take it."""
    try:
        return _relation(bp)
    except TypeError:                 # an unhashable plan: probe without the cache
        return _relation.__wrapped__(bp)


def block_mask_tensors(relation: TokenRelation, device) -> tuple[torch.Tensor, ...]:
    """The BlockMask of the relation as its four kv-side tensors (registered as constants
    of the graph, so the mask is built once per grid and travels with the program)."""
    allowed = relation.allowed

    def mask_mod(b, h, q_idx, kv_idx):
        return allowed[q_idx, kv_idx]
    n_q, n_k = allowed.shape
    bm = create_block_mask(mask_mod, None, None, n_q, n_k, device="cpu",
                           BLOCK_SIZE=BLOCK_SIZE)
    return tuple(t.to(device) for t in (bm.kv_num_blocks, bm.kv_indices,
                                        bm.full_kv_num_blocks, bm.full_kv_indices))


def dense_flex_attention(q, k, v, score_mod=None, block_mask=None, scale=None):
    """FlexAttention's definition written out densely: scale·q·kᵀ, the score_mod at every
    (b, h, q, kv), −inf where the mask_mod is false, softmax, @ v. Differentiable, and
    O(B·G·Nq·Nk) in memory: what runs where torch's FlexAttention has no backward."""
    B, G, N, _ = q.shape
    M = k.shape[2]
    b = torch.arange(B, device=q.device).view(B, 1, 1, 1)
    h = torch.arange(G, device=q.device).view(1, G, 1, 1)
    qi = torch.arange(N, device=q.device).view(1, 1, N, 1)
    ki = torch.arange(M, device=q.device).view(1, 1, 1, M)
    s = (q @ k.transpose(-1, -2)) * scale
    if score_mod is not None:
        s = score_mod(s, b, h, qi, ki)
    if block_mask is not None:
        s = s.masked_fill(~block_mask.mask_mod(b, h, qi, ki), float("-inf"))
    return torch.softmax(s, dim=-1) @ v


def _kernel(q, k, v, bias, dense: bool):
    """torch's FlexAttention where inductor compiles the graph (it fuses it into one
    kernel); its dense definition in an eager graph on the CPU (`dense`, decided at
    lowering: torch's eager FlexAttention is an unfused reference with a warning and no CPU
    backward, and a graph traced for export must not hold it), and wherever a CPU gradient
    is wanted."""
    if KERNEL is torch_flex_attention and q.device.type == "cpu" and (
            dense or (torch.is_grad_enabled() and any(
                t is not None and t.requires_grad for t in (q, k, v, bias)))):
        return dense_flex_attention
    return KERNEL


def flex_softmax_attention(q, k, v, bias, allowed, position, kv_num_blocks, kv_indices,
                           full_kv_num_blocks, full_kv_indices, pad_slots=None,
                           pad_valid=None, *, scale: float, per_sample: bool,
                           dense: bool = False):
    """softmax(scale·q·kᵀ + bias[position]) @ v over the allowed (query, key) pairs.

    q, k, v: (B, G, N, d) token layout; bias: None, (G, M) or, per sample, (B, G, M) over
    the flattened blocks; allowed / position: the TokenRelation; the kv block tensors: its
    BlockMask; pad_slots / pad_valid: its zero keys, merged into one virtual key (module
    docstring). One node of the graph: inductor traces through it into its fused
    FlexAttention kernel; eagerly torch runs its reference implementation."""
    n, pad_bias = k.shape[2], None
    if _kernel(q, k, v, bias, dense) is dense_flex_attention:
        position = position.long()      # int64 indices: ONNX mixes no int32 into them
    if pad_slots is not None:
        k, v, pad_bias = _append_zero_key(q, k, v, bias, pad_slots, pad_valid)

    def mask_mod(b, h, q_idx, kv_idx):
        return allowed[q_idx, kv_idx]

    def at(t, b, h, index):          # t[b, h, index] per sample, else t[h, index]
        return t[b, h, index] if per_sample else t[h, index]

    def score_mod(score, b, h, q_idx, kv_idx):
        pair = at(bias, b, h, position[q_idx, kv_idx]) if bias is not None else 0.0
        if pad_bias is None:
            return score + pair
        return score + torch.where(kv_idx == n, at(pad_bias, b, h, q_idx), pair)

    kernel = _kernel(q, k, v, bias, dense)
    if kernel is dense_flex_attention:     # reads only the mask_mod: no BlockMask (its
        block_mask = _MaskOnly(mask_mod)   # index build sorts, which ONNX can't export)
    else:
        block_mask = BlockMask.from_kv_blocks(
            kv_num_blocks, kv_indices, full_kv_num_blocks, full_kv_indices,
            BLOCK_SIZE=BLOCK_SIZE, mask_mod=mask_mod, seq_lengths=tuple(allowed.shape))
    return kernel(q, k, v, score_mod=None if bias is None and pad_bias is None else score_mod,
                  block_mask=block_mask, scale=scale)


@dataclass(frozen=True)
class _MaskOnly:
    """What dense_flex_attention reads of a BlockMask."""

    mask_mod: object


def _append_zero_key(q, k, v, bias, pad_slots, pad_valid):
    """k and v with the virtual zero key appended (index N), and its score per query: the
    logsumexp of the query's padded keys' bias (of 0s without a bias), ([B,] G, Nq)."""
    B, G = q.shape[0], q.shape[1]
    k = torch.cat([k, k.new_zeros(B, G, 1, k.shape[3])], dim=2)
    v = torch.cat([v, v.new_zeros(B, G, 1, v.shape[3])], dim=2)
    reads = pad_valid.any(1, keepdim=True)
    gathered = q.new_zeros(G, *pad_slots.shape) if bias is None else bias[..., pad_slots]
    # queries without padding never see the virtual key; their finite row keeps the
    # logsumexp's gradient finite
    gathered = gathered.masked_fill(~pad_valid, float("-inf")).masked_fill(~reads, 0.0)
    return k, v, torch.logsumexp(gathered, dim=-1)


__all__ = ["TokenRelation", "token_relation", "block_mask_tensors",
           "flex_softmax_attention", "dense_flex_attention", "split_heads"]
