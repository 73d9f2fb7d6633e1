"""patch(): a small Swin-like model and a Twins-like one, written here with timm's class
names, structure and call conventions (timm itself can't be installed on these machines:
its torchvision dependency has no CPU build), patched with zoo specs."""
import pytest
import torch
from torch import nn

import attndsl
from attndsl.patch import ConventionError, PatchError, patch
import layout_modules as lm
from tiny_swin import TinySwin


def tokens_module(cls_name, inner, **attrs):
    """A module named like timm's / LITv2's class, holding `inner`'s parameters under the
    same keys, called as f(x (B, N, C), size) or f(x, H, W)."""
    def forward(self, x, *size):
        H, W = size[0] if len(size) == 1 else size
        B, N, C = x.shape
        return self.inner(x.reshape(B, H, W, C)).reshape(B, N, C)

    def state_dict(self, *a, **k):
        return {key[len("inner."):]: v for key, v in nn.Module.state_dict(self, *a, **k).items()}

    mod = type(cls_name, (nn.Module,), {"forward": forward, "state_dict": state_dict})()
    mod.inner = inner
    for k, v in attrs.items():
        object.__setattr__(mod, k, v)   # timm's attribute names, not registered twice
    return mod


@pytest.mark.parametrize("cls_name,inner,spec,layout,grid", [
    ("Attention", lambda: lm.TimmGlobalSubSampleAttn(48, 1, 8, dtype=torch.float32),
     "pvt_sra", "timm.pvt_v2", (16, 16)),
    ("HiLo", lambda: lm.LitV2HiLo(96, 12, dtype=torch.float32), "hilo", "litv2.hilo",
     (15, 13)),
])
def test_pvt_and_hilo_swap_exactly(cls_name, inner, spec, layout, grid):
    torch.manual_seed(2)
    inner = inner()
    attrs = dict(num_heads=inner.heads)
    if cls_name == "Attention":
        attrs.update(q=inner.q, kv=inner.kv, sr=inner.sr)   # as timm 1.0 has them
    else:
        attrs.update(h_qkv=inner.h_qkv)
    block = nn.Module()
    block.attn = tokens_module(cls_name, inner, **attrs)
    C = 48 if cls_name == "Attention" else 96
    x = torch.randn(2, grid[0] * grid[1], C)
    with torch.no_grad():
        before = block.attn(x, grid)
    report = patch(block, spec, match=cls_name, backend="eager", resolution=grid)
    assert report[0].weights == f"converted from {layout}"
    with torch.no_grad():
        assert (block.attn(x, *grid) - before).abs().max() <= 1e-5 * before.abs().max()


def swin_input():
    return torch.randn(2, 3, 56, 56, generator=torch.Generator().manual_seed(0))


def test_swin_window_attention_swaps_exactly_with_converted_weights():
    torch.manual_seed(0)
    model = TinySwin().double()
    img = swin_input().double()
    with torch.no_grad():
        before = model(img)
    r0 = patch(model, "swin_wmsa", match="blocks.0.attn", resolution=(14, 14), backend="eager")
    r1 = patch(model, "swin_swmsa", match="blocks.1.attn", resolution=(14, 14), backend="eager")
    assert [r.weights for r in r0 + r1] == ["converted from timm.swin"] * 2
    assert r0[0].convention == "swin_block" and (r0[0].dim, r0[0].heads) == (48, 3)
    assert isinstance(model.blocks[0].attn, attndsl.CompiledAttention)
    with torch.no_grad():
        after = model(img)
    assert (after - before).abs().max().item() <= 1e-10


