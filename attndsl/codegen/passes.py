"""Graph passes, listed in one place (PIPELINE), each one named torch.fx pass
(`PassBase`): `requires(gm)` checks what it needs before it runs, `call(gm)` rewrites
`gm.graph` in place and says whether it changed it, `ensures(gm)` checks what it promised
afterwards. Every pass keeps the module's outputs identical (tests/test_passes.py checks
every pass across the zoo).

The passes follow autoplan's decisions for the graph (gm.meta[ENGINES]); none re-derives
them.
"""
from __future__ import annotations

import operator
from dataclasses import dataclass

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch.fx.passes.infra.pass_base import PassBase, PassResult

from ..errors import LoweringError
from .flex import flex_softmax_attention, split_heads


ATTENTION_CORE = "attndsl_attention_core"
FLEX_CORE = "attndsl_flex_core"
# gm.meta keys: autoplan's Engines for the graph (set by lowering), and the parameter
# prologue split (set by the split_parameter_prologue pass, read by the inductor backend)
ENGINES = "attndsl_engines"
PROLOGUE = "attndsl_prologue"


@dataclass(frozen=True)
class AttentionCore:
    """A `softmax(s·q·kᵀ + bias) @ v` that lowering emitted for a branch autoplan sent to
    SDPA, stored in the aggregate node's meta[ATTENTION_CORE]. Nodes are blocks
    (B, G, nb, L, d); `bias` broadcasts to (B, G, nb, Lq, Lk)."""

    branch: str
    q: fx.Node
    k: fx.Node
    v: fx.Node
    bias: fx.Node | None
    weights: fx.Node
    scale: float          # s / temperature
    temperature: float
    heads: int
    blocks: tuple[int, int, int]   # (nb, Lq, Lk)
    bias_batch: int = 1            # −1: the bias differs per sample (relative logits of q)


@dataclass(frozen=True)
class FlexCore:
    """A `softmax(s·q·kᵀ + bias) @ v` over a static key set that lowering emitted for a
    branch autoplan sent to FlexAttention, stored in the aggregate node's meta[FLEX_CORE].
    q_map / k_map / v_map are the (B, h, w, G·d) maps the blocks were cut from; `bias`
    broadcasts to (B, G, nb, Lq, Lk); `relation` holds the get_attr nodes of the key set
    (codegen/flex.py: allowed, position, the BlockMask's four kv tensors) and
    `query_blocks` the query token of each block slot."""

    branch: str
    q_map: fx.Node
    k_map: fx.Node
    v_map: fx.Node
    bias: fx.Node | None
    relation: tuple[fx.Node, ...]
    query_blocks: fx.Node
    scale: float
    temperature: float
    heads: int
    blocks: tuple[int, int, int]
    per_sample: bool
    cosine_scale: fx.Node | None = None   # Swin-V2: q, k normalized, q times τ (G, 1, 1)
    # FlexAttention's dense definition, not torch's kernel: an eager graph on the CPU
    # (torch's eager FlexAttention is an unfused reference with no CPU backward, and a
    # graph traced for export must not hold it either)
    dense: bool = False
    order: fx.Node | None = None          # the token order of the relation (flex.py)


class GraphPass(PassBase):
    """One named pass: what it requires, what it ensures (in words, for the docs and
    `attndsl show --passes`, and as the checks `requires` / `ensures` run)."""

    name: str
    requires_text: str
    ensures_text: str
    rewrite = None       # fn(gm) -> bool (changed?): the rewrite itself, documented there

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.rewrite is not None:
            cls.__doc__ = cls.rewrite.__doc__

    def call(self, gm):
        return PassResult(gm, type(self).rewrite(gm))

    def __repr__(self):
        return f"<pass {self.name}>"

    def fail(self, when: str, what: str):
        raise LoweringError(f"pass '{self.name}' {when}: {what}")


def eliminate_dead_code(gm: fx.GraphModule) -> bool:
    """Remove nodes whose values are never used.

    Before:  qkv = self.attn.qkv(x); split = torch.split(qkv, …); unused = split[2] …
    After:   the `unused = split[2]` node is gone (impure ops are kept).
    """
    return gm.graph.eliminate_dead_code()


def drop_unused_attributes(gm: fx.GraphModule) -> bool:
    """Delete constants (index tables, masks) that no `get_attr` node reads any more."""
    used = {n.target for n in gm.graph.nodes if n.op == "get_attr"}
    changed = False
    for name in list(gm._buffers):
        if name not in used:
            del gm._buffers[name]
            changed = True
    return changed


