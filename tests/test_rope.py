"""Rotary position embeddings (projections.rope: EVA-02, timm's RoPE ViTs). The zoo spec
eva02_rope is checked against tests/published/eva.py by the zoo tests (float64, float32,
inductor, gradients, export); here: class tokens (not rotated), non-square grids, the
'halves' pair layout, the dynamic-resolution export, what rope refuses, and patch() on an
EVA-like model written with timm's class and attribute names."""
import math

import pytest
import torch
from torch import nn

import attndsl
from attndsl.errors import SpecError
from published.eva import EvaRopeAttention
from patch_models import image, patch_exactly
from zoo_helpers import inputs, randomize

SPEC = """name: rope_test
heads: {heads}
projections: {{layout: {layout}, bias: no_key, rope: {{pairs: {pairs}{reference}}}}}
parameterization: {{kind: additive, terms: [query_key]}}
normalization: {{kind: softmax}}
application: {application}
"""


def spec(heads=3, layout="qkv", pairs="interleaved", reference=", reference_grid: [16, 16]",
         application="{kind: global}"):
    return SPEC.format(heads=heads, layout=layout, pairs=pairs, reference=reference,
                       application=application)


def published_for(m):
    P = dict(m.named_parameters())
    rope = m.plan.branches[0].spec.projections.rope
    ref = EvaRopeAttention(m.dim, m.plan.heads, rope.reference_grid, rope.temperature)
    params = {"qkv.weight": P["attn.qkv.weight"], "q_bias": P["attn.q_bias"],
              "v_bias": P["attn.v_bias"], "proj.weight": P["attn.proj.weight"],
              "proj.bias": P["attn.proj.bias"]}
    return lambda z, grid, prefix=0: torch.func.functional_call(ref, params, (z, grid, prefix))


def check_grads(y, want, leaves, ref_leaves):
    g = torch.autograd.grad(y.square().sum(), leaves)
    e = torch.autograd.grad(want.square().sum(), ref_leaves)
    for a, b in zip(g, e):
        assert (a - b).abs().max() <= 1e-9 * max(1.0, b.abs().max().item())


@pytest.mark.parametrize("prefix", [1, 2])
def test_class_tokens_are_not_rotated_forward_and_gradients(prefix):
    m = randomize(attndsl.compile("eva02_rope", dim=48, resolution=(6, 6),
                                  dtype=torch.float64, backend="eager"))
    gen = torch.Generator().manual_seed(3)
    z = torch.randn(2, prefix + 36, 48, generator=gen, dtype=torch.float64,
                    requires_grad=True)
    z_ref = z.detach().clone().requires_grad_(True)
    y = m.forward_tokens(z, (6, 6), prefix=prefix)
    want = published_for(m)(z_ref, (6, 6), prefix)
    assert (y - want).abs().max() <= 1e-10
    params = [p for _, p in sorted(m.named_parameters())]
    check_grads(y, want, [z, *params], [z_ref, *params])


def test_a_non_square_grid_and_no_reference_grid():
    m = randomize(attndsl.compile(spec(reference=""), dim=48, resolution=(5, 7),
                                  dtype=torch.float64, backend="eager"))
    x = inputs(m, (5, 7))
    with torch.no_grad():
        want = published_for(m)(x.reshape(2, 35, 48), (5, 7)).reshape(x.shape)
        assert (m(x) - want).abs().max() <= 1e-10


