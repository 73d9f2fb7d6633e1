"""What the pruner buys: two runs of the same space and budget from the same seeds, one with
MO-ASHA pruning and one with --no-prune, compared by the hypervolume their fronts reach per
device-hour; plus, for the pruned run, which front designs dominate a zoo seed.

    attndsl search examples/search_digits.yaml --budget 15m --seed-zoo --runs-dir runs/prune
    attndsl search examples/search_digits.yaml --budget 15m --seed-zoo --runs-dir runs/noprune --no-prune
    python -m benchmarks.search_pruning runs/prune/digits_quickstart runs/noprune/digits_quickstart

Writes benchmarks/results/search_pruning_<device>_<date>.json, .md and .png.
"""
from __future__ import annotations

import argparse
import datetime
import sys
from pathlib import Path

from benchmarks.suite import RESULTS, device_info, save_result


def summarise(run_dir: Path) -> dict:
    from attndsl.nas import open_run
    from attndsl.nas.pruner import dominates
    from attndsl.nas.report import front_rows, hypervolume_history, trial_rows
    study = open_run(run_dir)
    rows = trial_rows(study)
    history = hypervolume_history(rows)
    front = front_rows(rows)
    seeds = [r for r in rows if r["seed"] and r["state"] == "complete" and not r["duplicate_of"]]
    counts: dict = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    beating = []
    for f in front:
        beaten = [s["seed"] for s in seeds if dominates((f["accuracy"], f["images_per_s"]),
                                                        (s["accuracy"], s["images_per_s"]))]
        if beaten and not f["seed"]:
            beating.append({"name": f["name"], "accuracy": f["accuracy"],
                            "images_per_s": f["images_per_s"], "dominates_seeds": beaten})
    return {
        "run_dir": str(run_dir), "counts": counts,
        "spent_device_h": sum(r["cost_s"] or 0 for r in rows) / 3600,
        "history": history, "final_hypervolume": history[-1][1] if history else 0.0,
        "hypervolume_per_device_h": (history[-1][1] / history[-1][0]) if history and history[-1][0] else 0.0,
        "front": [{k: r[k] for k in ("number", "name", "seed", "accuracy", "images_per_s", "spread")}
                  for r in front],
        "seeds": [{k: r[k] for k in ("seed", "accuracy", "images_per_s")} for r in seeds],
        "front_designs_dominating_a_seed": beating,
    }


def at(history, hours: float) -> float:
    value = 0.0
    for spent, hv in history:
        if spent <= hours:
            value = hv
    return value


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pruned", type=Path)
    parser.add_argument("unpruned", type=Path)
    parser.add_argument("--threads", type=int, default=2, help="threads the runs used")
    args = parser.parse_args(argv)
    runs = {"pruned": summarise(args.pruned), "no_prune": summarise(args.unpruned)}
    info = device_info("cpu", args.threads)
    horizon = max(r["spent_device_h"] for r in runs.values())
    marks = [horizon * f for f in (0.25, 0.5, 0.75, 1.0)]
    table = {name: [at(r["history"], m) for m in marks] for name, r in runs.items()}
    result = {"benchmark": "search_pruning", **info, "dtype": "float32", "runs": runs,
              "marks_device_h": marks, "hypervolume_at_marks": table,
              "command": "python -m benchmarks.search_pruning " + " ".join(argv or sys.argv[1:])}
    stamp = datetime.datetime.now().strftime("%Y-%m-%dT%H%M")
    path = save_result(RESULTS, f"search_pruning_{info['device_kind']}_{stamp}", result)
    lines = [f"# Pruning (MO-ASHA) against --no-prune ({info['device_name']}, {args.threads} threads)",
             "", "| run | trials by state | spent device-h | final hypervolume | hypervolume per device-h |",
             "|---|---|---|---|---|"]
    for name, r in runs.items():
        states = ", ".join(f"{n} {s}" for s, n in sorted(r["counts"].items()))
        lines.append(f"| {name} | {states} | {r['spent_device_h']:.3f} | "
                     f"{r['final_hypervolume']:,.0f} | {r['hypervolume_per_device_h']:,.0f} |")
    lines += ["", "Hypervolume reached by device-hours spent (reference: 0 accuracy, 0 images/s):",
              "", "| run | " + " | ".join(f"{m:.3f} h" for m in marks) + " |",
              "|---|" + "---|" * len(marks)]
    for name, values in table.items():
        lines.append(f"| {name} | " + " | ".join(f"{v:,.0f}" for v in values) + " |")
    for name, r in runs.items():
        lines += ["", f"{name}: front designs that dominate a zoo seed (better on one objective, "
                      "no worse on the other):"]
        if not r["front_designs_dominating_a_seed"]:
            lines.append("none")
        for b in r["front_designs_dominating_a_seed"]:
            lines.append(f"- {b['name']}: accuracy {b['accuracy']:.3f}, {b['images_per_s']:,.0f} "
                         f"images/s, dominates {', '.join(b['dominates_seeds'])}")
        lines.append("seeds: " + "; ".join(f"{s['seed']} {s['accuracy']:.3f} / "
                                           f"{s['images_per_s']:,.0f} images/s" for s in r["seeds"]))
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for name, r in runs.items():
        if r["history"]:
            ax.step([h for h, _ in r["history"]], [v for _, v in r["history"]], where="post",
                    label=name)
    ax.set_xlabel("device-hours spent (cpu)")
    ax.set_ylabel("hypervolume (accuracy × images/s)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path.with_suffix(".png"), dpi=120)
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
