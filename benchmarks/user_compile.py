"""A user's own torch.compile around attndsl modules, over the whole zoo: every spec inside
a small user model (a Linear before and after), compiled with the default inductor, with
and without fullgraph, forward and backward at two batch sizes, against the same model
uncompiled on attndsl's eager backend. Records per case the largest relative error
(output, input gradient, every parameter gradient), the graphs dynamo handed to inductor
(2 = one per batch size, no graph break), the first call's wait (tracing + compiling the
forward and backward), and the steady-state training step of the compiled model against
the uncompiled one (attndsl's own auto backend), interleaved in one process.

    python -m benchmarks.user_compile [--specs nat hilo ...] [--out benchmarks/results]

The test suite runs the same check on every spec with dynamo's aot_eager backend
(tests/test_user_compile.py); this is the inductor matrix, whose results are committed.
"""
from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


class UserNet(nn.Module):
    """What a user writes: their layers around an attndsl module."""

    def __init__(self, attention):
        super().__init__()
        self.before = nn.Linear(attention.dim, attention.dim)
        self.attention = attention
        self.after = nn.Linear(attention.dim, attention.dim)

    def forward(self, x):
        return self.after(self.attention(self.before(x)))


class CountingBackend:
    """A dynamo backend that counts the graphs it is given, then hands them on."""

    def __init__(self, inner: str = "aot_eager"):
        self.inner, self.graphs = inner, 0

    def __call__(self, gm, example_inputs):
        from torch._dynamo.backends.registry import lookup_backend
        self.graphs += 1
        return lookup_backend(self.inner)(gm, example_inputs)


def relative(a, b) -> float:
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-12)).item()


def training_step(net, model, batch: int, res) -> list:
    """Output, input gradient and parameter gradients of one step with a fixed random
    upstream gradient (random, so that bias gradients are sums that do not cancel)."""
    gen = torch.Generator().manual_seed(batch)
    x = torch.randn(batch, *res, net.attention.dim, generator=gen).requires_grad_(True)
    net.zero_grad()
    y = model(x)
    (y * torch.randn(y.shape, generator=gen)).sum().backward()
    grads = [p.grad.clone() for p in net.parameters() if p.grad is not None]
    assert len(grads) == sum(1 for p in net.parameters() if p.requires_grad)
    return [y.detach(), x.grad, *grads]


def compiled_against_uncompiled(net, compiled, res, batches=(2, 3)) -> float:
    """Largest relative error of the compiled net's steps against the same net run
    uncompiled on attndsl's eager backend (an independently lowered form). The compiled
    steps come first: switching the backend re-lowers the module's graphs, and no graph
    may be lowered while the compiled steps run."""
    lowered = net.attention.lowerings
    got = [training_step(net, compiled, batch, res) for batch in batches]
    assert net.attention.lowerings == lowered, "the compiled region lowered a graph"
    backend = net.attention.backend
    net.attention.backend = "eager"
    want = [training_step(net, net, batch, res) for batch in batches]
    net.attention.backend = backend
    worst = 0.0
    for g, w in zip(got, want):
        # a gradient that is zero in exact arithmetic (the bias of the last layer of
        # CrossFormer's DPB: softmax cancels a constant per head) holds rounding noise
        # (~1e-6) in both runs: it is compared at the scale of the step's gradients
        scale = 1e-3 * max(t.abs().max().item() for t in w[1:])
        worst = max(worst, relative(g[0], w[0]), *(
            ((a - b).abs().max() / max(b.abs().max().item(), scale)).item()
            for a, b in zip(g[1:], w[1:])))
    return worst


def _step_seconds(model, x) -> float:
    t0 = time.perf_counter()
    model(x).sum().backward()
    return time.perf_counter() - t0


def case(name: str, fullgraph: bool, rounds: int) -> dict:
    from zoo_helpers import build
    torch._dynamo.reset()
    net = UserNet(build(name, dtype=torch.float32, backend="auto"))
    res = net.attention.resolution
    counting = CountingBackend("inductor")
    compiled = torch.compile(net, backend=counting, fullgraph=fullgraph)
    row = {"spec": name, "fullgraph": fullgraph, "resolution": list(res)}
    try:
        t0 = time.perf_counter()
        training_step(net, compiled, 2, res)
        row["first_step_s"] = round(time.perf_counter() - t0, 2)
        row["max_rel_error"] = compiled_against_uncompiled(net, compiled, res)
        row["graphs"] = counting.graphs
        x = torch.randn(3, *res, net.attention.dim)
        _step_seconds(net, x)            # attndsl's own compile, outside the timing
        user, own = [], []
        for _ in range(rounds):          # interleaved: the VM's load hits both alike
            user.append(_step_seconds(compiled, x))
            own.append(_step_seconds(net, x))
        row["step_ms_user_compile"] = round(1e3 * statistics.median(user), 3)
        row["step_ms_uncompiled"] = round(1e3 * statistics.median(own), 3)
        row["ok"] = row["max_rel_error"] <= 1e-4 and row["graphs"] == 2
    except Exception as exc:   # recorded, the matrix goes on
        row.update(ok=False, error=f"{type(exc).__name__}: {str(exc).splitlines()[0][:300]}")
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--specs", nargs="*", help="zoo names (default: the whole zoo)")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "tests"))    # zoo_helpers: the tests' realistic weights
    from attndsl import map_zoo_names
    from attndsl.nas.measure import device_name
    torch.set_num_threads(1)
    specs = args.specs or map_zoo_names()    # class attention takes tokens: its own tests
    stamp = datetime.datetime.now().strftime("%Y-%m-%dT%H%M")
    meta = {"device": device_name(torch.device("cpu")), "torch": torch.__version__,
            "threads": 1, "dtype": "float32", "date": stamp,
            "command": "python -m benchmarks.user_compile " + " ".join(argv or sys.argv[1:])}
    out = args.out / f"user_compile_cpu_{stamp}.json"
    rows = []
    for name in specs:
        for fullgraph in (False, True):
            rows.append(case(name, fullgraph, args.rounds))
            print(json.dumps(rows[-1]), flush=True)
            write(out, meta, rows, len(specs) * 2)    # after each case: a cut run keeps all
    print(f"wrote {out}")
    return 0 if all(r["ok"] for r in rows) else 1


def write(out: Path, meta: dict, rows: list[dict], planned: int) -> None:
    timed = [r for r in rows if "step_ms_uncompiled" in r]
    summary = {"cases": len(rows), "planned": planned, "ok": sum(r["ok"] for r in rows),
               "failed": [f"{r['spec']} fullgraph={r['fullgraph']}" for r in rows
                          if not r["ok"]],
               "median_first_step_s": statistics.median(
                   r["first_step_s"] for r in rows if "first_step_s" in r) if timed else None,
               "median_step_ratio_user_over_uncompiled": statistics.median(
                   r["step_ms_user_compile"] / r["step_ms_uncompiled"] for r in timed)
               if timed else None}
    out.write_text(json.dumps({"meta": meta, "summary": summary, "rows": rows}, indent=1))


if __name__ == "__main__":
    raise SystemExit(main())
