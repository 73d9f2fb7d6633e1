"""Faults a search meets in the wild, injected into real `attndsl search` processes: a
journal cut by a power loss or with garbage at its end, storage that breaks mid-search,
storage arguments that keep nothing, a supervisor killed with -9, a PostgreSQL outage, a
worker paused past the heartbeat grace, task data that cannot train, a NaN step.

Each case is (id, how it is injected, what "handled" means, the function that does it).
A case's function returns an Outcome:

    handled    the case's own condition held (a clear error, or the search went on)
    traceback  a Python traceback reached the user (the command's output, a worker's log)
    lost       finished trials (state and values) that are gone or changed afterwards
    orphans    processes of the search still running once it was stopped

tests/test_search_faults.py asserts every case is handled with no traceback, nothing lost
and no orphan. Run it by hand against any checkout (the figures in the commit note):

    PYTHONPATH=/path/to/checkout python tests/search_fault_corpus.py [CASE ...]

prints one JSON line per case. The runs use the tiny space of tests/test_search_runs.py on
a digits task whose training steps are slowed to 0.25 s, so that a fault lands mid-trial.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).parent))

from test_search_runs import SPACE  # noqa: E402  (the tiny space the search tests share)

TASK = """\
import time
import numpy as np
import torch.nn.functional as F

def load():
    from sklearn.datasets import load_digits
    real = F.cross_entropy      # 0.25 s a training step: a fault lands mid-trial
    F.cross_entropy = lambda *a, **k: (time.sleep(0.25), real(*a, **k))[1]
    d = load_digits()
    return d.images.astype(np.float32)[:600] / 16, d.target[:600]
"""
PASSWORD = "s3cret-pw"      # must never be printed, nor be on a worker's command line
TRACEBACK = "Traceback (most recent call last)"


@dataclass
class Outcome:
    handled: bool
    traceback: bool = False
    lost: int = 0
    orphans: int = 0
    note: str = ""

    def ok(self) -> bool:
        return self.handled and not self.traceback and not self.lost and not self.orphans


@dataclass
class Context:
    """A fresh working directory per case; a finished run to copy (made once); a
    PostgreSQL server when a case needs one (made once)."""
    root: Path
    server_factory: Callable | None = None
    _template: Path | None = None
    _server: object = None
    started: list = field(default_factory=list)     # processes to end if a case fails

    def workdir(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True)
        (path / "space.yaml").write_text(fault_space())
        (path / "fault_task.py").write_text(TASK)
        return path

    def finished_run(self) -> Path:
        """A run directory of 3 finished trials (random sampler, seed 3)."""
        if self._template is None:
            work = self.workdir("template")
            proc = search(self, work, budget="3trials", extra=["--seed", "3"])
            out, _ = proc.communicate(timeout=600)
            assert proc.returncode == 0, out
            self._template = work / "runs" / "ci"
        return self._template

    def server(self):
        if self._server is None:
            self._server = self.server_factory()
        return self._server


def fault_space(text: str = SPACE) -> str:
    return text.replace('entry: "ci_task:load"', 'entry: "fault_task:load"')


def search(ctx: Context, work: Path, *, budget: str, extra=(), space="space.yaml",
           remeasure=False) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "attndsl.cli", "search", space, "--budget", budget,
           "--runs-dir", "runs", "--no-progress", "--threads", "1", "--sampler", "random",
           *([] if remeasure else ["--no-remeasure"]), *extra]
    proc = subprocess.Popen(cmd, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    ctx.started.append(proc.pid)
    return proc


def cli(work: Path, *args, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "attndsl.cli", *args], cwd=work,
                          capture_output=True, text=True, timeout=timeout)


# ---------------------------------------------------------------- reading a study
def journal_trials(journal: Path, study="ci") -> list | None:
    """The study's trials read with Optuna's own journal reader (None: unreadable)."""
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        storage = JournalStorage(JournalFileBackend(str(journal)))
        return optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=False)
    except Exception:   # noqa: BLE001 — an unreadable journal is what some cases check
        return None


def db_trials(url: str, study: str) -> list | None:
    import optuna
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        return optuna.load_study(study_name=study, storage=url).get_trials(deepcopy=False)
    except Exception:   # noqa: BLE001
        return None


def finished(trials) -> dict:
    return {t.number: (t.state.name, t.values) for t in trials or [] if t.state.is_finished()}


def lost(before: dict, trials) -> int:
    after = finished(trials)
    return sum(1 for number, record in before.items() if after.get(number) != record)


def wait_for_training(read, proc, *, min_finished=0, timeout=300):
    """The first trial RUNNING past its measurement (training), once `min_finished`
    trials are finished; `read()` gives the trials."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the search ended early:\n{proc.stdout.read()}")
        trials = read() or []
        running = [t for t in trials if t.state.name == "RUNNING" and "images_per_s" in t.user_attrs]
        if running and len(finished(trials)) >= min_finished:
            return running[0]
        time.sleep(0.2)
    raise AssertionError("no trial reached training in time")


