"""Does the search beat random sampling? The same space, task and budget searched by several
arms, each from several seeds, compared by the hypervolume their fronts reach against the
device time spent.

Arms (each an `attndsl search` command line):
    default        multi-objective TPE + MO-ASHA pruning
    no_prune       TPE, every trial trained to the end
    random         random sampling, no pruning (the baseline every NAS paper is held to)
    random_prune   random sampling + MO-ASHA (Li & Talwalkar: a hard baseline)
    nsga2          NSGA-II + MO-ASHA

Throughput comes from one latency table, profiled once before the runs and given to every
run (`--latency-table`), so measurement noise decides nothing: a design has the same
throughput in every arm and seed. The hypervolume's reference point is (chance accuracy,
0 images/s), the same for every run; curves are sampled on a common grid of device time.

    python -m benchmarks.search_quality [--space SPACE.yaml] [--budget 5m] [--seeds 5]
        [--arms default no_prune random random_prune nsga2] [--parallel 2] [--threads 1]

Runs two searches at a time on a 2-core CPU by default (one thread each): the budget is
device time, so a run slowed by its neighbour simply does less — alike for every arm, as
the runs are interleaved arm by arm within each seed. Writes
benchmarks/results/search_quality_<device>_<date>.json, .md and .png: per arm the seeds,
the final hypervolumes and the curves; medians and IQRs; each arm's final hypervolume
minus random search's, with a bootstrap 95% confidence interval over seeds.
"""
from __future__ import annotations

import argparse
import datetime
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.suite import RESULTS, device_info, save_result

ARMS = {
    "default": [],
    "no_prune": ["--no-prune"],
    "random": ["--sampler", "random", "--no-prune"],
    "random_prune": ["--sampler", "random"],
    "nsga2": ["--sampler", "nsga2"],
}
GRID = 20             # points of the common device-time grid
BOOTSTRAP = 10_000


def run_command(space: str, arm: str, seed: int, budget: str, runs: Path, table: Path,
                threads: int) -> list[str]:
    return [sys.executable, "-m", "attndsl.cli", "search", space, "--budget", budget,
            "--seed", str(seed), "--study", f"{arm}_s{seed}", "--runs-dir", str(runs),
            "--latency-table", str(table), "--threads", str(threads), "--no-remeasure",
            "--no-progress", "--seed-zoo", *ARMS[arm]]


def curve(run_dir: Path, reference: tuple[float, float], horizon_h: float) -> list[float]:
    from attndsl.nas import open_run
    from attndsl.nas.report import hypervolume_history, trial_rows
    history = hypervolume_history(trial_rows(open_run(run_dir)), reference)
    out = []
    for k in range(1, GRID + 1):
        at = horizon_h * k / GRID
        reached = [hv for spent, hv in history if spent <= at]
        out.append(reached[-1] if reached else 0.0)
    return out


def bootstrap_difference(a: list[float], b: list[float], seed: int = 0) -> dict:
    """Median of a − median of b, with a 95% percentile interval resampling the seeds of
    each arm with replacement."""
    import random
    rng = random.Random(seed)
    diffs = sorted(statistics.median(rng.choices(a, k=len(a)))
                   - statistics.median(rng.choices(b, k=len(b))) for _ in range(BOOTSTRAP))
    return {"difference": statistics.median(a) - statistics.median(b),
            "ci95": [diffs[int(0.025 * BOOTSTRAP)], diffs[int(0.975 * BOOTSTRAP) - 1]]}


