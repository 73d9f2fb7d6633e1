"""Plan → torch.fx GraphModule. The whole compiler, one stage per line:

    spec ──load──▶ Spec ──bind──▶ Plan ──lower──▶ fx.Graph ──passes──▶ GraphModule ──backend──▶

`lower_branch` reads as the paradigm's equation, one rule per axis: application (which
keys), projections, kernel size, parameterization (logits), mask, normalization, kernel
expansion, aggregation, then the extras. Every `if` is on a bind-time constant, so the
symbolic trace is straight-line code.
"""
from __future__ import annotations

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from ..errors import LoweringError
from ..lang import models as m
from ..lang.bind import Plan
from . import rules as R
from .autoplan import decide, per_sample_bias
from .engines import Engines
from .flex import block_mask_tensors, token_relation
from .passes import ATTENTION_CORE, ENGINES, FLEX_CORE, AttentionCore, FlexCore, run_passes


def project(ctx: R.Ctx, x_q, x_kv):
    """Input projections → q, k, v maps (B, h, w, width) (None where not made)."""
    bp, p, layout = ctx.bp, ctx.p, ctx.bp.spec.projections.layout
    dq, dv = bp.qk_dim, bp.value_width
    q = k = v = None
    if layout == "qkv" and bp.spec.projections.bias == "no_key":
        # timm Swin-V2: one bias vector (q_bias, zeros, v_bias) for the fused projection
        bias = torch.cat([p.q_bias, torch.zeros_like(p.q_bias), p.v_bias])
        q, k, v = torch.split(F.linear(x_q, p.qkv.weight, bias), [dq, dq, dv], dim=-1)
    elif layout == "qkv":
        q, k, v = torch.split(p.qkv(x_q), [dq, dq, dv], dim=-1)
    elif layout == "q_kv":
        q = p.q(x_q)
        k, v = torch.split(p.kv(x_kv), [dq, dv], dim=-1)
    elif layout == "qk":
        q, k = torch.split(p.qk(x_q), [dq, dq], dim=-1)
    elif layout == "qv":
        q, v = torch.split(p.qv(x_q), [dq, dv], dim=-1)
    elif layout == "q":
        q = p.q(x_q)
    elif layout == "v":
        v = p.v(x_kv)
    if bp.spec.projections.q_conv is not None:
        q = R.q_conv(ctx, q)
    if bp.spec.projections.qk_norm is not None:
        q, k = R.head_norm(q, p.q_norm, bp.heads), R.head_norm(k, p.k_norm, bp.heads)
    if bp.spec.projections.rope is not None:
        with ctx.emitting("projections: rope"):
            q, k = R.rope(ctx, q, k, bp.heads)
    values = bp.spec.kernel_bank.values
    if values == "input":
        lo, hi = bp.channels
        v = x_kv[..., lo:hi]
    elif values == "keys":
        v = k
    return q, k, v


