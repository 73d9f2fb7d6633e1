"""Class attention (application class_tokens: CaiT's ClassAttn, XCiT's class-attention
layers) against the independent reference tests/published/cait.py (ClassAttention): the
class tokens alone query, every token is a key, and only the class tokens get an output.
It takes tokens (B, T + H·W, C), so the zoo's map tests leave it out; here it gets their
checks: float64 forward and gradients on each attention engine, export (fixed and dynamic
token count), what the kind refuses, and patch() on CaiT- and XCiT-like models written
with timm's class and attribute names. Inductor: tests/test_inductor.py."""
import pytest
import torch
from torch import nn

import attndsl
from attndsl.errors import ShapeError, SpecError
from mechanisms.cait_class_attention import reference
from patch_models import image, patch_exactly
from zoo_helpers import CLASS_ZOO, randomize

SPEC = """name: class_test
heads: 4
{positional}projections: {{layout: {layout}, bias: true}}
parameterization: {{kind: additive, terms: {terms}}}
normalization: {{kind: softmax}}
application: {{kind: class_tokens, tokens: {tokens}}}
extras: {{residual: {residual}}}
"""


def spec(layout="q_kv", terms="[query_key]", tokens=1, residual="false", positional=""):
    return SPEC.format(layout=layout, terms=terms, tokens=tokens, residual=residual,
                       positional=positional)


def tokens_for(m, grid, prefix, seed=1, dtype=torch.float64):
    gen = torch.Generator().manual_seed(seed)
    n = prefix + grid[0] * grid[1]
    return torch.randn(2, n, m.dim, generator=gen, dtype=torch.float64).to(dtype)


def test_the_zoo_has_class_attention():
    assert CLASS_ZOO == ["cait_class_attention"]


@pytest.mark.parametrize("attention", ["auto", "explicit"])
@pytest.mark.parametrize("grid", [(5, 6), (7, 7)])
def test_forward_and_gradients_match_the_reference(attention, grid):
    m = randomize(attndsl.compile("cait_class_attention", dim=48, resolution=(5, 6),
                                  dtype=torch.float64, backend="eager", attention=attention))
    z = tokens_for(m, grid, prefix=1).requires_grad_(True)
    z_ref = z.detach().clone().requires_grad_(True)
    y, want = m.forward_tokens(z, grid, prefix=1), reference(m, z_ref)
    assert y.shape == want.shape == (2, 1, 48)
    assert want.abs().max() > 1e-3
    assert (y - want).abs().max() <= 1e-10
    params = [p for _, p in sorted(m.named_parameters())]
    g = torch.autograd.grad(y.square().sum(), [z, *params])
    e = torch.autograd.grad(want.square().sum(), [z_ref, *params])
    for a, b in zip(g, e):
        assert (a - b).abs().max() <= 1e-9 * max(1.0, b.abs().max().item())


def test_more_class_tokens_and_a_register_token_that_only_is_a_key():
    """tokens: 2 with prefix 3: the first two tokens query; the third prefix token is a key
    and value like the patches."""
    m = randomize(attndsl.compile(spec(tokens=2), dim=48, resolution=(4, 4),
                                  dtype=torch.float64, backend="eager"))
    z = tokens_for(m, (4, 4), prefix=3)
    with torch.no_grad():
        y, want = m.forward_tokens(z, (4, 4), prefix=3), reference(m, z)
    assert y.shape == (2, 2, 48)
    assert (y - want).abs().max() <= 1e-10


def test_export_takes_tokens_at_a_fixed_and_a_dynamic_token_count():
    m = randomize(attndsl.compile("cait_class_attention", dim=48, resolution=(5, 6),
                                  dtype=torch.float64, backend="eager"))
    fixed = attndsl.export(m).module()
    z = tokens_for(m, (5, 6), prefix=1)
    with torch.no_grad():
        assert (fixed(z) - reference(m, z)).abs().max() <= 1e-10
    dynamic = attndsl.export(m, dynamic_resolution=True).module()
    for grid in ((3, 3), (7, 9)):
        z = tokens_for(m, grid, prefix=1, seed=2)
        with torch.no_grad():
            assert (dynamic(z) - reference(m, z)).abs().max() <= 1e-10


def test_a_map_has_no_class_token_and_is_refused_with_the_call_to_make():
    m = attndsl.compile("cait_class_attention", dim=48, resolution=(5, 6))
    with pytest.raises(ShapeError, match=r"forward_tokens\(x, \(H, W\), prefix=1\)"):
        m(torch.randn(1, 5, 6, 48))
    with pytest.raises(ShapeError, match="prefix=0.*pass prefix=1"):
        m.forward_tokens(torch.randn(1, 30, 48), (5, 6))


@pytest.mark.parametrize("text,path,words", [
    (spec(layout="qkv"), "projections.layout", "must be 'q_kv'"),
    (spec(terms="[query_key, rel_pos_bias]"), "parameterization.terms", "offset-indexed"),
    (spec(residual="true"), "application", "extras.residual"),
    (spec(positional="positional: [{kind: peg}]\n"), "application", "positional encoding"),
    (spec(tokens=31), "application.tokens", "31 class tokens but only 30"),
])
def test_what_class_attention_refuses(text, path, words):
    with pytest.raises(SpecError) as info:
        attndsl.compile(text, dim=48, resolution=(5, 6))
    assert info.value.path == path and words in str(info.value)