# ---------------------------------------------------------------- processes
def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.add(child)
            todo.append(child)
    return out


def processes_of(work: Path) -> set[int]:
    """Live processes whose command line names the working directory (workers name the
    kept space file, trials their job file under the run directory)."""
    return {int(e.name) for e in Path("/proc").iterdir() if e.name.isdigit()
            and int(e.name) != os.getpid() and str(work) in _cmdline(int(e.name))
            and _running(int(e.name))}


def orphans_after(pids: set[int], work: Path, timeout=60.0) -> int:
    """How many of `pids` (and of the working directory's processes) still run after
    `timeout` s; they are ended then, so that a failing case leaves nothing behind."""
    deadline = time.time() + timeout
    alive = set()
    while time.time() < deadline:
        alive = {p for p in pids if _running(p)} | processes_of(work)
        if not alive:
            return 0
        time.sleep(0.25)
    for pid in alive:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return len(alive)


def logs_of(work: Path) -> str:
    return "".join(p.read_text(errors="replace") for p in (work / "runs").glob("*/workers/*.log"))


# ---------------------------------------------------------------- the journal
def _copy_run(ctx: Context, name: str) -> tuple[Path, Path]:
    work = ctx.workdir(name)
    shutil.copytree(ctx.finished_run(), work / "runs" / "ci")
    return work, work / "runs" / "ci" / "journal.log"


def _resumed_and_reported(ctx, work, journal, before, budget) -> Outcome:
    proc = search(ctx, work, budget=budget)
    out, _ = proc.communicate(timeout=600)
    report = cli(work, "report", "runs/ci")
    text = out + report.stdout + report.stderr
    trials = journal_trials(journal)
    repaired = list(journal.parent.glob("journal.log.cut-*"))
    handled = (proc.returncode in (0, 2) and report.returncode == 0 and trials is not None
               and bool(repaired) and "repaired the journal" in out)
    return Outcome(handled, TRACEBACK in text, lost(before, trials),
                   note=f"search exit {proc.returncode}, report exit {report.returncode}")


def journal_cut_mid_line(ctx: Context) -> Outcome:
    work, journal = _copy_run(ctx, "cut")
    data = journal.read_bytes()
    journal.write_bytes(data[:-40])             # a power loss in the last record's write
    before = finished(journal_trials(journal))   # Optuna skips the cut record here
    # one trial more than was run: the resume writes after the repaired tail
    return _resumed_and_reported(ctx, work, journal, before, budget="4trials")


def journal_garbage_line(ctx: Context) -> Outcome:
    work, journal = _copy_run(ctx, "garbage")
    before = finished(journal_trials(journal))
    with open(journal, "ab") as f:
        f.write(b"this is not a journal record\n")
    # the budget is spent: the resume only opens the study (a write) and refuses
    return _resumed_and_reported(ctx, work, journal, before, budget="3trials")


def journal_written_after_damage(ctx: Context) -> Outcome:
    """A journal that an older attndsl went on writing after a cut record: the next
    record is glued onto the cut one, more follow."""
    work, journal = _copy_run(ctx, "old-damage")
    before = finished(journal_trials(journal))
    first = journal.read_bytes().split(b"\n")[0]      # create_study: replays as a no-op
    with open(journal, "ab") as f:
        f.write(b'{"op_code":6,"worker_id":"cut-he' + first + b"\n" + first + b"\n")
    return _resumed_and_reported(ctx, work, journal, before, budget="3trials")


