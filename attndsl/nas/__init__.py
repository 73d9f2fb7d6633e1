"""`attndsl search`: multi-objective search of attention designs — validation accuracy ×
measured throughput — under a device-hour budget, with Pareto-aware pruning, resumable.

    space.yaml ─load_space─▶ SearchSpace ─▶ Optuna study (journal file in the run directory)
      └─ worker loop (runner.py): admission by the ledger → a candidate → a trial subprocess
         (trial.py: measure.py, then training rung by rung, pruner.py decides) → outputs
         (report.py)

>>> result = attndsl.search("examples/search_digits.yaml", budget="15m")   # doctest: +SKIP
>>> result.front[0]["name"], result.front[0]["accuracy"]                        # doctest: +SKIP
"""
from __future__ import annotations

import os
import re
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path

from ..errors import SpecError
from .budget import Budget, SearchStopped, admission, parse_budget
from .space import SearchSpace, load_space
# loaded now, before `def report` below: Python sets a package's attribute to a submodule
# when the submodule is first loaded, so a later first import of nas.report (the runner's)
# would replace the function `attndsl.nas.report` with the module
from . import report as _report_files  # noqa: F401,E402

__all__ = ["search", "report", "prepare_study", "load_space", "SearchSpace", "SearchResult", "parse_budget",
           "SearchStopped"]


@dataclass
class SearchResult:
    run_dir: Path
    front: list          # the Pareto front: dicts with accuracy, images_per_s, file, …
    trials: list         # every trial (the rows of trials.csv)
    stop_reason: str
    summary: dict


def _unit(device: str | None) -> str:
    import torch
    if (device or "").startswith("cuda") or (device is None and torch.cuda.is_available()):
        return "gpu"
    return "cpu-device"


