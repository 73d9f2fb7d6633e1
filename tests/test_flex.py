"""FlexAttention: the softmax_attention_to_flex pass against the independent references.

Forward: torch's own FlexAttention (its eager implementation on the CPU) in float64, every
zoo spec whose softmax branches it can run, ≤ 1e-10 against the reference. Gradients:
torch has no FlexAttention backward on the CPU, so there the pass's score_mod / mask_mod /
BlockMask run through `flex.dense_flex_attention` — FlexAttention's definition written out
(scores, score_mod at every (b, h, q, kv), masked where mask_mod is false, softmax), shown
equal to torch's forward — and are checked against the reference's gradients; on CUDA
benchmarks/gpu_check.py checks torch's kernels themselves, forward and backward.
"""
import pytest
import torch

import attndsl
from attndsl.codegen import evidence, flex
from attndsl.codegen.autoplan import decide, explain, flex_refusal
from attndsl.errors import ArgumentError
from zoo_helpers import ZOO, build, float64_error, inputs
from zoo_references import PADDED, reference_for


def _flex_ready(name) -> bool:
    try:
        m = build(name)
        m.attention_engine = "flex"
    except ArgumentError:
        return False
    return any(c.engine == "flex" for c in decide(m.plan, "eager", attention="flex").branches)


FLEX = [n for n in ZOO if _flex_ready(n)]


def flex_module(name, res=None):
    m = build(name, res=res)
    m.attention_engine = "flex"
    return m


def test_the_flex_zoo_covers_every_static_kind():
    kinds = {bp.spec.application.kind for n in FLEX for bp in build(n).plan.branches}
    assert {"window", "sliding", "stripes", "grid", "axial", "global"} <= kinds, kinds
    for name in ("swin_wmsa", "swin_swmsa", "nat", "dinat", "cswin", "maxvit_grid",
                 "axial_parallel", "crossformer_lda", "efficientvit", "twins_lsa_masked",
                 "swin_v2_wmsa", "swin_v2_swmsa", "halonet", "unified_lsa_sliding_softmax",
                 "unified_lsa_rp_sliding_softmax"):
        assert name in FLEX


@pytest.mark.parametrize("name", FLEX)
def test_flex_float64_matches_reference(name, record_error):
    m = flex_module(name)
    err = float64_error(m, name)
    record_error(spec=name, backend="eager, attention=flex", dtype="float64",
                 res=list(m.resolution), max_abs=err)
    calls = sum(n.target is flex.flex_softmax_attention for n in m.graph_module().graph.nodes)
    assert calls == sum(c.engine == "flex" for c in
                        decide(m.plan, "eager", attention="flex").branches) > 0
    assert err <= 1e-10


@pytest.mark.parametrize("name", [n for n in FLEX if n in PADDED])
def test_flex_on_non_divisible_resolutions(name):
    assert float64_error(flex_module(name, res=PADDED[name]), name, PADDED[name]) <= 1e-10


@pytest.mark.parametrize("name", FLEX)
def test_flex_gradients_match_reference(name):
    """Output, input and every parameter gradient (tables gathered by the score_mod
    included) through the pass's FlexAttention call, with FlexAttention's definition."""
    m = flex_module(name).eval()
    x = inputs(m, m.resolution).requires_grad_(True)
    params = [x] + list(m.parameters())
    g = inputs(m, m.resolution, seed=7)
    y, r = m(x), reference_for(name)(m, x)
    grads = torch.autograd.grad((y * g).sum(), params, allow_unused=True)
    grads_ref = torch.autograd.grad((r * g).sum(), params, allow_unused=True)
    for (pname, _), a, b in zip([("x", x)] + list(m.named_parameters()), grads, grads_ref):
        assert (a is None) == (b is None), pname
        if a is not None:
            assert (a - b).abs().max() <= 1e-9, pname