def lower_branch(ctx: R.Ctx, x):
    """One branch: x (B, H, W, C) → (B, H, W, width). Each step runs under the name of the
    rule (and spec axis) it lowers, which tags the nodes it emits (R.PROVENANCE)."""
    bp, b = ctx.bp, ctx.bp.spec
    app = f"application: {b.application.kind}"
    sel = R.selection_for(ctx)
    ctx.sel, ctx.key_count = sel, sel.key_count
    per_channel = bp.depthwise
    with ctx.emitting(app):
        x_q, x_kv = sel.inputs(x)
    with ctx.emitting(f"projections: {b.projections.layout}"):
        q_map, k_map, v_map = project(ctx, x_q, x_kv)
    value_conv = b.extras.value_conv
    if value_conv is not None and value_conv.scope == "values":
        with ctx.emitting("extras: value_conv (values)"):   # Shunted: v ← v + conv(v)
            v_map = v_map + R.to_nhwc(R.conv_module(ctx, ctx.p.value_conv, R.to_nchw(v_map)))
    if b.kernel.size > 1:
        with ctx.emitting("kernel.size"):
            q_map = R.unfold_kernel(q_map, sel.map_grid, b.kernel.size)
            k_map = R.unfold_kernel(k_map, sel.map_grid, b.kernel.size)

    if ctx.choice.engine == "conv":
        # the output bias rides in the conv (one pass over the output instead of two)
        bias = ctx.p.out_bias if b.extras.output_bias else None
        with ctx.emitting("static filter (depthwise conv)"):
            y = R.static_filter_conv(ctx, sel, v_map, bias)
        return finish_branch(ctx, y, v_map, x, bias_added=bias is not None)
    v_blocks = None          # the values blocked together with the keys (block_kv)

    def blocked_values():
        return v_blocks if v_blocks is not None else sel.block_v(v_map)
    if isinstance(b.parameterization, m.Hadamard):
        q = k = None
        with ctx.emitting("parameterization: hadamard"):
            scores, bias = R.hadamard_logits(ctx, q_map, k_map), None
    else:
        with ctx.emitting(app):
            q = sel.block_q(q_map) if q_map is not None else None
            if k_map is not None and v_map is not None and not sel.weighs_windows \
                    and b.kernel_bank.values == "projected":
                k, v_blocks = sel.block_kv(k_map, v_map)
            else:
                k = sel.block_k(k_map) if k_map is not None else None
        if b.parameterization.similarity != "dot":
            with ctx.emitting("parameterization: cosine similarity"):
                q, k = R.cosine_similarity(ctx, q, k)
        if b.parameterization.feature_map != "identity":
            with ctx.emitting(f"parameterization: feature map {b.parameterization.feature_map}"):
                phi = R.FEATURE_MAPS[b.parameterization.feature_map]
                q, k = (None if t is None else phi(t) for t in (q, k))
        if ctx.choice.engine == "linear":
            with ctx.emitting("normalization: sum (associative form)"):
                v = blocked_values()
                y = sel.unblock(R.linear_aggregate(ctx, q, k, v))
            return finish_branch(ctx, y, v_map, x)
        with ctx.emitting("parameterization: additive"):
            scores, bias = R.additive_logits(ctx, sel, q, k)
    with ctx.emitting(app):
        mask = sel.mask()
        if mask is not None:
            bias = R.add(bias, R.mask_like(mask, per_channel and b.kernel.expand is None))
    with ctx.emitting(f"normalization: {b.normalization.kind}"):
        weights = R.normalize(ctx, R.add(scores, bias))
    if R.ghost_head_splits(ctx):
        with ctx.emitting("kernel.expand: ghost_head"):
            v = None if sel.weighs_windows else blocked_values()
            y = R.ghost_head_aggregate(ctx, sel, weights, v, v_map)
        return finish_branch(ctx, y, v_map, x)
    if b.kernel.expand is not None:
        with ctx.emitting("kernel.expand: ghost_head"):
            weights = R.ghost_head(ctx, weights)
    weights = R.dropout(ctx, weights, b.dropout.attention)
    with ctx.emitting(f"{app} (aggregation)"):
        if sel.weighs_windows:
            return finish_branch(ctx, sel.weigh_windows(weights, v_map, per_channel), v_map, x)
        v = k if (b.kernel_bank.values == "keys" and k is not None) else blocked_values()
        out = R.aggregate(weights, v, per_channel, single_query=sel.one_query_per_block)
    if ctx.choice.engine == "sdpa" and ctx.tracer is not None:
        # softmax(s·q·kᵀ + bias) @ v: record the pieces for the fused-attention pass
        # (autoplan decided this branch runs in SDPA; the rules running eagerly for a
        # dynamic-resolution export have no graph to rewrite)
        out.node.meta[ATTENTION_CORE] = AttentionCore(
            branch=bp.name, q=q.node, k=k.node, v=v.node,
            bias=None if bias is None else bias.node, weights=weights.node,
            scale=bp.scale() / b.normalization.temperature,
            temperature=b.normalization.temperature, heads=bp.heads,
            blocks=sel.block_shape, bias_batch=-1 if per_sample_bias(b) else 1)
    if ctx.choice.engine == "flex" and ctx.tracer is not None:
        # the same, for the FlexAttention pass: the maps the blocks were cut from and the
        # branch's key set on the map's tokens (built here once per grid, held as buffers)
        out.node.meta[FLEX_CORE] = flex_core(ctx, q_map, k_map, v_map, bias)
    with ctx.emitting(f"{app} (aggregation)"):
        y = sel.unblock(out)
    return finish_branch(ctx, y, v_map, x)


