"""Which engine runs each branch: the rules, with the measurements that justify them.

The decision is made once per lowered graph, by `decide`, and written into an `Engines`
that lowering, the passes and the module all follow (nothing re-derives it): whether
inductor compiles the graph, which branches run softmax attention in SDPA's fused kernel,
and in what precision the depthwise / grouped convolutions run. Every rule names its
evidence (a benchmark and figures measured on that device); `attndsl show --plan` prints
`explain(plan)`.
"""
from __future__ import annotations

import warnings

import torch

from ..errors import ArgumentError
from ..lang import models as m
from ..lang.bind import BranchPlan, Plan
from ..terms import term_of
from . import evidence
from .engines import BranchChoice, Engines
from .evidence import device_kind
from .flex import BLOCK_SIZE, TokenRelation, token_relation
from .rules import static_filter_branch

# Evidence: benchmarks/results/cpu-amd-epyc-1t_2026-11-21T0822_float32.md (this CPU,
# 1 thread, float32; stage 1 = B=8, 56×56, C=96, 3 heads; stage 2 = B=8, 28×28, C=192,
# 6 heads; median ms), which replaced the earlier runs (T0629, after-na-conv-auto; superseded
# result files are removed, their commands are in git history).
EVIDENCE = {
    "sdpa_global": "ViT global, stage 1: eager reference 2127 ms, SDPA 552 ms, attndsl eager "
                   "graph with SDPA 543 ms (64% of the 92 GFLOP/s GEMM ceiling), the same "
                   "graph under inductor 583",
    "sdpa_window": "Swin 7×7 window + bias, stage 1: eager reference 58 ms, SDPA with the "
                   "bias as mask 59 ms, compiled FlexAttention 321 ms, attndsl 49 ms",
    "sdpa_pooled": "Twins GSA (sr 8), stage 1: eager reference 49 ms, compiled reference "
                   "39 ms, attndsl (SDPA under inductor) 37–38 ms",
    "gather_sliding": "NAT 7×7 + bias, stage 1: eager reference 4224 ms, SDPA with a dense "
                      "−inf mask ~700 ms, compiled FlexAttention ~900 ms, compiled flat gather "
                      "520 ms, compiled window-index baseline 85 ms; attndsl's window views "
                      "weighed in the (H, W, K, K) grid layout under inductor, with the bias "
                      "gathered in the eager prologue, 61 ms (115 ms as a flattened view, "
                      "626 ms as a flat gather)",
    "fusion_hadamard": "ELSA, stage 1: eager reference 1830 ms, compiled reference 832 ms, "
                       "a hand-split dwconv + compiled shift loop 110 ms, attndsl under "
                       "inductor 94 ms (331 ms before the ghost-head split)",
    "fusion_sliding_terms": "unified LSA + rel-pos, sliding softmax, stage 1 (paired, "
                            "float32): attndsl 128 ms vs a compiled K² shift loop 151 ms",
    "fusion_normalization": "ReLU/|S| over Swin windows (dynconv_relu), stage 1 (paired, "
                            "float32): attndsl 56 ms vs the compiled reference 68 ms",
    "sdpa_clusters": "BOAT, stage 1 (paired, float32): attndsl (SDPA per cluster) 282 ms vs "
                     "the compiled reference 340 ms",
    "static_filter": "7×7 depthwise filter, stage 1: gathered neighbourhoods × table 435 ms, "
                     "depthwise conv2d 8.7 ms, attndsl's conv form 9.2 ms",
    "eager_sliding": "NAT / DiNAT training step (forward + backward) in an eager graph, "
                     "batch 64, C=64, 2 heads, 1 thread, float32, gather form vs dense "
                     "masked: 8×8 352 vs 20 ms (17.9×), 14×14 1007 vs 108 ms (9.5×), 16×16 "
                     "4.8×, 20×20 3.2×, 28×28 2.3×; inference 20× to 1.6× "
                     "(benchmarks/results/eager_sliding_cpu-intel-r-xeon-r-processor-1t_"
                     "2026-12-07T1758.md)",
    "compile_windows": "stage 1: twins_lsa attndsl (compiled) 51 ms vs hand SDPA 66 ms; "
                       "swin_wmsa 49 vs 59; hilo 120–130 vs 123: compiling fuses the "
                       "partitions, pads and bias adds around the SDPA call",
    "cpu_low_precision_conv": "this AVX2 CPU has no bfloat16 depthwise kernel worth the name: "
                              "7×7 at 56×56, C=96, batch 8: ~650 ms in bfloat16, eager or "
                              "compiled, against ~9 ms in float32 (benchmarks/results/paired_*)",
    "few_keys": "Twins GSA (sr 8) under inductor, one process, medians of 9: 9 pooled keys "
                "(stage 2) explicit softmax·V 30.96 ms vs SDPA 33.90; 49 keys (stage 1) "
                "45.53 vs 48.02",
}

