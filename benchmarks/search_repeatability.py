"""How repeatable is the search's throughput measurement? One backbone measured N times, each
in a fresh process (as every trial is), with the search's protocol (attndsl.nas.measure:
warm-up, blocked_autorange, median); the spread across processes is reported as IQR / median
next to the within-process spread each measurement reports.

    python -m benchmarks.search_repeatability [--space examples/search_digits.yaml]
        [--repeats 5] [--threads 2]

Writes benchmarks/results/search_repeatability_<device>_<date>.json and .md.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.suite import RESULTS, device_info, save_result

CHILD = """
import json, sys, torch
from attndsl.model import load_backbone
from attndsl.nas.measure import measure
from attndsl.nas.space import Deploy
job = json.loads(open(sys.argv[1]).read())
if job["threads"]:
    torch.set_num_threads(job["threads"])
r = measure(load_backbone(job["backbone"]), Deploy.model_validate(job["deploy"]), cache_dir=None)
print(json.dumps({k: r[k] for k in ("images_per_s", "latency_ms", "spread", "samples", "compile_s")}))
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="examples/search_digits.yaml")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--values", default=None, help="JSON of leaf values for the design "
                        "(default: the space's defaults with the first zoo seed)")
    args = parser.parse_args(argv)
    from attndsl.model.spec import backbone_to_dict
    from attndsl.nas import load_space
    space = load_space(args.space)
    values = json.loads(args.values) if args.values else next(iter(space.seeds().values()), {})
    candidate = space.fixed(values)
    job = {"backbone": backbone_to_dict(candidate.backbone),
           "deploy": space.file.deploy.model_dump(), "threads": args.threads}
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "job.json"
        path.write_text(json.dumps(job))
        for i in range(args.repeats):
            out = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True,
                                 text=True, timeout=900)
            if out.returncode:
                print(out.stderr[-2000:], file=sys.stderr)
                return 1
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"process {i + 1}: {runs[-1]['images_per_s']:,.0f} images/s "
                  f"(within-process spread {100 * runs[-1]['spread']:.1f}%)")
    ips = [r["images_per_s"] for r in runs]
    q = statistics.quantiles(ips, n=4)
    median = statistics.median(ips)
    import datetime
    info = device_info("cpu", args.threads)
    result = {
        "benchmark": "search_repeatability", **info, "threads": args.threads,
        "dtype": space.file.deploy.dtype, "space": args.space, "design": candidate.backbone.name,
        "search_params": candidate.params, "deploy": space.file.deploy.model_dump(),
        "runs": runs, "median_images_per_s": median,
        "across_process_spread": (q[2] - q[0]) / median,
        "max_over_min": max(ips) / min(ips),
        "within_process_spread_median": statistics.median(r["spread"] for r in runs),
        "command": "python -m benchmarks.search_repeatability " + " ".join(argv or sys.argv[1:]),
    }
    stamp = datetime.datetime.now().strftime("%Y-%m-%dT%H%M")
    path = save_result(RESULTS, f"search_repeatability_{info['device_kind']}_{stamp}", result)
    lines = [f"# Throughput repeatability ({info['device_name']}, {args.threads} threads)", "",
             f"Design: {candidate.backbone.name} from {args.space} at the deploy shape "
             f"{space.file.deploy.model_dump()}", "",
             "| process | images/s | within-process spread (IQR/median) |", "|---|---|---|"]
    lines += [f"| {i + 1} | {r['images_per_s']:,.0f} | {100 * r['spread']:.1f}% |"
              for i, r in enumerate(runs)]
    lines += ["", f"Across {args.repeats} processes: median {median:,.0f} images/s, spread "
              f"(IQR/median) {100 * result['across_process_spread']:.1f}%, max/min "
              f"{result['max_over_min']:.2f}."]
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print(f"wrote {path} and .md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
