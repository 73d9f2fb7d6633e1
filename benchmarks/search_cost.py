"""Where a search's device time goes, before and after warm trials and latency tables: two
runs of the README's quick-start command (same space, budget and machine), one by the code
before (a fresh interpreter per trial, every design compiled and timed whole) and one by the
code now, compared by trials run and by the share of device time spent learning.

    # before: the commit before the change, in a worktree
    git worktree add /tmp/before 7f09e09
    (cd /tmp/qs_before && PYTHONPATH=/tmp/before attndsl search /tmp/before/examples/search_digits.yaml --budget 15m --seed-zoo)
    (cd /tmp/qs_after && attndsl search examples/search_digits.yaml --budget 15m --seed-zoo)
    python -m benchmarks.search_cost /tmp/qs_before/attndsl-runs/digits_quickstart /tmp/qs_after/attndsl-runs/digits_quickstart

The run of today's code reports its phases (trials.csv: startup_s … other_s). The code
before reported none, so its phases are read from its trial logs' time stamps (1 s
resolution; summed over the trials): start-up = the trial's first log line − the trial's
start; measurement = the "measured" line − the first line; learning = the last epoch line
− the "measured" line; the rest of its cost is "other".

Writes benchmarks/results/search_cost_<device>_<date>.json and .md.
"""
from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

from benchmarks.suite import RESULTS, device_info, save_result


def _stamp(line: str) -> float | None:
    try:
        return datetime.datetime.strptime(line[:19], "%Y-%m-%d %H:%M:%S").timestamp()
    except ValueError:
        return None


def _logged_phases(log: Path, started: float, cost: float) -> dict | None:
    """Phases of a trial of the code before, from its log's time stamps."""
    try:
        lines = log.read_text().splitlines()
    except OSError:
        return None
    stamps = [(s, line[20:]) for line in lines if (s := _stamp(line)) is not None]
    if not stamps:
        return None
    first = stamps[0][0]
    measured = next((s for s, text in stamps if text.startswith("measured:")), None)
    epochs = [s for s, text in stamps if text.startswith("epoch:")]
    out = {"startup": max(0.0, first - started), "measure": 0.0, "learning": 0.0}
    if measured is not None:
        out["measure"] = max(0.0, measured - first)
        if epochs:
            out["learning"] = max(0.0, epochs[-1] - measured)
    out["other"] = max(0.0, cost - sum(out.values()))
    return out


def summarise(run_dir: Path, *, from_logs: bool) -> dict:
    from attndsl.nas import open_run
    from attndsl.nas.report import trial_rows
    from attndsl.nas.trial import PHASES
    study = open_run(run_dir)
    rows = trial_rows(study)
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    counts: dict = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    spent = sum(r["cost_s"] or 0.0 for r in rows)
    phases: dict = {}
    if from_logs:
        for r in rows:
            t = trials[r["number"]]
            if t.datetime_start is None or not r["cost_s"]:
                continue
            found = _logged_phases(run_dir / "logs" / f"trial_{r['number']:04d}.log",
                                   t.datetime_start.timestamp(), r["cost_s"])
            if found is None:
                phases["other"] = phases.get("other", 0.0) + r["cost_s"]
                continue
            for k, v in found.items():
                phases[k] = phases.get(k, 0.0) + v
    else:
        for r in rows:
            if r.get("train_s") is None:
                phases["other"] = phases.get("other", 0.0) + (r["cost_s"] or 0.0)
                continue
            for k in (*PHASES, "other"):
                key = "learning" if k in ("train", "eval") else k
                phases[key] = phases.get(key, 0.0) + (r[f"{k}_s"] or 0.0)
    complete = sorted(r["cost_s"] for r in rows if r["state"] == "complete" and r["cost_s"])
    pruned = sorted(r["cost_s"] for r in rows if r["state"] == "pruned" and r["cost_s"])
    return {"run": str(run_dir), "trials": len(rows), "counts": counts, "spent_s": spent,
            "seconds_by_phase": phases,
            "share_by_phase": {k: v / spent for k, v in phases.items()} if spent else {},
            "learning_share": phases.get("learning", 0.0) / spent if spent else None,
            "median_complete_s": complete[len(complete) // 2] if complete else None,
            "median_pruned_s": pruned[len(pruned) // 2] if pruned else None}


def markdown(result: dict) -> str:
    before, after = result["before"], result["after"]
    lines = [f"# Search cost before/after — {result['device']['device_name']}", "",
             f"torch {result['device']['torch']}, {result['date']}; the README's quick-start "
             "command (15 device-minutes) on the same machine, one after the other.", "",
             "| run | trials | complete / pruned / infeasible | median complete | median pruned "
             "| learning | measure | startup | other |", "|" + "---|" * 9]
    for name, r in (("before", before), ("after", after)):
        c = r["counts"]
        share = r["share_by_phase"]
        lines.append(
            f"| {name} | {r['trials']} | {c.get('complete', 0)} / {c.get('pruned', 0)} / "
            f"{c.get('infeasible', 0)} | {r['median_complete_s'] or 0:.1f} s | "
            f"{r['median_pruned_s'] or 0:.1f} s | {share.get('learning', 0) * 100:.0f}% | "
            f"{share.get('measure', 0) * 100:.0f}% | {share.get('startup', 0) * 100:.0f}% | "
            f"{share.get('other', 0) * 100:.0f}% |")
    extra = {k: v for k, v in after["share_by_phase"].items()
             if k not in ("learning", "measure", "startup", "other")}
    lines += ["", "After, the rest: " + ", ".join(f"{k} {v * 100:.1f}%" for k, v in extra.items())
              + ". Before: phases read from the trial logs' time stamps (1 s resolution); "
              "learning = training steps and validation."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    device = device_info("cpu", args.threads)
    stamp = datetime.datetime.now().strftime("%Y-%m-%dT%H%M")
    result = {"benchmark": "search_cost", "date": stamp, "device": device,
              "before": summarise(args.before, from_logs=True),
              "after": summarise(args.after, from_logs=False)}
    result["trials_ratio"] = result["after"]["trials"] / max(1, result["before"]["trials"])
    stem = f"search_cost_{device['device_kind']}_{stamp}"
    save_result(RESULTS, stem, result)
    (RESULTS / f"{stem}.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
