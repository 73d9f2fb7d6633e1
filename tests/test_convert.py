"""Checkpoint conversion: every layout against an independent module in that layout
(layout_modules.py, published/), same weights → same output (float64 ≤ 1e-10), and back to
the original state dict (where the layout is bitwise invertible; else the same function);
bad state dicts get errors that list what was expected."""
import pytest
import torch
from torch import nn

import attndsl
from attndsl.convert import LAYOUTS, ConversionError, convert, swin_relative_position_index
import layout_modules as lm
from published.cait import ClassAttention, TalkingHeadAttentionOnMap
from published.botnet import BottleneckAttention
from published.convit import GatedPositionalSelfAttention
from published.cswin import CSWinAttention
from published.davit import ChannelAttentionOnMap
from published.eva import EvaRopeAttention
from published.efficientformer import EfficientFormerAttention
from published.efficientvit import LocalWindowAttention, offset_index
from published.levit import LevitAttention
from published.halonet import HaloAttention
from published.maxvit import MaxVitPartitionAttention
from published.pvt_v2 import PvtV2LinearAttention
from published.swin_v2 import SwinV2WindowAttention, coords_table
from published.xcit import XCAOnMap

def _moved(module):
    """XCA's temperature starts at ones: moved, so that a dropped or misplaced one shows."""
    with torch.no_grad():
        module.temperature.copy_(torch.linspace(0.5, 2.0, module.temperature.numel())
                                 .view_as(module.temperature))
    return module


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
    "timm.gcvit": (lambda: lm.TimmGcvitLocalAttention(48, 3, 7), "swin_wmsa",
                   dict(dim=48, heads=3), (14, 14)),
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
    # tests/published/: modules written from the papers in the published layouts
    "timm.swin_v2": (lambda: SwinV2WindowAttention(48, 3, 7), "swin_v2_wmsa",
                     dict(dim=48, heads=3), (14, 14)),
    "timm.swin_v2/shifted": (lambda: SwinV2WindowAttention(48, 3, 7, shift=3), "swin_v2_swmsa",
                             dict(dim=48, heads=3), (14, 21)),
    "timm.maxvit/block": (lambda: MaxVitPartitionAttention(64, 2, 7, "block"), "maxvit_block",
                          dict(dim=64, heads=2), (14, 21)),
    "timm.maxvit/grid": (lambda: MaxVitPartitionAttention(96, 3, 7, "grid"), "maxvit_grid",
                         dict(dim=96, heads=3), (21, 14)),
    "timm.halo": (lambda: HaloAttention(48, 4, 7, 3), "halonet", dict(dim=48, heads=4),
                  (14, 21)),
    "timm.pvt_v2_linear": (lambda: PvtV2LinearAttention(48, 2), "pvt_v2_linear",
                           dict(dim=48, heads=2), (17, 15)),
    # LocalWindowAttention: its CascadedGroupAttention's keys are under "attn." (PREFIX);
    # 16×16 is zero-padded to 21×21 (padded tokens live), 7×7 is one window
    "msra.efficientvit": (lambda: LocalWindowAttention(48, 16, 3, 1.0, 16, 7, [5] * 3),
                          "efficientvit", dict(dim=48, heads=3), (16, 16)),
    "msra.efficientvit/one-window": (lambda: LocalWindowAttention(48, 16, 3, 1.0, 7, 7, [5] * 3),
                                     "efficientvit", dict(dim=48, heads=3), (7, 7)),
    "cswin": (lambda: CSWinAttention(48, 4, 2, 14), "cswin", dict(dim=48, heads=4), (14, 14)),
    "timm.cait": (lambda: TalkingHeadAttentionOnMap(48, 4), "cait_talking_heads",
                  dict(dim=48, heads=4), (6, 7)),
    "timm.xcit": (lambda: _moved(XCAOnMap(48, 4)), "xcit_xca", dict(dim=48, heads=4), (6, 7)),
    "timm.davit_channel": (lambda: ChannelAttentionOnMap(48, 4), "davit_channel",
                           dict(dim=48, heads=4), (5, 6)),
}
PREFIX = {"msra.efficientvit": "attn.", "timm.efficientvit_msra": "attn."}


