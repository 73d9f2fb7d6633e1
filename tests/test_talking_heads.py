"""The talking_heads normalization (CaiT, EfficientFormerV2): W = P_w·softmax(P_l·logits)
with G×G maps across the heads. The zoo spec cait_talking_heads is checked against
tests/published/cait.py by the zoo tests (float64, float32, inductor, gradients, export);
here: what the maps start as, what the kind refuses, the bias-free form, and patch() on a
CaiT-like model written with timm's class and attribute names."""
import pytest
import torch
from torch import nn

import attndsl
from attndsl.errors import SpecError
from mechanisms.cait_talking_heads import reference
from patch_models import TokenNet, image, patch_exactly
from published.cait import TalkingHeadAttention
from zoo_helpers import inputs, randomize

SPEC = """name: talking
heads: 4
projections: {{layout: qkv, bias: true}}
parameterization: {{kind: additive, terms: [query_key]}}
normalization: {{kind: talking_heads{options}}}
application: {application}
"""


def test_the_maps_start_as_the_identity_so_a_fresh_module_is_softmax_attention():
    torch.manual_seed(0)
    talking = attndsl.compile("cait_talking_heads", dim=48, resolution=(6, 7),
                              dtype=torch.float64)
    plain = attndsl.compile(attndsl.dump_spec(attndsl.load_spec("cait_talking_heads")).replace(
        "kind: talking_heads", "kind: softmax"), dim=48, resolution=(6, 7), dtype=torch.float64)
    plain.load_state_dict({k: v for k, v in talking.state_dict().items()
                           if "talking_heads" not in k})
    x = inputs(talking, (6, 7))
    with torch.no_grad():
        assert (talking(x) - plain(x)).abs().max() <= 1e-12
    randomize(talking)          # and once the maps move, it is not softmax attention
    plain.load_state_dict({k: v for k, v in talking.state_dict().items()
                           if "talking_heads" not in k})
    with torch.no_grad():
        assert (talking(x) - plain(x)).abs().max() > 1e-3


def test_without_bias_the_maps_are_pure_mixes():
    m = randomize(attndsl.compile(SPEC.format(options=", bias: false",
                                              application="{kind: global}"),
                                  dim=48, resolution=(5, 5), dtype=torch.float64))
    names = {n for n, _ in m.named_parameters() if "talking_heads" in n}
    assert names == {"attn.talking_heads.pre.weight", "attn.talking_heads.post.weight"}
    P = dict(m.named_parameters())
    published = TalkingHeadAttention(48, 4)
    with torch.no_grad():
        for mine, theirs in (("pre", published.proj_l), ("post", published.proj_w)):
            theirs.weight.copy_(P[f"attn.talking_heads.{mine}.weight"])
            theirs.bias.zero_()
        published.qkv.weight.copy_(P["attn.qkv.weight"])
        published.qkv.bias.copy_(P["attn.qkv.bias"])
        published.proj.weight.copy_(P["attn.proj.weight"])
        published.proj.bias.copy_(P["attn.proj.bias"])
        x = inputs(m, (5, 5))
        want = published(x.reshape(2, 25, 48)).reshape(2, 5, 5, 48)
        assert (m(x) - want).abs().max() <= 1e-10


@pytest.mark.parametrize("application,field", [
    ("{kind: window, size: 4, shift: 2}", "normalization"),                 # region mask
    ("{kind: window, size: 4, padding: pad_masked}", "application.padding"),  # −inf: softmax only
])
def test_a_logits_mask_would_be_mixed_and_is_refused(application, field):
    with pytest.raises(SpecError) as info:
        attndsl.compile(SPEC.format(options="", application=application), dim=48,
                        resolution=(6, 6) if "pad" in application else (8, 8))
    assert info.value.path == field and "mask" in str(info.value)


def test_unmasked_windows_are_fine():
    m = attndsl.compile(SPEC.format(options="", application="{kind: window, size: 4}"),
                        dim=48, resolution=(8, 8))
    assert m(torch.randn(1, 8, 8, 48)).shape == (1, 8, 8, 48)


def test_the_maps_train():
    m = randomize(attndsl.compile("cait_talking_heads", dim=48, resolution=(4, 4),
                                  dtype=torch.float64))
    x = inputs(m, (4, 4)).requires_grad_(True)
    y, want = m(x), reference(m, x)
    pre = m.get_parameter("attn.talking_heads.pre.weight")
    g, = torch.autograd.grad(y.square().sum(), pre)
    e, = torch.autograd.grad(want.square().sum(), pre)
    assert g.abs().max() > 0 and (g - e).abs().max() <= 1e-9 * e.abs().max()


# ------------------------------------------------------------------ patch on a CaiT-like model
class TalkingHeadAttn(TalkingHeadAttention):
    """timm's CaiT TalkingHeadAttn: its class name and attributes."""

    def __init__(self, dim, heads):
        super().__init__(dim, heads, dtype=torch.float32)
        self.num_heads = heads
        self.attn_drop, self.proj_drop = nn.Dropout(0.0), nn.Dropout(0.0)


def test_patch_swaps_cait_talking_heads_exactly():
    torch.manual_seed(2)
    model = TokenNet(TalkingHeadAttn).double()
    report = patch_exactly(model, image(16, 20))
    assert [(r.status, r.weights) for r in report] == [("swapped", "converted from timm.cait")] * 2
    assert isinstance(model.blocks[0].attn.attn, attndsl.CompiledAttention)