def journal_zero_length(ctx: Context) -> Outcome:
    work, journal = _copy_run(ctx, "zero")
    run = journal.parent
    outputs = {name: (run / name).read_bytes() for name in ("front.json", "trials.csv")}
    pareto = sorted(p.name for p in (run / "pareto").iterdir())
    journal.write_bytes(b"")
    proc = search(ctx, work, budget="1trials")
    out, _ = proc.communicate(timeout=600)
    kept = (all((run / n).read_bytes() == b for n, b in outputs.items())
            and sorted(p.name for p in (run / "pareto").iterdir()) == pareto)
    handled = proc.returncode == 2 and kept and "journal.log" in out and "empty" in out
    return Outcome(handled, TRACEBACK in out, 0 if kept else len(outputs), note=out[-300:])


# ---------------------------------------------------------------- storage arguments
def _refused(ctx: Context, name: str, storage: str, *words) -> Outcome:
    work = ctx.workdir(name)
    proc = search(ctx, work, budget="1trials", extra=["--storage", storage])
    out, _ = proc.communicate(timeout=600)
    handled = proc.returncode == 2 and all(w in out for w in words) and PASSWORD not in out
    return Outcome(handled, TRACEBACK in out, note=out[-300:])


def storage_missing_folder(ctx):
    return _refused(ctx, "missing-folder", "/missing/dir/j.log", "/missing/dir")


def storage_journal_without_path(ctx):
    return _refused(ctx, "journal-empty", "journal:", "journal needs a file path")


def storage_sqlite_in_memory(ctx):
    return _refused(ctx, "sqlite-memory", "sqlite://", "in-memory")


def storage_password_redacted(ctx):
    url = f"postgresql+psycopg://attndsl:{PASSWORD}@/nodb?host=/nonexistent-socket-dir&port=1"
    return _refused(ctx, "password", url, "cannot open the database", "***")


# ---------------------------------------------------------------- storage failing mid-search
def _unwritable(path: Path) -> Callable[[], None] | None:
    """Make `path` unwritable (chattr +i as root, where permissions do not stop writes;
    chmod otherwise); returns the undo, or None where that is impossible here."""
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode:
            return None
        undo = lambda: subprocess.run(["chattr", "-i", str(path)], check=True)  # noqa: E731
    else:
        os.chmod(path, 0o444)
        undo = lambda: os.chmod(path, 0o644)  # noqa: E731
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_APPEND))
    except PermissionError:
        return undo
    undo()
    return None


def journal_unwritable_mid_search(ctx: Context) -> Outcome:
    work = ctx.workdir("unwritable")
    journal = work / "runs" / "ci" / "journal.log"
    proc = search(ctx, work, budget="6trials")
    wait_for_training(lambda: journal_trials(journal) if journal.exists() else [], proc,
                      min_finished=1)
    before = finished(journal_trials(journal))
    undo = _unwritable(journal)
    if undo is None:
        proc.kill()
        proc.wait()
        return Outcome(False, note="SKIP: cannot make a file unwritable here")
    pids = descendants(proc.pid)
    try:
        out, _ = proc.communicate(timeout=300)
    finally:
        undo()
    orphans = orphans_after(pids, work)
    cause = "not permitted" in out or "Permission denied" in out
    handled = proc.returncode == 2 and "runs/ci/journal.log" in out and cause
    return Outcome(handled, TRACEBACK in out, lost(before, journal_trials(journal)), orphans,
                   note=out[-400:])


def run_directory_deleted_mid_search(ctx: Context) -> Outcome:
    work = ctx.workdir("deleted")
    run = work / "runs" / "ci"
    proc = search(ctx, work, budget="6trials")
    wait_for_training(lambda: journal_trials(run / "journal.log") if run.exists() else [],
                      proc, min_finished=1)
    pids = descendants(proc.pid)
    moved = work / "runs" / "ci.deleted"
    run.rename(moved)            # as rm -rf would, but the finished trials can be counted
    before = finished(journal_trials(moved / "journal.log"))
    out, _ = proc.communicate(timeout=300)
    orphans = orphans_after(pids, work)
    recreated = (run / "journal.log").exists()     # orphan records in a new journal
    handled = proc.returncode == 2 and "journal" in out and "deleted" in out and not recreated
    return Outcome(handled, TRACEBACK in out, lost(before, journal_trials(moved / "journal.log")),
                   orphans, note=out[-400:])