def softmax_attention_to_sdpa(gm: fx.GraphModule) -> bool:
    """softmax(s·q·kᵀ + bias) @ v → F.scaled_dot_product_attention, blocks flattened to 4-D.

    Before (Swin window, bias = rel-pos table gather + shift mask):
        mul = 0.17 * q;  matmul = mul @ k.transpose(-1, -2);  add = matmul + bias
        softmax = torch.softmax(add, dim=4);  out = softmax @ v
    After:
        q4 = q.flatten(1, 2); k4 = …; v4 = …
        mask = bias.expand(1, G, nb, Lq, Lk).flatten(1, 2)
        sdpa = F.scaled_dot_product_attention(q4, k4, v4, attn_mask=mask, scale=0.17)
        out = sdpa.unflatten(1, (G, nb))
    Lowering records a core only for branches autoplan sent to SDPA; the dead logits are
    removed by the dead-code pass that follows.
    """
    graph, changed = gm.graph, False
    for node in list(graph.nodes):
        core = node.meta.get(ATTENTION_CORE)
        if core is None or node.args != (core.weights, core.v):   # rewritten under us
            continue
        G, (nb, Lq, Lk) = core.heads, core.blocks
        with graph.inserting_before(node):
            q4, k4, v4 = (graph.call_method("flatten", (t, 1, 2)) for t in (core.q, core.k, core.v))
            kwargs = {"scale": core.scale}
            if core.bias is not None:
                full = _full_bias(graph, core.bias, core.temperature, core.bias_batch,
                                  (G, nb, Lq, Lk))
                kwargs["attn_mask"] = graph.call_method("flatten", (full, 1, 2))
            fused = graph.call_function(F.scaled_dot_product_attention, (q4, k4, v4), kwargs)
            out = graph.call_method("unflatten", (fused, 1, (G, nb)))
        _replace_core(graph, node, out, (q4, k4, v4, fused), ATTENTION_CORE)
        changed = True
    return changed


def _full_bias(graph: fx.Graph, bias: fx.Node, temperature: float, batch: int, shape):
    """The logits' bias over the temperature, expanded to (batch, G, nb, Lq, Lk): a bias
    shared by the batch broadcasts from 1, a per-sample one (batch −1) keeps B."""
    if temperature != 1.0:
        bias = graph.call_function(operator.truediv, (bias, temperature))
    return graph.call_method("expand", (bias, batch, *shape))


def _replace_core(graph: fx.Graph, node: fx.Node, out: fx.Node, new_nodes, core_key: str):
    """`out` replaces the aggregate `node`; the new nodes take its provenance (the rule
    that emitted it), not its core."""
    for new in (*new_nodes, out):
        new.meta.update({k: v for k, v in node.meta.items() if k != core_key})
    node.replace_all_uses_with(out)
    graph.erase_node(node)


def softmax_attention_to_flex(gm: fx.GraphModule) -> bool:
    """softmax(s·q·kᵀ + bias) @ v over a static key set → FlexAttention on the map's tokens,
    the key set as a BlockMask (built once per grid, held by the graph) and the bias as a
    score_mod reading the blocks' bias where each (query, key) pair sits.

    Before (Swin shifted window, bias = rel-pos table gather + shift mask):
        q = <window partition of q_map>; k = …; add = 0.17 * q @ k.transpose(-1, -2) + bias
        softmax = torch.softmax(add, dim=4);  out = softmax @ v      # (B, G, nb, Lq, d)
    After:
        q_t = split_heads(q_map, G); k_t = …; v_t = …                 # (B, G, N, d)
        bias_t = bias.expand(1, G, nb, Lq, Lk).flatten(2)[0]          # (G, nb·Lq·Lk)
        o = flex_softmax_attention(q_t, k_t, v_t, bias_t, allowed, position, *block_mask,
                                   scale=0.17)
        out = o[:, :, query_blocks]                                   # (B, G, nb, Lq, d)
    The window partition, roll and padding of q and k are dead afterwards (the dead-code
    pass removes them); `out` continues into the kind's own unblock.
    """
    graph, changed = gm.graph, False
    for node in list(graph.nodes):
        core = node.meta.get(FLEX_CORE)
        if core is None:
            continue
        G, (nb, Lq, Lk) = core.heads, core.blocks
        constants = (*core.relation, core.query_blocks) + (
            (core.order,) if core.order is not None else ())
        for constant in constants:
            node.prepend(constant)      # lowering made them after the blocks it replaces
        with graph.inserting_before(node):
            q, k, v = (graph.call_function(split_heads, (t, G))
                       for t in (core.q_map, core.k_map, core.v_map))
            if core.order is not None:  # each block's tokens contiguous: fewer tiles
                q, k, v = (graph.call_function(torch.index_select, (t, 2, core.order))
                           for t in (q, k, v))
            if core.cosine_scale is not None:      # the cosine, per token: as on the blocks
                q, k = (graph.call_function(F.normalize, (t,), {"dim": -1}) for t in (q, k))
                q = graph.call_function(operator.mul, (q, core.cosine_scale))
            bias = core.bias
            if bias is not None:
                full = _full_bias(graph, bias, core.temperature,
                                  -1 if core.per_sample else 1, (G, nb, Lq, Lk))
                bias = graph.call_method("flatten", (full, 2))
                if not core.per_sample:
                    bias = graph.call_function(operator.getitem, (bias, 0))
            fused = graph.call_function(
                flex_softmax_attention, (q, k, v, bias, *core.relation),
                {"scale": core.scale, "per_sample": core.per_sample, "dense": core.dense})
            out = graph.call_function(operator.getitem, (
                fused, (slice(None), slice(None), core.query_blocks)))
        _replace_core(graph, node, out, (q, k, v, fused), FLEX_CORE)
        changed = True
    return changed