def search(space, budget=None, *, runs_dir="attndsl-runs", study: str | None = None,
           storage: str | None = None, sampler: str = "tpe", seed: int = 0,
           seed_zoo: bool = False, prune: bool = True, deploy_resolution: int | None = None,
           deploy_batch: int | None = None, deploy_dtype: str | None = None,
           deploy_autocast: str | None = None, latency: str | None = None,
           latency_table: str | None = None,
           trial_timeout: float = 3600.0, threads: int | None = None, device: str | None = None,
           progress: bool | str = True, remeasure: bool = True, workers: int = 1,
           gpus: list | None = None, devices_per_worker: int = 1, console=None,
           _worker: bool = False) -> SearchResult:
    """Run (or resume) a search; returns the front and the trials. The same call again
    resumes the study in `runs_dir/<study>`: finished trials are kept, interrupted ones
    re-run, and the budget counts everything spent so far.

    progress: True — a live display on a terminal (one line per trial otherwise);
    "lines" — one line per trial; False — silent.
    workers: worker processes on this machine (CPU); gpus: one worker per listed GPU
    (e.g. ["0", "1"]), each with CUDA_VISIBLE_DEVICES set to it.
    latency: "table" (a design's latency is the sum of its parts' in a latency table,
    latency.py) or "measured" (each trial times its whole model); default: the space's
    deploy.latency. latency_table: a table from `attndsl profile` (this machine's, or the
    deployment machine's: then it must hold every part of the space, or the search refuses
    before its first trial)."""
    # the worker's machinery (optuna) is imported here, not with the package: the trials'
    # fork server imports attndsl and must stay light
    from .runner import (EXHAUSTED_AFTER, Objective, Options, TrialFailed, enqueue_seeds,
                         requeue_dead)
    space = space if isinstance(space, SearchSpace) else load_space(space)
    budget_text = budget if budget is not None else space.file.budget
    if budget_text is None:
        raise SpecError("no budget: give one (--budget 15m, 2h, 50gpu-h or 40trials), or "
                        "write `budget:` in the space file", path="budget")
    the_budget = budget_text if isinstance(budget_text, Budget) else parse_budget(budget_text)
    _check_study_name(study)
    deploy = _deploy(space, deploy_resolution, deploy_batch, deploy_dtype, deploy_autocast,
                     latency if latency_table is None else latency or "table")
    gpus = [str(g).strip() for g in gpus] if gpus else None
    n_workers = len(gpus) if gpus else workers
    if not isinstance(n_workers, int) or n_workers < 1:
        raise SpecError(f"--workers {workers!r}: give a positive number of worker processes",
                        path="workers")
    from .workers import check_storage_for_workers, watch_supervisor
    if _worker:
        from .storage import STORAGE_ENV
        storage = storage or os.environ.get(STORAGE_ENV)   # from the supervisor
        watch_supervisor()
    check_storage_for_workers(storage, n_workers)
    import torch

    from .measure import default_device
    if threads is None and default_device(device).type == "cpu":
        # the trials, their latency table and the re-measurement all run at one thread
        # count: this process's (which the user may have set), not each new process's own
        threads = torch.get_num_threads()
    options = Options(budget=the_budget, runs_dir=Path(runs_dir), study=study, storage=storage,
                      sampler=sampler, seed=seed, seed_zoo=seed_zoo, prune=prune, deploy=deploy,
                      trial_timeout=trial_timeout, threads=threads, device=device,
                      progress=progress, devices=int(devices_per_worker))
    from .latency import search_table
    # the table the throughput is composed from; a foreign table lacking parts of the
    # space refuses here, before anything is opened or spent
    options.latency_table = search_table(space, deploy, table=latency_table, runs_dir=runs_dir,
                                         device=device, threads=threads,
                                         say=None if _worker or progress is False
                                         else lambda text: _say(text, console))
    options.latency_table_arg = latency_table
    run_dir, the_study = _open(space, options)
    if not _worker:     # for the outputs (report.latency_summary)
        table = options.latency_table
        the_study.set_user_attr("latency", {"source": "measured"} if table is None else {
            "source": "table", "table": table["path"], "foreign": table["foreign"],
            "fingerprint": table["fingerprint"]})
    requeue_dead(the_study)
    ok, why = admission(the_budget, the_study.get_trials(deepcopy=False))
    if not ok:
        raise SearchStopped(f"nothing to run in {run_dir}: {why}. Raise --budget to go on "
                            f"(the budget is the study's total), or `attndsl report {run_dir}`")
    if not _worker:      # the supervisor checks it for its workers
        check_task_data(space, options)
    if seed_zoo and not _worker:
        enqueue_seeds(the_study, space, run_dir)
    unit = _unit("cuda" if gpus else device)
    if n_workers > 1:
        return _supervised(space, the_study, the_budget, budget_text, options, run_dir, unit,
                           n_workers, gpus, progress, remeasure, console)

    from .progress import Display
    from .report import write_outputs
    title = (f"attndsl search {the_study.study_name} · {space.file.task.kind} · budget "
             f"{the_budget.describe(unit)} · {run_dir}")
    display = Display(the_study, the_budget, unit, title, enabled=progress is True and not _worker,
                      quiet=progress is False or _worker, console=console)
    objective = Objective(space, options, run_dir, display)
    from .trial import warm_up
    warm_up()      # the fork server imports torch and attndsl once, for every trial
    stop_reason = ""
    previous = signal.getsignal(signal.SIGTERM)
    if _main_thread():
        signal.signal(signal.SIGTERM, _terminate)   # kill (TERM) stops cleanly, like Ctrl-C
    try:
        with display:
            while True:
                # a worker killed mid-trial elsewhere on this host: its trial is re-queued
                # now, not after the others have spent the budget
                requeue_dead(the_study)
                ok, why = admission(the_budget, the_study.get_trials(deepcopy=False))
                if not ok:
                    stop_reason = why
                    break
                display.live_trial = None
                objective.live.number = None
                try:
                    the_study.optimize(_tracking(objective, display), n_trials=1,
                                       catch=(TrialFailed,), gc_after_trial=False)
                except Exception as exc:
                    fault = _storage_fault(exc)
                    if fault is not None:       # Optuna's own error handling failed on it too
                        raise fault from None
                    if objective.taken_over is None:
                        raise
                    # Optuna could not tell the trial another worker had failed: dropped
                    _say(f"trial {objective.taken_over} was failed by another worker while "
                         "this one was paused or cut off past the heartbeat grace, and "
                         "re-queued there; this copy was stopped and nothing was written "
                         "onto it", console)
                    objective.taken_over = None
                    continue
                display.trial_finished(objective.live.number)
                if objective.task_error:
                    if not _worker:
                        write_outputs(the_study, run_dir, unit=unit)
                    raise SearchStopped(
                        f"the task's data could not be loaded in trial "
                        f"{objective.live.number}: {objective.task_error}. Every trial needs "
                        "it: fix the task and run the same command to resume")
                if objective.duplicate_streak >= EXHAUSTED_AFTER:
                    stop_reason = (f"the last {EXHAUSTED_AFTER} trials proposed only designs "
                                   "already evaluated: the space looks exhausted (widen it, "
                                   "or add a range leaf)")
                    break
    except KeyboardInterrupt:
        from .workers import supervisor_gone
        if not _worker:    # a worker's outputs are the supervisor's to write, once
            write_outputs(the_study, run_dir, unit=unit)
        elif supervisor_gone():    # killed: its workers write them, one at a time
            _write_outputs_locked(the_study, run_dir, unit)
        raise SearchInterrupted("interrupted (run the same command again to resume)",
                                run_dir) from None
    finally:
        if _main_thread():
            signal.signal(signal.SIGTERM, previous)
    if _worker:        # the supervisor writes the outputs once every worker is done
        return SearchResult(run_dir, [], [], stop_reason, {})
    return _finish(the_study, run_dir, unit, stop_reason, remeasure, objective.deploy, threads,
                   device)


