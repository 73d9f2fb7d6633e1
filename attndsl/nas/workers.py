"""Several workers on one study: `--workers N` (CPU) or `--gpus 0,1,2,3` (one worker per GPU,
`CUDA_VISIBLE_DEVICES` set per worker so that GPU memory never mixes).

Each worker is the same code path as a single `attndsl search` (a subprocess running it with
`--worker`), on the same storage and study, so there is one study and one ledger; each
checks the ledger before each trial, so W workers overspend by at most one trial each. The
supervisor here owns what happens once: the zoo seeds, the progress display (every worker's
running trial), restarting a crashed worker (up to a limit, reported), stopping them all on
Ctrl-C, and the outputs at the end.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import SpecError

MAX_RESTARTS = 3
# set for the workers a supervisor starts: its pid, which each worker watches (a worker
# whose supervisor is gone — kill -9 — stops as on Ctrl-C instead of running on alone)
SUPERVISOR_ENV = "ATTNDSL_SUPERVISOR"
# exit statuses of a worker that are not crashes: done, stopped (nothing to run), interrupted
CLEAN_EXITS = (0, 2, 130)


@dataclass
class Worker:
    index: int
    gpu: str | None
    argv: list
    log: Path
    proc: subprocess.Popen | None = None
    restarts: int = 0
    exits: list = field(default_factory=list)
    env: dict = field(default_factory=dict)      # the storage URL (not on the command line)

    def start(self) -> None:
        env = {**os.environ, **self.env, SUPERVISOR_ENV: str(os.getpid())}
        if self.gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = self.gpu
        else:        # CPU workers share the cores: measurements take the host lock
            from .hostlock import ENV, default_path
            env.setdefault(ENV, default_path())
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            # own session: a terminal's Ctrl-C reaches the supervisor, which forwards it
            self.proc = subprocess.Popen(self.argv, stdout=log, stderr=subprocess.STDOUT,
                                         env=env, start_new_session=True)

    @property
    def label(self) -> str:
        return f"worker {self.index}" + (f" (GPU {self.gpu})" if self.gpu is not None else "")


def check_storage_for_workers(storage: str | None, workers: int) -> None:
    if workers > 1 and storage is not None and storage.startswith("sqlite"):
        raise SpecError(
            f"--storage {storage} with {workers} workers: SQLite locks the whole database on "
            "every write, so parallel workers fail with 'database is locked' (and corrupt it "
            "on NFS). Use the default journal file (no --storage; several workers on one "
            "machine) or PostgreSQL (--storage postgresql://USER@HOST/DB; many machines)",
            path="storage")


def worker_argv(space_path: Path, budget_text: str, options, study_name: str, index: int,
                seed: int) -> list:
    argv = [sys.executable, "-m", "attndsl.cli", "search", str(space_path), "--budget",
            budget_text, "--runs-dir", str(options.runs_dir), "--study", study_name,
            "--sampler", options.sampler, "--seed", str(seed + index), "--worker",
            "--trial-timeout", str(options.trial_timeout),
            "--devices-per-worker", str(options.devices)]
    # the storage URL (with its password) goes through the environment: worker_env
    if not options.prune:
        argv.append("--no-prune")
    deploy = options.deploy
    argv += ["--deploy-batch", str(deploy.batch), "--deploy-dtype", deploy.dtype,
             "--deploy-autocast", deploy.autocast]
    if deploy.resolution:
        argv += ["--deploy-resolution", str(deploy.resolution)]
    argv += ["--latency", deploy.latency]
    if options.latency_table_arg:
        argv += ["--latency-table", str(Path(options.latency_table_arg).resolve())]
    if options.threads:
        argv += ["--threads", str(options.threads)]
    if options.device:
        argv += ["--device", options.device]
    return argv


def worker_env(options) -> dict:
    from .storage import STORAGE_ENV
    return {STORAGE_ENV: options.storage} if options.storage else {}


def watch_supervisor() -> bool:
    """In a worker a supervisor started: interrupt this process (as Ctrl-C would: the
    running trial is recorded as interrupted and queued to re-run) once the supervisor is
    gone. Returns whether there is a supervisor to watch."""
    import threading
    supervisor = os.environ.get(SUPERVISOR_ENV)
    if not supervisor or os.getppid() != int(supervisor):
        return False
    if threading.current_thread() is threading.main_thread():
        # SIGINT is how the supervisor (and this watch) stops a worker: take it even when
        # the supervisor was started with SIGINT ignored (`nohup … &`, which workers inherit)
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def watch():
        while os.getppid() == int(supervisor):
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=watch, name="attndsl-supervisor-watch", daemon=True).start()
    return True


def supervisor_gone() -> bool:
    supervisor = os.environ.get(SUPERVISOR_ENV)
    return bool(supervisor) and os.getppid() != int(supervisor)


def supervise(workers: list[Worker], display, *, poll: float = 0.5) -> list[str]:
    """Run the workers to the end; restart crashed ones up to MAX_RESTARTS. Returns what
    happened to each (for the closing report). Ctrl-C stops them all cleanly: each records
    its running trial as interrupted and queues it to re-run."""
    for w in workers:
        w.start()
    try:
        while any(w.proc is not None for w in workers):
            for w in workers:
                if w.proc is None or w.proc.poll() is None:
                    continue
                code = w.proc.returncode
                w.exits.append(code)
                w.proc = None
                if code not in CLEAN_EXITS and w.restarts < MAX_RESTARTS:
                    w.restarts += 1
                    w.start()
            display.refresh()
            time.sleep(poll)
    except KeyboardInterrupt:
        stop_all(workers)
        raise
    return [f"{w.label}: exits {w.exits}" + (f", restarted {w.restarts}×" if w.restarts else "")
            for w in workers]


def stop_all(workers: list[Worker], timeout: float = 60.0) -> None:
    for w in workers:
        if w.proc is not None and w.proc.poll() is None:
            w.proc.send_signal(signal.SIGINT)
    deadline = time.time() + timeout
    for w in workers:
        if w.proc is None:
            continue
        try:
            w.proc.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            os.killpg(w.proc.pid, signal.SIGKILL)
            w.proc.wait()


SBATCH = """#!/bin/bash
# attndsl search worker array: each task is one worker of the study {study!r} on {storage_doc}.
# Submit: sbatch {script}
#SBATCH --job-name=attndsl-{study}
#SBATCH --array=0-{last}{throttle}
#SBATCH --ntasks=1
#SBATCH --gpus-per-task={gpus}
#SBATCH --cpus-per-task={cpus}
#SBATCH --output={logs}/%A_%a.log
{extra}
set -euo pipefail
cd {cwd}
{storage_env}# every task joins the same study; the budget ({budget}) is the study's total, checked
# against the storage before each trial, so the array stops when it is spent
exec {python} -m attndsl.cli search {space} --budget {budget} --study {study} \\
    --runs-dir {runs_dir} --seed $(( {seed} + SLURM_ARRAY_TASK_ID )) \\
    --devices-per-worker {gpus} --device cuda --worker{latency_args}