# ---------------------------------------------------------------- processes killed
def supervisor_killed(ctx: Context) -> Outcome:
    work = ctx.workdir("supervisor")
    journal = work / "runs" / "ci" / "journal.log"
    # a budget the workers would spend for minutes on their own
    proc = search(ctx, work, budget="60trials", extra=["--workers", "2"])
    wait_for_training(lambda: journal_trials(journal) if journal.exists() else [], proc,
                      min_finished=1)
    pids = descendants(proc.pid)
    before = finished(journal_trials(journal))
    proc.kill()
    proc.communicate()
    orphans = orphans_after(pids, work, timeout=45)
    trials = journal_trials(journal)
    running = [t.number for t in trials or [] if t.state.name == "RUNNING"]
    outputs = (work / "runs" / "ci" / "front.json").exists()
    handled = not running and outputs and orphans == 0
    return Outcome(handled, TRACEBACK in logs_of(work), lost(before, trials), orphans,
                   note=f"RUNNING left: {running}; front.json written: {outputs}")


def remeasurement_outlives_search(ctx: Context) -> Outcome:
    work = ctx.workdir("remeasure")
    # 3 s per model and round, 5 rounds: the re-measurement would outlive the search by 15 s
    (work / "slow.yaml").write_text(fault_space().replace("measure_seconds: 0.05",
                                                          "measure_seconds: 3"))
    proc = search(ctx, work, budget="2trials", remeasure=True, space="slow.yaml")
    deadline, measuring = time.time() + 600, None
    while measuring is None and time.time() < deadline and proc.poll() is None:
        measuring = next((p for p in descendants(proc.pid)
                          if "attndsl.nas.measure" in _cmdline(p)), None)
        time.sleep(0.05)
    if measuring is None:
        proc.communicate()
        return Outcome(False, note="the front's re-measurement was not seen running")
    proc.kill()
    proc.communicate()
    orphans = orphans_after({measuring}, work, timeout=12)   # its start-up, then 0.5 s
    return Outcome(orphans == 0, orphans=orphans)


# ---------------------------------------------------------------- PostgreSQL
def _password_url(url: str) -> str:
    # the test server trusts local connections: any password is taken, and must be hidden
    return url.replace("attndsl@", f"attndsl:{PASSWORD}@")


def postgresql_outage(ctx: Context) -> Outcome:
    """The server stops for 20 s while two workers train, and starts again on its port."""
    server = ctx.server()
    url, study = _password_url(server.url), "outage"
    work = ctx.workdir("outage")
    proc = search(ctx, work, budget="6trials", extra=["--workers", "2", "--storage", url,
                                                      "--study", study])
    wait_for_training(lambda: db_trials(server.url, study), proc, min_finished=1)
    workers = [p for p in descendants(proc.pid) if "--worker" in _cmdline(p)]
    on_command_line = [p for p in workers if PASSWORD in _cmdline(p)]
    before = finished(db_trials(server.url, study))
    server.down()
    down_at = time.time()
    run = work / "runs" / study
    deadline = down_at + 60       # a worker says it before long: its next write
    while "unreachable" not in logs_of(work) and time.time() < deadline:
        time.sleep(0.2)
    time.sleep(max(0.0, down_at + 20 - time.time()))     # the outage lasts 20 s
    server.up()
    out, _ = proc.communicate(timeout=600)
    logs = logs_of(work)
    trials = db_trials(server.url, study)
    running = [t.number for t in trials or [] if t.state.name == "RUNNING"]
    said = "unreachable" in logs and "back after" in logs
    handled = (proc.returncode == 0 and not running and said and not on_command_line
               and PASSWORD not in out + logs and (run / "front.json").exists())
    return Outcome(handled, TRACEBACK in out + logs, lost(before, trials),
                   orphans_after(set(workers), work),
                   note=f"exit {proc.returncode}; RUNNING left {running}; said it: {said}; "
                        f"password on a worker's command line: {bool(on_command_line)}")


