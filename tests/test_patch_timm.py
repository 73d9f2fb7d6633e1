"""patch() on timm's own models. timm needs torchvision, which CI's CPU torch has no build
of, so these tests skip in CI; test_patch.py covers the mechanism on models written in the
tests. They run where timm is installed: a venv with `pip install torch==2.14.1
torchvision==0.29.1 timm` on this machine (2026-12-08: timm 1.0.31, all 31 pass, 15 min at
one thread beside another test run), and
the GPU image (benchmarks/gpu_check.py runs them)."""
import pytest
import torch

import attndsl

timm = pytest.importorskip(
    "timm", reason="timm is not installed (it needs torchvision, which has no CPU build "
                   "on this machine); tests/test_patch.py covers patch() without it")


def _same_output(model, patch_calls, x, tol=1e-4):
    model = model.eval()
    with torch.no_grad():
        before = model(x)
    reports = [r for call in patch_calls for r in call(model)]
    assert reports and all(r.weights.startswith("converted from") for r in reports), reports
    with torch.no_grad():
        after = model(x)
    assert (after - before).abs().max() <= tol * before.abs().max()
    return reports


def test_timm_swin_tiny():
    model = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False)

    def shifted(path, m):
        block = model.get_submodule(path.rsplit(".", 1)[0])
        return type(m).__name__ == "WindowAttention" and any(block.shift_size)

    def unshifted(path, m):
        block = model.get_submodule(path.rsplit(".", 1)[0])
        return type(m).__name__ == "WindowAttention" and not any(block.shift_size)

    def swin_calls(m):
        out = []
        for match, spec in ((unshifted, "swin_wmsa"), (shifted, "swin_swmsa")):
            out += attndsl.patch(m, spec, match=match, backend="eager")
        return out
    _same_output(model, [swin_calls], torch.randn(1, 3, 224, 224))


def test_timm_twins_svt_small():
    model = timm.create_model("twins_svt_small", pretrained=False)
    _same_output(model, [
        lambda m: attndsl.patch(m, "twins_lsa", match="LocallyGroupedAttn", backend="eager"),
        # the zoo's twins_gsa sub-samples by 8: the first stage's modules
        lambda m: attndsl.patch(m, "twins_gsa", backend="eager", match=lambda p, mod: (
            type(mod).__name__ == "GlobalSubSampleAttn" and mod.sr_ratio == 8))],
        torch.randn(1, 3, 224, 224))


def test_timm_pvt_v2_b0():
    model = timm.create_model("pvt_v2_b0", pretrained=False)
    # the zoo's pvt_sra sub-samples by 8 with one head: the first stage's modules
    # (timm keeps the ratio only as the stride of the `sr` conv)
    _same_output(model, [lambda m: attndsl.patch(m, "pvt_sra", backend="eager", match=lambda p, mod: (
        type(mod).__name__ == "Attention" and getattr(mod, "sr", None) is not None
        and tuple(mod.sr.stride) == (8, 8)))],
                 torch.randn(1, 3, 224, 224))


def test_timm_vit_without_class_token():
    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, class_token=False,
                              global_pool="avg")
    _same_output(model, [lambda m: attndsl.patch(m, "vit_mhsa", match="Attention",
                                                 backend="eager")],
                 torch.randn(1, 3, 224, 224))


@pytest.mark.parametrize("name", [
    "swin_tiny_patch4_window7_224", "swinv2_tiny_window8_256", "twins_svt_small",
    "twins_pcpvt_small", "pvt_v2_b0", "pvt_v2_b2_li", "vit_tiny_patch16_224",
    "deit_tiny_patch16_224", "maxvit_nano_rw_256", "halonet26t", "efficientvit_m0",
    # non-square images: windows shrunk per axis, partitions [7, 10]
    "swin_tiny_patch4_window7_224@224x320", "swinv2_tiny_window8_256@192x288",
    "maxvit_nano_rw_256@224x320",
    # the second group, where the language now says every attention the model has
    "davit_tiny", "cait_xxs24_224", "xcit_nano_12_p16_224", "eva02_tiny_patch14_224",
    "efficientformer_l1", "convit_tiny"])
def test_patch_with_no_spec_swaps_every_attention_exactly(name):
    """attndsl.patch(model): no spec, no per-model code; every attention module swapped,
    the whole model's output unchanged in float64 (every parameter moved off its init so
    that no branch is silent: Swin-V2's post-norms start at zero)."""
    from benchmarks.timm_coverage import run_model
    r = run_model(name)
    assert r["failure"] is None and not r["left"] and not r["unrecognized"], r
    assert r["swapped"] == r["attention_modules"] > 0
    # Swin-V2's coordinate table and EVA-02's rotary table are float32 in timm
    assert r["relative_error"] <= 1e-8, r


def test_halonet_swaps_its_stride_2_attention_too():
    """halonet26t's third HaloAttn has stride 2 (queries every other pixel, output half the
    size): the halo application's stride says it."""
    from benchmarks.timm_coverage import run_model
    r = run_model("halonet26t")
    assert r["swapped"] == r["attention_modules"] == 3 and not r["left"], r
    assert r["relative_error"] <= 1e-12
    model = timm.create_model("halonet26t", pretrained=False)
    specs = attndsl.spec_of(model, example=torch.randn(1, 3, 256, 256))
    assert specs["stages.3.0.self_attn"]["spec"]["application"]["stride"] == 2


def test_non_square_images_get_per_axis_windows_and_partitions():
    """What timm computed per axis is what the specs say (not a square approximation)."""
    swin = timm.create_model("swinv2_tiny_window8_256", pretrained=False, img_size=(192, 288))
    maxvit = timm.create_model("maxvit_nano_rw_256", pretrained=False, img_size=(224, 320))
    x = torch.randn(1, 3, 192, 288)
    specs = attndsl.spec_of(swin, example=x)
    last = specs["layers.3.blocks.1.attn"]["spec"]["application"]
    assert (last["size"], last["shift"]) == ([6, 8], [0, 4])      # [rows, columns]
    specs = attndsl.spec_of(maxvit, example=torch.randn(1, 3, 224, 320))
    assert {tuple(s["spec"]["application"]["size"]) for s in specs.values()} == {(7, 10)}


@pytest.mark.parametrize("name,swapped,left,unrecognized", [
    ("volo_d1_224", 16, "", "OutlookAttention"),
    ("botnet26t_256", 2, "average-pooled", ""),
    ("levit_128s", 6, "not a multiple of its 6 heads", "AttentionDownsample"),
    ("gcvit_xxtiny", 6, "global query tokens", ""),
    ("hiera_tiny_224", 9, "max-pooled", "")])
def test_the_second_group_as_far_as_the_language_reaches(name, swapped, left, unrecognized):
    """What the language says is swapped exactly; the rest is left with the reason (a
    mechanism the language lacks) or reported unrecognized — never changed."""
    from benchmarks.timm_coverage import run_model
    r = run_model(name)
    assert r["failure"] is None and r["swapped"] == swapped, r
    assert all(left in why for why in r["left"].values()) and bool(r["left"]) == bool(left), r
    assert all(unrecognized in u for u in r["unrecognized"]) \
        and bool(r["unrecognized"]) == bool(unrecognized), r
    assert r["swapped"] + len(r["left"]) + len(r["unrecognized"]) == r["attention_modules"]
    assert r["relative_error"] <= 1e-12