def test_halves_pairs_channel_i_with_i_plus_half():
    """'halves' turns channels (i, i + d/2) together: the same function as 'interleaved'
    once each head's q and k rows are reordered to put those pairs side by side."""
    halves = randomize(attndsl.compile(spec(pairs="halves"), dim=48, resolution=(4, 5),
                                       dtype=torch.float64, backend="eager"))
    interleaved = attndsl.compile(spec(), dim=48, resolution=(4, 5), dtype=torch.float64,
                                  backend="eager")
    d, G = 16, 3
    order = torch.stack([torch.arange(d // 2), torch.arange(d // 2) + d // 2], 1).flatten()
    per_head = torch.cat([g * d + order for g in range(G)])
    rows = torch.cat([per_head, 48 + per_head, torch.arange(96, 144)])    # q, k; v as is
    state = dict(halves.state_dict())
    state["attn.qkv.weight"] = state["attn.qkv.weight"][rows]
    state["attn.q_bias"] = state["attn.q_bias"][per_head]
    interleaved.load_state_dict(state)
    x = inputs(halves, (4, 5))
    with torch.no_grad():
        assert (halves(x) - interleaved(x)).abs().max() <= 1e-12
        assert (halves(x) - randomize(interleaved, seed=1)(x)).abs().max() > 1e-3


def test_rotation_makes_the_logits_depend_on_the_offset_only():
    """RoPE's point: with the same q and k vector u at every token, q_i·k_j = u·R(p_j − p_i)u
    depends on the offset alone. The weights are read out as the output: one-hot inputs,
    q and k from their biases only, v the input itself, no projection."""
    text = spec(heads=1, reference="").replace("bias: no_key", "bias: true, out: false")
    m = attndsl.compile(text, dim=16, resolution=(4, 4), dtype=torch.float64,
                        backend="eager")
    u = torch.linspace(-1.0, 1.5, 16, dtype=torch.float64)
    with torch.no_grad():
        weight = torch.zeros(48, 16, dtype=torch.float64)
        weight[32:] = torch.eye(16)
        m.get_parameter("attn.qkv.weight").copy_(weight)
        m.get_parameter("attn.qkv.bias").copy_(torch.cat([u, u, torch.zeros(16)]))
        w = m(torch.eye(16, dtype=torch.float64).reshape(1, 4, 4, 16)).reshape(16, 16)
    logits = torch.log(w)        # log-softmax: differences within a row are logit differences
    # (0,0)→(1,2) and (2,1)→(3,3) share the offset (1, 2); each against its own token
    a = logits[0, 1 * 4 + 2] - logits[0, 0]
    b = logits[2 * 4 + 1, 3 * 4 + 3] - logits[2 * 4 + 1, 2 * 4 + 1]
    assert abs(a - b) <= 1e-12 and abs(a) > 1e-3
    # and the same offset turned around is another logit (the rotation is signed)
    c = logits[1 * 4 + 2, 0] - logits[1 * 4 + 2, 1 * 4 + 2]
    assert abs(c - a) <= 1e-12          # u·R(δ)u = u·R(−δ)u: a dot product is symmetric


def test_dynamic_resolution_export_turns_by_the_input_grid():
    m = randomize(attndsl.compile("eva02_rope", dim=48, resolution=(6, 6),
                                  dtype=torch.float64, backend="eager"))
    program = attndsl.export(m, dynamic_resolution=True).module()
    for grid in ((6, 6), (5, 8)):
        x = inputs(m, grid)
        with torch.no_grad():
            want = published_for(m)(x.flatten(1, 2), grid).reshape(x.shape)
            assert (program(x) - want).abs().max() <= 1e-10


@pytest.mark.parametrize("text,words", [
    (spec(application="{kind: pooled, ratio: 2}", layout="q_kv").replace("no_key", "true"),
     "keys elsewhere"),
    (spec(heads=8), "multiple of 4"),
    ("""name: static_bank
heads: 3
projections: {layout: qv, rope: {}}
parameterization: {kind: additive, terms: [query_key]}
kernel_bank: {keys: static}
normalization: {kind: softmax}
application: {kind: window, size: 4}
""", "dynamic keys"),
])
def test_what_rope_refuses(text, words):
    with pytest.raises(SpecError) as info:
        attndsl.compile(text, dim=48, resolution=(8, 8))
    assert info.value.path == "projections.rope" and words in str(info.value)


# ------------------------------------------------------------------ patch
class RotaryEmbeddingCat(nn.Module):
    """timm's RotaryEmbeddingCat ('cat', in_pixels=False): its attributes and get_embed()
    (sin and cos concatenated, each angle twice, interleaved)."""

    def __init__(self, head_dim, feat_shape, ref_feat_shape=None, temperature=10000.0):
        super().__init__()
        self.temperature, self.in_pixels, self.grid_offset = temperature, False, 0.0
        self.grid_indexing, self.rotate_half, self.aug_active = "ij", False, False
        self.feat_shape, self.ref_feat_shape = feat_shape, ref_feat_shape
        b = head_dim // 4
        bands = 1.0 / temperature ** (torch.arange(b, dtype=torch.float64) / b)
        H, W = feat_shape
        t = [torch.arange(s, dtype=torch.float64) for s in feat_shape]
        if ref_feat_shape is not None:
            t = [x / f * r for x, f, r in zip(t, feat_shape, ref_feat_shape)]
        grid = torch.stack(torch.meshgrid(*t, indexing="ij"), -1).unsqueeze(-1) * bands
        angles = grid.flatten(-2).flatten(0, 1).repeat_interleave(2, -1)
        self.register_buffer("pos_embed", torch.cat([angles.sin(), angles.cos()], -1),
                             persistent=False)

    def get_embed(self):
        return self.pos_embed


class EvaAttention(nn.Module):
    """timm's EvaAttention (fused qkv, q_bias / k_bias / v_bias), as timm computes it."""

    def __init__(self, dim, num_heads, num_prefix_tokens=1):
        super().__init__()
        self.num_heads, self.num_prefix_tokens = num_heads, num_prefix_tokens
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_bias = nn.Parameter(0.5 * torch.randn(dim))
        self.register_buffer("k_bias", torch.zeros(dim), persistent=False)
        self.v_bias = nn.Parameter(0.5 * torch.randn(dim))
        self.q_norm, self.k_norm, self.norm = nn.Identity(), nn.Identity(), nn.Identity()
        self.gate, self.rotate_half = None, False
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, rope=None, attn_mask=None):
        B, N, C = x.shape
        bias = torch.cat((self.q_bias, self.k_bias, self.v_bias))
        qkv = nn.functional.linear(x, self.qkv.weight, bias)
        q, k, v = qkv.reshape(B, N, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
        npt = self.num_prefix_tokens
        sin, cos = rope.chunk(2, -1)

        def turn(t):
            r = torch.stack([-t[..., 1::2], t[..., ::2]], -1).reshape(t.shape)
            return t * cos + r * sin
        q = torch.cat([q[:, :, :npt], turn(q[:, :, npt:])], 2)
        k = torch.cat([k[:, :, :npt], turn(k[:, :, npt:])], 2)
        w = ((q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)).softmax(-1)
        return self.proj((w @ v).transpose(1, 2).reshape(B, N, C))


class TinyEva(nn.Module):
    """A class token, a 4×4 grid, two blocks handed the model's rotary table."""

    def __init__(self, dim=48, heads=3):
        super().__init__()
        self.embed = nn.Conv2d(3, dim, 4, 4)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.rope = RotaryEmbeddingCat(dim // heads, (4, 4), ref_feat_shape=(16, 16))
        self.blocks = nn.ModuleList()
        for _ in range(2):
            block = nn.Module()
            block.norm1 = nn.LayerNorm(dim)
            block.attn = EvaAttention(dim, heads)
            self.blocks.append(block)
        self.head = nn.Linear(dim, 10)

    def forward(self, img):
        x = self.embed(img).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1)
        rope = self.rope.get_embed()
        for block in self.blocks:
            x = x + block.attn(block.norm1(x), rope=rope)
        return self.head(x[:, 0])


def test_patch_swaps_eva_attention_with_its_rotary_embedding():
    torch.manual_seed(8)
    model = TinyEva().double()
    report = patch_exactly(model, image(16, 16))
    assert [(r.status, r.weights) for r in report] == [("swapped", "converted from timm.eva")] * 2
    rope = model.blocks[0].attn.attn.spec.branches[0].projections.rope
    assert (rope.reference_grid, rope.temperature, rope.pairs) == ((16, 16), 1e4, "interleaved")


def test_patch_leaves_a_rotary_embedding_it_cannot_say():
    torch.manual_seed(9)
    model = TinyEva().double()
    model.rope.in_pixels = True
    img = torch.randn(1, 3, 16, 16, dtype=torch.float64)
    report = attndsl.patch(model, example=img, backend="eager", strict=False)
    assert {r.status for r in report} == {"left"}
    assert "pixel frequency bands" in report[0].reason
    assert math.isfinite(model(img).sum().item())