# up to this many tokens, an eager graph on the CPU runs sliding softmax attention densely
# with a mask (EVIDENCE["eager_sliding"]); beyond, the gather form (memory ∝ tokens² too)
# (dense still wins 2.3× at 784 tokens, but its scores are batch × heads × tokens² floats:
# 400 keeps them under ~1 GB at batch 128 with 8 heads)
DENSE_SLIDING_TOKENS = 400

# below this many keys per query, a compiled graph keeps pooled / soft-selected attention
# explicit (inductor fuses softmax·V) instead of calling SDPA (EVIDENCE["few_keys"])
FEW_KEYS = 64

# the measurement of SDPA on the blocks of each kind (kinds whose queries share keys and
# have none measured yet still go to SDPA, and say so)
SDPA_EVIDENCE = {"global": "sdpa_global", "pooled": "sdpa_pooled",
                 "soft_select": "sdpa_pooled", "window": "sdpa_window",
                 "clusters": "sdpa_clusters"}
# kinds whose few keys (projected from a reduced input) were measured faster as an explicit
# softmax·V fused by inductor than in SDPA's kernel (EVIDENCE["few_keys"])
FEW_KEYS_KINDS = ("pooled", "soft_select")


def fused_attention_allowed(bp: BranchPlan, compiled: bool = False) -> str | None:
    """None when softmax attention over this branch's key blocks (in a graph inductor will
    or won't compile) should go to SDPA, else why not."""
    kind, keys = bp.kind, bp.geometry.keys_per_query
    if not kind.shared_keys:
        return (f"one query per block ({kind.name} keys): SDPA would need a dense −inf mask; "
                f"the gather form compiled by inductor wins ({EVIDENCE['gather_sliding']})")
    if compiled and kind.name in FEW_KEYS_KINDS and keys < FEW_KEYS:
        return (f"only {keys} keys per query in a compiled graph: inductor's fused "
                f"softmax·V beats SDPA's kernel ({EVIDENCE['few_keys']})")
    return None


# what `attention=` may ask for softmax-attention branches: autoplan's rules, SDPA's fused
# kernel, FlexAttention, or the explicit softmax·V (fused by inductor when compiled)
ATTENTION = ("auto", "sdpa", "flex", "explicit")


def softmax_attention(b) -> bool:
    """softmax(s·q·kᵀ + terms) @ v with dynamic keys and a standard kernel: the form the
    fused kernels (SDPA, FlexAttention) compute."""
    return (isinstance(b.parameterization, m.Additive)
            and "query_key" in b.parameterization.term_kinds
            and b.kernel_bank.keys == "dynamic" and b.kernel.type == "standard"
            and isinstance(b.normalization, m.Softmax))


def per_sample_bias(b) -> bool:
    """Some logit term reads q or k beyond q·kᵀ: the bias differs per sample."""
    return isinstance(b.parameterization, m.Additive) and any(
        term_of(t).per_sample for t in b.parameterization.terms)


def flex_refusal(bp: BranchPlan, training: bool = False, *, compiled: bool = False,
                 device="cpu", dtype: torch.dtype = torch.float32) -> str | None:
    """None when FlexAttention can run this branch's softmax attention, else why not."""
    b = bp.spec
    if training and b.dropout.attention > 0:
        return "attention dropout is active (FlexAttention draws no dropout)"
    if b.kernel.size > 1:
        return "K×K keys (kernel.size > 1) are not tokens of the map"
    if b.parameterization.feature_map != "identity":
        return "q and k go through a feature map (linear attention's, not softmax's)"
    relation = token_relation(bp)
    if not isinstance(relation, TokenRelation):
        return relation
    if compiled and device_kind(device) == "cpu" and dtype not in (
            torch.float32, torch.bfloat16, torch.float16):
        return (f"torch's CPU FlexAttention kernel takes float32, bfloat16 or float16, not "
                f"{str(dtype).removeprefix('torch.')}; use backend='eager' for it")
    if compiled and device_kind(device) == "cpu" and per_sample_bias(b):
        return ("torch's CPU FlexAttention kernel can't read a bias computed in the same "
                "compiled graph (these relative logits depend on q or k); eager, or on a GPU")
    if compiled and device_kind(device) == "cpu" and _torch_before(2, 13):
        return (f"torch {torch.__version__}'s CPU FlexAttention kernel can't take q, k and v "
                "cut from one projection's output (torch 2.13 can); eager, or on a GPU")
    return None


