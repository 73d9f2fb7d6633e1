"""The pass pipeline: each pass shown before/after on a graph, and output-preserving
across the zoo."""
import pytest
import torch

import attndsl
from attndsl.codegen.passes import PIPELINE, pass_names
from zoo_helpers import ZOO, build, inputs


def test_pipeline_is_listed_in_one_place():
    assert pass_names() == ["softmax_attention_to_sdpa", "softmax_attention_to_flex",
                            "eliminate_dead_code", "drop_unused_attributes",
                            "split_parameter_prologue"]
    from torch.fx.passes.infra.pass_base import PassBase
    for p in PIPELINE:   # torch.fx passes: callable checks before and after, documented
        assert isinstance(p, PassBase) and callable(p.requires) and callable(p.ensures)
        assert p.requires_text and p.ensures_text and p.__doc__


def test_dead_code_elimination_before_and_after():
    # dwconv's value bank is the input: the traced graph slices x and nothing else is
    # unused, so add an unused node by hand to show the pass removing it
    m = attndsl.compile("vit_mhsa", dim=24, resolution=(4, 4), passes=[])
    gm = m.graph_module()
    x_node = next(n for n in gm.graph.nodes if n.op == "placeholder")
    with gm.graph.inserting_after(x_node):
        gm.graph.call_function(torch.relu, (x_node,))
    gm.recompile()
    assert "relu = torch.relu(x)" in gm.code
    from attndsl.codegen.passes import eliminate_dead_code
    assert eliminate_dead_code(gm) is True
    gm.recompile()
    assert "relu" not in gm.code
    assert eliminate_dead_code(gm) is False   # idempotent


def test_unused_constants_are_dropped():
    m = attndsl.compile("swin_wmsa", dim=24, resolution=(14, 14), passes=[])
    gm = m.graph_module()
    gm.register_buffer("stale_constant", torch.zeros(3))
    from attndsl.codegen.passes import drop_unused_attributes
    assert drop_unused_attributes(gm) is True
    assert not hasattr(gm, "stale_constant") and hasattr(gm, "_attn__rel_index")


def test_unknown_pass_names_are_errors():
    """Refused at compile (not at the first forward), naming the valid passes."""
    with pytest.raises(attndsl.SpecError, match="unknown pass.*fuse_everything.*valid: "
                                                 r"\['softmax_attention_to_sdpa'"):
        attndsl.compile("vit_mhsa", dim=24, resolution=(4, 4), passes=["fuse_everything"])
    with pytest.raises(attndsl.SpecError, match="passes must be a list"):
        attndsl.compile("vit_mhsa", dim=24, resolution=(4, 4), passes="eliminate_dead_code")


@pytest.mark.parametrize("name", ZOO)
def test_passes_preserve_outputs(name):
    on = build(name)
    off = build(name)
    off.passes = []
    x = inputs(on, on.resolution)
    with torch.no_grad():
        y_on, y_off = on(x), off(x)
    # float64: a fused kernel may only change rounding
    assert (y_on - y_off).abs().max().item() <= 1e-12 * max(1.0, y_off.abs().max().item())


def test_softmax_attention_to_sdpa_before_and_after():
    m = attndsl.compile("swin_swmsa", dim=48, resolution=(14, 14), passes=[])
    before = m.graph_module().code
    assert "torch.softmax(add" in before and "scaled_dot_product_attention" not in before
    m.passes = ["softmax_attention_to_sdpa", "eliminate_dead_code"]
    m._graphs.clear()
    after = m.graph_module().code
    assert "softmax" not in after
    assert "scaled_dot_product_attention(" in after and "attn_mask = " in after
    assert "expand(1, 3, 4, 49, 49)" in after          # bias + shift mask as one float mask


def test_sdpa_pass_leaves_what_it_cannot_fuse():
    # NATTEN-style sliding keys: one query per block → stays a gather (autoplan rule)
    assert "scaled_dot_product_attention" not in attndsl.compile(
        "nat", dim=48, resolution=(14, 14)).code
    # relative key/query terms make the bias per sample: stays explicit
    assert "scaled_dot_product_attention" not in attndsl.compile(
        "unified_lsa_rp_window_softmax", dim=48, resolution=(14, 14)).code
    # attention dropout in a training graph: SDPA would draw other masks
    spec = attndsl.load_spec("vit_mhsa").model_dump()
    spec["branches"][0]["dropout"] = {"attention": 0.1}
    m = attndsl.compile(spec, dim=48, resolution=(14, 14))
    assert "scaled_dot_product_attention" in m.graph_module(training=False).code
    assert "scaled_dot_product_attention" not in m.graph_module(training=True).code