def test_a_second_branch_is_refused():
    two = attndsl.load_spec("cait_class_attention").model_dump()
    two["name"] = "two"
    two["branches"] = [dict(two["branches"][0], name="a", heads=2),
                       dict(two["branches"][0], name="b", heads=2)]
    with pytest.raises(SpecError, match="that one branch") as info:
        attndsl.compile(two, dim=48, resolution=(5, 6))
    assert info.value.path == "branches[0].application"


def test_a_backbone_stage_refuses_it_before_building():
    from attndsl.model.net import bind_stages
    from attndsl.model.spec import load_backbone
    text = """name: cls
image_size: 32
classes: 10
stages:
  - {depth: 1, dim: 32, heads: 2, attention: cait_class_attention}
"""
    with pytest.raises(SpecError, match="class attention's output") as info:
        bind_stages(load_backbone(text))
    assert info.value.path == "stages[0].attention.application"


# ------------------------------------------------------------------ patch
class ClassAttn(nn.Module):
    """timm's ClassAttn, as timm computes it."""

    def __init__(self, dim, num_heads, qkv_bias=True):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim, bias=qkv_bias)
        self.k = nn.Linear(dim, dim, bias=qkv_bias)
        self.v = nn.Linear(dim, dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        h = self.num_heads
        q = self.q(x[:, 0]).reshape(B, 1, h, C // h).permute(0, 2, 1, 3)
        k = self.k(x).reshape(B, N, h, C // h).permute(0, 2, 1, 3)
        v = self.v(x).reshape(B, N, h, C // h).permute(0, 2, 1, 3)
        attn = ((q * (C // h) ** -0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(B, 1, C))


class TinyCait(nn.Module):
    """Patch tokens, then CaiT's class-attention stage: x_cls + attn(norm(cat(x_cls, x)))
    (cait.py's LayerScaleBlockClassAttn), twice, and the class token to the head."""

    def __init__(self, dim=32, heads=4, qkv_bias=True):
        super().__init__()
        self.embed = nn.Conv2d(3, dim, 4, 4)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.blocks = nn.ModuleList()
        for _ in range(2):
            block = nn.Module()
            block.norm1 = nn.LayerNorm(dim)
            block.attn = ClassAttn(dim, heads, qkv_bias)
            self.blocks.append(block)
        self.head = nn.Linear(dim, 10)

    def forward(self, img):
        x = self.embed(img).flatten(2).transpose(1, 2)
        cls = self.cls_token.expand(x.shape[0], -1, -1)
        for block in self.blocks:
            cls = cls + block.attn(block.norm1(torch.cat([cls, x], dim=1)))
        return self.head(cls[:, 0])


class TinyXcitHead(TinyCait):
    """XCiT's ClassAttentionBlock: x_attn = cat([attn(norm(x)), norm(x)[:, 1:]]), x + it."""

    def forward(self, img):
        x = self.embed(img).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        for block in self.blocks:
            u = block.norm1(x)
            x = x + torch.cat([block.attn(u), u[:, 1:]], dim=1)
        return self.head(x[:, 0])


@pytest.mark.parametrize("model,size", [(TinyCait, (16, 24)), (TinyXcitHead, (16, 16))])
def test_patch_swaps_class_attention_exactly(model, size):
    torch.manual_seed(5)
    report = patch_exactly(model().double(), image(*size))
    assert [(r.status, r.weights) for r in report] == \
        [("swapped", "converted from timm.cait_class")] * 2


def test_patch_without_biases_and_spec_of():
    torch.manual_seed(6)
    model = TinyCait(qkv_bias=False).double()
    found = attndsl.spec_of(model, "blocks.0.attn", example=image(16, 16))["blocks.0.attn"]
    assert found["spec"]["projections"] == {"layout": "q_kv", "bias": False, "out_bias": True}
    report = patch_exactly(model, image(16, 16))
    assert {r.status for r in report} == {"swapped"}


class ClassAttention(nn.Module):
    """timm's VOLO ClassAttention (fused kv), as timm computes it."""

    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.kv = nn.Linear(dim, 2 * dim, bias=False)
        self.q = nn.Linear(dim, dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        k, v = self.kv(x).reshape(B, N, 2, self.num_heads, self.head_dim) \
            .permute(2, 0, 3, 1, 4).unbind(0)
        q = self.q(x[:, :1]).reshape(B, self.num_heads, 1, self.head_dim) * self.head_dim ** -0.5
        y = (q @ k.transpose(-2, -1)).softmax(-1) @ v
        return self.proj(y.transpose(1, 2).reshape(B, 1, C))


def test_patch_swaps_volo_class_attention_exactly():
    torch.manual_seed(10)
    model = TinyCait().double()
    for block in model.blocks:
        block.attn = ClassAttention(32, 4).double()
    report = patch_exactly(model, image(16, 16))
    assert [(r.status, r.weights) for r in report] == \
        [("swapped", "converted from timm.volo_class")] * 2