def test_flex_pass_before_and_after():
    """The pass replaces the blocked explicit attention by one flex call on the map's
    tokens; without it the same engines give the explicit graph, with the same output."""
    on = flex_module("swin_swmsa").eval()
    off = flex_module("swin_swmsa").eval()
    off.passes = []
    before, after = off.code, on.code
    assert "flex_softmax_attention" not in before and "torch.softmax" in before
    assert "flex_softmax_attention" in after and "softmax" not in after.replace(
        "flex_softmax_attention", "")
    assert "torch.roll" in after          # the unshift of the output stays; q/k's is dead
    x = inputs(on, on.resolution)
    with torch.no_grad():
        assert (on(x) - off(x)).abs().max() <= 1e-12


def test_dense_flex_is_torch_flex():
    """The CPU's gradient path computes what torch's FlexAttention computes: the same
    module with and without gradients wanted (torch's kernel vs the dense definition)."""
    m = flex_module("swin_swmsa").eval()
    x = inputs(m, m.resolution)
    with torch.no_grad():
        y = m(x)                                  # torch's FlexAttention
    y_dense = m(x)                                # parameters want gradients: dense
    assert y_dense.requires_grad
    assert (y - y_dense).abs().max() <= 1e-12


@pytest.mark.parametrize("name,why", [
    ("boat_fsla", "depend on the data"), ("twins_gsa", "reduced input"),
    ("linear_attention_elu", "no softmax-attention branch"), ("dynconv_kernel3", "kernel.size"),
    ("hilo", "branch 'lofi'")])
def test_flex_refusals_say_which_branch_and_why(name, why):
    with pytest.raises(ArgumentError) as err:
        attndsl.compile(name, dim=48, resolution=(14, 14), attention="flex")
    text = str(err.value)
    assert why in text and "'flex'" in text and "'auto' or 'explicit'" in text


def test_unknown_attention_engine_is_named():
    with pytest.raises(ArgumentError, match="'flash'.*auto, sdpa, flex, explicit"):
        attndsl.compile("nat", dim=48, resolution=(14, 14), attention="flash")


def test_training_with_flex_on_the_cpu_warns_and_trains():
    """No FlexAttention backward in torch on the CPU: a training graph says so once and
    its gradients come from the dense definition (checked against the references above).
    The training graph is lowered when the module is built (ready for a user's
    torch.compile), so that is when it warns."""
    with pytest.warns(UserWarning, match="no FlexAttention backward.*attention='auto'"):
        m = flex_module("nat").train()
    x = inputs(m, m.resolution)
    y = m(x)
    y.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in m.parameters())


def test_zero_padded_keys_are_one_virtual_key():
    """A zero-padded 7×7 neighbourhood at the corner reads 33 padded keys; their softmax
    terms exp(bias) sum into one virtual zero key (the last key column)."""
    plan = attndsl.bind(attndsl.load_spec("unified_lsa_rp_sliding_softmax"), 48, (14, 14))
    rel = flex.token_relation(plan.branches[0])
    n = 14 * 14
    assert rel.allowed.shape == (n, n + 1)
    assert int(rel.pad_valid[0].sum()) == 49 - 16 and int(rel.allowed[0, :n].sum()) == 16
    assert bool(rel.allowed[0, n]) and not bool(rel.allowed[7 * 14 + 7, n])   # centre: none
    halo = flex.token_relation(attndsl.bind(attndsl.load_spec("halonet"), 48, (14, 14))
                               .branches[0])
    assert halo.pad_slots is not None and halo.allowed.shape[1] == 14 * 14 + 1


def test_key_set_and_block_mask_are_built_once_per_grid():
    m = flex_module("nat")            # the bound grid's graph is built with the engine
    built = m.lowerings
    x = inputs(m, m.resolution)
    with torch.no_grad():
        m(x), m(x)
        m(inputs(m, (12, 12)))
    assert m.lowerings == built + 1   # one graph (and BlockMask) per grid
    gm = m.graph_module()
    allowed = gm._attn__flex_allowed
    n = m.resolution[0] * m.resolution[1]
    assert allowed.shape == (n, n) and allowed.sum() == n * 49     # 7×7 clamped keys
    relation = flex.token_relation(m.plan.branches[0])
    assert flex.token_relation(m.plan.branches[0]) is relation     # probed once per plan