def worker_paused_past_grace(ctx: Context) -> Outcome:
    """SIGSTOP a worker mid-trial; meanwhile its trial is failed and re-queued, exactly as
    another worker's heartbeat check does after the grace (Optuna's
    RetryHeartbeatStaleTrialCallback); SIGCONT. The worker must drop the trial."""
    import optuna
    from optuna.storages import RetryHeartbeatStaleTrialCallback
    from optuna.trial import TrialState
    server = ctx.server()
    study_name = "paused"
    work = ctx.workdir("paused")
    proc = search(ctx, work, budget="4trials", extra=["--storage", server.url, "--study",
                                                      study_name])
    storage = optuna.storages.RDBStorage(server.url)
    study = None
    for _attempt in range(20):          # the trial must still be running once paused
        victim = wait_for_training(lambda: db_trials(server.url, study_name), proc)
        worker = victim.user_attrs["pid"]
        os.kill(worker, signal.SIGSTOP)
        study = optuna.load_study(study_name=study_name, storage=storage)
        if storage.get_trial(victim._trial_id).state == TrialState.RUNNING:
            break
        os.kill(worker, signal.SIGCONT)
    before = finished(study.get_trials(deepcopy=False))
    storage.set_trial_state_values(victim._trial_id, TrialState.FAIL)
    RetryHeartbeatStaleTrialCallback(3)(study, storage.get_trial(victim._trial_id))
    pids = descendants(worker)
    os.kill(worker, signal.SIGCONT)
    out, _ = proc.communicate(timeout=600)
    trials = db_trials(server.url, study_name)
    failed = next(t for t in trials if t.number == victim.number)
    retry = [t for t in trials if t.system_attrs.get("failed_trial") == victim.number]
    untouched = failed.state == TrialState.FAIL and failed.user_attrs.get("state") == "running"
    handled = (proc.returncode == 0 and untouched and len(retry) == 1
               and retry[0].state.is_finished())
    return Outcome(handled, TRACEBACK in out, lost(before, trials), orphans_after(pids, work),
                   note=f"exit {proc.returncode}; the failed trial's state attr "
                        f"{failed.user_attrs.get('state')!r}; {out[-300:]}")


# ---------------------------------------------------------------- task data and the space
def _task_refused(ctx: Context, name: str, task: str, *words, files=None) -> Outcome:
    work = ctx.workdir(name)
    for file, data in (files or {}).items():
        (work / file).write_bytes(data)
    (work / "task.yaml").write_text(fault_space().replace('{kind: python, entry: "fault_task:load"}',
                                                          task))
    t0 = time.time()
    proc = search(ctx, work, budget="3trials", space="task.yaml")
    out, _ = proc.communicate(timeout=600)
    trials = journal_trials(work / "runs" / "ci" / "journal.log") or []
    started = [t.number for t in trials if t.state.name != "WAITING"]
    handled = proc.returncode == 2 and not started and all(w in out for w in words)
    return Outcome(handled, TRACEBACK in out,
                   note=f"exit {proc.returncode}, {len(started)} trials started, "
                        f"{time.time() - t0:.0f} s; {out[-300:]}")


def task_npz_missing(ctx):
    return _task_refused(ctx, "npz-missing", "{kind: npz, path: nothing_here.npz}",
                         "nothing_here.npz", "not found")


def task_npz_corrupt(ctx):
    return _task_refused(ctx, "npz-corrupt", "{kind: npz, path: data.npz}", "data.npz",
                         files={"data.npz": b"PK\x03\x04 not really a zip archive"})


def task_entry_unimportable(ctx):
    return _task_refused(ctx, "entry", '{kind: python, entry: "no_such_module:load"}',
                         "no_such_module")


LABELS = """\
import numpy as np

def load():
    from sklearn.datasets import load_digits
    d = load_digits()
    return d.images.astype(np.float32)[:300] / 16, d.target[:300] + 5   # labels up to 14
"""


def task_labels_beyond_classes(ctx):
    return _task_refused(ctx, "labels", '{kind: python, entry: "labels_task:load"}',
                         "classes", "14", files={"labels_task.py": LABELS.encode()})


def _leaf_refused(ctx, name, leaf: str) -> Outcome:
    work = ctx.workdir(name)
    (work / "leaf.yaml").write_text(fault_space().replace(
        "lr: {choice: [0.003, 0.004]}", f"lr: {leaf}"))
    proc = search(ctx, work, budget="2trials", space="leaf.yaml")
    out, _ = proc.communicate(timeout=600)
    handled = proc.returncode == 2 and "training.lr" in out and not (work / "runs").exists()
    return Outcome(handled, TRACEBACK in out, note=out[-300:])


def float_step_nan(ctx):
    return _leaf_refused(ctx, "step-nan", "{float: [0.001, 0.01], step: .nan}")


def float_step_inf(ctx):
    return _leaf_refused(ctx, "step-inf", "{float: [0.001, 0.01], step: .inf}")


# ---------------------------------------------------------------- the corpus
@dataclass(frozen=True)
class Case:
    id: str
    inject: str
    handled: str
    run: Callable[[Context], Outcome]
    postgres: bool = False