TASK_CHECK_S = 600.0     # the least time the task's check before a search may take


def check_task_data(space: SearchSpace, options) -> dict:
    """Load the task once, in a process of its own as a trial does, and check it against
    the backbone before the first trial: missing or corrupt data, an entry that does not
    import, labels the model cannot output are one error now, not a failure of every trial
    (5–10 s each, building and measuring first) until the budget is gone."""
    import json
    import subprocess
    import sys
    import tempfile

    from .tasks import TaskError
    backbone = space.fixed().backbone
    job = {"task": space.file.task.model_dump(), "classes": backbone.classes,
           "image_size": backbone.image_size, "in_channels": backbone.in_channels,
           "task_cache": str(Path(options.runs_dir) / ".cache" / "tasks"),
           # a trial's job has these too (a loader may read its trial's settings)
           "training": space.fixed().training.model_dump(), "seed": options.seed}
    # loading is not the trial: a --trial-timeout sized for a tiny trial must not refuse it
    limit = max(options.trial_timeout, TASK_CHECK_S)
    with tempfile.TemporaryDirectory(prefix="attndsl-task-") as tmp:
        job_file, out_file = Path(tmp) / "job.json", Path(tmp) / "out.json"
        job_file.write_text(json.dumps(job))
        try:
            proc = subprocess.run(
                [sys.executable, "-c", "from attndsl.nas.tasks import main; main()",
                 str(job_file), str(out_file)], capture_output=True, text=True,
                timeout=limit)
        except subprocess.TimeoutExpired:
            raise TaskError(f"loading the task took more than {limit:.0f} s (the longer of "
                            "--trial-timeout and 10 min)", path="task") from None
        if not out_file.exists():
            tail = (proc.stderr or "").strip().splitlines()[-3:]
            raise TaskError(f"the process loading the task ended with status "
                            f"{proc.returncode} without a result: {' / '.join(tail)}",
                            path="task")
        result = json.loads(out_file.read_text())
    if "error" in result:
        raise TaskError(result["error"], path=result.get("path") or "task",
                        source=space.origin)
    return result["ok"]


def _finish(the_study, run_dir, unit, stop_reason, remeasure, deploy, threads, device):
    from .report import front_rows, remeasure_front, throughput_cache, trial_rows, \
        write_outputs
    rows = trial_rows(the_study)
    front = front_rows(rows)
    remeasured = None
    if remeasure and front:
        # the outputs first (a Ctrl-C during the re-measurement loses nothing), then with it
        write_outputs(the_study, run_dir, unit=unit, rows=rows)
        _name_the_parent()
        remeasured = remeasure_front(front, deploy, threads=threads, device=device, rounds=5,
                                     cache_dir=throughput_cache(run_dir))
    summary = write_outputs(the_study, run_dir, unit=unit, remeasure=remeasured, rows=rows)
    return SearchResult(run_dir, summary["front"], rows, stop_reason, summary)