@pytest.mark.parametrize("name,order,at_most", [
    ("cswin", "block", 0.12), ("maxvit_grid", "block", 0.12), ("swin_wmsa", "block", 0.12),
    ("nat", "row-major", 0.20)])
def test_token_order_keeps_the_tiles_visited_few(name, order, at_most):
    """At 56×56 row-major order spreads a CSWin stripe over every 128×128 tile (a MaxViT
    grid cell over 65%); each kind's block order keeps them to ~11%."""
    plan = attndsl.bind(attndsl.load_spec(name), 96, (56, 56))
    rel = flex.token_relation(plan.branches[0])
    visited, total = rel.tiles_visited
    assert total == 625 and visited / total <= at_most
    assert (rel.order is None) == (order == "row-major")
    assert flex.tiles_visited(rel.allowed) == rel.tiles_visited
    if rel.order is not None:            # the same relation, permuted
        inverse = torch.argsort(rel.order)
        row_major = rel.allowed[inverse][:, inverse]
        assert flex.tiles_visited(row_major)[0] > visited
        assert int(row_major.sum()) == int(rel.allowed.sum())


def test_relation_of_a_swin_shifted_window_leaves_the_other_regions_out():
    plan = attndsl.bind(attndsl.load_spec("swin_swmsa"), 48, (14, 14))
    rel = flex.token_relation(plan.branches[0])
    # token (0, 0) after the roll by 3 shares its window with the last rows/columns'
    # wrapped tokens, which the region mask keeps apart: only its own region remains
    assert not rel.complete and 0 < rel.density < 49 / 196
    assert bool(rel.allowed.diagonal().all())           # every token sees itself


def test_inductor_flex_float32_on_cpu(record_error):
    """One compiled FlexAttention program on the CPU (float32), against the reference."""
    m64 = flex_module("nat")
    from attndsl.codegen.autoplan import _torch_before
    if _torch_before(2, 13):      # its CPU kernel refuses q, k, v from one buffer: said so
        with pytest.raises(ArgumentError, match="can't take q, k and v"):
            attndsl.compile("nat", dim=m64.dim, resolution=m64.resolution,
                            backend="inductor", attention="flex")
        return
    m32 = attndsl.compile("nat", dim=m64.dim, resolution=m64.resolution, backend="inductor",
                          dtype=torch.float32, attention="flex")
    m32.load_state_dict({k: v.float() for k, v in m64.state_dict().items()})
    x = inputs(m64, m64.resolution)
    with torch.no_grad():
        r = reference_for("nat")(m64, x)
        y = m32(x.float()).double()
    rel = ((y - r).abs().max() / r.abs().max()).item()
    record_error(spec="nat", backend="inductor, attention=flex", dtype="float32",
                 res=list(m64.resolution), max_rel=rel)
    assert rel <= 1e-5


# ------------------------------------------------------------ per-device rules
def test_cuda_plan_is_explained_without_a_gpu():
    plan = attndsl.bind(attndsl.load_spec("nat"), 96, (56, 56))
    text = explain(plan, "auto", device="cuda", dtype=torch.bfloat16)
    assert "flex" in text and "provisional" in text and "gpu_check" in text
    cpu = explain(plan, "auto", device="cpu")
    assert "window views" in cpu and "provisional" not in cpu