def _torch_before(major: int, minor: int) -> bool:
    found = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2])
    return found < (major, minor)


def choose(bp: BranchPlan, compiled: bool = False, training: bool = False, *,
           device="cpu", dtype: torch.dtype = torch.float32,
           attention: str = "auto") -> BranchChoice:
    """The engine of one branch; `compiled`: the graph will run under inductor;
    `training`: the graph is lowered for training (attention dropout is drawn);
    `device`, `dtype`: whose rules and evidence apply; `attention`: what the user asked
    for softmax-attention branches (ATTENTION)."""
    b = bp.spec
    dropout = training and b.dropout.attention > 0
    if static_filter_branch(bp) and not dropout:
        return BranchChoice(bp.name, "conv", "static filter on a zero-padded neighbourhood "
                            f"→ depthwise F.conv2d ({EVIDENCE['static_filter']})")
    softmax_qk = softmax_attention(b)
    per_sample = per_sample_bias(b)
    app = b.application.kind
    graph = "inductor" if compiled else "eager"
    if softmax_qk and attention != "auto":
        return _asked(bp, attention, graph, training, dropout, device, dtype)
    if softmax_qk and device_kind(device) == "cuda":
        ruled = _cuda_rule(bp, compiled, graph, training, device, dtype, per_sample)
        if ruled is not None:
            return ruled
    if isinstance(b.normalization, m.Sum) and isinstance(b.parameterization, m.Additive) \
            and b.parameterization.term_kinds == ("query_key",) \
            and b.kernel_bank.keys == "dynamic" and b.kernel.type == "standard" \
            and b.kernel.size == 1 and bp.kind.shared_keys and not bp.geometry.masked \
            and not dropout:
        return BranchChoice(bp.name, "linear", "sum-normalized q·k over shared keys → the "
                            "associative form φ(q)(φ(k)ᵀv) / (φ(q)·Σφ(k) + ε): "
                            f"O(N·d²), the {bp.geometry.blocks[1]}×{bp.geometry.blocks[2]} "
                            "weights are never built")
    if softmax_qk and not per_sample and bp.kind.shared_keys:
        why_not = fused_attention_allowed(bp, compiled)
        if dropout:
            why_not = "attention dropout is active (SDPA's dropout draws different masks)"
        if why_not is not None:
            return BranchChoice(bp.name, graph, why_not)
        measured = EVIDENCE[SDPA_EVIDENCE[app]] if app in SDPA_EVIDENCE else \
            "not measured yet for this kind"
        return BranchChoice(bp.name, "sdpa", f"softmax attention over {app} keys → "
                            f"F.scaled_dot_product_attention ({measured})")
    if softmax_qk and app == "sliding" and not compiled and device_kind(device) == "cpu":
        tokens = bp.geometry.blocks[0] * bp.geometry.blocks[1]      # one block per query
        if tokens <= DENSE_SLIDING_TOKENS and flex_refusal(bp, training, device=device,
                                                           dtype=dtype) is None:
            return BranchChoice(bp.name, "flex", f"sliding softmax attention over {tokens} "
                                "tokens in an eager graph on the CPU → dense masked attention "
                                "(FlexAttention's definition: the neighbourhood as a mask, the "
                                "terms as a score_mod; N² work in a few matmuls) "
                                f"({EVIDENCE['eager_sliding']})")
    if softmax_qk and app == "sliding":
        measured = "fusion_sliding_terms" if per_sample else "gather_sliding"
        return BranchChoice(bp.name, graph, "sliding softmax attention → window views "
                            f"compiled by inductor ({EVIDENCE[measured]})")
    # what keeps the branch off a fused kernel, each with the measurement of that form
    # (quoted only for the form it measured; a form not yet measured says so)
    what = []
    if isinstance(b.parameterization, m.Hadamard):
        what.append("Hadamard logits")
    if not isinstance(b.normalization, m.Softmax):
        what.append(f"{b.normalization.kind} normalization")
    if b.kernel.type == "depthwise":
        what.append("depthwise kernel")
    if per_sample:
        what.append("relative key/query terms")
    if app in ("sliding", "clusters"):
        what.append(f"{app} keys")
    evidence = fusion_evidence(b, app, per_sample)
    why = EVIDENCE[evidence] if evidence else "this form has no paired measurement yet"
    form = "inductor fusion" if compiled else "explicit weights, eager"
    return BranchChoice(bp.name, graph, f"{', '.join(what) or 'no fused kernel fits'} → "
                        f"{form} ({why})")