def _supervised(space, the_study, the_budget, budget_text, options, run_dir, unit, n_workers,
                gpus, progress, remeasure, console) -> SearchResult:
    """Run `n_workers` worker processes on the study and supervise them (workers.py)."""
    from .budget import admission
    from .progress import Display
    from .report import write_outputs
    from .workers import Worker, supervise, worker_argv, worker_env
    budget_text = the_budget.text or str(budget_text)
    space_path = (run_dir / "space.yaml").resolve()
    workers = [Worker(k, gpus[k] if gpus else None,
                      worker_argv(space_path, budget_text, options, the_study.study_name, k,
                                  options.seed),
                      run_dir / "workers" / f"worker_{k}.log", env=worker_env(options))
               for k in range(n_workers)]
    what = f"{n_workers} workers" + (f" on GPUs {','.join(gpus)}" if gpus else "")
    title = (f"attndsl search {the_study.study_name} · {space.file.task.kind} · budget "
             f"{the_budget.describe(unit)} · {what} · {run_dir}")
    display = Display(the_study, the_budget, unit, title, enabled=progress is True,
                      quiet=progress is False, console=console, show_running=True)
    try:
        with display:
            report = supervise(workers, display)
    except KeyboardInterrupt:
        write_outputs(the_study, run_dir, unit=unit)
        raise SearchInterrupted("interrupted (run the same command again to resume)",
                                run_dir) from None
    ok, why = admission(the_budget, the_study.get_trials(deepcopy=False))
    stop_reason = (why or "every worker stopped") + "; " + "; ".join(report)
    return _finish(the_study, run_dir, unit, stop_reason, remeasure, options.deploy,
                   options.threads, options.device)


class SearchInterrupted(KeyboardInterrupt):
    """Ctrl-C / SIGTERM during a search: finished trials are kept, the running one is queued
    to re-run, the outputs are written; the same command resumes."""

    def __init__(self, reason: str, run_dir: Path):
        super().__init__(reason)
        self.run_dir = run_dir


def prepare_study(space, budget, *, runs_dir="attndsl-runs", study: str | None = None,
                  storage: str | None = None, seed_zoo: bool = False, workers: int = 1):
    """Create (or check) the study a cluster's workers will join, with the space kept in
    its run directory and the zoo seeds enqueued once; returns (run_dir, study name, the
    kept space's path). `attndsl search slurm` calls it before writing the sbatch script."""
    from .runner import Options, enqueue_seeds
    from .workers import check_storage_for_workers
    space = space if isinstance(space, SearchSpace) else load_space(space)
    the_budget = parse_budget(budget)
    _check_study_name(study)
    check_storage_for_workers(storage, workers)
    options = Options(budget=the_budget, runs_dir=Path(runs_dir), study=study, storage=storage,
                      deploy=space.file.deploy)
    run_dir, the_study = _open(space, options)
    if seed_zoo:
        enqueue_seeds(the_study, space, run_dir)
    return run_dir, the_study.study_name, run_dir / "space.yaml"


def _open(space: SearchSpace, options):
    """The run directory (made), the study (created or checked against the space) and the
    space kept beside it: what a search and a cluster's preparation both start with."""
    from .runner import open_study, run_directory
    run_dir = run_directory(space, options)
    run_dir.mkdir(parents=True, exist_ok=True)
    the_study = open_study(space, options, run_dir)
    _keep_space_file(space, run_dir)
    return run_dir, the_study


def _check_study_name(study) -> None:
    if study is not None and not re.fullmatch(r"[A-Za-z0-9][\w.-]{0,99}", str(study)):
        raise SpecError(f"--study {study!r}: a study name is letters, digits, '_', '.', '-' "
                        "(it names the run directory)", path="study")


