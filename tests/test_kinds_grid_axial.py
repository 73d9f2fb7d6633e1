"""The grid kind (MaxViT grid attention, CrossFormer LDA) and the axial kind (row / column
attention): bind errors, the geometry they derive, non-square grids against the published
references (tests/published/maxvit.py, tests/published/axial.py), relative positions along
the axial axis, and which programs take a dynamic resolution."""
from pathlib import Path

import pytest
import torch

import attndsl
from attndsl.errors import SpecError
from attndsl.export import ExportError, export
from zoo_helpers import build, compiled_form_graph, inputs
from zoo_references import reference_for

SPECS = Path(attndsl.__file__).parent / "specs"


def yaml_of(name, old, new):
    text = (SPECS / f"{name}.yaml").read_text()
    assert old in text
    return text.replace(old, new)


# ---------------------------------------------------------------- bind errors
@pytest.mark.parametrize("res,size,valid", [
    ((15, 14), 7, "[1]"), ((14, 21), 5, "[1, 7]"), ((12, 18), 4, "[1, 2, 3, 6]")])
def test_grid_that_the_size_does_not_divide_is_an_error(res, size, valid):
    spec = yaml_of("maxvit_grid", "size: 7", f"size: {size}")
    with pytest.raises(SpecError) as info:
        attndsl.compile(spec, dim=48, resolution=res)
    message = str(info.value)
    assert info.value.path == "application.size"
    assert f"{res[0]}x{res[1]} grid" in message and f"valid sizes here: {valid}" in message
    assert "line 16" in message          # the YAML line of application.size


def test_a_compiled_grid_module_refuses_a_grid_it_does_not_divide():
    m = build("maxvit_grid")
    with pytest.raises(SpecError, match="application.size.*multiples of 7"):
        m(inputs(m, (15, 14)))


def test_bad_axis_is_an_error():
    with pytest.raises(SpecError) as info:
        attndsl.load_spec(yaml_of("axial_parallel", "axis: row", "axis: diagonal"))
    assert info.value.path == "branches[0].application.axis"
    assert "'row' or 'column'" in str(info.value) and "'diagonal'" in str(info.value)
    with pytest.raises(SpecError, match="missing required key 'axis'"):
        attndsl.load_spec(yaml_of("axial_parallel", "{kind: axial, axis: row}",
                                  "{kind: axial}"))


# ---------------------------------------------------------------- geometry
@pytest.mark.parametrize("res,blocks", [((14, 14), (4, 49, 49)), ((14, 21), (6, 49, 49)),
                                        ((28, 7), (4, 49, 49)), ((7, 7), (1, 49, 49))])
