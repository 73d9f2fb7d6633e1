"""Training under the compiled backends: one step of every zoo spec, float32, two threads,
against the float64 reference (output, input gradient, every parameter gradient).

The steps run in child processes (tests/training_check.py) because the failure this
guards against is not an exception: inductor's CPU backward once corrupted the heap and
killed the process. A dead child is recorded as a crash of the spec it was running and a
new child continues with the rest. Two threads, because the miscompiled scatter only ran
with more than one.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from zoo_helpers import ZOO
from zoo_references import PADDED

CHECK = Path(__file__).parent / "training_check.py"
# relative, float32 against the float64 reference, or 4× eager float32's own error where
# the spec's math is ill-conditioned in float32 (training_check reports the excess over it)
from training_check import TOLERANCE  # noqa: E402
# non-divisible grids too: padding policies, and the neighbourhood forms that change with
# the grid (NATTEN's gather table where the dilation does not divide it)
OTHER_GRIDS = [f"{name}@{h}x{w}" for name, (h, w) in sorted(PADDED.items())] + [
    "dinat@15x14", "nat@15x13", "elsa@15x13", "unified_lsa_rp_sliding_softmax@11x9"]


def run_isolated(names, threads=2, backends="auto,inductor", timeout=1500):
    """{(spec, backend): result row | {"crashed": …}} for every run, each spec's runs in
    a child process that continues after the previous child died."""
    results, pending = {}, list(names)
    while pending:
        proc = subprocess.run(
            [sys.executable, str(CHECK), "--threads", str(threads), "--backends", backends,
             *pending], capture_output=True, text=True, timeout=timeout)
        current = None
        for line in proc.stdout.splitlines():
            if line.startswith("start "):
                current = tuple(line.split()[1:3])
            elif line.startswith("{"):
                row = json.loads(line)
                results[(row["spec"], row["backend"])] = row
                current = None
        if proc.returncode == 0:
            break
        if current is None:   # died outside a spec: nothing to blame, report it whole
            raise AssertionError(f"training check failed:\n{proc.stderr[-3000:]}")
        results[current] = {"crashed": proc.returncode, "stderr": proc.stderr[-1500:]}
        pending = pending[pending.index(current[0]) + 1:]   # the rest, in a new child
    return results


def test_every_zoo_spec_trains_right_without_crashing():
    results = run_isolated(ZOO + OTHER_GRIDS)
    print("\nspec                                   backend    worst rel. error (what)")
    for (spec, backend), row in sorted(results.items()):
        what = f"CRASHED ({row['crashed']})" if "crashed" in row else \
            f"{row['worst_error']:.1e} ({row['worst']})"
        print(f"{spec:38s} {backend:10s} {what}")
    crashed = {k: v["stderr"][-300:] for k, v in results.items() if "crashed" in v}
    assert not crashed, crashed
    wrong = {k: (v["worst"], v["worst_error"]) for k, v in results.items()
             if not v["worst_error"] <= TOLERANCE}
    assert not wrong, wrong
    assert {spec for spec, _ in results} == set(ZOO + OTHER_GRIDS)
