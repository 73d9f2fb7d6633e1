"""The inductor backend on every zoo spec (float32, small resolutions, one process so that
torch.compile's start-up is paid once), against the same independent references."""
import pytest
import torch

import attndsl

from zoo_helpers import ZOO, build, float32_relative_error, inputs, randomize


@pytest.mark.parametrize("name", ZOO)
def test_inductor_matches_reference(name, record_error):
    assert float32_relative_error(name, "inductor", record_error) <= 1e-5


def test_inductor_backward_matches_eager():
    m = build("swin_swmsa", dtype=torch.float32, backend="inductor")
    e = build("swin_swmsa", dtype=torch.float32)
    x = inputs(m, m.resolution, dtype=torch.float32)
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    m(xa).square().sum().backward()
    e(xb).square().sum().backward()
    assert ((xa.grad - xb.grad).abs().max() / xb.grad.abs().max()) <= 1e-5


def test_inductor_per_axis_window_matches_timm_forward_and_backward():
    """timm's shrink per axis (6×9, window 8, shift 4 → window [6, 8], shift [0, 4]) under
    inductor, against the reference of tests/test_windows_per_axis.py."""
    from test_windows_per_axis import reference, swin_module
    m = swin_module("8", "4", (6, 9), "per_axis", dtype=torch.float32)
    m64 = swin_module("8", "4", (6, 9), "per_axis")
    m64.load_state_dict({k: v.double() for k, v in m.state_dict().items()})
    compiled = attndsl.compile(m.spec, dim=16, resolution=(6, 9), backend="inductor",
                               dtype=torch.float32)
    compiled.load_state_dict(m.state_dict())
    x = inputs(m, (6, 9), dtype=torch.float32).requires_grad_(True)
    x64 = x.detach().double().requires_grad_(True)
    y, want = compiled(x), reference(m64, x64, (6, 8), (0, 4))
    assert ((y.double() - want).abs().max() / want.abs().max()) <= 1e-5
    g, = torch.autograd.grad(y.square().sum(), x)
    e, = torch.autograd.grad(want.square().sum(), x64)
    assert ((g.double() - e).abs().max() / e.abs().max()) <= 1e-5


def test_inductor_strided_halo_matches_the_reference_forward_and_backward():
    """HaloNet's stride 2 (output half the grid) under inductor, against timm's layout."""
    from mechanisms.halonet import reference as halo_reference
    from test_kinds_halo_pvt2 import halo_spec
    spec = halo_spec(block=8, halo=2, stride=2)
    m64 = randomize(attndsl.compile(spec, dim=48, resolution=(16, 16), backend="eager",
                                    dtype=torch.float64))
    m = attndsl.compile(spec, dim=48, resolution=(16, 16), backend="inductor",
                        dtype=torch.float32)
    m.load_state_dict({k: v.float() for k, v in m64.state_dict().items()})
    x64 = inputs(m64, (16, 16)).requires_grad_(True)
    x = x64.detach().float().requires_grad_(True)
    y, want = m(x), halo_reference(m64, x64)
    assert ((y.double() - want).abs().max() / want.abs().max()) <= 1e-5
    g, = torch.autograd.grad(y.square().sum(), x)
    e, = torch.autograd.grad(want.square().sum(), x64)
    assert ((g.double() - e).abs().max() / e.abs().max()) <= 1e-5


def test_inductor_class_attention_matches_the_reference_forward_and_backward():
    """CaiT's class attention (tokens in, the class token's output out) under inductor,
    against tests/published/cait.py: the zoo's map tests leave it out."""
    from mechanisms.cait_class_attention import reference as class_reference
    m64 = randomize(attndsl.compile("cait_class_attention", dim=48, resolution=(5, 6),
                                    backend="eager", dtype=torch.float64))
    m = attndsl.compile("cait_class_attention", dim=48, resolution=(5, 6),
                        backend="inductor", dtype=torch.float32)
    m.load_state_dict({k: v.float() for k, v in m64.state_dict().items()})
    z64 = torch.randn(2, 31, 48, generator=torch.Generator().manual_seed(1),
                      dtype=torch.float64).requires_grad_(True)
    z = z64.detach().float().requires_grad_(True)
    y, want = m.forward_tokens(z, (5, 6), prefix=1), class_reference(m64, z64)
    assert ((y.double() - want).abs().max() / want.abs().max()) <= 1e-5
    g, = torch.autograd.grad(y.square().sum(), z)
    e, = torch.autograd.grad(want.square().sum(), z64)
    assert ((g.double() - e).abs().max() / e.abs().max()) <= 1e-5