def flex_core(ctx: R.Ctx, q_map, k_map, v_map, bias) -> FlexCore:
    bp, b = ctx.bp, ctx.bp.spec
    relation, block_mask = ctx.root.flex_key_sets[bp.name]
    with ctx.emitting(f"application: {b.application.kind} (key set as a BlockMask)"):
        constants = [ctx.constant("flex_allowed", relation.allowed),
                     ctx.constant("flex_position", relation.position)]
        for name, t in zip(("kv_num_blocks", "kv_indices", "full_kv_num_blocks",
                            "full_kv_indices"), block_mask):
            constants.append(ctx.constant(f"flex_{name}", t))
        query_blocks = ctx.constant("flex_query_blocks", relation.query_blocks)
        if relation.pad_slots is not None:      # the virtual zero key (codegen/flex.py)
            constants += [ctx.constant("flex_pad_slots", relation.pad_slots),
                          ctx.constant("flex_pad_valid", relation.pad_valid)]
        order = None if relation.order is None else ctx.constant("flex_order", relation.order)
    if b.kernel_bank.values == "keys":
        v_map = k_map
    cosine_scale = ctx.cosine_scale.node if b.parameterization.similarity != "dot" else None
    return FlexCore(
        branch=bp.name, q_map=q_map.node, k_map=k_map.node, v_map=v_map.node,
        bias=None if bias is None else bias.node,
        relation=tuple(c.node for c in constants), query_blocks=query_blocks.node,
        scale=bp.scale() / b.normalization.temperature,
        temperature=b.normalization.temperature, heads=bp.heads, blocks=ctx.sel.block_shape,
        per_sample=per_sample_bias(b),
        cosine_scale=cosine_scale, order=None if order is None else order.node,
        dense=not ctx.engines.compiled and torch.device(ctx.device).type == "cpu")


def finish_branch(ctx: R.Ctx, y, v_map, x, bias_added: bool = False):
    """The extras after the aggregation: value conv, output bias, projection, dropout,
    residual."""
    b = ctx.bp.spec
    with ctx.emitting("extras"):
        scope = b.extras.value_conv.scope if b.extras.value_conv is not None else None
        if scope == "map":
            y = y + R.to_nhwc(R.conv_module(ctx, ctx.p.value_conv, R.to_nchw(v_map)))
        elif scope == "block":      # CSWin's LePE: each block its own zero-padded image
            tiles = R.to_nchw(ctx.sel.to_tiles(v_map))
            y = y + ctx.sel.from_tiles(R.to_nhwc(R.conv_module(ctx, ctx.p.value_conv, tiles)))
        if b.extras.output_bias and not bias_added:
            y = y + ctx.p.out_bias
    with ctx.emitting("projections: out"):
        if b.projections.out:
            y = ctx.p.proj(y)
    y = R.dropout(ctx, y, b.dropout.projection)
    with ctx.emitting("extras"):
        if b.extras.residual:
            y = y + x
    return y