# ---------------------------------------------------------------- backend split
def split_parameter_prologue(gm: fx.GraphModule) -> tuple[fx.GraphModule, fx.GraphModule]:
    """Split gm(x) into prologue() → statics and main(x, *statics), where the prologue is
    every computation that reads only parameters and buffers (rel-pos bias gathers, shift
    masks plus biases, normalized static filters, γ·S) and `statics` are the values of it
    that the input-dependent part reads.

    Why: inside an inductor kernel a (G, N, K²) table gather is an indirect, bounds-checked
    load repeated for every batch element and every softmax pass (NAT 7×7 at 56×56: 29 of
    90 ms); run once per call outside the compiled program it is one small gather, and the
    kernel reads its result linearly. It is recomputed every call (not constant-folded),
    so parameter updates and autograd through the tables behave as before.
    The main graph keeps gm's attributes; `statics` are its extra placeholders in order."""
    graph = gm.graph
    static: set[fx.Node] = set()
    for node in graph.nodes:
        if node.op == "get_attr" or (
                node.op in ("call_function", "call_method")
                and node.all_input_nodes and all(n in static for n in node.all_input_nodes)):
            static.add(node)
    # the static values the input-dependent part reads (plain attributes stay attributes)
    boundary = [n for n in graph.nodes if n in static and n.op != "get_attr"
                and any(u not in static for u in n.users)]

    pro = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for node in graph.nodes:
        if node in static:
            env[node] = pro.node_copy(node, lambda n: env[n])
    pro.output(tuple(env[n] for n in boundary))

    main = fx.Graph()
    menv: dict[fx.Node, fx.Node] = {}
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    for node in placeholders:
        menv[node] = main.node_copy(node)
    for i, node in enumerate(boundary):
        menv[node] = main.placeholder(f"static_{i}")
    for node in graph.nodes:
        if node.op == "placeholder" or node in menv:
            continue
        if node in static and node.op != "get_attr":
            continue          # only reached through a boundary value
        menv[node] = main.node_copy(node, lambda n: menv[n])
    prologue = fx.GraphModule(gm, pro, class_name=f"{type(gm).__name__}_prologue")
    main_gm = fx.GraphModule(gm, main, class_name=type(gm).__name__)
    for part in (prologue, main_gm):        # attributes the other part reads
        part.graph.eliminate_dead_code()
        part.recompile()
    return prologue, main_gm


# ---------------------------------------------------------------- the passes, as units
def _engines(gm: fx.GraphModule):
    return gm.meta.get(ENGINES)


class FusedAttentionPass(GraphPass):
    """A pass that hands the attention cores lowering recorded for one engine to its fused
    kernel: it requires a core for exactly the branches autoplan sent there, and ensures
    one kernel call per such branch."""

    engine: str          # autoplan's engine name
    core_key: str        # the node meta key of the cores
    kernel = None        # the function the rewrite calls
    kernel_name: str

    def requires(self, gm):
        engines = _engines(gm)
        if engines is None:
            self.fail("requires", "the graph carries no engine decisions (lowered outside "
                      "codegen.lower?)")
        cores = {n.meta[self.core_key].branch for n in gm.graph.nodes if self.core_key in n.meta}
        wanted = {c.branch for c in engines.branches if c.engine == self.engine}
        if cores != wanted:
            self.fail("requires", f"attention cores recorded for {sorted(cores)}, but autoplan "
                      f"sent {sorted(wanted)} to {self.kernel_name}")

    def ensures(self, gm):
        wanted = sum(c.engine == self.engine for c in _engines(gm).branches)
        calls = sum(n.target is type(self).kernel for n in gm.graph.nodes)
        if calls != wanted:
            self.fail("ensures", f"{calls} {self.kernel_name} calls for {wanted} branches "
                      f"sent to {self.kernel_name}")


