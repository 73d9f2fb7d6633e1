"""The compiled module as users hold it: saving, pickling, dtypes, dropout, the token
entry point, several resolutions, training, and clear errors on bad input."""
import pickle

import pytest
import torch

import attndsl
from attndsl import ShapeError
from attndsl.cli import main
from zoo_helpers import build, inputs


def test_parameter_names_are_stable():
    m = attndsl.compile("swin_wmsa", dim=48, resolution=(14, 14))
    assert {k: tuple(v.shape) for k, v in m.state_dict().items()} == {
        "attn.qkv.weight": (144, 48), "attn.qkv.bias": (144,), "attn.proj.weight": (48, 48),
        "attn.proj.bias": (48,), "attn.rel_pos.bias": (3, 169)}
    h = attndsl.compile("hilo", dim=48, resolution=(14, 14))
    assert sorted(h.state_dict()) == sorted(
        f"{b}.{p}.{w}" for b, ps in (("hifi", ("qkv", "proj")), ("lofi", ("q", "kv", "proj")))
        for p in ps for w in ("weight", "bias"))
    assert h.plan.branches[0].heads == 2 and h.plan.branches[1].heads == 10


@pytest.mark.parametrize("name", ["elsa", "hilo", "boat_fsla", "twins_gsa"])
def test_save_and_load_round_trip(tmp_path, name):
    m = build(name)
    path = tmp_path / "m.pt"
    m.save(path)
    again = attndsl.load(path)
    x = inputs(m, m.resolution)
    with torch.no_grad():
        assert torch.equal(m(x), again(x))
    assert again.spec == m.spec and next(again.parameters()).dtype == torch.float64


def test_cli_compile_out_then_load(tmp_path, capsys):
    path = tmp_path / "nat.pt"
    assert main(["compile", "nat", "--dim", "48", "--resolution", "14", "14",
                 "--backend", "eager", "--out", str(path)]) == 0
    assert "wrote" in capsys.readouterr().out
    m = attndsl.load(path)
    assert m.spec.name == "nat" and m.resolution == (14, 14)
    assert m(torch.randn(1, 14, 14, 48)).shape == (1, 14, 14, 48)


def test_pickle_keeps_weights_and_drops_graph_cache():
    m = build("swin_swmsa")
    x = inputs(m, m.resolution)
    with torch.no_grad():
        y = m(x)
        clone = pickle.loads(pickle.dumps(m))
        assert torch.equal(clone(x), y)


@pytest.mark.parametrize("name", ["swin_swmsa", "elsa", "hilo", "nat", "boat_fsla",
                                  "dynconv_depthwise", "twins_gsa", "linformer"])
def test_bfloat16_forward_and_backward(name):
    m32 = build(name, dtype=torch.float32)
    m16 = build(name, dtype=torch.bfloat16)
    m16.load_state_dict({k: v.bfloat16() for k, v in m32.state_dict().items()})
    x = inputs(m32, m32.resolution, dtype=torch.float32)
    x16 = x.bfloat16().requires_grad_(True)
    y16 = m16(x16)
    assert y16.dtype == torch.bfloat16
    y16.float().square().mean().backward()
    assert torch.isfinite(x16.grad.float()).all()
    assert all(p.grad is not None and torch.isfinite(p.grad.float()).all()
               for p in m16.parameters())
    if name != "boat_fsla":   # bf16 rounding flips BOAT's cluster assignments
        with torch.no_grad():
            y32 = m32(x)
        rel = (y16.float() - y32).abs().max() / y32.abs().max()
        assert rel < 5e-2


def test_dropout_is_active_only_in_training():
    spec = attndsl.load_spec("swin_wmsa").model_dump()
    spec["branches"][0]["dropout"] = {"attention": 0.5, "projection": 0.1}
    m = attndsl.compile(spec, dim=48, resolution=(14, 14), backend="eager")
    x = torch.randn(2, 14, 14, 48)
    m.train()
    assert not torch.equal(m(x), m(x))
    m.eval()
    assert torch.equal(m(x), m(x))
    assert "dropout" not in m.graph_module(training=False).code
    assert "dropout" in m.graph_module(training=True).code


def test_token_entry_point_matches_grid_entry_point():
    m = build("twins_lsa")
    x = inputs(m, (14, 14))
    with torch.no_grad():
        tokens = m.forward_tokens(x.reshape(2, 196, 48), (14, 14))
        assert torch.equal(tokens, m(x).reshape(2, 196, 48))
    with pytest.raises(ShapeError, match=r"\(B, 14\*15=210, 48\)"):
        m.forward_tokens(x.reshape(2, 196, 48), (14, 15))


def test_runs_at_other_resolutions_with_a_bounded_cache():
    m = build("swin_swmsa")
    x = inputs(m, (21, 28))
    fresh = build("swin_swmsa", res=(21, 28))
    fresh.load_state_dict(m.state_dict())
    with torch.no_grad():
        assert torch.equal(m(x), fresh(x))
        before = m.lowerings
        for _ in range(3):
            m(x)
            m(inputs(m, (14, 14)))
    # 21×28 was lowered by the first call, 14×14 (the bound grid) when the module was built
    assert m.lowerings == before


def test_resolution_sized_parameters_refuse_other_resolutions():
    m = build("linformer")
    with pytest.raises(ShapeError, match="Compile it again at that resolution"):
        m(inputs(m, (16, 16)))


