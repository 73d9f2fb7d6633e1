"""Planning past one machine, by simulation: how many concurrent workers can one study serve?

1. Storage: W simulated worker processes run the search's per-trial storage traffic (the
   ledger check that reads every trial, ask, the params, ~10 user attrs, tell) with no
   training, against the journal file and a local PostgreSQL; trials/s sustained.
2. Sampler: the time of one suggestion (every leaf of the quick-start space) as the study
   grows to 100, 1,000 and 5,000 finished trials, for TPE (as the search configures it) and
   GP.
3. Storage size per trial.

    python -m benchmarks.search_scale [--workers 1,8,64] [--seconds 15] [--sizes 100,1000,5000]

Writes benchmarks/results/search_scale_<device>_<date>.json and .md. The PostgreSQL part
starts a throw-away cluster (tests/postgres_server.py) and is skipped, saying so, without one.
"""
from __future__ import annotations

import argparse
import datetime
import multiprocessing as mp
import random
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

from benchmarks.suite import RESULTS, ROOT, device_info, save_result

SPACE = ROOT / "examples" / "search_digits.yaml"


def _storage(url_or_path: str):
    import optuna
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore")
    from attndsl.nas.runner import make_storage
    return make_storage(url_or_path, Path(url_or_path).parent)


def _worker(url: str, study_name: str, seconds: float, out, seed: int) -> None:
    import optuna
    from attndsl.nas import load_space
    from attndsl.nas.budget import admission, parse_budget
    storage = _storage(url)
    study = optuna.load_study(study_name=study_name, storage=storage,
                              sampler=optuna.samplers.RandomSampler(seed=seed))
    space = load_space(SPACE)
    budget = parse_budget("1000000h")
    rng = random.Random(seed)
    done, deadline = 0, time.time() + seconds
    while time.time() < deadline:
        admission(budget, study.get_trials(deepcopy=False))     # the ledger check
        trial = study.ask()
        space.suggest(trial)
        for key in ("host", "pid", "started", "state", "hash", "name", "images_per_s",
                    "params", "rung_1", "cost_s"):
            trial.set_user_attr(key, rng.random())
        study.tell(trial, [rng.random(), rng.random() * 1e4])
        done += 1
    out.put(done)


def storage_throughput(url: str, workers: int, seconds: float) -> dict:
    import optuna
    name = f"scale_{workers}_{int(time.time() * 1000)}"
    optuna.create_study(study_name=name, storage=_storage(url),
                        directions=["maximize", "maximize"])
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(url, name, seconds, queue, i))
             for i in range(workers)]
    start = time.time()
    for p in procs:
        p.start()
    counts = [queue.get(timeout=seconds + 300) for _ in procs]
    for p in procs:
        p.join()
    wall = time.time() - start
    return {"workers": workers, "trials": sum(counts), "trials_per_s": sum(counts) / seconds,
            "wall_s": wall}


def sampler_time(kind: str, size: int, repeats: int = 5) -> float:
    """Median seconds of one full suggestion with `size` finished trials in the study."""
    import optuna
    from attndsl.nas import load_space
    from attndsl.nas.runner import make_sampler
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore")
    space = load_space(SPACE)
    seed_study = optuna.create_study(directions=["maximize", "maximize"],
                                     sampler=optuna.samplers.RandomSampler(seed=0))
    rng = random.Random(0)
    frozen = []
    for _ in range(size):     # synthetic finished trials over the real space's leaves
        trial = seed_study.ask()
        space.suggest(trial)
        seed_study.tell(trial, [rng.random(), rng.random() * 1e4])
    frozen = seed_study.get_trials(deepcopy=False)
    study = optuna.create_study(directions=["maximize", "maximize"],
                                sampler=make_sampler(kind, 0, space))
    study.add_trials(frozen)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        trial = study.ask()
        space.suggest(trial)
        times.append(time.perf_counter() - start)
        study.tell(trial, [rng.random(), rng.random() * 1e4])
    return statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,8,64")
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--sizes", default="100,1000,5000")
    parser.add_argument("--samplers", default="tpe,gp")
    parser.add_argument("--gp-sizes", default="100,1000", help="GP's fit is cubic in the "
                        "trials: its sizes separately")
    args = parser.parse_args(argv)
    worker_counts = [int(w) for w in args.workers.split(",")]
    sizes = [int(s) for s in args.sizes.split(",")]
    result: dict = {"benchmark": "search_scale", **device_info("cpu", 1), "dtype": "n/a",
                    "storage": {}, "sampler_s": {}, "bytes_per_trial": {},
                    "command": "python -m benchmarks.search_scale " + " ".join(argv or sys.argv[1:])}
    with tempfile.TemporaryDirectory() as tmp:
        journal = str(Path(tmp) / "journal.log")
        result["storage"]["journal"] = [storage_throughput(journal, w, args.seconds)
                                        for w in worker_counts]
        total = sum(r["trials"] for r in result["storage"]["journal"])
        result["bytes_per_trial"]["journal"] = Path(journal).stat().st_size / max(1, total)
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        from postgres_server import start_cluster
        url, stop = start_cluster()
    except BaseException as exc:      # pytest.skip raises a BaseException subclass
        result["storage"]["postgresql"] = f"skipped: {exc}"
    else:
        try:
            result["storage"]["postgresql"] = [storage_throughput(url, w, args.seconds)
                                               for w in worker_counts]
            import sqlalchemy
            engine = sqlalchemy.create_engine(url)
            with engine.connect() as conn:
                size = conn.execute(sqlalchemy.text(
                    "select pg_database_size(current_database())")).scalar()
            total = sum(r["trials"] for r in result["storage"]["postgresql"])
            result["bytes_per_trial"]["postgresql"] = size / max(1, total)
        finally:
            stop()
    for kind in args.samplers.split(","):
        result["sampler_s"][kind] = {}
        for size in ([int(x) for x in args.gp_sizes.split(",")] if kind == "gp" else sizes):
            start = time.time()
            result["sampler_s"][kind][str(size)] = sampler_time(kind, size)
            print(f"{kind} at {size} trials: {result['sampler_s'][kind][str(size)] * 1e3:.1f} ms"
                  f" (setup {time.time() - start:.0f} s)", flush=True)
    stamp = datetime.datetime.now().strftime("%Y-%m-%dT%H%M")
    info = result
    path = save_result(RESULTS, f"search_scale_{info['device_kind']}_{stamp}", result)
    lines = [f"# Search scale by simulation ({info['device_name']}, {info['cpu_count']} cores)", "",
             "Storage: simulated workers doing the search's per-trial storage traffic, no training.",
             "", "| storage | workers | trials/s |", "|---|---|---|"]
    for name, rows in result["storage"].items():
        if isinstance(rows, str):
            lines.append(f"| {name} | – | {rows} |")
            continue
        for r in rows:
            lines.append(f"| {name} | {r['workers']} | {r['trials_per_s']:.1f} |")
    lines += ["", "| storage | bytes per trial |", "|---|---|"]
    lines += [f"| {k} | {v:,.0f} |" for k, v in result["bytes_per_trial"].items()]
    lines += ["", "Sampler: one suggestion (all leaves of examples/search_digits.yaml):", "",
              "| sampler | " + " | ".join(f"{s:,} trials" for s in sizes) + " |",
              "|---|" + "---|" * len(sizes)]
    for kind, row in result["sampler_s"].items():
        lines.append(f"| {kind} | " + " | ".join(f"{row[str(s)] * 1e3:,.1f} ms" if str(s) in row
                                                 else "not run" for s in sizes) + " |")
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
