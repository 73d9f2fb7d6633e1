"""Values of their own width (projections.v_width: EfficientFormer's and LeViT's attn_ratio).
The zoo spec efficientformer_attention is checked against tests/published/efficientformer.py
by the zoo tests (float64, float32, inductor, gradients, export); here: the parameter
shapes, a branch that leaves at the value width and a merge that projects it back, what
v_width refuses, and patch() on an EfficientFormer-like model written with timm's class and
attribute names."""
import pytest
import torch
from torch import nn

import attndsl
from attndsl.errors import SpecError
from patch_models import image, patch_exactly
from zoo_helpers import inputs, randomize

SPEC = """name: wide_values
heads: 4
projections: {{layout: qkv, bias: true, out: {out}, v_width: {{num: 3, den: 2}}}}
parameterization: {{kind: additive, terms: [query_key]{terms}}}
kernel: {{type: {kernel}}}
normalization: {{kind: softmax}}
application: {{kind: window, size: 4}}
{extra}"""


def spec(out="true", terms="", kernel="standard", extra=""):
    return SPEC.format(out=out, terms=terms, kernel=kernel, extra=extra)


def test_values_and_the_projection_take_the_value_width():
    m = attndsl.compile("efficientformer_attention", dim=448, resolution=(7, 7))
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    # timm's efficientformer_l1 last stage: 8 heads × (32 + 32 + 128) channels
    assert shapes["attn.qkv.weight"] == (8 * (32 + 32 + 128), 448)
    assert shapes["attn.proj.weight"] == (448, 8 * 128)
    assert m(torch.randn(1, 7, 7, 448)).shape == (1, 7, 7, 448)


def test_a_branch_without_its_projection_leaves_at_the_value_width_and_merge_projects_back():
    """out: false and merge.out: the merged output is 72 wide (3/2 of 48), merge.proj brings
    it back: the same function as the branch's own projection with those weights."""
    merged = randomize(attndsl.compile(spec(out="false", extra="merge: {out: true}\n"),
                                       dim=48, resolution=(8, 8), dtype=torch.float64))
    own = attndsl.compile(spec(), dim=48, resolution=(8, 8), dtype=torch.float64)
    assert tuple(merged.state_dict()["merge.proj.weight"].shape) == (48, 72)
    state = {k: v for k, v in merged.state_dict().items() if not k.startswith("merge.")}
    state["attn.proj.weight"] = merged.state_dict()["merge.proj.weight"]
    state["attn.proj.bias"] = merged.state_dict()["merge.proj.bias"]
    own.load_state_dict(state)
    x = inputs(merged, (8, 8))
    with torch.no_grad():
        assert (merged(x) - own(x)).abs().max() <= 1e-12


@pytest.mark.parametrize("text,path,words", [
    (spec(out="false"), "merge.out", "72 wide"),
    (spec(kernel="depthwise"), "projections.v_width", "depthwise"),
    (spec(extra="extras: {value_conv: {size: 3}}\n"), "projections.v_width", "value_conv"),
    (spec(extra="extras: {output_bias: true}\n"), "projections.v_width", "output_bias"),
])
def test_what_v_width_refuses(text, path, words):
    with pytest.raises(SpecError) as info:
        attndsl.compile(text, dim=48, resolution=(8, 8))
    assert info.value.path == path and words in str(info.value)


def test_a_value_width_the_heads_cannot_share_is_refused():
    text = spec().replace("num: 3, den: 2", "num: 1, den: 16")      # 48 // 16 = 3 < 4 heads
    with pytest.raises(SpecError, match="value width of 3.*4 heads") as info:
        attndsl.compile(text, dim=48, resolution=(8, 8))
    assert info.value.path == "projections.v_width"


# ------------------------------------------------------------------ patch
class Attention(nn.Module):
    """timm's EfficientFormer Attention, as timm computes it (its train() returns None, as
    timm's does: patch must not chain on it)."""

    def __init__(self, dim=56, key_dim=4, num_heads=4, attn_ratio=4, resolution=4):
        super().__init__()
        self.num_heads, self.key_dim, self.scale = num_heads, key_dim, key_dim ** -0.5
        self.val_dim = attn_ratio * key_dim
        self.qkv = nn.Linear(dim, num_heads * (2 * key_dim + self.val_dim))
        self.proj = nn.Linear(num_heads * self.val_dim, dim)
        ys = torch.arange(resolution).repeat_interleave(resolution)
        xs = torch.arange(resolution).repeat(resolution)
        idx = (ys[:, None] - ys[None, :]).abs() * resolution + (xs[:, None] - xs[None, :]).abs()
        self.attention_biases = nn.Parameter(torch.randn(num_heads, resolution ** 2))
        self.register_buffer("attention_bias_idxs", idx)

    @torch.no_grad()
    def train(self, mode=True):
        super().train(mode)

    def forward(self, x):
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, self.num_heads, -1).permute(0, 2, 1, 3) \
            .split([self.key_dim, self.key_dim, self.val_dim], dim=3)
        attn = (q @ k.transpose(-2, -1)) * self.scale \
            + self.attention_biases[:, self.attention_bias_idxs]
        y = (attn.softmax(-1) @ v).transpose(1, 2).reshape(B, N, -1)
        return self.proj(y)