"""


def slurm_script(*, space_path: Path, budget: str, study: str, runs_dir: Path, array: int,
                 gpus_per_task: int, cpus_per_task: int, partition: str | None,
                 time_limit: str | None, storage: str | None, seed: int, throttle: int | None,
                 script: Path, latency: str | None = None,
                 latency_table: Path | None = None) -> str:
    extra = []
    if partition:
        extra.append(f"#SBATCH --partition={partition}")
    if time_limit:
        extra.append(f"#SBATCH --time={time_limit}")
    from .storage import STORAGE_ENV, redact
    # the storage URL (and its password) reaches the workers through the environment, never
    # their command line, which every user of the node can read with ps; the script file
    # itself is written readable by its owner only (cli.py)
    storage_env = f"export {STORAGE_ENV}='{storage}'\n" if storage else ""
    return SBATCH.format(
        study=study, storage_doc=redact(storage) if storage else
        f"the journal file {runs_dir / study / 'journal.log'} "
        "(a shared filesystem)", script=script, last=array - 1,
        throttle=f"%{throttle}" if throttle else "", gpus=gpus_per_task, cpus=cpus_per_task,
        logs=(runs_dir / study / "slurm").resolve(), extra="\n".join(extra), cwd=Path.cwd(),
        budget=budget, python=sys.executable, space=space_path.resolve(),
        runs_dir=runs_dir.resolve(), storage_env=storage_env, seed=seed,
        latency_args=(f" \\\n    --latency {latency}" if latency else "") + (
            f" \\\n    --latency-table {Path(latency_table).resolve()}" if latency_table else ""))
