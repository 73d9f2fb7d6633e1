"""Axis values that no zoo spec uses on its own, each against the independent reference."""
import pytest
import torch

import attndsl
import reference as ref
from zoo_helpers import build, inputs
from zoo_references import qkv


def spec_with(name, **branch_changes):
    spec = attndsl.load_spec(name).model_dump()
    spec["branches"][0].update(branch_changes)
    return spec


def close(a, b):
    return (a - b).abs().max().item() <= 1e-10


def test_positional_peg_before_attention():
    spec = attndsl.load_spec("twins_gsa").model_dump()
    spec["positional"] = [{"kind": "peg", "size": 3}]
    m = build("twins_gsa", spec=spec)
    P = dict(m.named_parameters())
    x = inputs(m, m.resolution)
    with torch.no_grad():
        x_peg = ref.peg(x, w=P["positional.0.weight"], b=P["positional.0.bias"])
        expected = ref.gsa(x_peg, heads=2, sr=8, scale=24 ** -0.5, w_q=P["attn.q.weight"],
                           b_q=P["attn.q.bias"], w_kv=P["attn.kv.weight"],
                           b_kv=P["attn.kv.bias"], w_sr=P["attn.pool.conv.weight"],
                           b_sr=P["attn.pool.conv.bias"], ln_w=P["attn.pool.norm.weight"],
                           ln_b=P["attn.pool.norm.bias"], w_proj=P["attn.proj.weight"],
                           b_proj=P["attn.proj.bias"])
        assert close(m(x), expected)


def test_shared_output_projection_after_the_branch_concat():
    spec = attndsl.load_spec("hilo").model_dump()
    spec["merge"] = {"kind": "concat", "out": True, "out_bias": True}
    m = build("hilo", spec=spec)
    P = dict(m.named_parameters())
    x = inputs(m, m.resolution)
    with torch.no_grad():
        branches = ref.hilo(x, heads=12, alpha=0.9, ws=2, scale=4 ** -0.5,
                            h_qkv_w=P["hifi.qkv.weight"], h_qkv_b=P["hifi.qkv.bias"],
                            h_proj_w=P["hifi.proj.weight"], h_proj_b=P["hifi.proj.bias"],
                            l_q_w=P["lofi.q.weight"], l_q_b=P["lofi.q.bias"],
                            l_kv_w=P["lofi.kv.weight"], l_kv_b=P["lofi.kv.bias"],
                            l_proj_w=P["lofi.proj.weight"], l_proj_b=P["lofi.proj.bias"])
        expected = branches @ P["merge.proj.weight"].t() + P["merge.proj.bias"]
        assert close(m(x), expected)