def test_bad_inputs_get_clear_errors():
    m = build("vit_mhsa", dtype=torch.float32)
    with pytest.raises(ShapeError, match=r"expects x of shape \(B, H, W, 48\)"):
        m(torch.randn(2, 196, 48))
    with pytest.raises(ShapeError, match="dtype"):
        m(torch.randn(2, 14, 14, 48, dtype=torch.float64))
    with pytest.raises(attndsl.AttndslError, match="valid backends"):
        attndsl.compile("vit_mhsa", dim=48, resolution=(14, 14), backend="tvm")
    with pytest.raises(attndsl.AttndslError, match="valid"):
        attndsl.compile("vit_mhsa", dim=48, resolution=(14, 14), dtype="float8")


@pytest.mark.parametrize("name", ["elsa", "hilo", "unified_lsa_rp_sliding_softmax"])
def test_trains(name):
    """A student module fits a teacher of the same spec: gradients are usable end to end."""
    torch.manual_seed(0)
    teacher = build(name, dtype=torch.float32)
    student = attndsl.compile(name, dim=teacher.dim, resolution=teacher.resolution,
                              backend="eager")
    x = torch.randn(4, *teacher.resolution, teacher.dim)
    with torch.no_grad():
        target = teacher(x)
    opt = torch.optim.Adam(student.parameters(), lr=1e-2)
    losses = []
    for _ in range(20):
        loss = (student(x) - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_parameters_doc_lists_every_zoo_parameter():
    from pathlib import Path

    from attndsl.codegen.params import zoo_parameter_tables
    doc = (Path(__file__).parents[1] / "docs" / "parameters.md").read_text()
    assert doc[doc.index("## Every zoo spec"):] == zoo_parameter_tables(), \
        "regenerate: python -m attndsl.codegen.params"
    for name in attndsl.zoo_names():
        section = doc.split(f"### {name}\n", 1)[1].split("###", 1)[0]
        m = attndsl.compile(name, dim=96, resolution=(56, 56))
        for key, value in m.state_dict().items():
            assert f"| `{key}` | {tuple(value.shape)} |" in section, (name, key)


def test_module_file_keeps_the_spec_text_and_passes(tmp_path):
    """The file holds the spec's text (loading never reads the spec file again, which may
    have changed or gone) and the passes: a passes=[] module reloads as passes=[]."""
    spec_file = tmp_path / "mine.yaml"
    spec_file.write_text(attndsl.zoo_path("swin_wmsa").read_text().replace(
        "name: swin_wmsa", "name: mine"))
    m = attndsl.compile(str(spec_file), dim=48, resolution=(14, 14), backend="eager",
                        passes=[])
    m.save(tmp_path / "m.pt")
    spec_file.write_text("this is no longer a spec")
    again = attndsl.load(tmp_path / "m.pt")
    x = torch.randn(2, 14, 14, 48)
    with torch.no_grad():
        assert torch.equal(again(x), m(x))
    assert again.passes == [] and again.spec == m.spec
    assert "scaled_dot_product_attention" not in again.code


def test_changing_passes_or_backend_rebuilds_the_graph():
    m = attndsl.compile("swin_wmsa", dim=48, resolution=(14, 14), backend="eager")
    x = torch.randn(2, 14, 14, 48)
    with torch.no_grad():
        m(x)
        assert "scaled_dot_product_attention" in m.code
        m.passes = []
        assert "scaled_dot_product_attention" not in m.code
        m.backend = "eager"            # the same backend: nothing to rebuild
        m(x)
        assert m.lowerings == 2
        m.backend = "auto"
    assert m.lowerings == 3
    with pytest.raises(attndsl.SpecError, match="unknown backend 'tvm'"):
        m.backend = "tvm"


def test_file_sizes_go_through_the_api_checks(tmp_path):
    m = attndsl.compile("swin_wmsa", dim=48, resolution=(14, 14), backend="eager")
    m.save(tmp_path / "m.pt")
    blob = torch.load(tmp_path / "m.pt", weights_only=True)
    blob["resolution"] = [14.5, 14]
    torch.save(blob, tmp_path / "bad.pt")
    with pytest.raises(attndsl.AttndslError, match="bad.pt: the stored module is invalid: .*"
                                                   "resolution H must be an integer"):
        attndsl.load(tmp_path / "bad.pt")


def test_memory_estimate_names_the_field_and_the_size():
    from attndsl.codegen.footprint import estimate
    spec = attndsl.load_spec("vit_mhsa").model_dump()
    spec["branches"][0]["parameterization"]["terms"] = ["query_key", "rel_pos_bias"]
    with pytest.raises(attndsl.SpecError, match=r"needs about [\d.,]+ GiB .* more than the "
                                                r"[\d.,]+ GiB of cpu .*relative-position") as e:
        attndsl.compile(spec, dim=48, resolution=(160, 160))
    assert e.value.path in ("application", "parameterization.terms")
    # the estimate counts the parameters exactly
    m = attndsl.compile("hilo", dim=96, resolution=(14, 14))
    params = [n for n in estimate(m.plan) if n.path.startswith("parameter ")]
    assert sum(n.bytes for n in params) == 4 * sum(p.numel() for p in m.parameters())
