"""A user's own torch.compile around attndsl modules: inside the user's compiled region a
module traces as its lowered graph (no lowering, caching or dynamo marking), so their
compile fuses it with the rest of their model — forward and backward, with and without
fullgraph, at two batch sizes, with no recompiles beyond dynamo's usual one (the second
batch size makes the batch dynamic).

Every zoo spec runs under fullgraph=True with dynamo's `aot_eager` backend (dynamo's trace
and AOTAutograd's forward/backward graphs, without inductor's code generation, which would
cost CI ~20 minutes over the zoo); a handful, the README's patched example and the backbone
run under the default inductor. The whole matrix on inductor (every spec × fullgraph ×
forward/backward) is `python -m benchmarks.user_compile`, its results committed."""
import pytest
import torch

import attndsl
from benchmarks.user_compile import CountingBackend, UserNet, compiled_against_uncompiled, \
    relative
from zoo_helpers import ZOO, build


# torch 2.13's aot_eager replays ELU's backward with the strides its meta kernel predicted,
# which differ from the CPU kernel's ("view size is not compatible …"); inductor, the
# backend users get, lays the buffers out itself and is exact
AOT_EAGER_STRIDE_BUG = {"linear_attention_elu"}


@pytest.mark.parametrize("name", ZOO)
def test_every_zoo_spec_traces_whole_inside_a_user_compile(name):
    torch._dynamo.reset()
    net = UserNet(build(name, dtype=torch.float32, backend="auto"))
    counting = CountingBackend("inductor" if name in AOT_EAGER_STRIDE_BUG else "aot_eager")
    compiled = torch.compile(net, backend=counting, fullgraph=True)
    err = compiled_against_uncompiled(net, compiled, net.attention.resolution)
    assert err <= 1e-4, f"{name}: compiled vs uncompiled relative error {err:.2e}"
    # batch 2, then batch 3 (dynamo makes the batch dynamic): two graphs, never more
    assert counting.graphs == 2


INDUCTOR_SPECS = ["nat", "swin_swmsa", "hilo"]


@pytest.mark.parametrize("fullgraph", [False, True])
@pytest.mark.parametrize("name", INDUCTOR_SPECS)
def test_inductor_user_compile(name, fullgraph):
    torch._dynamo.reset()     # dynamo remembers which dims varied per code object
    net = UserNet(build(name, dtype=torch.float32, backend="auto"))
    counting = CountingBackend("inductor")
    compiled = torch.compile(net, backend=counting, fullgraph=fullgraph)
    err = compiled_against_uncompiled(net, compiled, net.attention.resolution)
    assert err <= 1e-4, f"{name}: compiled vs uncompiled relative error {err:.2e}"
    assert counting.graphs == 2      # one graph per batch size: no graph break


def test_a_new_resolution_inside_a_compiled_region_is_a_graph_break_or_a_clear_error():
    """A resolution the module never ran at: lowered eagerly at a graph break (fullgraph
    off), or an error that says to call prepare (fullgraph on)."""
    torch._dynamo.reset()
    attn = attndsl.compile("nat", dim=24, resolution=(14, 14))
    x = torch.randn(2, 10, 12, 24)
    with torch.no_grad():
        expected = attn(x)                       # runs (and lowers) eagerly
    fresh = attndsl.compile("nat", dim=24, resolution=(14, 14))
    fresh.load_state_dict(attn.state_dict())
    with torch.no_grad():
        assert torch.allclose(torch.compile(fresh, backend="aot_eager")(x), expected,
                              atol=1e-5)
    strict = attndsl.compile("nat", dim=24, resolution=(14, 14))
    with pytest.raises(Exception, match=r"prepare\(resolution\)"):
        torch.compile(strict, backend="aot_eager", fullgraph=True)(x)
    strict.prepare((10, 12))
    torch.compile(strict, backend="aot_eager", fullgraph=True)(x)


def test_mode_dtype_and_device_changes_are_prepared():
    attn = attndsl.compile("swin_swmsa", dim=24, resolution=(14, 14))
    attn.eval()
    attn.double()
    attn.train()
    dtype, device = attn._dtype_device()
    assert dtype == torch.float64
    for training in (True, False):
        assert ((14, 14), training, dtype, device, None) in attn._graphs


def test_copies_and_pickles_are_prepared():
    import copy
    import pickle
    torch._dynamo.reset()
    attn = attndsl.compile("swin_wmsa", dim=24, resolution=(14, 14))
    x = torch.randn(2, 14, 14, 24)
    for twin in (copy.deepcopy(attn), pickle.loads(pickle.dumps(attn))):
        before = twin.lowerings
        with torch.no_grad():
            y = torch.compile(twin, backend="aot_eager", fullgraph=True)(x)
            assert torch.allclose(y, attn(x), atol=1e-5)
        assert twin.lowerings == before


def test_the_readme_patched_example_compiles_whole():
    """README: attndsl.patch swaps every window attention of a user's model; the patched
    model under torch.compile matches it uncompiled."""
    from tiny_swin import TinySwin
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = TinySwin(dim=48, heads=3, res=(14, 14), ws=7, depth=2).eval()
    report = attndsl.patch(model, "elsa", match="WindowAttention", resolution=(14, 14))
    assert len(report) == 2
    counting = CountingBackend("inductor")
    compiled = torch.compile(model, backend=counting)
    for batch in (2, 3):
        img = torch.randn(batch, 3, 56, 56)
        with torch.no_grad():
            assert relative(compiled(img), model(img)) <= 1e-4
    assert counting.graphs == 2


def test_backbone_compiles_whole():
    """attndsl's own backbone (what the search trains) under the user's compile."""
    from attndsl.model import build_model
    torch.manual_seed(0)
    net = build_model({"name": "user_net", "image_size": 16, "in_channels": 1, "classes": 10, "patch": 2,
                       "stages": [
                           {"dim": 24, "depth": 1, "heads": 2, "attention": "nat"},
                           {"dim": 48, "depth": 1, "heads": 4, "attention": "vit_mhsa"}]})
    net.eval()
    compiled = torch.compile(net, backend="aot_eager", fullgraph=True)
    img = torch.randn(4, 1, 16, 16)
    with torch.no_grad():
        assert relative(compiled(img), net(img)) <= 1e-5