def test_elsa_swaps_in_with_fresh_weights_and_says_so():
    model = TinySwin()
    n_before = sum(p.numel() for p in model.parameters())
    with pytest.warns(UserWarning, match="2 module.s. got the spec's fresh weights"):
        report = patch(model, "elsa", match="WindowAttention", backend="eager",
                       example=swin_input())
    assert [r.path for r in report] == ["blocks.0.attn", "blocks.1.attn"]
    assert all(r.weights.startswith("fresh: layout 'timm.swin'") for r in report)
    assert all(r.resolution == (14, 14) for r in report)        # read by the probe forward
    y = model(swin_input())
    assert y.shape == (2, 10) and torch.isfinite(y).all()
    assert sum(p.numel() for p in model.parameters()) != n_before


def test_twins_tokens_and_size_convention():
    torch.manual_seed(1)
    block = nn.Module()
    inner = lm.TimmLocallyGroupedAttn(48, 3, 7, dtype=torch.float32)
    block.attn = tokens_module("LocallyGroupedAttn", inner, num_heads=3, qkv=inner.qkv)
    x = torch.randn(2, 15 * 13, 48)
    with torch.no_grad():
        before = block.attn(x, (15, 13))
    report = patch(block, "twins_lsa", match="LocallyGroupedAttn", backend="eager")
    assert report[0].weights == "converted from timm.twins_lsa"
    assert report[0].convention == "bnc_size"
    with torch.no_grad():
        assert (block.attn(x, (15, 13)) - before).abs().max() <= 1e-5
        assert (block.attn(x, 15, 13) - before).abs().max() <= 1e-5


def test_your_own_module_with_a_predicate_and_a_convention():
    class MyMixer(nn.Module):
        def __init__(self):
            super().__init__()
            self.dim, self.heads = 32, 4

        def forward(self, x):       # (B, H, W, C)
            return x

    model = nn.Sequential(MyMixer(), nn.Linear(32, 32))
    with pytest.raises(PatchError, match="not a class attndsl knows.*convention="):
        patch(model, "nat", match="MyMixer")
    report = patch(model, "nat", match=lambda path, m: isinstance(m, MyMixer),
                   convention="bhwc", backend="eager")
    assert report[0].weights.startswith("fresh: no known checkpoint layout")
    assert model(torch.randn(1, 9, 9, 32)).shape == (1, 9, 9, 32)


def test_tokens_beyond_a_square_grid_run_when_the_spec_reads_no_position():
    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.num_heads, self.qkv, self.proj = 4, nn.Linear(32, 96), nn.Linear(32, 32)

    model = nn.Sequential(Attention())
    report = patch(model, "vit_mhsa", match="Attention", backend="eager")
    assert report[0].weights == "converted from timm.vit"
    assert model(torch.randn(2, 49, 32)).shape == (2, 49, 32)
    # 50 tokens (a class token the model doesn't declare): global attention is the same
    # function over any token set, so they run as one row of tokens
    x = torch.randn(2, 50, 32)
    attn = model[0].attn
    q, k, v = attn.attn.qkv(x).chunk(3, -1)
    heads = lambda t: t.reshape(2, 50, 4, 8).transpose(1, 2)
    y = torch.nn.functional.scaled_dot_product_attention(heads(q), heads(k), heads(v))
    want = attn.attn.proj(y.transpose(1, 2).reshape(2, 50, 32))
    assert torch.allclose(model(x), want, atol=1e-5)
    # a spec that reads grid positions can't: the error says why and what to do
    local = nn.Sequential(Attention())
    patch(local, "nat", match="Attention", backend="eager", layout=None, resolution=(7, 7))
    with pytest.raises(ConventionError, match="50 tokens.*not a square grid.*no rule for "
                                              "prefix tokens.*example="):
        local(torch.randn(2, 50, 32))


def test_no_match_lists_the_models_classes():
    with pytest.raises(PatchError, match=r"no submodule matches 'Attn'.*SwinBlock.*WindowAttention"):
        patch(TinySwin(), "elsa", match="Attn")
    with pytest.raises(PatchError, match="unknown convention 'nhwc'"):
        patch(TinySwin(), "elsa", match="WindowAttention", convention="nhwc")
