"""Windows and partitions per axis (`size: [rows, columns]`, `shift: [rows, columns]`,
`shrink_to_map: per_axis`): timm shrinks a Swin window per axis on a non-square map (6×9
with window 8 and shift 4 → window [6, 8], shift [0, 4]) and MaxViT partitions are
non-square at non-square images (224×320 → [7, 10]).

The reference below is written from timm's SwinTransformerBlock (roll, pad, window loop,
the region mask built with timm's slices, including the empty `-0` slices of an unshifted
axis), independently of attndsl's window rule, with an explicit loop over windows. MaxViT's
non-square partitions are checked against tests/published/maxvit.py."""
import pytest
import torch
import torch.nn.functional as F

import attndsl
from attndsl.errors import SpecError
from zoo_helpers import build, inputs, randomize
from zoo_references import reference_for

SWIN = """name: per_axis_window
heads: 2
projections: {{layout: qkv, bias: true}}
parameterization: {{kind: additive, terms: [query_key, rel_pos_bias], rel_pos_orientation: i_minus_j}}
normalization: {{kind: softmax}}
application: {{kind: window, size: {size}, shift: {shift}, padding: pad_unmasked, shrink_to_map: {shrink}}}
"""


def swin_module(size, shift, grid, shrink="false", dtype=torch.float64):
    spec = SWIN.format(size=size, shift=shift, shrink=shrink)
    return randomize(attndsl.compile(spec, dim=16, resolution=grid, backend="eager", dtype=dtype))


