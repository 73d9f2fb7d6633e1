"""Sliding (neighbourhood) attention in an eager graph on the CPU: the gather form (F.unfold
of the keys and values, explicit softmax·V) against dense masked attention (FlexAttention's
definition: q·kᵀ over every pair, the neighbourhood as a −inf mask, the terms as a
score_mod), for a training step (forward + backward) and for inference, at several grids.

Why it matters: a search trains its trials eagerly on the CPU (torch.compile's start-up
costs more than a short proxy run gains), and the gather form's backward is an
index_put(accumulate=True) there — NAT / DiNAT trials took 6–7× as long as the others.
Dense masked attention does N² work instead of N·K², but in a few large matmuls.

    python -m benchmarks.eager_sliding [--grids 8 14 16 20 28] [--specs nat dinat]
        [--batch 64 --dim 64 --heads 2] [--rounds 7]

One thread, float32, the two forms interleaved round by round in one process (the same
weights; their outputs and input gradients compared first); the median of the rounds and
the per-round ratio. Writes benchmarks/results/eager_sliding_<device>_<date>.json / .md.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings

import torch

from benchmarks.suite import RESULTS, device_info, save_result

FORMS = {"gather": "explicit", "dense": "flex"}


def _time(call, repeats: int = 3) -> float:
    started = time.perf_counter()
    for _ in range(repeats):
        call()
    return (time.perf_counter() - started) / repeats * 1e3


def run_case(spec: str, grid: int, batch: int, dim: int, heads: int, rounds: int) -> dict:
    import attndsl
    modules = {}
    for form, attention in FORMS.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")     # attention='flex' on the CPU: by design here
            modules[form] = attndsl.compile(spec, dim=dim, resolution=(grid, grid), heads=heads,
                                            backend="eager", attention=attention)
    state = modules["gather"].state_dict()
    modules["dense"].load_state_dict(state)
    x = torch.randn(batch, grid, grid, dim, generator=torch.Generator().manual_seed(0))
    outs = {}
    for form, m in modules.items():
        xx = x.clone().requires_grad_(True)
        y = m(xx)
        y.square().sum().backward()
        outs[form] = (y.detach(), xx.grad)
    scale = outs["gather"][0].abs().max()
    error = float(max((outs["dense"][0] - outs["gather"][0]).abs().max() / scale,
                      (outs["dense"][1] - outs["gather"][1]).abs().max()
                      / outs["gather"][1].abs().max()))

    def train_step(m):
        xx = x.detach().requires_grad_(True)
        m(xx).square().sum().backward()

    def infer(m):
        with torch.no_grad():
            m(x)
    times = {f"{form}_{what}": [] for form in modules for what in ("train", "infer")}
    for _ in range(rounds):
        for form, m in modules.items():
            times[f"{form}_train"].append(_time(lambda: train_step(m)))
            times[f"{form}_infer"].append(_time(lambda: infer(m)))
    row = {"spec": spec, "grid": grid, "tokens": grid * grid, "batch": batch, "dim": dim,
           "heads": heads, "relative_error": error}
    for what in ("train", "infer"):
        g, d = times[f"gather_{what}"], times[f"dense_{what}"]
        row[f"{what}_gather_ms"] = statistics.median(g)
        row[f"{what}_dense_ms"] = statistics.median(d)
        row[f"{what}_ratio"] = statistics.median(a / b for a, b in zip(g, d))   # > 1: dense wins
    return row


def markdown(result: dict) -> str:
    lines = ["# Eager sliding attention on the CPU — gather vs dense masked",
             "", f"{result['device']['device_name']}, torch {result['device']['torch']}, "
             f"{result['date']}, 1 thread, float32; medians of {result['rounds']} interleaved "
             f"rounds. Command: `{result['command']}`.", "",
             "| spec | grid (tokens) | train step: gather | dense | gather / dense | "
             "inference: gather | dense | gather / dense | max relative difference |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['spec']} | {r['grid']}×{r['grid']} ({r['tokens']}) | "
                     f"{r['train_gather_ms']:.1f} ms | {r['train_dense_ms']:.1f} ms | "
                     f"{r['train_ratio']:.2f}× | {r['infer_gather_ms']:.1f} ms | "
                     f"{r['infer_dense_ms']:.1f} ms | {r['infer_ratio']:.2f}× | "
                     f"{r['relative_error']:.1e} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grids", type=int, nargs="+", default=[8, 14, 16, 20, 28])
    parser.add_argument("--specs", nargs="+", default=["nat", "dinat"])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    for spec in args.specs:
        for grid in args.grids:
            if spec.startswith("dinat") and grid < 14:
                continue          # dilation 2 needs ≥ 7 rows per dilated sub-grid
            rows.append(run_case(spec, grid, args.batch, args.dim, args.heads, args.rounds))
            r = rows[-1]
            print(f"{spec} {grid}×{grid}: train {r['train_gather_ms']:.0f} vs "
                  f"{r['train_dense_ms']:.0f} ms ({r['train_ratio']:.2f}×), infer "
                  f"{r['infer_ratio']:.2f}×", flush=True)
    device = device_info("cpu", 1)
    stamp = time.strftime("%Y-%m-%dT%H%M")
    result = {"benchmark": "eager_sliding", "date": stamp, "device": device, "dtype": "float32",
              "threads": 1, "rounds": args.rounds,
              "command": "python -m benchmarks.eager_sliding " + " ".join(argv or sys.argv[1:]),
              "rows": rows}
    stem = f"eager_sliding_{device['device_kind']}_{stamp}"
    save_result(RESULTS, stem, result)
    (RESULTS / f"{stem}.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
