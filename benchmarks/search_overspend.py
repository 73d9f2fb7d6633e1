"""The budget across workers: W workers (`--workers W`) on one study with a device-time
budget; how far past the budget does the ledger end, against the bound (one trial's
predicted cost per worker)?

    python -m benchmarks.search_overspend [--workers 3,8] [--budget 120s]

Writes benchmarks/results/search_overspend_<device>_<date>.json and .md.
"""
from __future__ import annotations

import argparse
import datetime
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.suite import RESULTS, ROOT, device_info, save_result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default=str(ROOT / "examples" / "search_digits.yaml"))
    parser.add_argument("--workers", default="3,8")
    parser.add_argument("--budget", default="120s")
    args = parser.parse_args(argv)
    from attndsl.nas import open_run
    from attndsl.nas.budget import parse_budget
    budget = parse_budget(args.budget).seconds
    rows = []
    for workers in [int(w) for w in args.workers.split(",")]:
        with tempfile.TemporaryDirectory() as tmp:
            out = subprocess.run([sys.executable, "-m", "attndsl.cli", "search", args.space,
                                  "--budget", args.budget, "--runs-dir", tmp, "--workers",
                                  str(workers), "--threads", "1", "--no-progress",
                                  "--no-remeasure"], capture_output=True, text=True,
                                 timeout=1800)
            if out.returncode:
                print(out.stdout[-2000:], out.stderr[-2000:])
                return 1
            run_dir = Path(tmp) / "digits_quickstart"
            trials = open_run(run_dir).get_trials(deepcopy=False)
            costs = [t.user_attrs.get("cost_s", 0.0) for t in trials]
            complete = [t.user_attrs.get("cost_s", 0.0) for t in trials
                        if t.user_attrs.get("state") == "complete"]
            spent = sum(costs)
            rows.append({"workers": workers, "budget_s": budget, "spent_s": spent,
                         "overspend_s": spent - budget, "trials": len(trials),
                         "median_complete_cost_s": statistics.median(complete) if complete else 0,
                         "max_trial_cost_s": max(costs) if costs else 0,
                         "bound_s": workers * (max(costs) if costs else 0)})
            print(rows[-1], flush=True)
    info = device_info("cpu", 1)
    result = {"benchmark": "search_overspend", **info, "dtype": "float32", "space": args.space,
              "runs": rows,
              "command": "python -m benchmarks.search_overspend " + " ".join(argv or sys.argv[1:])}
    stamp = datetime.datetime.now().strftime("%Y-%m-%dT%H%M")
    path = save_result(RESULTS, f"search_overspend_{info['device_kind']}_{stamp}", result)
    lines = [f"# Budget across workers ({info['device_name']}, {info['cpu_count']} cores)", "",
             f"{args.space}, budget {args.budget} of device time, `--workers W`, 1 thread each.",
             "", "| workers | trials | spent (s) | overspend (s) | largest trial (s) | bound W × largest (s) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['workers']} | {r['trials']} | {r['spent_s']:.0f} | "
                     f"{r['overspend_s']:+.0f} | {r['max_trial_cost_s']:.0f} | {r['bound_s']:.0f} |")
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