class TimmLocalWindowAttention(LocalWindowAttention):
    """The same module under timm's efficientvit_msra names: each Conv2d + BN pair's conv
    is `conv` (the official code: `c`), and attention_bias_idxs is non-persistent."""

    def state_dict(self, *args, **kwargs):
        return {k.replace(".c.", ".conv."): v for k, v in super().state_dict(*args, **kwargs).items()
                if not k.endswith("attention_bias_idxs")}

    def load_state_dict(self, state, strict: bool = True, **kwargs):
        state = {k.replace(".conv.", ".c."): v for k, v in state.items()}
        state["attn.attention_bias_idxs"] = nn.Module.state_dict(self)["attn.attention_bias_idxs"]
        return super().load_state_dict(state, strict=strict, **kwargs)


CASES["timm.efficientvit_msra"] = (
    lambda: TimmLocalWindowAttention(48, 16, 3, 1.0, 16, 7, [5] * 3), "efficientvit",
    dict(dim=48, heads=3), (16, 16))


def _vit_qk_norm():
    spec = attndsl.load_spec("vit_mhsa").model_dump()
    spec["name"] = "vit_qk_norm"
    spec["branches"][0]["projections"]["qk_norm"] = {"kind": "layernorm", "eps": 1e-6}
    return spec


CASES["timm.vit/qk_norm"] = (lambda: lm.TimmVitAttention(48, 4, qk_norm=True),
                             _vit_qk_norm(), dict(dim=48, heads=4), (6, 7))


def _swin_v2_pretrained():
    spec = attndsl.load_spec("swin_v2_wmsa").model_dump()
    spec["name"] = "swin_v2_pretrained_12"
    spec["branches"][0]["parameterization"]["terms"] = [
        "query_key", {"kind": "cpb", "pretrained_window": 12}]
    return spec


CASES["timm.swin_v2/pretrained-window"] = (
    lambda: SwinV2WindowAttention(48, 3, 7, pretrained_window=12), _swin_v2_pretrained(),
    dict(dim=48, heads=3), (14, 14))


def _efficientvit_window(size):
    """efficientvit at a map no larger than its window: the official module makes it one
    unpadded window (EfficientViT's third stage: 4×4 at 224 px)."""
    spec = attndsl.load_spec("efficientvit").model_dump()
    spec["name"], spec["pad_to_multiple"] = f"efficientvit_{size}", size
    for b in spec["branches"]:
        b["application"]["size"] = size
    return spec


def _efficientvit_key_dim_16():
    """EfficientViT-M0's second stage: dim 128, 4 heads, key_dim 16 < dim/heads = 32
    (q/k narrower than v: qk_width 1/8 of the dim)."""
    spec = attndsl.load_spec("efficientvit").model_dump()
    spec["name"], spec["heads"] = "efficientvit_m0_stage2", 4
    spec["branches"] = [dict(spec["branches"][0], name=f"h{i}") for i in range(4)]
    for b in spec["branches"]:
        b["projections"] = dict(b["projections"], qk_width={"num": 1, "den": 8})
    return spec


CASES["msra.efficientvit/key-dim-16"] = (
    lambda: LocalWindowAttention(128, 16, 4, 2.0, 14, 7, [5] * 4), _efficientvit_key_dim_16(),
    dict(dim=128, heads=4), (14, 14))

CASES["msra.efficientvit/small-map"] = (
    lambda: LocalWindowAttention(48, 16, 3, 1.0, 4, 7, [5] * 3), _efficientvit_window(4),
    dict(dim=48, heads=3), (4, 4))


class ClassAttentionOnRow(ClassAttention):
    """timm's ClassAttn on the (B, 1, 1 + N, C) row `run` gives it: → (B, 1, 1, C)."""

    def forward(self, x):
        return super().forward(x.flatten(1, 2)).unsqueeze(1)


class EvaRopeAttentionOnMap(EvaRopeAttention):
    """EVA-02's attention on a (B, H, W, C) map, its tokens row-major."""

    def forward(self, x):
        B, H, W, C = x.shape
        return super().forward(x.reshape(B, H * W, C), (H, W)).reshape(x.shape)