class SoftmaxAttentionToSdpa(FusedAttentionPass):
    rewrite = staticmethod(softmax_attention_to_sdpa)
    name = "softmax_attention_to_sdpa"
    requires_text = "autoplan's engines on the graph; an attention core for each SDPA branch"
    ensures_text = "every branch autoplan sent to SDPA calls F.scaled_dot_product_attention"
    engine, core_key, kernel_name = "sdpa", ATTENTION_CORE, "SDPA"
    kernel = staticmethod(F.scaled_dot_product_attention)


class SoftmaxAttentionToFlex(FusedAttentionPass):
    rewrite = staticmethod(softmax_attention_to_flex)
    name = "softmax_attention_to_flex"
    requires_text = ("autoplan's engines on the graph; a flex core (key set and BlockMask) "
                     "for each FlexAttention branch")
    ensures_text = "every branch autoplan sent to FlexAttention calls flex_attention"
    engine, core_key, kernel_name = "flex", FLEX_CORE, "FlexAttention"
    kernel = staticmethod(flex_softmax_attention)


class EliminateDeadCode(GraphPass):
    rewrite = staticmethod(eliminate_dead_code)
    name = "eliminate_dead_code"
    requires_text = "a traced graph"
    ensures_text = "every node is used or impure"

    def ensures(self, gm):
        dead = [n.name for n in gm.graph.nodes if n.op in ("call_function", "call_method",
                                                             "get_attr") and not n.users
                and not n.is_impure()]
        if dead:
            self.fail("ensures", f"unused nodes remain: {dead[:5]}")


class DropUnusedAttributes(GraphPass):
    rewrite = staticmethod(drop_unused_attributes)
    name = "drop_unused_attributes"
    requires_text = "dead code removed"
    ensures_text = "every buffer is read by the graph"

    def ensures(self, gm):
        used = {n.target for n in gm.graph.nodes if n.op == "get_attr"}
        stale = sorted(set(gm._buffers) - used)
        if stale:
            self.fail("ensures", f"buffers no node reads: {stale[:5]}")


class SplitParameterPrologue(GraphPass):
    __doc__ = split_parameter_prologue.__doc__
    name = "split_parameter_prologue"
    requires_text = "a graph that inductor will compile (autoplan's engines)"
    ensures_text = ("the inductor backend runs the parameter-only prologue eagerly and "
                    "compiles main(x, *statics); the graph itself is unchanged")

    def call(self, gm):
        engines = _engines(gm)
        if engines is None or not engines.compiled:
            gm.meta.pop(PROLOGUE, None)
            return PassResult(gm, False)
        gm.meta[PROLOGUE] = split_parameter_prologue(gm)
        return PassResult(gm, False)

    def ensures(self, gm):
        split = gm.meta.get(PROLOGUE)
        if split is None:
            return
        prologue, main = split
        if any(n.op == "placeholder" for n in prologue.graph.nodes):
            self.fail("ensures", "the prologue reads the input")
        first = next(n for n in main.graph.nodes if n.op == "placeholder")
        if first.name != next(n for n in gm.graph.nodes if n.op == "placeholder").name:
            self.fail("ensures", "main's first input is not the graph's input")


PIPELINE: list[GraphPass] = [SoftmaxAttentionToSdpa(), SoftmaxAttentionToFlex(),
                             EliminateDeadCode(),
                             DropUnusedAttributes(), SplitParameterPrologue()]


def pass_names() -> list[str]:
    return [p.name for p in PIPELINE]


def run_passes(gm: fx.GraphModule, only: list[str] | None = None) -> fx.GraphModule:
    """Run the pipeline (or the named subset, in pipeline order); `only=[]` runs none.
    Each pass checks what it requires, runs, and checks what it ensures."""
    if only is not None:
        unknown = sorted(set(only) - set(pass_names()))
        if unknown:
            raise LoweringError(f"unknown pass(es) {unknown}; valid: {pass_names()}")
    gm.meta.pop(PROLOGUE, None)
    done = []
    for p in PIPELINE:
        if only is not None and p.name not in only:
            continue
        try:
            result = p(gm)
            gm.graph.lint()
        except LoweringError:
            raise
        except Exception as exc:
            raise LoweringError(f"pass '{p.name}' failed (after {done or 'no passes'}): "
                                f"{type(exc).__name__}: {exc}") from exc
        done.append(p.name)
        if result is not None and result.modified:
            gm.recompile()
    return gm