CASES = [
    Case("journal-cut-mid-line", "the journal's last record cut 40 bytes short, then resume",
         "repaired (the cut kept beside it, said on stderr); the resume and `report` work",
         journal_cut_mid_line),
    Case("journal-garbage-line", "a line of garbage appended to the journal, then resume",
         "repaired and said; the resume and `report` work", journal_garbage_line),
    Case("journal-written-after-damage", "records appended after a cut record (an older "
         "attndsl's resume)", "the glued record is kept, the cut one cut; `report` works",
         journal_written_after_damage),
    Case("journal-zero-length", "journal.log emptied beside a finished run's outputs",
         "refused naming the journal; front.json, trials.csv and pareto/ untouched",
         journal_zero_length),
    Case("storage-missing-folder", "--storage /missing/dir/j.log",
         "one error naming the missing folder", storage_missing_folder),
    Case("storage-journal-without-path", "--storage journal:", "one error: give a path",
         storage_journal_without_path),
    Case("storage-sqlite-in-memory", "--storage sqlite://", "refused: it keeps nothing",
         storage_sqlite_in_memory),
    Case("storage-password-redacted", "--storage with a password and no server",
         "one error, the password shown as ***", storage_password_redacted),
    Case("journal-unwritable-mid-search", "the journal made immutable (chattr +i) mid-trial",
         "one error naming the journal and the cause; finished trials kept; no orphans",
         journal_unwritable_mid_search),
    Case("run-directory-deleted-mid-search", "the run directory removed mid-trial",
         "one error: the journal was deleted; no new journal of orphan records; no orphans",
         run_directory_deleted_mid_search),
    Case("supervisor-killed", "kill -9 of the --workers 2 supervisor mid-trial",
         "the workers stop (their trials interrupted and re-queued) and write the outputs; "
         "no orphans", supervisor_killed),
    Case("remeasurement-outlives-search", "kill -9 of the search during the front's "
         "re-measurement", "the re-measurement process exits", remeasurement_outlives_search),
    Case("postgresql-outage-20s", "PostgreSQL stopped for 20 s under two workers, then "
         "started on its port", "the workers say it is unreachable and for how long, and "
         "go on; nothing RUNNING left; the password never shown nor on a command line",
         postgresql_outage, postgres=True),
    Case("worker-paused-past-grace", "SIGSTOP a worker mid-trial, its trial failed and "
         "re-queued by the heartbeat check, SIGCONT", "the worker drops the trial quietly "
         "(nothing written onto it); its re-run finishes", worker_paused_past_grace,
         postgres=True),
    Case("task-npz-missing", "task: npz at a path that does not exist",
         "refused before any trial, naming the path", task_npz_missing),
    Case("task-npz-corrupt", "task: npz that is not a zip archive",
         "refused before any trial, naming the file", task_npz_corrupt),
    Case("task-entry-unimportable", "task: python with a module that does not exist",
         "refused before any trial, naming the module", task_entry_unimportable),
    Case("task-labels-beyond-classes", "labels up to 14 with classes: 10",
         "refused before any trial, naming classes and the largest label",
         task_labels_beyond_classes),
    Case("float-step-nan", "a float leaf with step: .nan", "a space error at training.lr",
         float_step_nan),
    Case("float-step-inf", "a float leaf with step: .inf", "a space error at training.lr",
         float_step_inf),
]
BY_ID = {case.id: case for case in CASES}


def run_case(case: Case, ctx: Context) -> Outcome:
    try:
        return case.run(ctx)
    except Exception as exc:   # noqa: BLE001 — a case that could not finish is unhandled
        return Outcome(False, note=f"the case failed: {type(exc).__name__}: {exc}"[:600])
    finally:
        for pid in ctx.started:         # a case that went wrong leaves nothing running
            if _running(pid):
                os.kill(pid, signal.SIGKILL)
        ctx.started.clear()


def main(argv=None) -> int:
    names = (sys.argv[1:] if argv is None else argv) or list(BY_ID)
    from postgres_server import start_server
    root = Path(tempfile.mkdtemp(prefix="attndsl-faults-"))
    ctx = Context(root, server_factory=start_server)
    try:
        for name in names:
            t0 = time.time()
            outcome = run_case(BY_ID[name], ctx)
            print(json.dumps({"case": name, "ok": outcome.ok(), **outcome.__dict__,
                              "seconds": round(time.time() - t0)}), flush=True)
    finally:
        if ctx._server is not None:
            ctx._server.stop()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