def summarize(arms: dict, horizon_h: float) -> None:
    """Per arm, from its seeds' hypervolume curves: the final hypervolume (median, IQR),
    the mean hypervolume over the budget (the area under the curve / the budget: how soon
    the front gets good, which the final value misses once every arm reaches the task's
    ceiling), the device-minutes to reach 99% of the best final hypervolume of any run, and
    each arm's difference from random search in the first two, with bootstrap intervals."""
    best = max(c[-1] for arm in arms.values() for c in arm["hv_curves"])
    step_min = horizon_h * 60 / GRID
    for arm in arms.values():
        curves = arm["hv_curves"]
        arm["final_hv"] = [c[-1] for c in curves]
        arm["median_hv"], arm["iqr_hv"] = statistics.median(arm["final_hv"]), iqr(arm["final_hv"])
        arm["mean_hv"] = [statistics.fmean(c) for c in curves]
        arm["median_mean_hv"] = statistics.median(arm["mean_hv"])
        arm["minutes_to_99"] = [next(((k + 1) * step_min for k, v in enumerate(c)
                                      if v >= 0.99 * best), None) for c in curves]
        reached = [m for m in arm["minutes_to_99"] if m is not None]
        arm["median_minutes_to_99"] = statistics.median(reached) if len(reached) * 2 > \
            len(curves) else None      # None: most seeds never got there
    if "random" in arms:
        for name, arm in arms.items():
            if name != "random":
                arm["vs_random"] = bootstrap_difference(arm["final_hv"], arms["random"]["final_hv"])
                arm["mean_vs_random"] = bootstrap_difference(arm["mean_hv"],
                                                             arms["random"]["mean_hv"])


def iqr(values: list[float]) -> list[float]:
    if len(values) < 2:
        return [values[0], values[0]] if values else [0.0, 0.0]
    q = statistics.quantiles(values, n=4)
    return [q[0], q[2]]


def markdown(result: dict) -> str:
    lines = [f"# Search quality — {result['space']}", "",
             f"{result['device']['device_name']}, torch {result['device']['torch']}, "
             f"{result['date']}; budget {result['budget']} per run, seeds "
             f"{result['seeds']}, throughput from one latency table "
             f"({result['table']}); hypervolume reference (accuracy {result['reference'][0]:g}, "
             "0 images/s).", "",
             "| arm | command line | final hypervolume, median [IQR] | − random [95% CI] | "
             "mean hypervolume over the budget | − random [95% CI] | minutes to 99% of the "
             "best | trials, median |", "|---|---|---|---|---|---|---|---|"]

    def versus(diff):
        return (f"{diff['difference']:+,.0f} [{diff['ci95'][0]:+,.0f}, {diff['ci95'][1]:+,.0f}]"
                if diff else "–")
    for name, arm in result["arms"].items():
        to99 = arm.get("median_minutes_to_99")
        lines.append(
            f"| {name} | `{' '.join(ARMS[name]) or '(defaults)'}` | "
            f"{arm['median_hv']:,.0f} [{arm['iqr_hv'][0]:,.0f}–{arm['iqr_hv'][1]:,.0f}] | "
            f"{versus(arm.get('vs_random'))} | {arm['median_mean_hv']:,.0f} | "
            f"{versus(arm.get('mean_vs_random'))} | "
            + (f"{to99:.2f}" if to99 is not None else "not reached") + " | "
            f"{statistics.median(arm['trials']):.0f} |")
    lines += ["", "An interval that excludes 0 is a difference the seeds support; one that "
              "contains 0 is not (yet) evidence either way. Mean hypervolume over the budget: "
              "the area under a run's hypervolume-against-device-time curve divided by the "
              "budget (how soon its front got good); minutes to 99%: the device-minutes until "
              "the run's hypervolume reached 99% of the best final hypervolume of any run "
              "(median over the seeds that got there; 'not reached' when most did not)."]
    return "\n".join(lines) + "\n"