def _moved_eva():
    module = EvaRopeAttentionOnMap(48, 3, reference_grid=(16, 16))
    with torch.no_grad():       # q_bias / v_bias start at zero: moved, so a dropped one shows
        module.q_bias.normal_(0, 0.5, generator=torch.Generator().manual_seed(4))
        module.v_bias.normal_(0, 0.5, generator=torch.Generator().manual_seed(5))
    return module


def _moved_botnet():
    module = BottleneckAttention(48, 4, (6, 7))
    with torch.no_grad():       # the tables start at zero: moved, so a misplaced one shows
        for t in (module.pos_embed.height_rel, module.pos_embed.width_rel, module.qkv.weight):
            t.normal_(0, 0.2, generator=torch.Generator().manual_seed(t.numel()))
    return module


def _moved_efficientformer():
    module = EfficientFormerAttention(56, 4, 4, 4, (5, 6))     # qk 16 = 56·2/7, v 64 = 56·8/7
    with torch.no_grad():       # the biases start at zero: moved, so a misplaced one shows
        module.attention_biases.normal_(0, 0.5, generator=torch.Generator().manual_seed(6))
    return module


def _efficientformer_56():
    spec = attndsl.load_spec("efficientformer_attention").model_dump()
    spec["name"], spec["heads"] = "efficientformer_56", 4
    spec["branches"][0]["projections"]["qk_width"] = {"num": 2, "den": 7}
    spec["branches"][0]["projections"]["v_width"] = {"num": 8, "den": 7}
    return spec


CASES["timm.efficientformer"] = (_moved_efficientformer, _efficientformer_56(),
                                 dict(dim=56, heads=4), (5, 6))
def _moved_levit():
    """LeViT with BatchNorm statistics and biases away from their initial values."""
    module = LevitAttention(64, 8, 4, 2, (5, 6)).eval()       # qk 32 = 64/2, v 64
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        module.attention_biases.normal_(0, 0.5, generator=gen)
        for bn in (module.qkv.bn, module.proj.ln.bn):
            bn.weight.uniform_(0.5, 1.5, generator=gen)
            bn.bias.normal_(0, 0.5, generator=gen)
            bn.running_mean.normal_(0, 0.5, generator=gen)
            bn.running_var.uniform_(0.5, 2.0, generator=gen)
    return module


CASES["timm.levit"] = (_moved_levit, "levit_attention", dict(dim=64, heads=4), (5, 6))
def _moved_gpsa():
    module = GatedPositionalSelfAttention(48, 4, qkv_bias=True)
    with torch.no_grad():       # the gate starts at ones: moved, so a misplaced one shows
        module.gating_param.copy_(torch.linspace(-1.0, 2.0, 4, dtype=torch.float64))
    return module


CASES["timm.convit_gpsa"] = (_moved_gpsa, "convit_gpsa", dict(dim=48, heads=4), (5, 5))
CASES["timm.botnet"] = (_moved_botnet, "botnet_mhsa", dict(dim=48, heads=4), (6, 7))
CASES["timm.eva"] = (_moved_eva, "eva02_rope", dict(dim=48, heads=3), (6, 7))

# class attention takes tokens, the class token first: its case's input is one row
CASES["timm.cait_class"] = (lambda: ClassAttentionOnRow(48, 4), "cait_class_attention",
                            dict(dim=48, heads=4), (1, 13))
CASES["timm.volo_class"] = (lambda: ClassAttentionOnRow(48, 4, fused_kv=True),
                            "cait_class_attention", dict(dim=48, heads=4), (1, 13))


def run(module, x):
    """module(x), or for class attention forward_tokens on the row's tokens."""
    if not module.plan.branches[0].kind.prefix_queries:
        return module(x)
    B, _, n, C = x.shape
    return module.forward_tokens(x.flatten(1, 2), (1, n - 1), prefix=1).unsqueeze(1)


def layout_of(case: str) -> str:
    return case.split("/")[0]


def prefix_of(case: str) -> str:
    return PREFIX.get(layout_of(case), "")


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
    module.load_state_dict(convert(foreign.state_dict(), layout_of(case), module,
                                   prefix=prefix_of(case)))
    with torch.no_grad():
        y, r = run(module, x), foreign(x)
    assert r.abs().max() > 1e-3
    assert (y - r).abs().max().item() <= 1e-10


