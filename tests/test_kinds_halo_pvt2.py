"""The halo kind (HaloNet), the query_rel_pos_hw term and the adaptive_pooled kind (PVT-v2
linear SRA): bind errors, geometry, and the forward (and gradients) against the independent
references of tests/published/ at grids the zoo tests don't use (non-square, a halo
covering the map, adaptive bins that overlap or repeat tokens)."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import attndsl
from attndsl import SpecError, bind, load_spec
from attndsl.export import ExportError, export
from zoo_helpers import build, compiled_form_graph, inputs
from zoo_references import reference_for


def halo_spec(block=7, halo=3, heads=4, terms="[query_key, query_rel_pos_hw]",
              layout="qkv", extra="", stride=1):
    return f"""
name: halo_test
heads: {heads}
projections: {{layout: {layout}, bias: false, out: false}}
parameterization: {{kind: additive, terms: {terms}{extra}}}
normalization: {{kind: softmax}}
application: {{kind: halo, block: {block}, halo: {halo}, stride: {stride}}}
"""


def pvt_spec(size=7, heads=2, layout="q_kv", app_extra=""):
    return f"""
name: pvt_test
heads: {heads}
projections: {{layout: {layout}, bias: true}}
parameterization: {{kind: additive, terms: [query_key]}}
normalization: {{kind: softmax}}
application: {{kind: adaptive_pooled, size: {size}{app_extra}}}
"""


def check_against_reference(name, spec, res, grads=False):
    """The eager module and the compiled-form graph (float64) against the reference of
    zoo spec `name` (with `spec` instead of the zoo's text when given), and every gradient
    when asked."""
    m = build(name, res=res, spec=load_spec(spec)) if spec else build(name, res=res)
    x = inputs(m, res)
    ref = reference_for(name)
    with torch.no_grad():
        r = ref(m, x)
        assert r.abs().max() > 1e-3
        assert (m(x) - r).abs().max() <= 1e-10
        assert (compiled_form_graph(m, res)(x) - r).abs().max() <= 1e-10
    if grads:
        m.train()
        xg = x.clone().requires_grad_(True)
        params = [xg] + list(m.parameters())
        g = inputs(m, tuple(r.shape[1:3]), seed=7)      # the output's grid (strided: smaller)
        ga = torch.autograd.grad((m(xg) * g).sum(), params)
        gb = torch.autograd.grad((ref(m, xg) * g).sum(), params)
        assert max((a - b).abs().max().item() for a, b in zip(ga, gb)) <= 1e-9
    return m


# ------------------------------------------------------------------ bind errors
def test_halo_block_must_divide_the_grid():
    with pytest.raises(SpecError, match=r"application\.block") as exc:
        attndsl.compile("halonet", dim=48, resolution=(15, 14))
    msg = str(exc.value)
    assert "multiples of 7" in msg and "15x14" in msg and "valid blocks here: [1]" in msg
    with pytest.raises(SpecError, match=r"application\.block.*valid blocks here: \[1, 2, 4\]"):
        bind(load_spec(halo_spec(block=3)), 48, (8, 12))


def test_halo_bad_sizes():
    with pytest.raises(SpecError, match=r"application\.halo.*valid: 0\.\.27"):
        bind(load_spec(halo_spec(halo=28)), 48, (14, 14))
    bind(load_spec(halo_spec(halo=27)), 48, (14, 14))      # the limit itself binds
    with pytest.raises(SpecError, match=r"application\.block"):
        load_spec(halo_spec(block=0))
    with pytest.raises(SpecError, match=r"application\.halo"):
        load_spec(halo_spec(halo=-1))
    with pytest.raises(SpecError, match=r"application\.block"):
        load_spec(halo_spec().replace("block: 7", "block: true"))


def test_query_rel_pos_hw_needs_offsets_and_signed_orientation():
    spec = pvt_spec().replace("terms: [query_key]", "terms: [query_key, query_rel_pos_hw]")
    with pytest.raises(SpecError, match=r"parameterization\.terms.*offset-indexed keys"):
        bind(load_spec(spec), 48, (14, 14))
    with pytest.raises(SpecError, match=r"rel_pos_orientation.*signed offsets"):
        bind(load_spec(halo_spec(extra=", rel_pos_orientation: abs")), 48, (14, 14))
    with pytest.raises(SpecError, match=r"scaled"):
        load_spec(halo_spec(terms="[query_key, {kind: query_rel_pos_hw, scaled: 2}]"))


def test_adaptive_pooled_bad_sizes_and_layout():
    with pytest.raises(SpecError, match=r"application\.size.*valid: 1\.\.27"):
        bind(load_spec(pvt_spec(size=28)), 48, (14, 14))
    with pytest.raises(SpecError, match=r"application\.size"):
        load_spec(pvt_spec(size=0))
    with pytest.raises(SpecError, match=r"projections\.layout.*'q_kv'"):
        bind(load_spec(pvt_spec(layout="qkv")), 48, (14, 14))
    with pytest.raises(SpecError, match=r"application\.norm"):
        load_spec(pvt_spec(app_extra=", norm: batchnorm"))


# ------------------------------------------------------------------ geometry
@pytest.mark.parametrize("block,halo,res,blocks,span", [
    (7, 3, (14, 14), (4, 49, 169), (10, 10)),
    (7, 3, (21, 28), (12, 49, 169), (10, 10)),
    (8, 3, (16, 32), (8, 64, 196), (11, 11)),
    (4, 0, (8, 12), (6, 16, 16), (4, 4)),
])
def test_halo_geometry(block, halo, res, blocks, span):
    plan = bind(load_spec(halo_spec(block=block, halo=halo)), 48, res)
    geo = plan.branches[0].geometry
    assert geo.blocks == blocks and geo.offset_span == span
    assert geo.window == block + 2 * halo and geo.kv_tokens == res[0] * res[1]
    assert geo.block_grid == (res[0] // block, res[1] // block) and not geo.masked
    m = attndsl.compile(halo_spec(block=block, halo=halo), dim=48, resolution=res)
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert shapes == {"attn.qkv.weight": (144, 48), "attn.rel_pos.height": (2 * span[0] - 1, 12),
                      "attn.rel_pos.width": (2 * span[1] - 1, 12)}


@pytest.mark.parametrize("res", [(14, 14), (17, 15), (3, 5)])
def test_adaptive_pooled_geometry(res):
    plan = bind(load_spec("pvt_v2_linear"), 48, res)
    geo = plan.branches[0].geometry
    assert geo.blocks == (1, res[0] * res[1], 49) and geo.kv_tokens == 49
    assert geo.pooled_grid == (7, 7) and geo.offset_span == (0, 0)


def test_halo_graph_does_not_grow_with_the_grid():
    """No Python loop over blocks: the same graph at 14×14 and 56×56."""
    small = attndsl.compile("halonet", dim=48, resolution=(14, 14)).graph_module()
    big = attndsl.compile("halonet", dim=48, resolution=(56, 56)).graph_module()
    assert len(small.graph.nodes) == len(big.graph.nodes) < 80


# ------------------------------------------------------------------ halo vs the reference
@pytest.mark.parametrize("res", [(14, 21), (28, 7)])
def test_halo_non_square_grid(res):
    check_against_reference("halonet", None, res, grads=res == (14, 21))


@pytest.mark.parametrize("block,halo,heads,res", [
    (7, 7, 4, (14, 14)),      # every block's window covers the whole map (and more)
    (2, 5, 2, (6, 4)),        # a halo larger than the map: most keys are zero padding
    (4, 2, 3, (8, 12)),       # halo / block not 3 / 7; three heads
    (3, 1, 1, (9, 6)),        # one chunk of overlap per side
    (5, 0, 4, (10, 15)),      # no halo: plain blocks
])
def test_halo_other_blocks_and_halos(block, halo, heads, res):
    check_against_reference("halonet", halo_spec(block, halo, heads), res,
                            grads=(block, halo) == (7, 7))


@pytest.mark.parametrize("block,halo,heads,stride,res", [
    (8, 2, 4, 2, (16, 16)),   # halonet26t's third stage: block 8, halo 2, stride 2
    (8, 2, 2, 2, (8, 24)),    # non-square, one block row
    (6, 1, 3, 3, (12, 18)),   # stride 3
    (4, 3, 2, 4, (8, 8)),     # one query per block
])
def test_halo_with_strided_queries(block, halo, heads, stride, res):
    """timm's HaloAttn(stride=s): every s-th query, output (H/s)×(W/s), rel-pos rows by the
    query's index in the strided block (the reference's, from timm's PosEmbedRel)."""
    m = check_against_reference("halonet", halo_spec(block, halo, heads, stride=stride), res,
                                grads=(block, stride) == (8, 2))
    y = m(inputs(m, res))
    assert y.shape == (2, res[0] // stride, res[1] // stride, m.dim)
    tokens = m.forward_tokens(inputs(m, res).flatten(1, 2), res)
    assert tokens.shape == (2, res[0] * res[1] // stride ** 2, m.dim)


def test_strided_halo_refuses_what_needs_the_input_grid():
    with pytest.raises(SpecError, match=r"application\.stride.*multiple.*valid strides for "
                                        r"block 7: \[1, 7\]"):
        bind(load_spec(halo_spec(block=7, stride=2)), 48, (14, 14))
    residual = halo_spec(block=8, halo=2, stride=2) + "extras: {residual: true}\n"
    with pytest.raises(SpecError, match=r"application\.stride.*residual"):
        bind(load_spec(residual), 48, (16, 16))
    from attndsl.model.spec import load_backbone
    from attndsl.model.net import bind_stages
    backbone = load_backbone({"name": "strided_stage", "image_size": 32, "patch": 2, "classes": 10, "stages": [{
        "depth": 1, "dim": 32, "heads": 2,
        "attention": {"name": "strided", "heads": 2, "projections": {"layout": "qkv"},
                      "parameterization": {"kind": "additive", "terms": ["query_key"]},
                      "normalization": {"kind": "softmax"},
                      "application": {"kind": "halo", "block": 8, "halo": 2, "stride": 2}}}]})
    with pytest.raises(SpecError, match=r"stages\[0\]\.attention\.application\.stride.*"
                                        r"residual"):
        bind_stages(backbone)


def test_halo_without_a_halo_is_window_attention():
    """halo 0 and q·k alone: the window kind's attention (no padding, no shift), same
    weights — and the halo branch runs in SDPA (no per-sample term)."""
    spec = halo_spec(block=7, halo=0, terms="[query_key]")
    m = build("halo_test", res=(14, 21), spec=load_spec(spec))
    w = attndsl.compile(spec.replace("{kind: halo, block: 7, halo: 0}",
                                     "{kind: window, size: 7}"),
                        dim=48, resolution=(14, 21), dtype=torch.float64)
    w.load_state_dict(m.state_dict())
    assert "F.scaled_dot_product_attention" in m.explain_plan()
    x = inputs(m, (14, 21))
    with torch.no_grad():
        assert (m(x) - w(x)).abs().max() <= 1e-12


def test_query_rel_pos_hw_on_global_keys():
    """The term on the global kind against a brute force: s·q·k + q·r_h[dy] + q·r_w[dx]
    (unscaled, or scaled), read j − i or i − j."""
    H, W, G = 3, 4, 2
    for orientation in ("j_minus_i", "i_minus_j"):
        for scaled in (False, True):
            spec = f"""
name: g
heads: {G}
projections: {{layout: qkv, bias: false, out: false}}
parameterization:
  kind: additive
  terms: [query_key, {{kind: query_rel_pos_hw, scaled: {str(scaled).lower()}}}]
  rel_pos_orientation: {orientation}
normalization: {{kind: softmax}}
application: {{kind: global}}
"""
            m = build("g", res=(H, W), spec=load_spec(spec))
            P, C = dict(m.named_parameters()), m.dim
            x = inputs(m, (H, W))
            q, k, v = P["attn.qkv.weight"].split(C, 0)
            heads = lambda t: (x @ t.t()).reshape(2, H * W, G, C // G).transpose(1, 2)
            q, k, v = heads(q), heads(k), heads(v)
            ys, xs = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
            sign = 1 if orientation == "j_minus_i" else -1
            dy = sign * (ys.flatten()[None] - ys.flatten()[:, None]) + H - 1
            dx = sign * (xs.flatten()[None] - xs.flatten()[:, None]) + W - 1
            s = (C // G) ** -0.5
            rel = (q.unsqueeze(-2) * (P["attn.rel_pos.height"][dy]
                                      + P["attn.rel_pos.width"][dx])).sum(-1)
            logits = s * q @ k.transpose(-1, -2) + (s if scaled else 1.0) * rel
            y = (logits.softmax(-1) @ v).transpose(1, 2).reshape(2, H, W, C)
            with torch.no_grad():
                assert (m(x) - y).abs().max() <= 1e-12, (orientation, scaled)
                assert (compiled_form_graph(m, (H, W))(x) - y).abs().max() <= 1e-12


def test_query_rel_pos_hw_per_block_offsets_form(monkeypatch):
    """Offsets that differ per block take the gathered-table form: forcing it on the halo
    kind (offsets expanded to (nb, Lq, Lk)) gives the same output as the shared form."""
    from attndsl.applications.halo import HaloSelection
    m = build("halonet", res=(14, 21))
    x = inputs(m, (14, 21))
    with torch.no_grad():
        shared = m(x)
    offsets = HaloSelection.offsets

    def per_block(self):
        nb = self.geo.blocks[0]
        return tuple(t.expand(nb, -1, -1).clone() for t in offsets(self))
    monkeypatch.setattr(HaloSelection, "offsets", per_block)
    fresh = attndsl.compile("halonet", dim=48, resolution=(14, 21), dtype=torch.float64)
    fresh.load_state_dict(m.state_dict())
    code = fresh.graph_module().code
    with torch.no_grad():
        assert (fresh(x) - shared).abs().max() <= 1e-12
    assert "rel_rows_query" not in code


def test_halo_inductor_backward_matches_eager():
    """torch.compile'd forward and backward (the chunked windows' backward is slices and
    pads: no scatter for inductor's CPU atomic-add code; applications/views.py)."""
    res = (14, 21)
    m = build("halonet", res=res, dtype=torch.float32, backend="inductor")
    e = build("halonet", res=res, dtype=torch.float32)
    x = inputs(m, res, dtype=torch.float32)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    m(xa).square().sum().backward()
    e(xb).square().sum().backward()
    assert ((xa.grad - xb.grad).abs().max() / xb.grad.abs().max()) <= 1e-5
    for (name, pa), pb in zip(m.named_parameters(), e.parameters()):
        assert ((pa.grad - pb.grad).abs().max() / pb.grad.abs().max()) <= 1e-5, name


def test_halo_refuses_a_dynamic_resolution():
    with pytest.raises(ExportError, match=r"application: halo \(query blocks need H and W "
                                          r"to be multiples of the block"):
        export(attndsl.compile("halonet", dim=48, resolution=(14, 14)),
               dynamic_resolution=True)


# ------------------------------------------------------------------ adaptive pooling
@pytest.mark.parametrize("res", [(17, 15), (9, 20), (5, 4), (7, 7), (1, 13)])
def test_adaptive_pooling_at_non_divisible_grids(res):
    """Overlapping bins (17×15, 9×20), bins repeating tokens (5×4 and 1×13 < 7), exact."""
    check_against_reference("pvt_v2_linear", None, res, grads=res == (5, 4))


def test_adaptive_pooled_without_conv_norm_activation():
    """conv false, norm none, activation none: keys from the pooled input itself."""
    spec = pvt_spec(size=3, heads=2,
                    app_extra=", conv: false, norm: none, activation: none")
    m = build("pvt_test", res=(10, 8), spec=load_spec(spec))
    assert not any(n.startswith("attn.pool") for n, _ in m.named_parameters())
    P, x, C = dict(m.named_parameters()), inputs(m, (10, 8)), 48
    pooled = F.adaptive_avg_pool2d(x.permute(0, 3, 1, 2), 3).permute(0, 2, 3, 1)
    k, v = F.linear(pooled.reshape(2, 9, C), P["attn.kv.weight"], P["attn.kv.bias"]).split(C, -1)
    q = F.linear(x.reshape(2, 80, C), P["attn.q.weight"], P["attn.q.bias"])
    heads = lambda t: t.reshape(2, -1, 2, C // 2).transpose(1, 2)
    y = F.scaled_dot_product_attention(heads(q), heads(k), heads(v))
    y = F.linear(y.transpose(1, 2).reshape(2, 10, 8, C), P["attn.proj.weight"],
                 P["attn.proj.bias"])
    with torch.no_grad():
        assert (m(x) - y).abs().max() <= 1e-12


def test_adaptive_pooled_exports_at_a_dynamic_resolution():
    m = attndsl.compile("pvt_v2_linear", dim=48, resolution=(14, 14),
                        dtype=torch.float64).eval()
    program = export(m, dynamic_resolution=True)
    for grid in ((5, 4), (30, 9)):
        other = attndsl.compile("pvt_v2_linear", dim=48, resolution=grid,
                                dtype=torch.float64).eval()
        other.load_state_dict(m.state_dict())
        x = torch.randn(3, *grid, 48, dtype=torch.float64)
        with torch.no_grad():
            assert (program.module()(x) - other(x)).abs().max() <= 1e-12, grid
