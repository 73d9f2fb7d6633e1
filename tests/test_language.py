"""The spec language added for the published mechanisms of docs/mechanisms.md §9: what each
new field computes beyond the zoo references, and the errors a user gets when a combination
makes no sense (each naming the field, the file's line and what would be valid)."""
import math

import pytest
import torch
from torch.fx.passes.shape_prop import ShapeProp

import attndsl
from attndsl.errors import SpecError
from attndsl.terms.cpb import log_spaced_coordinates
from attndsl.terms.dpb import offset_coordinates

BASE = """name: demo
heads: 2
parameterization: {kind: additive, terms: [query_key]}
normalization: {kind: softmax}
application: {kind: global}
"""


def spec(text=BASE, **replace):
    for old, new in replace.items():
        assert old in text, old
        text = text.replace(old, new)
    return text


def test_continuous_position_bias_coordinates():
    """Swin-V2's table: the centre is 0, the ends ±log2(9)/3 (8·1 → log2(9)/log2(8)), and
    a pretrained window rescales them."""
    c = log_spaced_coordinates((7, 7), 0).reshape(13, 13, 2)
    assert c[6, 6].abs().max() == 0
    assert torch.allclose(c[0, 0], torch.tensor([-1.0, -1.0], dtype=torch.float64)
                          * math.log2(9) / 3)
    assert torch.allclose(c[12, 6], torch.tensor([math.log2(9) / 3, 0.0], dtype=torch.float64))
    wide = log_spaced_coordinates((7, 7), 13).reshape(13, 13, 2)   # δ' = 8·6/12 = 4
    assert torch.allclose(wide[12, 12], torch.full((2,), math.log2(5) / 3, dtype=torch.float64))


def test_dynamic_position_bias_residual_form():
    text = spec(BASE, **{"[query_key]": "[query_key, {kind: dpb, hidden: 4, residual: true}]",
                         "{kind: global}": "{kind: window, size: 3}"})
    torch.manual_seed(0)
    m = attndsl.compile(text, dim=16, resolution=(6, 6), backend="eager").double()
    dpb = m.attn.dpb
    off = offset_coordinates((3, 3))
    pos = dpb.pos_proj(off)
    pos = pos + dpb.pos1(pos)
    pos = pos + dpb.pos2(pos)
    table = dpb.pos3(pos)                                      # (25, heads)
    assert offset_coordinates((3, 3))[0].tolist() == [-2.0, -2.0]
    x = torch.randn(1, 6, 6, 16, dtype=torch.float64)
    q, k, v = m.attn.qkv(x).split(16, -1)
    win = lambda t: t.reshape(1, 2, 3, 2, 3, 2, 8).permute(0, 5, 1, 3, 2, 4, 6).reshape(1, 2, 4, 9, 8)
    ys, xs = torch.meshgrid(torch.arange(3), torch.arange(3), indexing="ij")
    ys, xs = ys.flatten(), xs.flatten()
    index = (ys[None] - ys[:, None] + 2) * 5 + (xs[None] - xs[:, None] + 2)   # j − i
    bias = table[index].permute(2, 0, 1)[None, :, None]         # (1, G, 1, 9, 9)
    attn = torch.softmax(win(q) @ win(k).transpose(-1, -2) * 8 ** -0.5 + bias, -1)
    y = (attn @ win(v)).reshape(1, 2, 2, 2, 3, 3, 8).permute(0, 2, 4, 3, 5, 1, 6)
    y = m.attn.proj(y.reshape(1, 6, 6, 16))
    torch.testing.assert_close(m(x), y, rtol=1e-10, atol=1e-12)


def test_sigmoid_bias_is_a_constant():
    text = spec(BASE, **{"{kind: softmax}": "{kind: sigmoid, bias: -1.5}"})
    m = attndsl.compile(text, dim=8, resolution=(3, 4), backend="eager").double()
    assert not any("bias" in n and "qkv" not in n and "proj" not in n
                   for n, _ in m.named_parameters())
    x = torch.randn(2, 3, 4, 8, dtype=torch.float64)
    q, k, v = (t.reshape(2, 12, 2, 4).transpose(1, 2) for t in m.attn.qkv(x).split(8, -1))
    y = torch.sigmoid(q @ k.transpose(-1, -2) * 0.5 - 1.5) @ v
    y = m.attn.proj(y.transpose(1, 2).reshape(2, 3, 4, 8))
    torch.testing.assert_close(m(x), y, rtol=1e-10, atol=1e-12)


def test_linear_attention_never_builds_the_n_by_n_weights():
    m = attndsl.compile("linear_attention_elu", dim=24, resolution=(16, 16), heads=3,
                        backend="eager")
    assert m.explain_plan().count("linear —") == 1
    gm = m.graph_module()
    ShapeProp(gm).propagate(torch.randn(2, 16, 16, 24))
    largest = max(n.meta["tensor_meta"].shape.numel() for n in gm.graph.nodes
                  if isinstance(n.meta.get("tensor_meta"), torch.fx.passes.shape_prop.TensorMetadata))
    assert largest < 256 * 256           # N² = 65,536 per head would be 393,216 in all
    # with a mask (shifted windows) the associative form can't apply: the quadratic one
    text = spec(BASE, **{"[query_key]}": "[query_key], feature_map: relu}",
                         "{kind: softmax}": "{kind: sum}",
                         "{kind: global}": "{kind: window, size: 4, shift: 2}"})
    shifted = attndsl.compile(text, dim=8, resolution=(8, 8), backend="eager")
    assert "linear —" not in shifted.explain_plan()