def timm_window_attention(x, heads, window, shift, table, w_qkv, b_qkv, w_proj, b_proj):
    """timm's SwinTransformerBlock._attn around WindowAttention, for a (rows, columns)
    window and shift, written out: roll by −shift, zero-pad bottom/right to multiples of the
    window, attend inside each window (q·k·d^−½ + table[i − j] − 100 across regions),
    un-pad, roll back. table ((2wh−1)(2ww−1), heads)."""
    B, H, W, C = x.shape
    (wh, ww), (sh, sw) = window, shift
    d = C // heads
    xs = torch.roll(x, shifts=(-sh, -sw), dims=(1, 2)) if sh or sw else x
    xp = F.pad(xs, (0, 0, 0, (ww - W % ww) % ww, 0, (wh - H % wh) % wh))
    Hp, Wp = xp.shape[1], xp.shape[2]
    region = torch.zeros(Hp, Wp)
    if sh or sw:
        label = 0
        # timm's slices, literally: for an unshifted axis (−wh, −0) is empty and (−0, None)
        # is the whole axis, so that axis is one region
        for rows in (slice(0, -wh), slice(-wh, -sh), slice(-sh, None)):
            for cols in (slice(0, -ww), slice(-ww, -sw), slice(-sw, None)):
                region[rows, cols] = label
                label += 1
    n = wh * ww
    r, c = torch.arange(n) // ww, torch.arange(n) % ww
    index = (r[:, None] - r[None, :] + wh - 1) * (2 * ww - 1) + (c[:, None] - c[None, :] + ww - 1)
    bias = table[index].permute(2, 0, 1)                                   # (heads, n, n)
    band = []
    for i in range(Hp // wh):
        tiles = []
        for j in range(Wp // ww):
            rows, cols = slice(i * wh, (i + 1) * wh), slice(j * ww, (j + 1) * ww)
            tokens = xp[:, rows, cols].reshape(B, n, C)
            q, k, v = (tokens @ w_qkv.t() + b_qkv).split(C, dim=-1)
            q, k, v = (t.reshape(B, n, heads, d).transpose(1, 2) for t in (q, k, v))
            logits = q @ k.transpose(-1, -2) * d ** -0.5 + bias
            if sh or sw:
                ids = region[rows, cols].reshape(n)
                logits = logits + (ids[:, None] != ids[None, :]).to(x.dtype) * -100.0
            o = (torch.softmax(logits, -1) @ v).transpose(1, 2).reshape(B, n, C)
            tiles.append((o @ w_proj.t() + b_proj).reshape(B, wh, ww, C))
        band.append(torch.cat(tiles, dim=2))
    out = torch.cat(band, dim=1)
    out = out[:, :H, :W]
    return torch.roll(out, shifts=(sh, sw), dims=(1, 2)) if sh or sw else out


def reference(m, x, window, shift):
    P = dict(m.named_parameters())
    w_qkv, b_qkv = P["attn.qkv.weight"], P["attn.qkv.bias"]
    return timm_window_attention(x, m.plan.heads, window, shift, P["attn.rel_pos.bias"].t(),
                                 w_qkv, b_qkv, P["attn.proj.weight"], P["attn.proj.bias"])


def assert_same_forward_and_gradients(m, x, want):
    """m(x) equals `want` (float64, relative 1e-10), and so does every gradient (x's and
    every parameter's, 1e-9) of the same scalar."""
    y = m(x)
    assert (y - want).abs().max() <= 1e-10 * want.abs().max()
    leaves = [x, *m.parameters()]
    got = torch.autograd.grad((y * y.detach()).sum(), leaves)
    expected = torch.autograd.grad((want * y.detach()).sum(), leaves)
    for g, e in zip(got, expected):
        assert (g - e).abs().max() <= 1e-9 * (e.abs().max() + 1e-30)


CASES = [  # size, shift, grid, shrink → the bound window and shift
    ("[4, 6]", "[2, 3]", (8, 12), "false", (4, 6), (2, 3)),
    ("[4, 6]", "[0, 3]", (8, 12), "false", (4, 6), (0, 3)),        # one axis shifted
    ("[3, 5]", "[1, 2]", (7, 11), "false", (3, 5), (1, 2)),         # padded on both axes
    ("8", "4", (6, 9), "per_axis", (6, 8), (0, 4)),                 # timm's 6×9 example
    ("8", "4", (9, 6), "per_axis", (8, 6), (4, 0)),
    ("8", "4", (6, 6), "per_axis", (6, 6), (0, 0)),
    ("7", "3", (5, 9), "true", (5, 5), (0, 0)),                     # the official Swin rule
]


@pytest.mark.parametrize("size,shift,grid,shrink,window,bound_shift", CASES)
def test_per_axis_windows_match_timm_forward_and_gradients(size, shift, grid, shrink,
                                                           window, bound_shift):
    m = swin_module(size, shift, grid, shrink)
    b = m.plan.branches[0]
    assert (b.geometry.window, b.geometry.shift) == (window, bound_shift)
    x = inputs(m, grid).requires_grad_(True)
    assert_same_forward_and_gradients(m, x, reference(m, x, window, bound_shift))


def test_per_axis_windows_in_float32():
    m = swin_module("8", "4", (6, 9), "per_axis", dtype=torch.float32)
    x = inputs(m, (6, 9), dtype=torch.float32)
    with torch.no_grad():
        want = reference(m.double(), x.double(), (6, 8), (0, 4))
        m.float()
        assert ((m(x).double() - want).abs().max() / want.abs().max()) <= 1e-5


def test_spec_canonical_forms_and_errors():
    spec = attndsl.load_spec(SWIN.format(size="[7, 7]", shift="[3, 3]", shrink="false"))
    assert (spec.branches[0].application.size, spec.branches[0].application.shift) == (7, 3)   # one spec, one hash
    assert attndsl.load_spec(attndsl.dump_spec(spec)) == spec
    pair = attndsl.load_spec(SWIN.format(size="[7, 10]", shift="[0, 5]", shrink="false"))
    assert (pair.branches[0].application.size, pair.branches[0].application.shift) == ((7, 10), (0, 5))
    assert attndsl.load_spec(attndsl.dump_spec(pair)) == pair
    with pytest.raises(SpecError) as info:
        attndsl.load_spec(SWIN.format(size="[7, 0]", shift="0", shrink="false"))
    assert info.value.path == "application.size" and "greater than or equal to 1" in str(info.value)
    with pytest.raises(SpecError) as info:
        attndsl.load_spec(SWIN.format(size="[7, 7, 7]", shift="0", shrink="false"))
    assert "[rows, columns]" in str(info.value)
    with pytest.raises(SpecError) as info:               # a shift per axis, each < its window
        attndsl.compile(SWIN.format(size="[4, 6]", shift="[4, 3]", shrink="false"), dim=16,
                        resolution=(8, 12))
    assert info.value.path == "application.shift" and "shift 4" in str(info.value)
    with pytest.raises(SpecError) as info:               # the official rule is for squares
        attndsl.compile(SWIN.format(size="[4, 6]", shift="0", shrink="true"), dim=16,
                        resolution=(8, 12))
    assert info.value.path == "application.shrink_to_map" and "per_axis" in str(info.value)
    with pytest.raises(SpecError) as info:
        attndsl.compile(SWIN.format(size="[4, 6]", shift="0", shrink="false").replace(
            "pad_unmasked", "error"), dim=16, resolution=(8, 10))
    assert "4 (H) and 6 (W)" in str(info.value)


@pytest.mark.parametrize("name", ["maxvit_block", "maxvit_grid"])
@pytest.mark.parametrize("size,grid", [("[7, 10]", (14, 20)), ("[2, 3]", (6, 9))])
def test_maxvit_partitions_per_axis_match_the_published_module(name, size, grid):
    text = attndsl.dump_spec(attndsl.load_spec(name)).replace("size: 7", f"size: {size}")
    m = build(name, res=grid, spec=text)
    x = inputs(m, grid).requires_grad_(True)
    assert_same_forward_and_gradients(m, x, reference_for(name)(m, x))


def test_grid_per_axis_error_names_both_axes():
    text = attndsl.dump_spec(attndsl.load_spec("maxvit_grid")).replace("size: 7", "size: [4, 5]")
    with pytest.raises(SpecError) as info:
        attndsl.compile(text, dim=48, resolution=(8, 12))
    assert "H to be a multiple of 4 and W of 5" in str(info.value)
