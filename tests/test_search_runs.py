"""Real `attndsl search` processes on a small task: kill -9 and Ctrl-C mid-trial then
resume, several workers on one journal and on a real PostgreSQL server (one worker killed
mid-trial), a failing trial while the search goes on, the outputs (every pareto/*.yaml
builds), `attndsl report`, and a spent budget that refuses to start.

The task is scikit-learn's digits through a `python` task entry written here; it poisons
the loss (NaN) of every trial trained with lr 0.004, as a diverging run would, and slows
the other steps to 0.2 s so that a kill lands mid-training."""
from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState

SPACE = """\
name: ci
task: {kind: python, entry: "ci_task:load"}
backbone:
  image_size: 8
  in_channels: 1
  classes: 10
  patch: 2
  stages:
    - depth: 1
      dim: 16
      heads: {choice: [1, 2]}
      mlp_ratio: 2
      attention:
        choice:
          - none
          - vit_mhsa
          - name: local
            heads: 1
            parameterization: {kind: additive, terms: [query_key]}
            normalization: {kind: softmax}
            application: {kind: window, size: {choice: [2, 8]}}   # 8: larger than the grid
    - {depth: 1, dim: 32, heads: 2, mlp_ratio: 2, attention: {choice: [none, vit_mhsa]}}
training: {epochs: 3, batch_size: 128, lr: {choice: [0.003, 0.004]}}
deploy: {batch: 16, backend: eager, measure_seconds: 0.05}
pruning: {min_epochs: 1, eta: 3}
"""

TASK = """\
import json, sys, time
import numpy as np
import torch.nn.functional as F

def load():
    from sklearn.datasets import load_digits
    job = json.load(open(sys.argv[1]))       # the trial's job: poison lr 0.004
    real = F.cross_entropy
    if abs(job["training"]["lr"] - 0.004) < 1e-12:
        F.cross_entropy = lambda *a, **k: real(*a, **k) * float("nan")
    else:   # slow training down (0.2 s a step), so that a kill lands mid-training
        F.cross_entropy = lambda *a, **k: (time.sleep(0.2), real(*a, **k))[1]
    d = load_digits()
    return d.images.astype(np.float32)[:600] / 16, d.target[:600]
"""

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


@pytest.fixture
def workdir(tmp_path):
    (tmp_path / "space.yaml").write_text(SPACE)
    (tmp_path / "ci_task.py").write_text(TASK)
    return tmp_path