class TinyEfficientFormer(nn.Module):
    def __init__(self, dim=56):
        super().__init__()
        self.embed = nn.Conv2d(3, dim, 4, 4)
        self.norm1 = nn.LayerNorm(dim)
        self.token_mixer = Attention(dim)
        self.head = nn.Linear(dim, 10)

    def forward(self, img):
        x = self.embed(img).flatten(2).transpose(1, 2)
        x = x + self.token_mixer(self.norm1(x))
        return self.head(x.mean(1))


def test_patch_swaps_efficientformer_attention_exactly():
    torch.manual_seed(13)
    model = TinyEfficientFormer().double()
    model.eval()                            # timm's train() returns None: no chaining
    report = patch_exactly(model, image(16, 16))
    assert [(r.status, r.weights) for r in report] == [
        ("swapped", "converted from timm.efficientformer")]
    projections = model.token_mixer.attn.spec.branches[0].projections
    assert (projections.qk_width.num, projections.qk_width.den) == (2, 7)     # 16 of 56
    assert (projections.v_width.num, projections.v_width.den) == (8, 7)       # 64 of 56


class LinearNorm(nn.Module):
    """timm levit's LinearNorm: a Linear without bias, then BatchNorm1d."""

    def __init__(self, n_in, n_out):
        super().__init__()
        self.linear = nn.Linear(n_in, n_out, bias=False)
        self.bn = nn.BatchNorm1d(n_out)
        with torch.no_grad():
            self.bn.weight.uniform_(0.5, 1.5)
            self.bn.bias.normal_(0, 0.5)
            self.bn.running_mean.normal_(0, 0.5)
            self.bn.running_var.uniform_(0.5, 2.0)

    def forward(self, x):
        return self.bn(self.linear(x).flatten(0, 1)).reshape_as(self.linear(x))


class LevitAttention(nn.Module):
    """timm's LeViT Attention (use_conv=False), as timm computes it."""

    def __init__(self, dim=48, key_dim=4, num_heads=4, attn_ratio=2, resolution=4):
        super().__init__()
        self.num_heads, self.key_dim, self.scale = num_heads, key_dim, key_dim ** -0.5
        self.val_dim, self.use_conv = attn_ratio * key_dim, False
        self.qkv = LinearNorm(dim, num_heads * (2 * key_dim + self.val_dim))
        self.proj = nn.Sequential()
        self.proj.add_module("act", nn.Hardswish())
        self.proj.add_module("ln", LinearNorm(num_heads * self.val_dim, dim))
        ys = torch.arange(resolution).repeat_interleave(resolution)
        xs = torch.arange(resolution).repeat(resolution)
        idx = (ys[:, None] - ys[None, :]).abs() * resolution + (xs[:, None] - xs[None, :]).abs()
        self.attention_biases = nn.Parameter(torch.randn(num_heads, resolution ** 2))
        self.register_buffer("attention_bias_idxs", idx, persistent=False)

    def forward(self, x):
        B, N, C = x.shape
        q, k, v = self.qkv(x).view(B, N, self.num_heads, -1) \
            .split([self.key_dim, self.key_dim, self.val_dim], dim=3)
        q, k, v = q.permute(0, 2, 1, 3), k.permute(0, 2, 3, 1), v.permute(0, 2, 1, 3)
        attn = q @ k * self.scale + self.attention_biases[:, self.attention_bias_idxs]
        y = (attn.softmax(-1) @ v).transpose(1, 2).reshape(B, N, -1)
        return self.proj(y)


LevitAttention.__name__ = "Attention"


def test_patch_swaps_levit_attention_exactly_with_its_batchnorms_folded():
    torch.manual_seed(14)
    model = TinyEfficientFormer(dim=48)
    model.token_mixer = LevitAttention()
    model = model.double().eval()
    report = patch_exactly(model, image(16, 16))
    assert [(r.status, r.weights) for r in report] == [("swapped", "converted from timm.levit")]
    spec = model.token_mixer.attn.spec
    assert (spec.merge.activation, spec.branches[0].projections.v_width.num,
            spec.branches[0].projections.v_width.den) == ("hardswish", 2, 3)     # 32 of 48


def test_patch_leaves_levit_in_training_mode_with_the_reason():
    model = TinyEfficientFormer(dim=48)
    model.token_mixer = LevitAttention()
    model = model.double()
    model.train()
    img = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    report = attndsl.patch(model, example=img, backend="eager", strict=False)
    assert report[0].status == "left" and "model.eval()" in report[0].reason