def plot(result: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4.5))
    hours = [result["horizon_h"] * k / GRID * 60 for k in range(1, GRID + 1)]
    for name, arm in result["arms"].items():
        curves = arm["hv_curves"]
        med = [statistics.median(c[k] for c in curves) for k in range(GRID)]
        low = [iqr([c[k] for c in curves])[0] for k in range(GRID)]
        high = [iqr([c[k] for c in curves])[1] for k in range(GRID)]
        ax.plot(hours, med, label=name)
        ax.fill_between(hours, low, high, alpha=0.15)
    ax.set_xlabel("device-minutes spent")
    ax.set_ylabel("hypervolume (accuracy × images/s above the reference)")
    ax.set_title(f"{result['space']}: median and IQR over {len(result['seeds'])} seeds")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="examples/search_digits.yaml")
    parser.add_argument("--budget", default="5m")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--arms", nargs="+", default=list(ARMS), choices=list(ARMS))
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--table", type=Path, default=None, help="a latency table for the "
                        "space (default: profiled now, at --threads)")
    parser.add_argument("--work", type=Path, default=Path("runs/search_quality"))
    parser.add_argument("--reanalyze", type=Path, metavar="RESULT.json", help="recompute a "
                        "committed result's summaries from its curves and rewrite its .md and "
                        ".png (nothing is run)")
    args = parser.parse_args(argv)
    if args.reanalyze:
        result = json.loads(args.reanalyze.read_text())
        summarize(result["arms"], result["horizon_h"])
        args.reanalyze.write_text(json.dumps(result, indent=1))
        args.reanalyze.with_suffix(".md").write_text(markdown(result))
        plot(result, args.reanalyze.with_suffix(".png"))
        print(markdown(result))
        return 0
    from attndsl.nas import load_space, parse_budget
    from attndsl.nas.tasks import task_shape
    space = load_space(args.space)
    _, _, classes = task_shape(space.file.task)
    reference = (1.0 / classes if classes else 0.0, 0.0)
    horizon_h = parse_budget(args.budget).seconds / 3600
    args.work.mkdir(parents=True, exist_ok=True)
    table = args.table or args.work / "latency_table.json"
    if args.table is None:
        subprocess.run([sys.executable, "-m", "attndsl.cli", "profile", args.space,
                        "--threads", str(args.threads), "--out", str(table), "--check", "30",
                        "--no-progress"], check=True)
    jobs = [(arm, seed) for seed in range(args.seeds) for arm in args.arms]
    running: list = []
    started = time.time()
    while jobs or running:
        while jobs and len(running) < args.parallel:
            arm, seed = jobs.pop(0)
            run_dir = args.work / "runs" / f"{arm}_s{seed}"
            if (run_dir / "front.json").exists():
                continue              # finished by an earlier invocation: resumable
            log = open(args.work / f"{arm}_s{seed}.log", "w")
            proc = subprocess.Popen(run_command(args.space, arm, seed, args.budget,
                                                args.work / "runs", table, args.threads),
                                    stdout=log, stderr=subprocess.STDOUT)
            running.append((arm, seed, proc, log))
        for item in list(running):
            arm, seed, proc, log = item
            if proc.poll() is not None:
                log.close()
                running.remove(item)
                print(f"{arm} seed {seed}: exit {proc.returncode} "
                      f"({(time.time() - started) / 60:.0f} min)", flush=True)
        time.sleep(2)
    arms = {}
    from attndsl.nas import open_run
    for arm in args.arms:
        curves, trials = [], []
        for seed in range(args.seeds):
            run_dir = args.work / "runs" / f"{arm}_s{seed}"
            curves.append(curve(run_dir, reference, horizon_h))
            trials.append(len(open_run(run_dir).get_trials(deepcopy=False)))
        arms[arm] = {"seeds": list(range(args.seeds)), "hv_curves": curves,
                     "trials": trials, "command": ARMS[arm]}
    summarize(arms, horizon_h)
    device = device_info("cpu", args.threads)
    stamp = datetime.datetime.now().strftime("%Y-%m-%dT%H%M")
    result = {"benchmark": "search_quality", "space": args.space, "budget": args.budget,
              "seeds": list(range(args.seeds)), "date": stamp, "device": device,
              "table": str(table), "reference": reference, "horizon_h": horizon_h,
              "parallel": args.parallel, "threads": args.threads, "arms": arms,
              "command": "python -m benchmarks.search_quality " + " ".join(argv or sys.argv[1:])}
    stem = f"search_quality_{device['device_kind']}_{stamp}"
    save_result(RESULTS, stem, result)
    (RESULTS / f"{stem}.md").write_text(markdown(result))
    plot(result, RESULTS / f"{stem}.png")
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
