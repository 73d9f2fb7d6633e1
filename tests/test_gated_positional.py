"""The gated_positional normalization (ConViT's GPSA). The zoo spec convit_gpsa is checked
against tests/published/convit.py by the zoo tests (float64, float32, inductor, export);
here: the gradients (the zoo compares them for softmax specs only), the gate's two ends,
what the kind refuses, and patch() on a ConViT-like model written with timm's names."""
import pytest
import torch
from torch import nn

import attndsl
from attndsl.errors import SpecError
from mechanisms.convit_gpsa import reference
from patch_models import TokenNet, image, patch_exactly
from zoo_helpers import inputs, randomize

SPEC = """name: gated
heads: 4
projections: {{layout: qkv, bias: true}}
parameterization: {{kind: additive, terms: [query_key]}}
normalization: {{kind: gated_positional}}
application: {application}
"""


@pytest.mark.parametrize("grid", [(5, 6), (4, 4)])
def test_forward_and_gradients_match_the_reference(grid):
    m = randomize(attndsl.compile("convit_gpsa", dim=48, resolution=grid,
                                  dtype=torch.float64, backend="eager"))
    x = inputs(m, grid).requires_grad_(True)
    x_ref = x.detach().clone().requires_grad_(True)
    y, want = m(x), reference(m, x_ref)
    assert (y - want).abs().max() <= 1e-10 and want.abs().max() > 1e-3
    params = [p for _, p in sorted(m.named_parameters())]
    g = torch.autograd.grad(y.square().sum(), [x, *params])
    e = torch.autograd.grad(want.square().sum(), [x_ref, *params])
    for a, b in zip(g, e):
        assert (a - b).abs().max() <= 1e-9 * max(1.0, b.abs().max().item())


def test_the_gate_moves_between_content_and_position():
    """σ(λ) → 0: plain softmax attention; σ(λ) → 1: the weights are the positional ones
    alone, the same for every input."""
    m = randomize(attndsl.compile("convit_gpsa", dim=48, resolution=(4, 4),
                                  dtype=torch.float64, backend="eager"))
    plain = attndsl.compile(attndsl.dump_spec(m.spec).replace("kind: gated_positional",
                                                              "kind: softmax"),
                            dim=48, resolution=(4, 4), dtype=torch.float64, backend="eager")
    plain.load_state_dict({k: v for k, v in m.state_dict().items() if "gated" not in k})
    x = inputs(m, (4, 4))
    with torch.no_grad():
        m.get_parameter("attn.gated.gate").fill_(-60.0)
        assert (m(x) - plain(x)).abs().max() <= 1e-12
        m.get_parameter("attn.gated.gate").fill_(60.0)
        m.get_parameter("attn.qkv.weight")[2 * 48:].zero_()     # v = its bias: constant
        y1, y2 = m(x), m(inputs(m, (4, 4), seed=5))
        assert (y1 - y2).abs().max() <= 1e-12      # positional weights ignore the input


@pytest.mark.parametrize("application,words", [
    ("{kind: pooled, ratio: 2}", "offsets"),
    ("{kind: window, size: 4, shift: 2}", "mask"),
])
def test_what_gated_positional_refuses(application, words):
    text = SPEC.format(application=application)
    if "pooled" in application:
        text = text.replace("layout: qkv", "layout: q_kv")
    with pytest.raises(SpecError) as info:
        attndsl.compile(text, dim=48, resolution=(8, 8))
    assert info.value.path == "normalization" and words in str(info.value)


class GPSA(nn.Module):
    """timm's ConViT GPSA, as timm computes it."""

    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads, self.dim, self.scale = num_heads, dim, (dim // num_heads) ** -0.5
        self.qk = nn.Linear(dim, 2 * dim, bias=False)
        self.v = nn.Linear(dim, dim, bias=False)
        self.proj = nn.Linear(dim, dim)
        self.pos_proj = nn.Linear(3, num_heads)
        self.gating_param = nn.Parameter(torch.randn(num_heads))

    def forward(self, x):
        B, N, C = x.shape
        side = int(N ** 0.5)
        ind = torch.arange(side).view(1, -1) - torch.arange(side).view(-1, 1)
        indx = ind.repeat(side, side)
        indy = ind.repeat_interleave(side, dim=0).repeat_interleave(side, dim=1)
        rel = torch.stack([indx, indy, indx ** 2 + indy ** 2], -1).to(x.dtype)[None]
        q, k = self.qk(x).reshape(B, N, 2, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        pos = self.pos_proj(rel.expand(B, -1, -1, -1)).permute(0, 3, 1, 2).softmax(-1)
        patch = ((q @ k.transpose(-2, -1)) * self.scale).softmax(-1)
        gate = torch.sigmoid(self.gating_param.view(1, -1, 1, 1))
        attn = (1 - gate) * patch + gate * pos
        attn = attn / attn.sum(-1, keepdim=True)
        v = self.v(x).reshape(B, N, self.num_heads, -1).permute(0, 2, 1, 3)
        return self.proj((attn @ v).transpose(1, 2).reshape(B, N, C))


def test_patch_swaps_convit_gpsa_exactly():
    torch.manual_seed(15)
    report = patch_exactly(TokenNet(GPSA).double(), image(16, 16))
    assert [(r.status, r.weights) for r in report] == \
        [("swapped", "converted from timm.convit_gpsa")] * 2
