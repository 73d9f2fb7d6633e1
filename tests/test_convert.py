"""Checkpoint conversion: every layout against an independent module in that layout
(layout_modules.py), same weights → same output (float64 ≤ 1e-10), and back to the
original state dict; bad state dicts get errors that list what was expected."""
import pytest
import torch

import attndsl
from attndsl.convert import LAYOUTS, ConversionError, convert, swin_relative_position_index
import layout_modules as lm

# layout → (foreign module factory, zoo spec, compile kwargs, input grid)
CASES = {
    "timm.swin": (lambda: lm.TimmWindowAttention(48, 3, 7), "swin_wmsa",
                  dict(dim=48, heads=3), (14, 14)),
    "timm.swin/shifted": (lambda: lm.TimmWindowAttention(48, 3, 7, shift=3), "swin_swmsa",
                          dict(dim=48, heads=3), (15, 13)),
    # a 4×4 map: the spec's window shrinks to the map (shrink_to_map), as timm's does,
    # so timm's table and index are those of a 4×4 window
    "timm.swin/small-map": (lambda: lm.TimmWindowAttention(48, 3, 4), "swin_wmsa",
                            dict(dim=48, heads=3), (4, 4)),
    "timm.twins_lsa": (lambda: lm.TimmLocallyGroupedAttn(48, 3, 7), "twins_lsa",
                       dict(dim=48, heads=3), (15, 13)),
    "timm.twins_gsa": (lambda: lm.TimmGlobalSubSampleAttn(48, 3, 8), "twins_gsa",
                       dict(dim=48, heads=3), (16, 16)),
    "timm.pvt_v2": (lambda: lm.TimmGlobalSubSampleAttn(48, 1, 8), "pvt_sra",
                    dict(dim=48, heads=1), (16, 16)),
    "timm.twins_peg": (lambda: lm.TimmPosConv(48), "twins_peg", dict(dim=48), (9, 11)),
    "timm.vit": (lambda: lm.TimmVitAttention(48, 4), "vit_mhsa", dict(dim=48, heads=4),
                 (6, 7)),
    "litv2.hilo": (lambda: lm.LitV2HiLo(96, 12), "hilo", dict(dim=96, heads=12), (15, 13)),
    "elsa": (lambda: lm.ElsaOfficial(48, 3), "elsa", dict(dim=48, heads=3), (14, 14)),
    "elsa/standalone": (lambda: lm.ElsaOfficial(48, 3, kernel=5, lam=1, gamma=1.0,
                                                scale=16 ** -0.5),
                        "elsa_standalone", dict(dim=48, heads=3), (9, 11)),
    "boat": (lambda: lm.BoatContentAttention(48, 3), "boat_fsla", dict(dim=48, heads=3),
             (14, 14)),
}


def _vit_qk_norm():
    spec = attndsl.load_spec("vit_mhsa").model_dump()
    spec["name"] = "vit_qk_norm"
    spec["branches"][0]["projections"]["qk_norm"] = {"kind": "layernorm", "eps": 1e-6}
    return spec


CASES["timm.vit/qk_norm"] = (lambda: lm.TimmVitAttention(48, 4, qk_norm=True),
                             _vit_qk_norm(), dict(dim=48, heads=4), (6, 7))


def layout_of(case: str) -> str:
    return case.split("/")[0]


def build_case(case):
    make, spec, kw, grid = CASES[case]
    foreign = make()
    module = attndsl.compile(spec, resolution=grid, dtype=torch.float64, backend="eager", **kw)
    x = torch.randn(2, *grid, kw["dim"], generator=torch.Generator().manual_seed(3),
                    dtype=torch.float64)
    return foreign, module, x


def test_every_layout_has_a_case():
    assert {layout_of(c) for c in CASES} >= set(LAYOUTS)


@pytest.mark.parametrize("case", CASES)
def test_converted_weights_give_the_reference_output(case):
    foreign, module, x = build_case(case)
    module.load_state_dict(convert(foreign.state_dict(), layout_of(case), module))
    with torch.no_grad():
        y, r = module(x), foreign(x)
    assert r.abs().max() > 1e-3
    assert (y - r).abs().max().item() <= 1e-10


@pytest.mark.parametrize("case", CASES)
def test_round_trip_gives_the_original_state_dict(case):
    foreign, module, _ = build_case(case)
    original = foreign.state_dict()
    module.load_state_dict(convert(original, layout_of(case), module))
    back = convert(module.state_dict(), layout_of(case), module, reverse=True)
    assert set(back) == set(original)
    for k, v in original.items():
        assert back[k].shape == v.shape and back[k].dtype == v.dtype, k
        assert torch.equal(back[k], v), k
    # and the foreign module accepts it as is
    foreign.load_state_dict(back, strict=True)


def test_swin_index_matches_its_definition():
    for ws in (1, 2, 7):
        assert torch.equal(swin_relative_position_index(ws), lm.swin_index(ws))


