"""Compile cost of attndsl modules under inductor: cold, warm (on-disk cache), in-process
reuse, and a new resolution.

    python -m benchmarks.compile_cost [--specs nat elsa ...] [--out benchmarks/results]

* cold   -- a fresh process with an empty TORCHINDUCTOR_CACHE_DIR: dynamo + inductor +
            C++ compile of every kernel, plus torch.compile's per-process start-up;
* warm   -- a fresh process with that cache directory filled: inductor's FX-graph and
            kernel caches hit on disk (dynamo still traces);
* reuse  -- a second module of the same spec and sizes in the same process: attndsl's
            process-wide program cache, no tracing at all;
* new resolution -- the same module at a (2H, W) grid: one more lowering and compile;
* new batch -- the same module at batch 5 after batch 2 (the batch is dynamic: no compile),
  and at batch 1 (dynamo specializes a batch of one: one more compile).
Times are of the first forward (compile + one run) minus nothing: they are what a user
waits. Results as JSON with device, torch version and threads.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import json, sys, time, torch
torch.set_num_threads(1)
import attndsl
name, dim, H, W = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
x = torch.randn(2, H, W, dim)
times = {}
t0 = time.perf_counter()
m = attndsl.compile(name, dim=dim, resolution=(H, W), backend="inductor")
with torch.no_grad():
    m(x)
times["first_module_s"] = time.perf_counter() - t0
t0 = time.perf_counter()
twin = attndsl.compile(name, dim=dim, resolution=(H, W), backend="inductor")
with torch.no_grad():
    twin(x)
times["same_spec_again_s"] = time.perf_counter() - t0
t0 = time.perf_counter()
with torch.no_grad():
    m(torch.randn(2, 2 * H, W, dim))   # twice the tokens: valid for every zoo grid rule
times["new_resolution_s"] = time.perf_counter() - t0
t0 = time.perf_counter()
with torch.no_grad():
    m(x)
times["cached_call_s"] = time.perf_counter() - t0
t0 = time.perf_counter()
with torch.no_grad():
    m(torch.randn(5, H, W, dim))      # the batch is dynamic: no new program
times["new_batch_s"] = time.perf_counter() - t0
t0 = time.perf_counter()
with torch.no_grad():
    m(torch.randn(1, H, W, dim))      # dynamo specializes a batch of 1: one more compile
times["batch_of_one_s"] = time.perf_counter() - t0
print(json.dumps(times))
"""

DEFAULT_SPECS = ["nat", "elsa", "swin_swmsa", "hilo", "boat_fsla"]


def run_child(name: str, dim: int, res: tuple[int, int], cache_dir: str) -> dict:
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache_dir)
    out = subprocess.run([sys.executable, "-c", CHILD, name, str(dim), str(res[0]),
                          str(res[1])], capture_output=True, text=True, env=env, timeout=900)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr else "failed"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--specs", nargs="+", default=DEFAULT_SPECS)
    parser.add_argument("--dim", type=int, default=96)
    parser.add_argument("--resolution", type=int, nargs=2, default=[28, 28])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    from .suite import device_info, save_result
    rows = []
    for name in args.specs:
        # BOAT needs N = 49·2^L: keep its grid valid at both resolutions
        res = (14, 14) if name == "boat_fsla" else tuple(args.resolution)
        with tempfile.TemporaryDirectory() as cache:
            cold = run_child(name, args.dim, res, cache)
            warm = run_child(name, args.dim, res, cache)
        row = {"spec": name, "dim": args.dim, "resolution": list(res), "cold": cold,
               "warm": warm}
        rows.append(row)
        print(json.dumps(row), flush=True)
    result = {**device_info("cpu", 1), "dtype": "float32",
              "date": datetime.date.today().isoformat(), "rows": rows}
    save_result(args.out, f"compile_cost_cpu_{result['date']}", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