def _conv_bn_key(k):
    return ".c.weight" in k or ".conv.weight" in k or "linear.weight" in k or ".bn." in k


def expected_back(case, original, module):
    """What a round trip gives back bitwise: the original, except
    - timm.halo: the first 2·halo rows of each table, never read, come back as zeros;
    - msra.efficientvit, timm.efficientvit_msra, timm.levit: the Conv2d_BN / LinearNorm
      pairs come back folded (compared by output)."""
    layout = layout_of(case)
    if layout == "timm.halo":
        rows = 2 * module.plan.branches[0].geometry.halo
        return {k: torch.cat([torch.zeros_like(v[:rows]), v[rows:]])
                if k.startswith("pos_embed.") else v for k, v in original.items()}
    if layout in ("msra.efficientvit", "timm.efficientvit_msra", "timm.levit"):
        return {k: v for k, v in original.items() if not _conv_bn_key(k)}
    return dict(original)


@pytest.mark.parametrize("case", CASES)
def test_round_trip_gives_the_original_state_dict(case):
    foreign, module, x = build_case(case)
    layout, prefix = layout_of(case), prefix_of(case)
    original = foreign.state_dict()
    module.load_state_dict(convert(original, layout, module, prefix=prefix))
    back = convert(module.state_dict(), layout, module, reverse=True, prefix=prefix)
    assert set(back) == set(original)
    for k, v in original.items():
        assert back[k].shape == v.shape and back[k].dtype == v.dtype, k
    for k, v in expected_back(case, original, module).items():
        assert torch.equal(back[k], v), k
    # the foreign module accepts it as is, and computes the same function with it
    with torch.no_grad():
        before = foreign(x)
        foreign.load_state_dict(back, strict=True)
        assert (foreign(x) - before).abs().max().item() <= 1e-12
    # attndsl → foreign → attndsl is exact for every layout
    again = convert(back, layout, module, prefix=prefix)
    assert all(torch.equal(again[k], v) for k, v in module.state_dict().items())


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
    """An official-Swin (or timm < 1.0) checkpoint holds the index: it is checked."""
    sd, m = _swin()
    sd["relative_position_index"] = swin_relative_position_index(7)
    assert set(convert(sd, "timm.swin", m)) == set(m.state_dict())
    sd["relative_position_index"] = sd["relative_position_index"].t().contiguous().flip(0)
    with pytest.raises(ConversionError, match="relative_position_index' differs from Swin's"):
        convert(sd, "timm.swin", m)


def test_an_absent_index_buffer_is_fine_and_never_written_back():
    """timm ≥ 1.0 keeps relative_position_index non-persistent: a checkpoint lacks it, and
    the way back must not write it (a strict load into timm would fail)."""
    sd, m = _swin()
    assert "relative_position_index" not in sd
    m.load_state_dict(convert(sd, "timm.swin", m))
    assert "relative_position_index" not in convert(m.state_dict(), "timm.swin", m,
                                                     reverse=True)


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


# ---------------------------------------------------------------- the published layouts
def test_swin_v2_buffers_of_a_microsoft_checkpoint_are_checked_and_not_written():
    """timm keeps relative_coords_table / relative_position_index non-persistent; the
    Microsoft checkpoints hold them (the table in float32)."""
    foreign, module, _ = build_case("timm.swin_v2")
    sd = foreign.state_dict()
    sd["relative_coords_table"] = coords_table(7).float()
    sd["relative_position_index"] = swin_relative_position_index(7)
    assert set(convert(sd, "timm.swin_v2", module)) == set(module.state_dict())
    sd["relative_coords_table"] = coords_table(7, pretrained_window=12).float()
    with pytest.raises(ConversionError, match="relative_coords_table' differs from Swin-V2"):
        convert(sd, "timm.swin_v2", module)
    back = convert(module.state_dict(), "timm.swin_v2", module, reverse=True)
    assert "relative_coords_table" not in back and "relative_position_index" not in back