def test_cuda_rules_follow_committed_evidence(tmp_path, monkeypatch):
    import json
    (tmp_path / "cuda-sm90_bfloat16.json").write_text(json.dumps({
        "format": evidence.FORMAT, "device": "cuda-sm90", "device_name": "NVIDIA H200",
        "dtype": "bfloat16", "torch": "2.11.0", "source": "benchmarks/results/x.json",
        "forms": {"window+terms": {"spec": "swin_wmsa", "stage": "B64 56x56 C96",
                                   "engines_ms": {"sdpa": 2.0, "flex": 1.5, "explicit": 3.0}},
                  "sliding+terms": {"spec": "nat", "stage": "B64 56x56 C96",
                                    "engines_ms": {"explicit": 1.0, "flex": 4.0}}}}))
    monkeypatch.setattr(evidence, "EVIDENCE_DIR", tmp_path)
    evidence._files.cache_clear()
    try:
        swin = attndsl.bind(attndsl.load_spec("swin_wmsa"), 96, (56, 56))
        nat = attndsl.bind(attndsl.load_spec("nat"), 96, (56, 56))
        on = dict(device="cuda-sm90", dtype=torch.bfloat16)
        choice = decide(swin, "auto", **on).branches[0]
        assert choice.engine == "flex" and "flex 1.5 ms, sdpa 2 ms" in choice.reason
        assert "cuda-sm90_bfloat16.json" in choice.reason
        assert decide(nat, "auto", **on).branches[0].engine == "inductor"   # explicit won
        # another dtype has no evidence: the provisional rule, which says so
        assert "provisional" in decide(swin, "auto", device="cuda-sm90",
                                       dtype=torch.float32).branches[0].reason
        # the CPU never reads GPU evidence
        assert decide(swin, "auto", device="cpu").branches[0].engine == "sdpa"
    finally:
        evidence._files.cache_clear()


def test_flex_refusal_is_none_exactly_where_flex_runs():
    for name in ("nat", "swin_swmsa", "cswin"):
        bp = build(name).plan.branches[0]
        assert flex_refusal(bp) is None


def test_cpu_inductor_limits_are_refused_not_raised_from_torch():
    """torch's CPU FlexAttention kernel takes no float64 and no bias computed in the same
    graph: compiled flex on the CPU says so at compile time, naming what works."""
    with pytest.raises(ArgumentError, match="takes float32, bfloat16 or float16, not float64"):
        attndsl.compile("nat", dim=48, resolution=(14, 14), dtype=torch.float64,
                        attention="flex")
    with pytest.raises(ArgumentError, match="bias computed in the same compiled graph"):
        attndsl.compile("halonet", dim=48, resolution=(14, 14), backend="inductor",
                        attention="flex")
    m = attndsl.compile("nat", dim=48, resolution=(14, 14), dtype=torch.float64,
                        backend="eager", attention="flex")      # eager takes both
    assert m.attention_engine == "flex"


@pytest.mark.parametrize("spec, grid", [("nat", (9, 11)), ("dinat", (14, 15)),
                                        ("unified_lsa_rp_sliding_softmax", (8, 8))])
def test_eager_cpu_sliding_runs_dense_at_few_tokens_exactly(spec, grid):
    """autoplan's eager_sliding rule: at ≤ DENSE_SLIDING_TOKENS tokens an eager graph on the
    CPU runs sliding softmax attention as dense masked attention; forward and gradients
    equal the gather form's (attention='explicit') in float64."""
    from attndsl.codegen.autoplan import DENSE_SLIDING_TOKENS, decide
    plan = attndsl.bind(attndsl.load_spec(spec), 32, grid, heads=2)
    for training in (False, True):
        choice = decide(plan, "eager", training=training).branches[0]
        assert choice.engine == "flex" and "dense masked" in choice.reason
    assert decide(plan, "inductor").branches[0].engine != "flex"
    big = attndsl.bind(attndsl.load_spec("nat"), 32, (21, 20), heads=2)
    assert 21 * 20 > DENSE_SLIDING_TOKENS and decide(big, "eager").branches[0].engine == "eager"
    torch.manual_seed(0)
    dense = attndsl.compile(spec, dim=32, heads=2, resolution=grid, backend="eager").double()
    gather = attndsl.compile(spec, dim=32, heads=2, resolution=grid, backend="eager",
                             attention="explicit").double()
    gather.load_state_dict(dense.state_dict())
    x = torch.randn(2, *grid, 32, dtype=torch.float64, requires_grad=True)
    outs = []
    for m in (dense, gather):
        y = m(x)
        grads = torch.autograd.grad(y.square().sum(), [x, *m.parameters()])
        outs.append((y, grads))
    (y1, g1), (y2, g2) = outs
    assert (y1 - y2).abs().max() <= 1e-10 * y2.abs().max()
    for a, b in zip(g1, g2):
        assert (a - b).abs().max() <= 1e-9 * b.abs().max().clamp_min(1e-12)