def test_grid_geometry(res, blocks):
    b = attndsl.compile("maxvit_grid", dim=48, resolution=res).plan.branches[0]
    geo = b.geometry
    assert geo.blocks == blocks and geo.offset_span == (7, 7)
    assert geo.groups == (res[0] // 7, res[1] // 7) and geo.map_grid == res
    assert b.table_size == 13 * 13        # the same table at every resolution


@pytest.mark.parametrize("res", [(14, 21), (9, 5)])
def test_axial_geometry(res):
    H, W = res
    rows, cols = attndsl.compile("axial_parallel", dim=48, resolution=res).plan.branches
    assert rows.geometry.blocks == (H, W, W) and rows.geometry.offset_span == (1, W)
    assert cols.geometry.blocks == (W, H, H) and cols.geometry.offset_span == (H, 1)
    assert rows.table_size == 2 * W - 1 and cols.table_size == 2 * H - 1


# ---------------------------------------------------------------- against the references
@pytest.mark.parametrize("name,res", [
    ("maxvit_grid", (14, 21)), ("maxvit_grid", (35, 14)), ("maxvit_block", (14, 21)),
    ("axial_parallel", (14, 21)), ("axial_parallel", (9, 5))])
def test_non_square_grids_match_the_reference(name, res):
    m = build(name, res=res)
    x = inputs(m, res)
    with torch.no_grad():
        r = reference_for(name)(m, x)
        assert (m(x) - r).abs().max() <= 1e-10
        assert (compiled_form_graph(m, res)(x) - r).abs().max() <= 1e-10
    # gradients of x and every parameter, same cotangent
    m.train()
    x.requires_grad_(True)
    leaves = [x, *m.parameters()]
    g = inputs(m, res, seed=7)
    ours = torch.autograd.grad((m(x) * g).sum(), leaves)
    theirs = torch.autograd.grad((reference_for(name)(m, x) * g).sum(), leaves)
    assert max((a - b).abs().max().item() for a, b in zip(ours, theirs)) <= 1e-9


def test_grid_is_not_block():
    """Same weights: the grid and block partitions differ (the check is not vacuous)."""
    from mechanisms.maxvit_grid import reference
    m = build("maxvit_grid", res=(14, 21))
    x = inputs(m, (14, 21))
    with torch.no_grad():
        assert (m(x) - reference(m, x, mode="block")).abs().max() > 1e-3


def axial_with_bias(x, heads, w_qkv, b_qkv, w_proj, b_proj, table, axis):
    """Row (or column) attention with a bias table[g, (j − i) + n − 1] along the axis,
    written directly from the definition."""
    B, H, W, C = x.shape
    d = C // heads
    if axis == "column":
        x = x.transpose(1, 2)
    n = x.shape[2]
    q, k, v = (x @ w_qkv.t() + b_qkv).reshape(B, *x.shape[1:3], 3, heads, d).unbind(3)
    logits = torch.einsum("brigd,brjgd->bgrij", q, k) * d ** -0.5
    pos = torch.arange(n)
    logits = logits + table[:, pos[None, :] - pos[:, None] + n - 1][:, None]
    o = torch.einsum("bgrij,brjgd->brigd", logits.softmax(-1), v).flatten(3)
    y = o @ w_proj.t() + b_proj
    return y.transpose(1, 2) if axis == "column" else y


@pytest.mark.parametrize("axis", ["row", "column"])
def test_axial_relative_position_bias_along_the_axis(axis):
    spec = {"name": f"axial_{axis}_rpb", "heads": 4,
            "parameterization": {"kind": "additive", "terms": ["query_key", "rel_pos_bias"]},
            "normalization": {"kind": "softmax"},
            "application": {"kind": "axial", "axis": axis}}
    m = build("axial_parallel", res=(6, 9), spec=spec)
    P = dict(m.named_parameters())
    x = inputs(m, (6, 9))
    with torch.no_grad():
        r = axial_with_bias(x, 4, P["attn.qkv.weight"], P["attn.qkv.bias"],
                            P["attn.proj.weight"], P["attn.proj.bias"],
                            P["attn.rel_pos.bias"], axis)
        assert P["attn.rel_pos.bias"].shape == (4, 2 * (9 if axis == "row" else 6) - 1)
        assert (m(x) - r).abs().max() <= 1e-10
        assert (compiled_form_graph(m)(x) - r).abs().max() <= 1e-10
    with pytest.raises(ExportError, match="application: axial .relative-position terms"):
        export(m, dynamic_resolution=True)


# ---------------------------------------------------------------- dynamic resolution
def test_axial_exports_at_a_dynamic_resolution():
    m = build("axial_parallel").eval()
    program = export(m, dynamic_resolution=True)
    for grid in ((9, 5), (14, 21), (3, 30)):
        other = build("axial_parallel", res=grid).eval()
        other.load_state_dict(m.state_dict())
        x = inputs(m, grid, batch=3)
        with torch.no_grad():
            assert (program.module()(x) - other(x)).abs().max() <= 1e-12, grid


def test_grid_refuses_a_dynamic_resolution_saying_why():
    with pytest.raises(ExportError, match="application: grid .the groups' stride is H/size"):
        export(build("maxvit_grid").eval(), dynamic_resolution=True)
