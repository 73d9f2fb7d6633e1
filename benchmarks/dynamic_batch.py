"""What the dynamic batch costs at run time: the same spec compiled with a static batch
(one program per batch size, as before) and with a dynamic one (one program for every
batch size), timed interleaved in one process, inference and one training step.

    python -m benchmarks.dynamic_batch [--specs nat elsa ...] [--rounds 15]

Reports the median of per-round ratios dynamic / static (< 1: the dynamic program is
faster) and their spread; JSON under benchmarks/results/ with device, torch, threads.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path

import torch

import attndsl
from attndsl.codegen import module as M

from .suite import device_info, save_result

RESULTS = Path(__file__).parent / "results"
DEFAULT_SPECS = ["nat", "dinat", "elsa", "swin_swmsa", "hilo", "unified_lsa_rp_sliding_softmax",
                 "twins_gsa", "dynamic_dwconv"]


def build(name: str, dim: int, res, dynamic: bool, training: bool, x):
    M.DYNAMIC_BATCH = dynamic        # read when the program is compiled (first call)
    torch.manual_seed(0)
    m = attndsl.compile(name, dim=dim, resolution=res, backend="inductor")
    m.train(training)
    step(m, x, training)
    M.DYNAMIC_BATCH = True
    return m


def step(m, x, training: bool):
    if training:
        m(x).square().mean().backward()
    else:
        with torch.no_grad():
            m(x)


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def measure(name: str, dim: int, res, batch: int, training: bool, rounds: int) -> dict:
    x = torch.randn(batch, *res, dim)
    static = build(name, dim, res, False, training, x)
    dynamic = build(name, dim, res, True, training, x)
    for m in (static, dynamic):       # warm-up
        step(m, x, training)
    ratios, t_static, t_dynamic = [], [], []
    for _ in range(rounds):
        a = timed(lambda: step(static, x, training))
        b = timed(lambda: step(dynamic, x, training))
        t_static.append(a)
        t_dynamic.append(b)
        ratios.append(b / a)
    return {"spec": name, "mode": "train step" if training else "inference", "batch": batch,
            "dim": dim, "resolution": list(res), "static_ms": 1e3 * statistics.median(t_static),
            "dynamic_ms": 1e3 * statistics.median(t_dynamic),
            "ratio_dynamic_over_static": statistics.median(ratios),
            "ratio_quartiles": statistics.quantiles(ratios, n=4)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--specs", nargs="+", default=DEFAULT_SPECS)
    parser.add_argument("--dim", type=int, default=96)
    parser.add_argument("--resolution", type=int, nargs=2, default=[28, 28])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.specs:
        res = (14, 14) if name == "boat_fsla" else tuple(args.resolution)
        if name == "twins_gsa":
            res = (32, 32)   # sr 8: a 4×4 pooled grid
        for training in (False, True):
            row = measure(name, args.dim, res, args.batch, training, args.rounds)
            rows.append(row)
            print(f"{name:32s} {row['mode']:10s} static {row['static_ms']:8.2f} ms  "
                  f"dynamic {row['dynamic_ms']:8.2f} ms  ratio {row['ratio_dynamic_over_static']:.3f}",
                  flush=True)
    result = {**device_info("cpu", args.threads),
              "dtype": "float32", "date": datetime.now().isoformat(timespec="minutes"),
              "rows": rows}
    save_result(args.out, f"dynamic_batch_cpu_{datetime.now():%Y-%m-%dT%H%M}", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