def test_depthwise_kernel_is_per_channel_attention():
    """kernel.type depthwise with q·k: one weight per channel = heads = C with 1-wide heads,
    keeping the scale of the declared head width."""
    m = build("unified_lsa_sliding_softmax",
              spec=spec_with("unified_lsa_sliding_softmax", kernel={"type": "depthwise"}))
    P, C = dict(m.named_parameters()), m.dim
    wq, wk, wv = P["attn.qkv.weight"].split(C)
    bq, bk, bv = P["attn.qkv.bias"].split(C)
    x = inputs(m, m.resolution)
    with torch.no_grad():
        expected = ref.unified_local(
            x, heads=C, kernel=7, application="sliding", terms=["query_key"],
            normalization="softmax", scale=(C // 3) ** -0.5, w_q=wq, b_q=bq, w_k=wk, b_k=bk,
            w_v=wv, b_v=bv, w_out=P["attn.proj.weight"], b_out=P["attn.proj.bias"])
        assert close(m(x), expected)


def test_global_relative_position_bias():
    """A global rel-pos table over (2H−1)(2W−1) offsets; on a 7×7 map with the i − j
    orientation it is exactly Swin's table for one 7×7 window."""
    spec = spec_with("vit_mhsa", parameterization={
        "kind": "additive", "terms": ["query_key", "rel_pos_bias"],
        "rel_pos_orientation": "i_minus_j"})
    m = build("vit_mhsa", res=(7, 7), spec=spec)
    P = dict(m.named_parameters())
    assert P["attn.rel_pos.bias"].shape == (6, 169)
    x = inputs(m, (7, 7))
    with torch.no_grad():
        expected = ref.window_attention(x, heads=6, ws=7, shift=0, scale=8 ** -0.5,
                                        table=P["attn.rel_pos.bias"].t(), **qkv(P))
        assert close(m(x), expected)


def test_softmax_temperature_divides_the_logits():
    spec = spec_with("vit_mhsa", normalization={"kind": "softmax", "temperature": 2.5})
    m = build("vit_mhsa", spec=spec)
    x = inputs(m, m.resolution)
    with torch.no_grad():
        expected = ref.global_attention(x, heads=6, scale=8 ** -0.5 / 2.5,
                                        **qkv(dict(m.named_parameters())))
        assert close(m(x), expected)


def test_sliding_table_orientation_i_minus_j_flips_the_kernel():
    a = build("unified_dwconv_sliding_identity")
    spec = spec_with("unified_dwconv_sliding_identity", parameterization={
        "kind": "additive", "terms": ["rel_pos_bias"], "rel_pos_orientation": "i_minus_j"})
    b = build("unified_dwconv_sliding_identity", spec=spec)
    with torch.no_grad():
        b.attn.rel_pos.bias.copy_(a.attn.rel_pos.bias.flip(-1))
        b.attn.v.load_state_dict(a.attn.v.state_dict())
        b.attn.proj.load_state_dict(a.attn.proj.state_dict())
        x = inputs(a, a.resolution)
        assert close(a(x), b(x))


def test_spec_level_padding_pads_before_every_branch_and_crops():
    m = build("hilo", res=(15, 13))
    assert m.plan.grid == (16, 14)
    y = m(inputs(m, (15, 13)))
    assert y.shape == (2, 15, 13, 48)


def test_dilated_neighbourhood_on_a_grid_the_dilation_does_not_divide():
    """15 rows with dilation 2: sub-grids of 8 and 7 rows, served by the gather-table form
    (the unfold-view form needs H, W multiples of the dilation)."""
    from zoo_references import reference_for
    from zoo_helpers import compiled_form_graph
    m = build("dinat", res=(15, 14))
    x = inputs(m, (15, 14))
    assert "sliding_windows" not in compiled_form_graph(m).code
    assert "sliding_windows" in compiled_form_graph(build("dinat")).code
    with torch.no_grad():
        assert close(compiled_form_graph(m)(x), reference_for("dinat")(m, x))
        assert close(m(x), reference_for("dinat")(m, x))


@pytest.mark.parametrize("name", ["elsa", "elsa_standalone"])
def test_ghost_head_split_is_exact(name, monkeypatch):
    """Σ_k (M^λ·A + γ·S)·v is lowered as head-shared A over M^λ-scaled values plus a
    static depthwise conv; the per-channel filter form (kept for attention dropout in
    training) gives the same output, eagerly and in the compiled-graph forms."""
    from attndsl.codegen import rules
    from zoo_helpers import compiled_form_graph
    from zoo_references import reference_for
    m = build(name)
    x = inputs(m, m.resolution)
    with torch.no_grad():
        split, split_compiled = m(x), compiled_form_graph(m)(x)
        assert "ghost_add" in m.code
        monkeypatch.setattr(rules, "ghost_head_splits", lambda ctx: False)
        unsplit = build(name)
        # the split adds one conv (γ·S) next to the Hadamard one
        assert m.code.count("torch.conv2d(") == unsplit.code.count("torch.conv2d(") + 1
        assert close(unsplit(x), split) and close(split_compiled, split)
        assert close(unsplit(x), reference_for(name)(m, x))


def test_qk_norm_needs_projected_q_and_k():
    spec = spec_with("dynamic_dwconv")
    spec["branches"][0]["projections"]["qk_norm"] = {"kind": "layernorm"}
    with pytest.raises(attndsl.SpecError, match="qk_norm normalizes projected q and k.*"
                                                "valid with layouts that make both") as e:
        attndsl.compile(spec, dim=48, resolution=(9, 9))
    assert e.value.path.endswith("projections.qk_norm")