@pytest.mark.parametrize("name", ZOO)
def test_plan_says_what_the_graph_does(name):
    """`show --plan` and the SDPA pass follow the same rules (codegen/autoplan.py)."""
    from attndsl.codegen.autoplan import choose
    m = build(name)
    code = m.graph_module().code
    sdpa_branches = [bp.name for bp in m.plan.branches if choose(bp).engine == "sdpa"]
    assert code.count("scaled_dot_product_attention(") == len(sdpa_branches)
    assert all(f"branch {bp.name}" in m.explain_plan() for bp in m.plan.branches)


def test_auto_compiles_only_when_a_branch_needs_fusion():
    from attndsl.codegen.autoplan import wants_inductor
    def plan(name):
        return attndsl.compile(name, dim=48, resolution=(16, 16) if name == "twins_gsa"
                               else (14, 14)).plan
    for name in ("vit_mhsa", "linformer"):
        assert not wants_inductor(plan(name)), name
    for name in ("nat", "elsa", "dwconv", "dynconv_relu", "unified_lsa_rp_window_softmax",
                 "swin_swmsa", "hilo", "twins_gsa", "boat_fsla"):
        assert wants_inductor(plan(name)), name
    m = attndsl.compile("vit_mhsa", dim=48, resolution=(14, 14))   # auto, global SDPA
    assert m._entry((14, 14), False)[1] is m.graph_module(training=False)   # the graph itself


def test_parameter_prologue_before_and_after():
    """NAT's rel-pos bias gather reads only a parameter and an index buffer: it moves to
    the prologue, and the main graph reads the gathered bias as its second input."""
    from attndsl.codegen.passes import split_parameter_prologue
    m = attndsl.compile("nat", dim=24, resolution=(9, 9), heads=3)
    gm = m.graph_module()
    assert "self._attn__rel_index" in gm.code and "self.attn.rel_pos.bias" in gm.code
    prologue, main = split_parameter_prologue(gm)
    assert "def forward(self):" in prologue.code
    assert "self._attn__rel_index" in prologue.code and "self.attn.rel_pos.bias" in prologue.code
    assert "self.attn.qkv" not in prologue.code and "starts" not in prologue.code
    assert "def forward(self, x, static_0):" in main.code
    assert "rel_index" not in main.code and "rel_pos" not in main.code


@pytest.mark.parametrize("name", ZOO)
def test_parameter_prologue_preserves_outputs(name):
    from attndsl.codegen.passes import split_parameter_prologue
    m = build(name)
    x = inputs(m, m.resolution)
    gm = m.graph_module(training=False)
    prologue, main = split_parameter_prologue(gm)
    with torch.no_grad():
        assert torch.equal(main(x, *prologue()), gm(x))


def test_parameter_prologue_keeps_gradients_of_the_tables():
    """The prologue runs every call, inside autograd: table gradients are unchanged."""
    from attndsl.codegen.passes import split_parameter_prologue
    m = build("swin_swmsa")
    x = inputs(m, m.resolution)
    gm = m.graph_module(training=True)
    prologue, main = split_parameter_prologue(gm)
    table = dict(m.named_parameters())["attn.rel_pos.bias"]
    g_split, = torch.autograd.grad(main(x, *prologue()).square().sum(), table)
    g_whole, = torch.autograd.grad(gm(x).square().sum(), table)
    assert g_split.abs().max() > 0 and torch.allclose(g_split, g_whole, rtol=0, atol=1e-12)


def test_few_pooled_keys_stay_explicit_under_inductor():
    """With sr 8 on a 16×16 grid GSA has 4 keys per query: a compiled graph keeps softmax·V
    explicit (inductor fuses it; autoplan FEW_KEYS), an eager graph calls SDPA, and the plan
    says which."""
    eager = attndsl.compile("twins_gsa", dim=48, resolution=(16, 16), backend="eager")
    compiled = attndsl.compile("twins_gsa", dim=48, resolution=(16, 16), backend="inductor")
    assert "scaled_dot_product_attention(" in eager.graph_module().code
    assert "scaled_dot_product_attention(" not in compiled.graph_module().code
    assert "only 4 keys per query in a compiled graph" in compiled.explain_plan()
    assert "F.scaled_dot_product_attention" in eager.explain_plan()
    big = attndsl.compile("twins_gsa", dim=48, resolution=(64, 64), backend="inductor")
    assert "scaled_dot_product_attention(" in big.graph_module().code   # 64 keys
