"""Is a latency table good enough to search with? On one space, per thread count:

1. rank agreement — `attndsl profile SPACE --check N`: N random designs timed whole
   (interleaved) against the latency composed from the table: Kendall τ, Spearman ρ, MAPE,
   the median residual;
2. repeatability — the table profiled in R independent processes: the spread (IQR/median)
   of each design's composed latency across the R tables, against the spread of the same
   design's whole-model measurement (the search's `measured` protocol, attndsl.nas.measure)
   across R fresh processes. Targets: τ ≥ 0.9 over ≥ 30 designs; composed spread ≤ ¼ of
   the whole-model spread.

    python -m benchmarks.latency_table [--space examples/search_digits.yaml]
        [--threads 1 2] [--check 30] [--repeats 5] [--whole-designs 8] [--sessions 3]

Every measurement runs in a fresh process, one at a time (benchmark on a quiet machine).
Writes benchmarks/results/latency_table_<device>_<date>.json and .md.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.suite import RESULTS, device_info, save_result

WHOLE = """
import json, sys, torch
from attndsl.model.spec import load_backbone
from attndsl.nas.measure import measure
from attndsl.nas.space import Deploy
job = json.loads(open(sys.argv[1]).read())
torch.set_num_threads(job["threads"])
deploy = Deploy.model_validate(job["deploy"])
out = []
for backbone in job["backbones"]:
    r = measure(load_backbone(backbone), deploy, cache_dir=None)
    out.append(r["latency_ms"])