def test_swin_v2_needs_its_cosine_similarity_and_orientation():
    sd = SwinV2WindowAttention(48, 3, 7).state_dict()
    spec = attndsl.load_spec("swin_v2_wmsa").model_dump()
    spec["branches"][0]["parameterization"]["rel_pos_orientation"] = "j_minus_i"
    flipped = attndsl.compile(spec, dim=48, heads=3, resolution=(14, 14))
    with pytest.raises(ConversionError, match="i − j.*i_minus_j"):
        convert(sd, "timm.swin_v2", flipped)
    spec = attndsl.load_spec("swin_v2_wmsa").model_dump()
    spec["branches"][0]["parameterization"]["similarity"]["max_scale"] = 50.0
    clamped = attndsl.compile(spec, dim=48, heads=3, resolution=(14, 14))
    with pytest.raises(ConversionError, match="clamped at ln 100"):
        convert(sd, "timm.swin_v2", clamped)


def test_maxvit_rows_are_regrouped_per_head():
    """timm's head_first rows [q_g | k_g | v_g] become attndsl's [q; k; v] blocks."""
    foreign, module, _ = build_case("timm.maxvit/grid")
    w = foreign.state_dict()["qkv.weight"]                 # (3C, C), C = 96, 3 heads of 32
    ours = convert(foreign.state_dict(), "timm.maxvit", module)["attn.qkv.weight"]
    for g in range(3):
        for i, part in enumerate("qkv"):
            assert torch.equal(ours[i * 96 + g * 32:i * 96 + (g + 1) * 32],
                               w[g * 96 + i * 32:g * 96 + (i + 1) * 32]), (g, part)


def test_halo_never_read_rows_do_not_matter():
    foreign, module, x = build_case("timm.halo")
    sd = foreign.state_dict()
    a = convert(sd, "timm.halo", module)
    sd["pos_embed.height_rel"][:6] = 1e6
    b = convert(sd, "timm.halo", module)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_efficientvit_index_counters_and_small_maps():
    foreign, module, _ = build_case("msra.efficientvit")
    sd = foreign.state_dict()
    sd["attn.qkvs.1.bn.num_batches_tracked"] = torch.tensor(12345)    # any count is fine
    assert set(convert(sd, "msra.efficientvit", module, prefix="attn.")) == set(module.state_dict())
    assert torch.equal(sd["attn.attention_bias_idxs"], offset_index(7))
    sd["attn.attention_bias_idxs"] = sd["attn.attention_bias_idxs"].t().flip(0).contiguous()
    with pytest.raises(ConversionError, match="attention_bias_idxs' differs"):
        convert(sd, "msra.efficientvit", module, prefix="attn.")
    small = attndsl.compile("efficientvit", dim=48, heads=3, resolution=(4, 4))
    with pytest.raises(ConversionError, match=r"one unpadded 4×4 window.*windows are 4×4"):
        convert(LocalWindowAttention(48, 16, 3, 1.0, 4, 7, [5] * 3).state_dict(),
                "msra.efficientvit", small, prefix="attn.")


def test_cswin_block_keys_are_skipped_and_branch_order_checked():
    foreign, module, x = build_case("cswin")
    block = {f"stage1.0.{k}": v for k, v in foreign.state_dict().items()}
    block.update({"stage1.0.norm1.weight": torch.ones(48), "stage1.0.mlp.fc1.weight":
                  torch.ones(192, 48), "stage1.0.norm2.bias": torch.zeros(48)})
    module.load_state_dict(convert(block, "cswin", module, prefix="stage1.0."))
    with torch.no_grad():
        assert (module(x) - foreign(x)).abs().max() <= 1e-10
    spec = attndsl.load_spec("cswin").model_dump()
    spec["branches"][0]["application"]["orientation"] = "horizontal"
    spec["branches"][1]["application"]["orientation"] = "vertical"
    swapped = attndsl.compile(spec, dim=48, heads=4, resolution=(14, 14))
    with pytest.raises(ConversionError, match="attns.0 attends in vertical stripes"):
        convert(foreign.state_dict(), "cswin", swapped)


def test_pvt_v2_linear_needs_adaptive_pooling():
    sd = PvtV2LinearAttention(48, 2).state_dict()
    sra = attndsl.compile("pvt_sra", dim=48, heads=2, resolution=(16, 16))
    with pytest.raises(ConversionError, match="AdaptiveAvgPool2d\\(7\\).*'pooled'"):
        convert(sd, "timm.pvt_v2_linear", sra)