def _asked(bp: BranchPlan, attention: str, graph: str, training: bool,
           dropout: bool, device, dtype) -> BranchChoice:
    """The engine the user asked for with `attention=`, or a clear refusal."""
    def refuse(why: str):
        engine = {"sdpa": "SDPA", "flex": "FlexAttention"}[attention]
        raise ArgumentError(f"{attention!r}: branch '{bp.name}' ({bp.spec.application.kind} "
                            f"keys) can't run in {engine}: {why}; valid for it: 'auto' or "
                            "'explicit'", argument="attention")
    if attention == "explicit":
        return BranchChoice(bp.name, graph, "explicit softmax·V, as asked (attention="
                            "'explicit')" + (", fused by inductor" if graph == "inductor" else ""))
    if attention == "sdpa":
        if not bp.kind.shared_keys:
            refuse("each query has its own keys (SDPA would need a dense −inf mask)")
        if dropout:
            refuse("attention dropout is active (SDPA's dropout draws different masks)")
        return BranchChoice(bp.name, "sdpa", "F.scaled_dot_product_attention, as asked "
                            "(attention='sdpa')")
    why_not = flex_refusal(bp, training, compiled=graph == "inductor", device=device,
                           dtype=dtype)
    if why_not is not None:
        refuse(why_not)
    return BranchChoice(bp.name, "flex", "FlexAttention with the key set as a BlockMask and "
                        f"the logit terms as a score_mod, as asked (attention='flex'); "
                        f"{_tiles(bp)}")


def _tiles(bp: BranchPlan) -> str:
    relation = token_relation(bp)
    visited, total = relation.tiles_visited
    order = "row-major" if relation.order is None else f"{bp.kind.name}-block"
    return (f"its BlockMask visits {visited} of {total} {BLOCK_SIZE}×{BLOCK_SIZE} tiles "
            f"({100 * visited / total:.0f}%, {order} token order)")


def _cuda_rule(bp: BranchPlan, compiled: bool, graph: str, training: bool, device, dtype,
               per_sample: bool) -> BranchChoice | None:
    """Softmax attention on a CUDA device: the fastest engine measured there for this
    branch's form (codegen/evidence/), else the provisional rule, which says it is one.
    None: the device-independent rules below apply."""
    candidates = ["explicit"]
    if bp.kind.shared_keys and not (training and bp.spec.dropout.attention > 0):
        candidates.append("sdpa")
    if compiled and flex_refusal(bp, training, compiled=True, device=device,
                                 dtype=dtype) is None:
        candidates.append("flex")      # eager FlexAttention is torch's unfused reference
    found = evidence.measured(evidence.load(device, dtype), bp, candidates)
    if found is not None:
        best, figures = found
        engine = graph if best == "explicit" else best
        return BranchChoice(bp.name, engine, f"{best}: fastest measured — {figures}")
    unmeasured = (f"not yet measured on {evidence.device_key(device)} in "
                  f"{evidence.dtype_name(dtype)} for the form '{evidence.form_of(bp)}': a "
                  f"provisional rule until `{evidence.GPU_CHECK}` is run there")
    if "flex" in candidates and not bp.kind.shared_keys:
        return BranchChoice(bp.name, "flex", "FlexAttention over the neighbourhood as a "
                            "BlockMask: no K²-fold copy of the keys, tiles outside every "
                            f"neighbourhood skipped, {_tiles(bp)} ({unmeasured})")
    if "sdpa" in candidates and not per_sample:
        return BranchChoice(bp.name, "sdpa", "F.scaled_dot_product_attention: flash / "
                            f"memory-efficient kernels ({unmeasured})")
    return None