class GraphRoot(nn.Module):
    """The module that is traced: parameter modules shared with the owning
    `CompiledAttention`, plus the bind-time constants registered while lowering."""

    def __init__(self, plan: Plan, params: dict[str, nn.Module], dtype, device, training,
                 engines: Engines):
        super().__init__()
        self.plan, self.dtype, self.device, self.is_training = plan, dtype, device, training
        self.engines = engines
        self.shape_generic = False
        for name, mod in params.items():
            self.add_module(name, mod)

    def forward(self, x):
        plan = self.plan
        H, W = plan.resolution
        grid = plan.grid
        if self.shape_generic:   # sizes from the input: symbolic under torch.export
            H, W = x.shape[1], x.shape[2]
            m = plan.spec.pad_to_multiple or 1
            grid = (-(-H // m) * m, -(-W // m) * m)
        for i, _ in enumerate(plan.spec.positional):
            peg = self.positional[i]
            x = x + R.to_nhwc(peg(R.to_nchw(x)))
        padded = self.shape_generic or grid != plan.resolution
        if padded:
            x = F.pad(x, (0, 0, 0, grid[1] - W, 0, grid[0] - H))
        merge = plan.spec.merge
        outputs, previous = [], None
        for bp in plan.branches:
            ctx = R.Ctx(self, bp, getattr(self, bp.name), self.dtype, self.device,
                        self.is_training, tracer=getattr(x, "tracer", None),
                        engines=self.engines, grid=grid if self.shape_generic else None)
            if merge.kind == "sequence":       # each branch reads the previous one's output
                branch_in = x if previous is None else previous
            elif merge.kind == "cascade":      # its own slice, plus the previous output
                lo, hi = bp.channels
                branch_in = x[..., lo:hi] if previous is None else x[..., lo:hi] + previous
            else:
                branch_in = x
            previous = lower_branch(ctx, branch_in)
            outputs.append(previous)
        if merge.kind == "sequence":
            y = previous
        else:
            y = outputs[0] if len(outputs) == 1 else torch.cat(outputs, dim=-1)
        if merge.activation != "none":
            y = R.ACTIVATIONS[merge.activation](y)
        if merge.out:
            y = self.merge.proj(y)
        if padded:
            y = y[:, :H, :W]
        return y


def flex_key_sets(plan: Plan, engines: Engines, device) -> dict:
    """The key set and BlockMask of every branch autoplan sent to FlexAttention, built
    before tracing: create_block_mask runs torch code that must not see fx's patched
    globals (inside a trace it left later compiles unable to trace FlexAttention)."""
    sets = {}
    for bp in plan.branches:
        if engines.of(bp.name).engine != "flex":
            continue
        relation = token_relation(bp)
        if isinstance(relation, str):     # autoplan checked the same relation: a bug
            raise LoweringError(f"branch '{bp.name}' was sent to FlexAttention but: {relation}")
        sets[bp.name] = (relation, block_mask_tensors(relation, device))
    return sets


def shape_generic_module(plan: Plan, params: dict[str, nn.Module], *, dtype, device):
    """The lowering rules run eagerly (no fx trace, no passes) with the grid read from the
    input: under torch.export with dynamic H and W, every size that the rules derive from
    the grid stays symbolic, and a rule that builds a table, mask or partition for one grid
    specializes it (attndsl.export reports which). Eval mode only."""
    engines = decide(plan, "eager", dtype=dtype, device=device)
    root = GraphRoot(plan, params, dtype, torch.device(device), False, engines)
    root.shape_generic = True
    return root


def lower(plan: Plan, params: dict[str, nn.Module], *, dtype=torch.float32,
          device="cpu", training=False, passes=None, compiled=False,
          engines: Engines | None = None) -> fx.GraphModule:
    """Trace the plan into a GraphModule (B, H, W, C) → (B, H, W, C) and run the passes.
    `engines`: autoplan's decisions for this graph (`decide`); without them, those of the
    eager backend, or of inductor when `compiled` (the graph will run under inductor, so
    rules may pick forms that only pay off once fused)."""
    if engines is None:
        engines = decide(plan, "inductor" if compiled else "eager", training=training,
                         dtype=dtype, device=device)
    root = GraphRoot(plan, params, dtype, torch.device(device), training, engines)
    root.flex_key_sets = flex_key_sets(plan, engines, device)
    try:
        graph = R.RuleTracer().trace(root)
    except Exception as exc:  # a lowering rule bug, not a user error: say where
        raise LoweringError(f"lowering spec '{plan.spec.name}' failed: "
                            f"{type(exc).__name__}: {exc}") from exc
    gm = fx.GraphModule(root, graph, class_name=f"Attn_{plan.spec.name}")
    gm.meta[ENGINES] = engines       # passes and the backend follow the same decisions
    return run_passes(gm, passes)