def _deploy(space: SearchSpace, resolution, batch, dtype, autocast=None, latency=None):
    """The space's deploy settings with the command line's overrides, validated."""
    from pydantic import ValidationError

    from .space import Deploy
    updates = {k: v for k, v in (("resolution", resolution), ("batch", batch), ("dtype", dtype),
                                 ("autocast", autocast), ("latency", latency)) if v is not None}
    try:
        return Deploy.model_validate({**space.file.deploy.model_dump(), **updates})
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        key = err["loc"][0] if err["loc"] else "autocast"   # the cross-field check
        raise SpecError(f"--deploy-{key} {updates.get(key)!r}: {err['msg']}",
                        path=f"deploy.{key}") from None


def _write_outputs_locked(the_study, run_dir: Path, unit: str) -> None:
    import fcntl

    from .report import write_outputs
    with open(run_dir / ".outputs.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        write_outputs(the_study, run_dir, unit=unit)


def _name_the_parent() -> None:
    """The re-measurement process exits once this process is gone (kill -9), even when it
    dies while the child still starts: the child reads who its parent was from here."""
    from .measure import SEARCH_PID_ENV
    os.environ[SEARCH_PID_ENV] = str(os.getpid())


def _storage_fault(exc: BaseException):
    """The StorageError behind an exception out of Optuna (whose own clean-up writes to the
    storage too, and fails with an UnboundLocalError or a ValueError of its own)."""
    from .storage import StorageError
    seen = exc
    while seen is not None:
        if isinstance(seen, StorageError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _say(message: str, console=None) -> None:
    import sys
    if console is not None:
        from rich.markup import escape
        console.print(f"[yellow]note:[/yellow] {escape(message)}")
    else:
        print(f"attndsl: {message}", file=sys.stderr, flush=True)


def _tracking(objective, display):
    def run(trial):
        display.live_trial = objective.live
        return objective(trial)
    return run


def _terminate(signum, frame):
    raise KeyboardInterrupt


def _main_thread() -> bool:
    import threading
    return threading.current_thread() is threading.main_thread()


def _keep_space_file(space: SearchSpace, run_dir: Path) -> None:
    """A copy of the space next to the study, for `attndsl report` and for the record."""
    target = run_dir / "space.yaml"
    if space.origin and Path(space.origin).is_file():
        if not target.exists() or Path(space.origin).resolve() != target.resolve():
            shutil.copyfile(space.origin, target)
    elif not target.exists():
        import yaml
        target.write_text(yaml.safe_dump({**space.file.model_dump(mode="json"),
                                          "backbone": space.file.backbone}, sort_keys=False))


def open_run(run_dir, storage: str | None = None, study: str | None = None):
    """The study of a run directory (its journal), or of --storage/--study."""
    import optuna

    from .runner import make_storage
    run_dir = Path(run_dir)
    if storage is None and not (run_dir / "journal.log").is_file():
        raise SpecError(f"{run_dir} is not a search run directory (no journal.log); runs are "
                        f"in ./attndsl-runs/<study>/", path="run_dir")
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    the_storage = make_storage(storage, run_dir)
    names = [s.study_name for s in optuna.get_all_study_summaries(the_storage)]
    name = study or (names[0] if len(names) == 1 else run_dir.name)
    if name not in names:
        from .storage import redact
        raise SpecError(f"no study {name!r} in {redact(storage or str(run_dir))}; studies there: "
                        f"{', '.join(names) or 'none'}", path="study")
    return optuna.load_study(study_name=name, storage=the_storage)


def report(run_dir, *, storage: str | None = None, study: str | None = None,
           remeasure: bool = False, device: str | None = None, threads: int | None = None,
           keep_weights_mb: float | None = None) -> dict:
    """Regenerate a run's outputs from its study (and, with remeasure, re-time the front)."""
    from .report import front_rows, remeasure_front, throughput_cache, trial_rows, \
        write_outputs
    run_dir = Path(run_dir)
    the_study = open_run(run_dir, storage, study)
    rows = trial_rows(the_study)
    remeasured = None
    if remeasure:
        space = load_space(run_dir / "space.yaml")
        _name_the_parent()
        remeasured = remeasure_front(front_rows(rows), space.file.deploy, threads=threads,
                                     device=device, cache_dir=throughput_cache(run_dir))
    keep = {} if keep_weights_mb is None else {"keep_weights_mb": keep_weights_mb}
    return write_outputs(the_study, run_dir, unit=_unit(device), remeasure=remeasured,
                         rows=rows, **keep)



