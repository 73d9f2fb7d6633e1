"""The channels application (XCiT's cross-covariance attention) and the cosine similarity's
linear temperature. The zoo spec xcit_xca is checked against tests/published/xcit.py by the
zoo tests (float64, float32, inductor, gradients, export); here: that the weights are c×c
whatever the grid, what the kind refuses, the temperature's form, and patch() on an
XCiT-like model written with timm's class and attribute names."""
import pytest
import torch
from torch import nn

import attndsl
from attndsl.errors import SpecError
from patch_models import TokenNet, image, patch_exactly
from published.xcit import XCA
from zoo_helpers import inputs, randomize

SPEC = """name: channels_test
heads: 4
projections: {{layout: qkv, bias: true{projections}}}
parameterization:
  kind: additive
  terms: {terms}
  similarity: {{kind: cosine, init: 1.0, scale_parameter: linear}}
normalization: {{kind: softmax}}
application: {{kind: channels}}
"""


def test_weights_are_channels_by_channels_at_any_grid():
    m = attndsl.compile("xcit_xca", dim=48, resolution=(6, 7), dtype=torch.float64)
    assert m.plan.branches[0].geometry.blocks == (1, 12, 12)        # d = 48 / 4
    big = attndsl.compile("xcit_xca", dim=48, resolution=(30, 31))
    assert big.plan.branches[0].geometry.blocks == (1, 12, 12)
    x = inputs(m, (9, 5))                       # another grid: same parameters, runs
    assert m(x).shape == x.shape


def test_the_temperature_is_the_scale_itself_and_starts_at_init():
    m = attndsl.compile("xcit_xca", dim=48, resolution=(4, 4), dtype=torch.float64)
    assert torch.equal(m.get_parameter("attn.logit_scale"), torch.ones(4, 1, 1,
                                                                        dtype=torch.float64))
    swin_v2 = attndsl.compile("swin_v2_wmsa", dim=48, resolution=(7, 7))
    assert torch.allclose(swin_v2.get_parameter("attn.logit_scale"),
                          torch.full((3, 1, 1), 10.0).log())   # Swin-V2: log of init 10
    randomize(m)
    with torch.no_grad():                  # a negative temperature is taken as it is
        m.get_parameter("attn.logit_scale").copy_(torch.tensor([-3.0, 0.5, 2.0, 40.0])
                                                  .view(4, 1, 1))
    published = XCA(48, 4)
    published.load_state_dict({"temperature": m.get_parameter("attn.logit_scale"),
                               **{k[len("attn."):]: v for k, v in m.state_dict().items()
                                  if k.startswith(("attn.qkv", "attn.proj"))}})
    x = inputs(m, (4, 4))
    with torch.no_grad():
        want = published(x.reshape(2, 16, 48)).reshape(2, 4, 4, 48)
        assert (m(x) - want).abs().max() <= 1e-10


@pytest.mark.parametrize("terms,projections,path,words", [
    ("[query_key, rel_pos_bias]", "", "parameterization.terms", "offset"),
    ("[query_key]", ", qk_width: {kind: ratio, num: 1, den: 2}", "projections.qk_width",
     "value width"),
])
def test_what_channel_attention_refuses(terms, projections, path, words):
    with pytest.raises(SpecError) as info:
        attndsl.compile(SPEC.format(terms=terms, projections=projections), dim=48,
                        resolution=(6, 6))
    assert info.value.path.startswith(path) and words in str(info.value), str(info.value)


def test_flex_attention_is_refused_with_the_reason():
    with pytest.raises(attndsl.errors.AttndslError, match="channels"):
        attndsl.compile("xcit_xca", dim=48, resolution=(6, 6), attention="flex")


# ------------------------------------------------------------------ patch on an XCiT-like model
class XcaTimm(XCA):
    """timm's XCA: its attributes (the class is renamed XCA below)."""

    def __init__(self, dim, heads):
        super().__init__(dim, heads, dtype=torch.float32)
        self.num_heads = heads
        self.attn_drop, self.proj_drop = nn.Dropout(0.0), nn.Dropout(0.0)


XcaTimm.__name__ = "XCA"


def xca_moved(dim, heads):
    """timm's XCA with its temperatures moved off their initial ones."""
    attn = XcaTimm(dim, heads)
    with torch.no_grad():
        attn.temperature.uniform_(0.5, 2.0)
    return attn


def test_patch_swaps_xcit_attention_exactly():
    torch.manual_seed(3)
    report = patch_exactly(TokenNet(xca_moved).double(), image(16, 24))
    assert [(r.status, r.weights) for r in report] == [("swapped", "converted from timm.xcit")] * 2


# ------------------------------------------------------------------ DaViT's dual attention
class DavitChannel(nn.Module):
    """timm's DaViT ChannelAttention, as timm computes it."""

    def __init__(self, dim, heads):
        super().__init__()
        self.num_heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads) \
            .permute(2, 0, 3, 1, 4).unbind(0)
        attn = ((k * self.scale).transpose(-1, -2) @ v).softmax(dim=-1)
        y = (attn @ q.transpose(-1, -2)).transpose(-1, -2)
        return self.proj(y.transpose(1, 2).reshape(B, N, C))


class DavitWindow(DavitChannel):
    """timm's DaViT WindowAttention (the same qkv and proj): plain attention over the
    tokens it is given."""

    def forward(self, x):
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads) \
            .permute(2, 0, 3, 1, 4).unbind(0)
        attn = ((q * (C // self.num_heads) ** -0.5) @ k.transpose(-2, -1)).softmax(-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(B, N, C))


DavitChannel.__name__ = "ChannelAttention"
DavitWindow.__name__ = "WindowAttention"


class TinyDavit(nn.Module):
    """A spatial block (its own 4×4 window partition, as DaViT's SpatialBlock) and a
    channel block."""

    def __init__(self, dim=32, heads=4):
        super().__init__()
        self.embed = nn.Conv2d(3, dim, 4, 4)
        self.spatial, self.channel = nn.Module(), nn.Module()
        self.spatial.attn = DavitWindow(dim, heads)
        self.channel.attn = DavitChannel(dim, heads)
        self.head = nn.Linear(dim, 10)

    def forward(self, img):
        x = self.embed(img).permute(0, 2, 3, 1)                      # (B, H, W, C)
        B, H, W, C = x.shape
        windows = x.reshape(B, H // 4, 4, W // 4, 4, C).permute(0, 1, 3, 2, 4, 5)
        windows = windows.reshape(-1, 16, C)
        y = self.spatial.attn(windows).reshape(B, H // 4, W // 4, 4, 4, C)
        x = x + y.permute(0, 1, 3, 2, 4, 5).reshape(B, H, W, C)
        t = x.reshape(B, H * W, C)
        t = t + self.channel.attn(t)
        return self.head(t.mean(1))


def test_patch_swaps_davit_dual_attention_exactly():
    torch.manual_seed(4)
    report = patch_exactly(TinyDavit().double(), image(32, 16))
    assert [(r.path, r.status, r.weights) for r in report] == [
        ("spatial.attn", "swapped", "converted from timm.vit"),
        ("channel.attn", "swapped", "converted from timm.davit_channel")]
    assert report[0].resolution == (4, 4)          # one window's tokens
