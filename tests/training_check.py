"""One training step of zoo specs under a compiled backend, checked against the float64
reference: output, input gradient and every parameter gradient, as relative errors
max |a − b| / max |b|.

Run as a script so that a crash (inductor's generated code corrupting the heap) ends this
process, not the test session: it prints `start NAME` before each spec and one JSON line
after it, so the caller knows which spec a dead process was running.

    python tests/training_check.py --threads 2 --backends auto,inductor elsa dinat@15x14
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from zoo_helpers import build, inputs  # noqa: E402
from zoo_references import reference_for  # noqa: E402


TOLERANCE = 1e-4   # relative, float32 against float64 (tests/test_training.py)


def relative(a: torch.Tensor, b: torch.Tensor, largest: float = 0.0) -> float:
    """max |a − b| / max |b|. A gradient that is zero in exact arithmetic (a value bias
    under filter normalization, whose weights sum to zero: float64 gives ~1e-14) is
    rounding noise in float32; it is measured against the spec's `largest` gradient."""
    scale = b.abs().max().item()
    if scale <= 1e-9 * largest:
        scale = largest
    return (a.double() - b).abs().max().item() / (scale if scale > 0 else 1.0)


def training_step_errors(name: str, backend: str, res=None, dtype=torch.float32) -> dict:
    m64 = build(name, res=res).train()
    m = build(name, res=res, dtype=dtype, backend=backend).train()
    m.load_state_dict({k: v.to(dtype) for k, v in m64.state_dict().items()})
    x = inputs(m64, m64.resolution)
    g = inputs(m64, m64.resolution, seed=7)
    x_ref, x_low = x.clone().requires_grad_(True), x.to(dtype).requires_grad_(True)
    y_ref = reference_for(name)(m64, x_ref)
    (y_ref * g).sum().backward()
    y = m(x_low)
    (y * g.to(dtype)).sum().backward()
    params = dict(m.named_parameters())
    pairs = {"x": (x_low.grad, x_ref.grad)}
    for pname, p_ref in m64.named_parameters():
        if (p_ref.grad is None) != (params[pname].grad is None):
            raise AssertionError(f"{name}: {pname} has a gradient on one side only")
        if p_ref.grad is not None:
            pairs[pname] = (params[pname].grad, p_ref.grad)
    largest = max(ref.abs().max().item() for _, ref in pairs.values())
    errors = {"output": relative(y, y_ref)}
    errors.update({k: relative(a, b, largest) for k, (a, b) in pairs.items()})
    return errors


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="+")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--backends", default="auto,inductor",
                        help="comma-separated; a backend that runs the same program as an "
                             "earlier one for a spec (auto picking inductor) is not repeated")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    for run in args.names:
        name, res = parse_run(run)
        for backend in runs_for(name, args.backends.split(",")):
            print(f"start {run} {backend}", flush=True)
            errors = training_step_errors(name, backend, res)
            # float32 rounding the spec's math itself carries (an ill-conditioned gradient,
            # such as CrossFormer's LayerNorm over 3 features): eager float32's own error
            floor = training_step_errors(name, "eager", res) if backend != "eager" else {}
            excess = {k: v / max(1.0, 4 * floor.get(k, 0.0) / TOLERANCE)
                      for k, v in errors.items()}
            worst = max(excess, key=excess.get)
            print(json.dumps({"spec": run, "backend": backend, "errors": errors,
                              "eager_float32": floor, "worst": worst,
                              "worst_error": excess[worst]}), flush=True)
    return 0


def parse_run(run: str):
    """"dinat" (the test geometry) or "dinat@15x14" (another grid)."""
    name, _, grid = run.partition("@")
    return name, tuple(int(v) for v in grid.split("x")) if grid else None


def runs_for(name: str, backends: list[str]) -> list[str]:
    """The backends that run distinct programs for this spec: "auto" is "inductor" unless
    every branch runs in SDPA's fused kernel (then it is the eager graph)."""
    from attndsl.codegen.autoplan import wants_inductor
    plan = build(name).plan
    resolved = {"auto": "inductor" if wants_inductor(plan) else "eager"}
    seen, runs = set(), []
    for backend in backends:
        program = resolved.get(backend, backend)
        if program not in seen:
            seen.add(program)
            runs.append(backend)
    return runs


if __name__ == "__main__":
    sys.exit(main())