def test_prefix_picks_one_module_out_of_a_model_checkpoint():
    foreign, module, x = build_case("timm.swin")
    model_sd = {f"layers.0.blocks.1.attn.{k}": v for k, v in foreign.state_dict().items()}
    model_sd["layers.0.blocks.1.norm1.weight"] = torch.ones(48)
    sd = convert(model_sd, "timm.swin", module, prefix="layers.0.blocks.1.attn.")
    module.load_state_dict(sd)
    with torch.no_grad():
        assert (module(x) - foreign(x)).abs().max() <= 1e-10
    back = convert(module.state_dict(), "timm.swin", module, reverse=True,
                   prefix="layers.0.blocks.1.attn.")
    assert set(back) == set(model_sd) - {"layers.0.blocks.1.norm1.weight"}


# ---------------------------------------------------------------- errors
def _swin():
    foreign, module, _ = build_case("timm.swin")
    return foreign.state_dict(), module


def test_unknown_layout_suggests_the_near_one():
    sd, m = _swin()
    with pytest.raises(ConversionError, match=r"unknown layout 'timm\.swim' \(did you mean "
                                               r"'timm\.swin'\?\); known layouts: .*litv2"):
        convert(sd, "timm.swim", m)


def test_missing_and_unexpected_keys_are_listed_with_the_expected_ones():
    sd, m = _swin()
    del sd["proj.bias"]
    sd["q_norm.weight"] = torch.ones(16)
    with pytest.raises(ConversionError) as e:
        convert(sd, "timm.swin", m)
    msg = str(e.value)
    assert "unexpected keys ['q_norm.weight']" in msg and "missing keys ['proj.bias']" in msg
    assert "relative_position_bias_table (169, 3)" in msg and "qkv.weight (144, 48)" in msg


def test_shape_mismatch_names_key_shape_and_geometry():
    sd, m = _swin()
    sd["relative_position_bias_table"] = torch.zeros(169, 4, dtype=torch.float64)
    with pytest.raises(ConversionError, match=r"'relative_position_bias_table' has shape "
                                               r"\(169, 4\), but spec 'swin_wmsa' at dim=48, "
                                               r"heads=3 needs \(169, 3\)"):
        convert(sd, "timm.swin", m)


def test_a_foreign_index_buffer_that_differs_is_refused():
    sd, m = _swin()
    sd["relative_position_index"] = sd["relative_position_index"].t().contiguous().flip(0)
    with pytest.raises(ConversionError, match="relative_position_index' differs from Swin's"):
        convert(sd, "timm.swin", m)


def test_an_absent_index_buffer_is_fine():
    """Newer timm keeps relative_position_index non-persistent."""
    sd, m = _swin()
    del sd["relative_position_index"]
    assert set(convert(sd, "timm.swin", m)) == set(m.state_dict())


def test_layout_and_spec_must_fit():
    sd, _ = _swin()
    vit = attndsl.compile("vit_mhsa", dim=48, heads=3, resolution=(14, 14))
    with pytest.raises(ConversionError, match=r"layout 'timm\.swin' .* does not fit spec "
                                               r"'vit_mhsa'.*no relative position bias.*swin_wmsa"):
        convert(sd, "timm.swin", vit)
    qk = attndsl.compile(_vit_qk_norm(), dim=48, heads=3, resolution=(14, 14))
    with pytest.raises(ConversionError, match=r"no source for \['attn\.k_norm\.bias'.*swin_wmsa"):
        convert(sd, "timm.swin", qk)
    plain_vit = lm.TimmVitAttention(48, 3, qk_norm=True).state_dict()
    with pytest.raises(ConversionError, match=r"unexpected keys \['k_norm\.bias', "
                                               r"'k_norm\.weight', 'q_norm\.bias'"):
        convert(plain_vit, "timm.vit", vit)
    spec = attndsl.load_spec("swin_wmsa").model_dump()
    spec["branches"][0]["parameterization"]["rel_pos_orientation"] = "j_minus_i"
    flipped = attndsl.compile(spec, dim=48, heads=3, resolution=(14, 14))
    with pytest.raises(ConversionError, match="indexed by i − j.*i_minus_j"):
        convert(sd, "timm.swin", flipped)


def test_reverse_needs_the_modules_own_state_dict():
    _, m = _swin()
    sd = m.state_dict()
    sd.pop("attn.proj.bias")
    with pytest.raises(ConversionError, match=r"missing \['attn\.proj\.bias'\]"):
        convert(sd, "timm.swin", m, reverse=True)


def test_a_whole_model_checkpoint_without_prefix_suggests_the_prefixes():
    sd, m = _swin()
    model_sd = {f"layers.{i}.blocks.0.attn.{k}": v for i in range(2) for k, v in sd.items()}
    with pytest.raises(ConversionError, match=r"under prefix 'layers\.0\.blocks\.0\.attn\.', "
                                               r"'layers\.1\.blocks\.0\.attn\.': pass prefix="):
        convert(model_sd, "timm.swin", m)


def test_parameters_doc_has_the_generated_layout_tables():
    from pathlib import Path
    from attndsl.convert import layout_markdown
    doc = (Path(__file__).parents[1] / "docs" / "parameters.md").read_text()
    assert layout_markdown().strip() in doc