@pytest.mark.parametrize("edit,path,needles", [
    ({"heads: 2\n": "heads: 2\nprojections: {layout: q_kv, bias: no_key}\n",
      "{kind: global}": "{kind: pooled, ratio: 2}"},
     "projections.bias", ["'no_key'", "layout"]),
    ({"[query_key]}": "[rel_pos_bias], similarity: {kind: cosine}}",
      "heads: 2\n": "heads: 2\nprojections: {layout: v}\n"},
     "parameterization.similarity", ["query_key"]),
    ({"heads: 2\n": "heads: 2\nextras: {value_conv: {size: 3, scope: block}}\n"},
     "extras.value_conv.scope", ["'block'", "stripes", "window"]),
    ({"heads: 2\n": "heads: 2\nprojections: {q_conv: {size: 3, scope: block}}\n"},
     "projections.q_conv.scope", ["'block'", "valid"]),
    ({"heads: 2\n": "heads: 2\nprojections: {q_conv: {size: 4}}\n"},
     "projections.q_conv.size", ["odd"]),
    ({"[query_key]}": "[query_key, cpb], rel_pos_orientation: abs}",
      "{kind: global}": "{kind: window, size: 2}"},
     "parameterization.rel_pos_orientation", ["signed offsets", "j_minus_i"]),
    ({"{kind: global}": "{kind: pooled, op: avg, ratio: 2, activation: gelu}",
      "heads: 2\n": "heads: 2\nprojections: {layout: q_kv}\n"},
     "application.activation", ["op 'conv'"]),
    ({"{kind: global}": "{kind: stripes, orientation: vertical, width: 3}"},
     "application.width", ["valid widths: [1, 2, 4, 8]"]),
])
def test_errors_name_the_field_and_the_line(tmp_path, edit, path, needles):
    file = tmp_path / "s.yaml"
    file.write_text(spec(BASE, **edit))
    with pytest.raises(SpecError) as info:
        attndsl.compile(file, dim=16, resolution=(8, 8))
    message = str(info.value)
    assert info.value.path == path and info.value.line is not None, message
    assert message.startswith(f"{file}:{info.value.line} at '{path}'"), message
    for needle in needles:
        assert needle in message, message


MULTI = """name: multi
heads: 4
branches:
  - name: a
    heads: 2
    parameterization: {kind: additive, terms: [query_key]}
    normalization: {kind: softmax}
    application: {kind: global}
  - name: b
    parameterization: {kind: additive, terms: [query_key]}
    normalization: {kind: softmax}
    application: {kind: global}
merge: {kind: KIND}
"""


def test_compositions_check_their_branches():
    with pytest.raises(SpecError, match="sequence every branch owns all the heads") as info:
        attndsl.compile(MULTI.replace("KIND", "sequence"), dim=16, resolution=(4, 4))
    assert info.value.path == "branches[0].heads" and info.value.line == 5
    one_head = MULTI.replace("    heads: 2\n", "    heads: 1\n")
    with pytest.raises(SpecError, match=r"equal widths; got \[4, 12\]"):
        attndsl.compile(one_head.replace("KIND", "cascade"), dim=16, resolution=(4, 4))
    no_proj = MULTI.replace("    heads: 2\n", "").replace("KIND", "sequence").replace(
        "  - name: b\n", "  - name: b\n    projections: {out: false}\n")
    with pytest.raises(SpecError, match="needs its own output projection") as info:
        attndsl.compile(no_proj, dim=16, resolution=(4, 4))
    assert info.value.path == "branches[1].projections.out"


def test_cascade_feeds_each_branch_its_slice_plus_the_previous_output():
    text = MULTI.replace("KIND", "cascade, activation: relu, out: true")
    torch.manual_seed(0)
    m = attndsl.compile(text, dim=16, resolution=(3, 3), backend="eager").double()
    assert tuple(m.a.qkv.weight.shape) == (24, 8) and tuple(m.b.qkv.weight.shape) == (24, 8)
    x = torch.randn(2, 3, 3, 16, dtype=torch.float64)

    def global_attention(branch, t):
        q, k, v = (u.reshape(2, 9, 2, 4).transpose(1, 2) for u in branch.qkv(t).split(8, -1))
        y = torch.softmax(q @ k.transpose(-1, -2) * 0.5, -1) @ v
        return branch.proj(y.transpose(1, 2).reshape(2, 3, 3, 8))
    ya = global_attention(m.a, x[..., :8])
    yb = global_attention(m.b, x[..., 8:] + ya)
    y = m.merge.proj(torch.relu(torch.cat([ya, yb], -1)))
    torch.testing.assert_close(m(x), y, rtol=1e-10, atol=1e-12)