def fusion_evidence(b, app: str, per_sample: bool) -> str | None:
    """The measurement of exactly this form, if there is one (never another family's)."""
    softmax = isinstance(b.normalization, m.Softmax)
    if isinstance(b.parameterization, m.Hadamard):
        return "fusion_hadamard"
    if app == "window" and not softmax and b.kernel.type == "standard":
        return "fusion_normalization"
    if app == "sliding" and softmax and per_sample and b.kernel.type == "standard":
        return "fusion_sliding_terms"
    return None


def wants_inductor(plan: Plan, attention: str = "auto") -> bool:
    """auto compiles with inductor unless every branch is global softmax attention in SDPA
    (GEMM-bound: compiling adds start-up time and nothing measurable); around windows,
    pooling and everything without a fused kernel, compiling wins (EVIDENCE). FlexAttention
    is only fused when compiled: asked for, it compiles."""
    if attention == "flex":
        return True
    return not all(choose(bp).engine == "sdpa" and bp.spec.application.kind
                   in ("global", "soft_select") for bp in plan.branches)   # GEMM-bound


def decide(plan: Plan, backend: str, *, training: bool = False,
           dtype: torch.dtype = torch.float32, device="cpu",
           attention: str = "auto") -> Engines:
    """Every engine decision of a graph: `backend` is "eager", "inductor" or "auto";
    `device` / `dtype` select the rules and evidence of that device kind."""
    if attention in ("sdpa", "flex") and not any(softmax_attention(bp.spec)
                                                 for bp in plan.branches):
        raise ArgumentError(f"{attention!r}: spec '{plan.spec.name}' has no softmax-attention "
                            "branch (softmax over q·k with dynamic keys) for it to run; "
                            "valid: 'auto' or 'explicit'", argument="attention")
    compiled = backend == "inductor" or (backend == "auto" and wants_inductor(plan, attention))
    conv_dtype = None
    if device_kind(device) == "cpu" and dtype in (torch.bfloat16, torch.float16):
        conv_dtype = torch.float32        # EVIDENCE["cpu_low_precision_conv"]
    branches = tuple(choose(bp, compiled, training, device=device, dtype=dtype,
                            attention=attention) for bp in plan.branches)
    if attention == "flex" and training and device_kind(device) == "cpu":
        warnings.warn(f"attention='flex' on the CPU: torch {torch.__version__} has no "
                      "FlexAttention backward there, so gradients go through its definition "
                      "evaluated densely (memory ∝ queries × keys); train with "
                      "attention='auto' on the CPU, or on a GPU", stacklevel=3)
    return Engines(compiled=compiled, conv_dtype=conv_dtype, branches=branches)


def explain(plan: Plan, backend: str, *, device="cpu", dtype: torch.dtype = torch.float32,
            attention: str = "auto") -> str:
    key = evidence.device_key(device)
    lines = [f"spec {plan.spec.name} at dim={plan.dim}, grid={plan.resolution}, "
             f"backend={backend}, device {key}, {evidence.dtype_name(dtype)}"
             + (f", attention={attention}" if attention != "auto" else "")]
    if key != "cpu":
        found = evidence.load(device, dtype)
        lines.append("  evidence: " + (found["file"] if found else "none committed for this "
                                       f"device and dtype yet ({evidence.GPU_CHECK})"))
    engines = decide(plan, backend, device=device, dtype=dtype, attention=attention)
    for bp, c in zip(plan.branches, engines.branches):
        lines.append(f"  branch {bp.name} ({bp.heads} heads, {bp.spec.application.kind}): "
                     f"{c.engine} — {c.reason}")
    if engines.compiled:
        # the measurement of compiling around SDPA is of window specs: quoted for those
        windows = any(c.engine == "sdpa" and bp.spec.application.kind == "window"
                      for bp, c in zip(plan.branches, engines.branches))
        why = f" ({EVIDENCE['compile_windows']})" if (
            windows and backend == "auto" and key == "cpu") else ""
        lines.append("  graph: torch.compile(inductor) of the whole graph, SDPA / "
                     f"FlexAttention calls included{why}")
    else:
        lines.append("  graph: eager fx GraphModule (global attention is GEMM-bound; on "
                     f"this CPU: {EVIDENCE['sdpa_global']})")
    return "\n".join(lines)