print(json.dumps(out))
"""


def spread(values: list[float]) -> float:
    from attndsl.nas.measure import spread_of
    return spread_of(values)


def run_threads(space_path: str, threads: int, check: int, repeats: int, whole_designs: int,
                seconds: float, rounds: int, sessions: int, tmp: Path) -> dict:
    from attndsl.model.spec import backbone_to_dict
    from attndsl.nas import load_space
    from attndsl.nas.latency import LatencyTable, design_parts, pick_check_designs, space_parts
    space = load_space(space_path)
    deploy = space.file.deploy
    resolution = deploy.resolution or space.template["image_size"]
    tables, profile_s = [], []
    for k in range(repeats):
        out = tmp / f"table_{threads}t_{k}.json"
        argv = [sys.executable, "-m", "attndsl.cli", "profile", space_path, "--threads",
                str(threads), "--out", str(out), "--no-progress", "--seed", str(k),
                "--sessions", str(sessions), "--rounds", str(rounds), "--seconds", str(seconds)]
        if k == 0 and check:
            argv += ["--check", str(check)]
        started = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, text=True, timeout=3600)
        profile_s.append(time.perf_counter() - started)
        if done.returncode:
            raise SystemExit(done.stderr[-3000:])
        print(f"  {threads}t profile {k + 1}/{repeats}: {profile_s[-1]:.0f} s", flush=True)
        tables.append(LatencyTable.open(out))
    first = tables[0]
    listed = space_parts(space, resolution)
    designs = listed.designs
    composed = [[t.compose(design_parts(b, resolution))["latency_ms"] for t in tables]
                for _, b in designs]
    composed_spread = [spread(c) for c in composed]
    # whole-model measurement across fresh processes, for a sample of the designs
    sample = pick_check_designs(listed, whole_designs, seed=1)
    job = tmp / f"whole_{threads}.json"
    job.write_text(json.dumps({"backbones": [backbone_to_dict(b) for _, b in sample],
                               "deploy": deploy.model_dump(), "threads": threads}))
    whole_runs = []
    for k in range(repeats):
        done = subprocess.run([sys.executable, "-c", WHOLE, str(job)], capture_output=True,
                              text=True, timeout=3600)
        if done.returncode:
            raise SystemExit(done.stderr[-3000:])
        whole_runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"  {threads}t whole-model process {k + 1}/{repeats}", flush=True)
    from attndsl.model.spec import canonical_hash
    by_hash = {canonical_hash(b): i for i, (_, b) in enumerate(designs)}
    rows = []
    for j, (params, b) in enumerate(sample):
        i = by_hash[canonical_hash(b)]
        whole = [run[j] for run in whole_runs]
        rows.append({"hash": canonical_hash(b), "composed_ms": composed[i],
                     "whole_ms": whole, "composed_spread": composed_spread[i],
                     "whole_spread": spread(whole)})
    whole_median = statistics.median(r["whole_spread"] for r in rows)
    sample_composed = statistics.median(r["composed_spread"] for r in rows)
    return {
        "threads": threads, "designs": len(designs), "parts": len(listed.parts),
        "check": first.data.get("check"), "profile_s": profile_s,
        "composed_spread_median_all": statistics.median(composed_spread),
        "composed_spread_median": sample_composed,
        "whole_spread_median": whole_median,
        "spread_ratio": sample_composed / whole_median if whole_median else None,
        "rows": rows, "fingerprint": first.fingerprint,
    }


def markdown(result: dict) -> str:
    lines = [f"# Latency table — {result['space']}", "",
             f"{result['device']['device_name']}, torch {result['device']['torch']}, "
             f"{result['date']}. Every profile times each part in {result.get('sessions', 1)} "
             "fresh processes (a part's latency: its fastest round in any), one process at a "
             "time; the check times designs whole by the same protocol. Command: "
             f"`{result['command']}`.", "",
             "| threads | designs | parts | check designs | Kendall τ | whole vs itself τ | "
             "Spearman ρ | MAPE | median residual | composed spread (median over designs) | "
             "whole-model spread | ratio |", "|" + "---|" * 12]
    for r in result["per_threads"]:
        c = r["check"] or {}
        lines.append(
            f"| {r['threads']} | {r['designs']} | {r['parts']} | {c.get('designs', '–')} | "
            f"{c.get('kendall_tau', float('nan')):.3f} | "
            + (f"{c['whole_repeat_tau']:.3f}" if c.get("whole_repeat_tau") is not None else "–")
            + f" | {c.get('spearman', float('nan')):.3f} | "
            f"{c.get('mape', float('nan')) * 100:.1f}% | "
            f"{c.get('median_residual', float('nan')) * 100:+.1f}% | "
            f"{r['composed_spread_median'] * 100:.2f}% | {r['whole_spread_median'] * 100:.2f}% | "
            f"{r['spread_ratio']:.2f} |")
    lines += ["", "Spread: IQR / median of a design's latency across independent processes "
              f"({result['repeats']} profile runs for the composed latency; {result['repeats']} "
              "fresh processes timing the whole model with the search's `measured` protocol), "
              "median over the sampled designs. Targets: τ ≥ 0.9 over ≥ 30 designs; ratio ≤ 0.25. "
              "Whole vs itself: the check's designs timed whole in one session against another, "
              "median τ over session pairs — the ceiling of the check's τ (composition can't "
              "agree with whole-model timing better than that timing agrees with itself)."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="examples/search_digits.yaml")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--check", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--whole-designs", type=int, default=8)
    parser.add_argument("--sessions", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=0.05)
    args = parser.parse_args(argv)
    per_threads = []
    with tempfile.TemporaryDirectory() as tmp:
        for threads in args.threads:
            per_threads.append(run_threads(args.space, threads, args.check, args.repeats,
                                           args.whole_designs, args.seconds, args.rounds,
                                           args.sessions, Path(tmp)))
    device = device_info("cpu", max(args.threads))
    stamp = time.strftime("%Y-%m-%dT%H%M")
    result = {"benchmark": "latency_table", "space": args.space, "date": stamp,
              "device": device, "dtype": "float32", "repeats": args.repeats,
              "sessions": args.sessions, "rounds": args.rounds,
              "command": "python -m benchmarks.latency_table " + " ".join(argv or sys.argv[1:]),
              "per_threads": per_threads}
    kind = device["device_kind"].rsplit("-", 1)[0]
    stem = f"latency_table_{kind}_{stamp}"
    save_result(RESULTS, stem, result)
    (RESULTS / f"{stem}.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