def _search(workdir, *extra, budget="8trials"):
    cmd = [sys.executable, "-m", "attndsl.cli", "search", "space.yaml", "--budget", budget,
           "--runs-dir", "runs", "--no-progress", "--no-remeasure", "--threads", "1",
           "--sampler", "random", *extra]
    return subprocess.Popen(cmd, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def _study(workdir):
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = JournalStorage(JournalFileBackend(str(workdir / "runs" / "ci" / "journal.log")))
    return optuna.load_study(study_name="ci", storage=storage)


def _journal_trials(workdir):
    if not (workdir / "runs" / "ci" / "journal.log").exists():
        return []
    try:
        return _study(workdir).get_trials(deepcopy=False)
    except KeyError:
        return []


def _freeze_training_trial(trials, proc, min_finished: int, timeout=240) -> tuple[int, int]:
    """Wait until `min_finished` trials are finished and a trial of the healthy learning
    rate is RUNNING past its measurement (training); freeze (SIGSTOP) its worker and return
    (trial number, worker pid) once the trial is seen still running with the worker frozen.
    A trial that ends between a look and a signal would otherwise make the test's case
    vanish (a trial with lr 0.004 fails by itself within a step). The caller signals the
    worker and SIGCONTs it (SIGKILL needs no SIGCONT)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, proc.stdout.read()
        finished = [t for t in trials() if t.state.is_finished()]
        running = [t for t in trials() if t.state == TrialState.RUNNING
                   and "images_per_s" in t.user_attrs and t.params["training.lr"] != 0.004]
        if len(finished) >= min_finished and running:
            number, pid = running[0].number, running[0].user_attrs["pid"]
            try:
                os.kill(pid, signal.SIGSTOP)
            except ProcessLookupError:     # a killed worker's trial, not yet re-queued
                time.sleep(0.3)
                continue
            now = {t.number: t for t in trials()}[number]
            if now.state == TrialState.RUNNING and now.user_attrs.get("pid") == pid:
                return number, pid
            os.kill(pid, signal.SIGCONT)
        time.sleep(0.3)
    raise AssertionError("no trial reached training in time")


def _trial_processes(workdir) -> list[int]:
    pids = []
    for proc_dir in Path("/proc").iterdir():
        if not proc_dir.name.isdigit():
            continue
        try:
            cmd = (proc_dir / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "attndsl.nas.trial" in cmd and str(workdir) in cmd:
            pids.append(int(proc_dir.name))
    return pids


def _finished_snapshot(study) -> dict:
    return {t.number: (t.state, t.values, t.user_attrs.get("cost_s"), t.user_attrs.get("hash"),
                       t.user_attrs.get("state"))
            for t in study.get_trials(deepcopy=False) if t.state.is_finished()}


def test_kill_9_and_ctrl_c_then_resume_lose_nothing_and_repeat_nothing(workdir):
    # 1. kill -9 the worker while a trial trains
    proc = _search(workdir)
    killed, _ = _freeze_training_trial(lambda: _journal_trials(workdir), proc, min_finished=2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = _finished_snapshot(_study(workdir))
    assert killed not in before
    deadline = time.time() + 10          # the orphaned trial process notices and exits
    while _trial_processes(workdir) and time.time() < deadline:
        time.sleep(0.2)
    assert not _trial_processes(workdir), "a trial process outlived its killed worker"

    # 2. resume; Ctrl-C (SIGINT) it while another trial trains
    proc = _search(workdir)
    # the first healthy trial of the resumed run: the budget's few trials may hold only one
    stopped, _ = _freeze_training_trial(lambda: _journal_trials(workdir), proc,
                                        min_finished=len(before))
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGCONT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert "resume" in out

    # 3. resume to the end of the budget
    proc = _search(workdir)
    out, _ = proc.communicate(timeout=400)
    assert proc.returncode == 0, out
    study = _study(workdir)
    trials = study.get_trials(deepcopy=False)
    after = _finished_snapshot(study)
    for number, record in before.items():          # nothing finished was lost or changed
        assert after[number] == record
    by_number = {t.number: t for t in trials}
    for number in (killed, stopped):               # the interrupted trials were re-run
        t = by_number[number]
        assert t.state == TrialState.FAIL and t.user_attrs["requeued"]
        assert t.user_attrs["state"] == "interrupted"
        retry = [r for r in trials if r.user_attrs.get("retry_of") == number]
        assert len(retry) == 1 and retry[0].state.is_finished()
        assert retry[0].params == t.params
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    counted = [t for t in trials if not t.user_attrs.get("requeued")]
    assert len(counted) == 8
    # nothing was trained twice: a repeated design is a recorded duplicate, at no cost
    trained = [t for t in counted if "epochs" in t.user_attrs and not t.user_attrs.get("duplicate_of")]
    assert len({t.user_attrs["hash"] for t in trained}) == len(trained)
    for t in counted:
        if t.user_attrs.get("duplicate_of") is not None:
            assert "trial_pid" not in t.user_attrs       # no trial process was started
    # the ledger: every trial's cost, killed ones included, and the report agrees
    run = workdir / "runs" / "ci"
    total = sum(t.user_attrs.get("cost_s", 0.0) for t in trials)
    assert by_number[killed].user_attrs["cost_s"] > 0
    front = json.loads((run / "front.json").read_text())
    assert front["spent_device_s"] == pytest.approx(total)
    rows = list(csv.DictReader(open(run / "trials.csv")))
    assert len(rows) == len(trials)
    assert sum(float(r["cost_s"]) for r in rows) == pytest.approx(total)
    # a failing trial (NaN loss) is recorded and the search went on
    states = {(r["state"], r["reason"]) for r in rows}
    poisoned = [r for r in rows if json.loads(r["search_params"]).get("training.lr") == 0.004
                and r["state"] not in ("interrupted", "infeasible")]
    assert poisoned and all(r["state"] == "failed" and r["reason"] == "nan_loss" for r in poisoned)
    assert ("complete", "") in states
    # the window of 8 on the 4×4 grid is infeasible, with the spec error, never a crash
    for r in rows:
        if json.loads(r["search_params"]).get("stages[0].attention=local.application.size") == 8:
            assert r["state"] == "infeasible" and r["reason"] == "spec_error"
            assert "window of 8" in r["message"]
    _check_outputs(run, front)

    # 4. the budget is spent: the same command refuses to start and says what was spent
    proc = _search(workdir)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "8 of 8 trials" in out

    # 5. attndsl report regenerates everything from the journal
    for name in ("trials.csv", "front.json", "pareto.png"):
        (run / name).unlink()
    res = subprocess.run([sys.executable, "-m", "attndsl.cli", "report", str(run)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "Pareto front" in res.stdout and "optuna-dashboard" in res.stdout
    assert (run / "trials.csv").exists() and (run / "pareto.png").exists()
    assert json.loads((run / "front.json").read_text())["front"] == front["front"]


def _check_outputs(run: Path, front: dict) -> None:
    from attndsl.model import build_model
    files = sorted((run / "pareto").glob("*.yaml"))
    assert front["front"] and len(files) == len(front["front"])
    for entry, path in zip(front["front"], files):
        assert path.name.startswith(entry["file"].split("/")[1][:3])
        assert {"accuracy", "images_per_s", "spread", "params", "peak_memory_mb", "cost_s",
                "rungs"} <= entry.keys()
        net = build_model(path).eval()
        with torch.no_grad():
            assert net(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    accs = [e["accuracy"] for e in front["front"]]
    speeds = [e["images_per_s"] for e in front["front"]]
    assert speeds == sorted(speeds, reverse=True) and accs == sorted(accs)   # a true front
    for name in ("pareto.png", "hypervolume.png"):
        assert (run / name).read_bytes()[:4] == b"\x89PNG"


def test_two_workers_share_one_journal(workdir):
    procs = [_search(workdir, "--seed-zoo", budget="6trials") for _ in range(2)]
    for p in procs:
        out, _ = p.communicate(timeout=400)
        assert p.returncode == 0, out
    trials = _study(workdir).get_trials(deepcopy=False)
    numbers = [t.number for t in trials]
    assert len(numbers) == len(set(numbers))
    counted = [t for t in trials if not t.user_attrs.get("requeued") and t.state.is_finished()]
    # each worker checks the ledger before a trial: at most one trial over per extra worker
    assert 6 <= len(counted) <= 7
    # both workers read the one ledger (the count above); which of them ran how many trials
    # is a race (one may start after the other has taken them all), so only who may run one
    assert {t.user_attrs["pid"] for t in trials} <= {p.pid for p in procs}
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    seeds = [t.user_attrs["seed"] for t in trials if t.user_attrs.get("seed")
             and not t.user_attrs.get("duplicate_of")]
    assert seeds and len(seeds) == len(set(seeds))       # each zoo seed trained once
    assert os.path.exists(workdir / "runs" / "ci" / "front.json")


def test_four_workers_one_killed_is_restarted_and_its_trial_retried(workdir):
    proc = subprocess.Popen(
        [sys.executable, "-m", "attndsl.cli", "search", "space.yaml", "--budget", "10trials",
         "--runs-dir", "runs", "--no-progress", "--no-remeasure", "--threads", "1",
         "--sampler", "random", "--workers", "4"],
        cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    victim, worker_pid = _freeze_training_trial(lambda: _journal_trials(workdir), proc,
                                                min_finished=1)
    os.kill(worker_pid, signal.SIGKILL)                 # one worker dies mid-trial
    out, _ = proc.communicate(timeout=400)
    assert proc.returncode == 0, out
    assert "restarted 1×" in out, out                  # the supervisor restarted it
    trials = _study(workdir).get_trials(deepcopy=False)
    killed = trials[victim]
    assert killed.state == TrialState.FAIL and killed.user_attrs["requeued"]
    retry = [t for t in trials if t.user_attrs.get("retry_of") == victim]
    assert len(retry) == 1 and retry[0].state.is_finished() and retry[0].params == killed.params
    counted = [t for t in trials if not t.user_attrs.get("requeued")]
    assert 10 <= len(counted) <= 10 + 3               # one trial over at most per extra worker
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    # the retry ran in a live worker (which one, a survivor or the restarted one, is a race:
    # the restart may find every remaining trial already taken, so no pid count is asserted)
    assert retry[0].user_attrs["pid"] != worker_pid
    front = json.loads((workdir / "runs" / "ci" / "front.json").read_text())
    assert front["spent_device_s"] == pytest.approx(sum(t.user_attrs.get("cost_s", 0) for t in trials))
    per_worker = front["spend"]["per_worker"]
    # one entry per process that ran a trial (the killed one included: its trial cost device
    # time); how many processes that is depends on who took which trial, so compare the sets
    ran = {f"{t.user_attrs['host']}:{t.user_attrs['pid']}" for t in trials if "pid" in t.user_attrs}
    assert set(per_worker) == ran and f":{worker_pid}" in " ".join(per_worker)
    assert sum(per_worker.values()) == pytest.approx(front["spent_device_s"])


@pytest.fixture(scope="module")
def postgres_url():
    from postgres_server import start_cluster
    url, stop = start_cluster()
    yield url
    stop()


def test_three_workers_on_postgresql_one_killed(workdir, postgres_url):
    from optuna.storages import RDBStorage
    proc = subprocess.Popen(
        [sys.executable, "-m", "attndsl.cli", "search", "space.yaml", "--budget", "9trials",
         "--runs-dir", "runs", "--no-progress", "--no-remeasure", "--threads", "1",
         "--sampler", "random", "--workers", "3", "--storage", postgres_url],
        cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    storage = RDBStorage(postgres_url)

    def trials():
        try:
            return optuna.load_study(study_name="ci", storage=storage).get_trials(deepcopy=False)
        except KeyError:
            return []

    victim, worker_pid = _freeze_training_trial(trials, proc, min_finished=1)
    before = {t.number: (t.state, t.values, t.user_attrs.get("cost_s"))
              for t in trials() if t.state.is_finished()}
    os.kill(worker_pid, signal.SIGKILL)
    out, _ = proc.communicate(timeout=400)
    assert proc.returncode == 0, out
    final = trials()
    by_number = {t.number: t for t in final}
    for number, record in before.items():            # nothing finished was lost or changed
        t = by_number[number]
        assert (t.state, t.values, t.user_attrs.get("cost_s")) == record
    killed = by_number[victim]
    assert killed.state == TrialState.FAIL
    retry = [t for t in final if t.user_attrs.get("retry_of") == victim
             or t.system_attrs.get("failed_trial") == victim]
    assert len(retry) == 1 and retry[0].state.is_finished()
    assert retry[0].params == killed.params
    counted = [t for t in final if not t.user_attrs.get("requeued")
               and t.state != TrialState.WAITING]
    assert 9 <= len(counted) <= 9 + 2
    assert not [t for t in final if t.state == TrialState.RUNNING]
    trained = [t for t in counted if "epochs" in t.user_attrs and not t.user_attrs.get("duplicate_of")]
    assert len({t.user_attrs["hash"] for t in trained}) == len(trained)
    front = json.loads((workdir / "runs" / "ci" / "front.json").read_text())
    assert front["spent_device_s"] == pytest.approx(sum(t.user_attrs.get("cost_s", 0) for t in final))


def test_slurm_script_runs_as_array_tasks(workdir):
    out = subprocess.run([sys.executable, "-m", "attndsl.cli", "search", "slurm", "space.yaml",
                          "--budget", "3trials", "--array", "2", "--gpus-per-task", "1",
                          "--partition", "gpu", "--time", "00:30:00", "--runs-dir", "runs",
                          "--seed-zoo"], cwd=workdir, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    script = workdir / "runs" / "ci" / "slurm" / "ci.sbatch"
    text = script.read_text()
    for line in ("#SBATCH --array=0-1", "#SBATCH --gpus-per-task=1", "#SBATCH --partition=gpu",
                 "#SBATCH --time=00:30:00", "--worker", "--devices-per-worker 1"):
        assert line in text, line
    assert f"sbatch {script.relative_to(workdir)}" in out.stdout
    # run the array's two tasks here, as SLURM would (on the CPU, no sbatch)
    cpu = workdir / "cpu.sbatch"
    cpu.write_text(text.replace("--device cuda", "--device cpu --threads 1"))
    tasks = [subprocess.Popen(["bash", str(cpu)], cwd=workdir, env={**os.environ,
                              "SLURM_ARRAY_TASK_ID": str(i)}, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for i in range(2)]
    for task in tasks:
        log, _ = task.communicate(timeout=300)
        assert task.returncode == 0, log
    trials = _study(workdir).get_trials(deepcopy=False)
    assert 3 <= len([t for t in trials if t.state.is_finished()]) <= 4
    # one or both tasks ran trials: a task that starts late may find the budget spent
    assert 1 <= len({t.user_attrs["pid"] for t in trials if "pid" in t.user_attrs}) <= 2
    assert any(t.user_attrs.get("seed") for t in trials)            # seeds enqueued up front
    res = subprocess.run([sys.executable, "-m", "attndsl.cli", "report", "runs/ci"],
                         cwd=workdir, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "per worker" in res.stdout, res.stdout + res.stderr


ISOLATION_TASK = """\
import json, os, signal, sys
import numpy as np
import torch

def load():
    job = json.load(open(sys.argv[1]))
    # the trial's number, from where its weights go (the search's check of the task's data
    # before the first trial has none)
    weights = os.path.basename(job.get("weights") or "trial_-001.pt")
    trial = int(weights[len("trial_"):-len(".pt")])
    if trial == 0:                       # leaves global state behind, then the kernel's
        torch.set_default_dtype(torch.float64)          # OOM killer takes it (SIGKILL)
        os.environ["ATTNDSL_LEAK"] = "1"
        os.kill(os.getpid(), signal.SIGKILL)
    if trial == 1:
        os.abort()                       # a crash in native code (SIGABRT)
    if trial == 2:
        torch.empty(2 ** 62, dtype=torch.uint8)          # an allocation that can't be had
    # trial 3: a fresh process, whatever its forked siblings did to theirs
    assert torch.get_default_dtype() == torch.float32 and "ATTNDSL_LEAK" not in os.environ
    from sklearn.datasets import load_digits
    d = load_digits()
    return d.images.astype(np.float32)[:300] / 16, d.target[:300]
"""


def test_a_forked_trial_that_dies_costs_that_trial_alone(tmp_path):
    """Trials start forked from a warm server: a process killed by the kernel, a native
    crash and an impossible allocation each fail their own trial with the reason, and the
    next trial starts clean (no global state of a sibling) and completes."""
    space = SPACE.replace("lr: {choice: [0.003, 0.004]}", "lr: {float: [0.001, 0.003]}")
    space = space.replace("heads: {choice: [1, 2]}", "heads: 1").replace(
        "attention:\n        choice:\n          - none\n          - vit_mhsa\n"
        "          - name: local\n            heads: 1\n"
        "            parameterization: {kind: additive, terms: [query_key]}\n"
        "            normalization: {kind: softmax}\n"
        "            application: {kind: window, size: {choice: [2, 8]}}   # 8: larger than the grid\n",
        "attention: vit_mhsa\n")
    assert "choice: [2, 8]" not in space
    (tmp_path / "space.yaml").write_text(space)
    (tmp_path / "ci_task.py").write_text(ISOLATION_TASK)
    proc = _search(tmp_path, budget="4trials")
    out, _ = proc.communicate(timeout=400)
    assert proc.returncode == 0, out
    rows = {int(r["number"]): r for r in csv.DictReader(open(tmp_path / "runs" / "ci" / "trials.csv"))}
    assert (rows[0]["state"], rows[0]["reason"]) == ("failed", "oom"), rows[0]
    assert "killed by signal 9" in rows[0]["message"]
    assert (rows[1]["state"], rows[1]["reason"]) == ("failed", "crash"), rows[1]
    assert "signal 6" in rows[1]["message"]
    assert (rows[2]["state"], rows[2]["reason"]) == ("failed", "oom"), rows[2]
    assert rows[3]["state"] == "complete", rows[3]
    # each in a process of its own, started warm (no interpreter start-up per trial)
    study = _study(tmp_path)
    pids = {t.user_attrs["trial_pid"] for t in study.get_trials(deepcopy=False)}
    assert len(pids) == 4
    from attndsl.nas.trial import PRELOAD
    # warm: torch and attndsl were imported by the fork server before each trial began
    # (asserted by what the process held, not by startup_s: timings swing on a shared VM)
    assert all(t.user_attrs["preloaded"] == PRELOAD for t in study.get_trials(deepcopy=False))