def test_resolution_sweep_compiles_once_per_resolution():
    """A sweep over resolutions compiles each resolution once, then only reuses; a second
    module of the same spec and sizes reuses the first one's compiled program."""
    import torch._dynamo.utils as dynamo_utils
    from attndsl.codegen import module as M
    import attndsl
    def fresh():   # a width no other test compiles, so the process cache starts cold
        return attndsl.compile("twins_peg", dim=17 * 2, resolution=(14, 14), backend="inductor")
    before = dict(M.compile_stats)
    frames_before = dynamo_utils.counters["stats"]["unique_graphs"]
    m = fresh()            # its bound grid's program is made (not yet compiled) here
    with torch.no_grad():
        for _ in range(3):
            for res in ((14, 14), (9, 12), (16, 8)):
                m(inputs(m, res, dtype=torch.float32))
        twin = fresh()
        twin.load_state_dict(m.state_dict())
        x = inputs(m, (9, 12), dtype=torch.float32)
        assert torch.equal(twin(x), m(x))
    assert M.compile_stats["compiled"] - before["compiled"] == 3
    assert dynamo_utils.counters["stats"]["unique_graphs"] - frames_before == 3
    # the twin reuses the bound grid's program when it is built and (9, 12)'s when it runs
    assert M.compile_stats["reused"] - before["reused"] == 2
    assert m.lowerings == 3 and twin.lowerings == 2


def test_no_passes_and_the_whole_pipeline_are_different_programs():
    """passes=[] and passes=None once shared a cache key: the second module ran the first
    one's compiled program (and, with the parameter prologue, crashed)."""
    import attndsl
    from attndsl.codegen import module as M
    before = M.compile_stats["compiled"]
    bare = attndsl.compile("swin_wmsa", dim=3 * 11, resolution=(14, 14), backend="inductor",
                           passes=[])
    full = attndsl.compile("swin_wmsa", dim=3 * 11, resolution=(14, 14), backend="inductor")
    full.load_state_dict(bare.state_dict())
    x = torch.randn(2, 14, 14, 33)
    with torch.no_grad():
        assert (bare(x) - full(x)).abs().max() <= 1e-5
    assert M.compile_stats["compiled"] == before + 2
    assert "scaled_dot_product_attention" in full.code
    assert "scaled_dot_product_attention" not in bare.code


def test_any_sequence_of_batch_sizes_compiles_at_most_twice():
    """The batch is dynamic in compiled programs: twelve batch sizes (a sweep, an eval
    loop's short last batch) share one program, plus the one dynamo specializes for a
    batch of 1; a static batch recompiled per size and failed at the 9th."""
    import torch._dynamo.utils as dynamo_utils
    import attndsl
    m = attndsl.compile("nat", dim=3 * 13, resolution=(9, 9), backend="inductor")
    e = attndsl.compile("nat", dim=3 * 13, resolution=(9, 9), backend="eager")
    e.load_state_dict(m.state_dict())
    graphs_before = dynamo_utils.counters["stats"]["unique_graphs"]
    with torch.no_grad():
        for batch in (3, 5, 1, 2, 7, 4, 9, 11, 6, 8, 10, 12):
            x = torch.randn(batch, 9, 9, 39)
            y, r = m(x), e(x)
            assert ((y - r).abs().max() / r.abs().max()) <= 1e-5
    assert dynamo_utils.counters["stats"]["unique_graphs"] - graphs_before <= 2
    assert m.lowerings == 1


def test_training_with_changing_batch_sizes():
    import attndsl
    m = attndsl.compile("elsa", dim=48, resolution=(9, 9), backend="inductor").train()
    e = attndsl.compile("elsa", dim=48, resolution=(9, 9), backend="eager").train()
    e.load_state_dict(m.state_dict())
    for batch in (4, 3, 2):
        x = torch.randn(batch, 9, 9, 48)
        xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        m(xa).square().mean().backward()
        e(xb).square().mean().backward()
        assert ((xa.grad - xb.grad).abs().max() / xb.grad.abs().max()) <= 1e-4
