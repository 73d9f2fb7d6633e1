"""Building blocks the zoo tests share: test-time modules with realistic random weights,
inputs, and the compiled-graph forms run eagerly. Importing this module builds nothing
(test modules import it, never each other)."""
from __future__ import annotations

import torch

import attndsl
from attndsl import map_zoo_names
from zoo_references import DIM, GEOMETRY, RES, reference_for

# the zoo specs that map a grid to a grid (forward on (B, H, W, C)); class attention takes
# tokens with its class tokens first and is checked in tests/test_class_attention.py
ZOO = map_zoo_names()
CLASS_ZOO = sorted(set(attndsl.zoo_names()) - set(ZOO))


def randomize(module, seed=0):
    """Weights of a realistic scale, biases and tables far from zero (so that padding and
    bias semantics matter)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            fan_in = p[0].numel() if p.dim() >= 2 and name.endswith("weight") else 0
            std = fan_in ** -0.5 if fan_in else 0.5
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * std)
    return module


def build(name, res=None, dtype=torch.float64, backend="eager", spec=None):
    dim, default_res = GEOMETRY.get(name, (DIM, RES))
    module = attndsl.compile(spec or name, dim=dim, resolution=res or default_res,
                             backend=backend, dtype=dtype)
    return randomize(module)


def inputs(module, res, dtype=torch.float64, seed=1, batch=2):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, *res, module.dim, generator=gen, dtype=torch.float64).to(dtype)


def float64_error(m, name, res=None) -> float:
    """max |y − ref| of the float64 module against the reference at `res` (not vacuous)."""
    res = res or m.resolution
    x = inputs(m, res)
    with torch.no_grad():
        y, r = m(x), reference_for(name)(m, x)
    assert y.shape == r.shape == x.shape
    assert r.abs().max() > 1e-3, "reference output is ~0: the check would be vacuous"
    return (y - r).abs().max().item()


def float32_relative_error(name, backend, record_error):
    """max |y32 − ref64| / max |ref64| for the float32 module on `backend`, the float64
    reference getting the same (float64) weights."""
    m64 = build(name)
    m32 = build(name, dtype=torch.float32, backend=backend)
    m32.load_state_dict({k: v.float() for k, v in m64.state_dict().items()})
    x = inputs(m64, m64.resolution)
    with torch.no_grad():
        r = reference_for(name)(m64, x)
        y = m32(x.float()).double()
    rel = ((y - r).abs().max() / r.abs().max()).item()
    record_error(spec=name, backend=backend, dtype="float32", res=list(m64.resolution),
                 max_rel=rel)
    return rel


def compiled_form_graph(m, res=None, training=False):
    """The graph lowered for inductor (strided window views, grid-layout weighting, …) but
    run eagerly, so that those forms are checked in float64 too."""
    from attndsl.codegen.lower import lower
    return lower(m.plan_for(res or m.resolution), m._param_modules(), dtype=torch.float64,
                 compiled=True, passes=m.passes, training=training)
