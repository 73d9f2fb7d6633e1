"""The search worker: one Optuna study, one trial at a time, each trial in a process of its
own forked from a warm server (trial.py).

    admission (ledger) ─▶ sampler suggests a candidate ─▶ bind (infeasible?) ─▶ duplicate?
      ─▶ trial process: throughput (latency table or measured) ─▶ constraints (infeasible?)
         ─▶ train, rung by rung
         (MO-ASHA decides at each rung) ─▶ complete / pruned / failed, cost recorded

Every fact about a trial lives in the study storage (user attrs), so a second worker on the
same storage, a resumed run and `attndsl report` all see the same ledger.
"""
from __future__ import annotations

import json
import os
import socket
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import TrialState

from ..errors import SpecError
from ..model.net import bind_stages
from ..model.spec import canonical_hash, dump_backbone
from . import budget as ledger
from .budget import SearchStopped
from .pruner import keep_at_rung
from .report import throughput_cache
from .space import SearchSpace
from .storage import StorageError, make_storage  # noqa: F401  (make_storage: API)
from .trial import TrialProcess

REUSABLE = ("complete", "infeasible", "pruned")
WEIGHTS_DIR = "weights"      # in the run directory: trial_NNNN.pt, a completed trial's model
# a sampler that proposes only designs already evaluated has exhausted the (discrete) space
EXHAUSTED_AFTER = 30
# RDB storages: a worker records a heartbeat every HEARTBEAT_S; a RUNNING trial without one
# for GRACE_S is failed and retried by another worker (a machine that died)
HEARTBEAT_S, GRACE_S = 10, 60


class TrialFailed(Exception):
    """A trial that failed for a recorded reason (the search goes on)."""


@dataclass
class Options:
    budget: ledger.Budget
    runs_dir: Path = Path("attndsl-runs")
    study: str | None = None
    storage: str | None = None
    sampler: str = "tpe"
    seed: int = 0
    seed_zoo: bool = False
    prune: bool = True
    deploy: object = None             # the space's Deploy with the command line's overrides
    trial_timeout: float = 3600.0
    threads: int | None = None
    device: str | None = None
    progress: bool = True
    # devices a worker holds while it runs a trial (a SLURM task with --gpus-per-task 2
    # holds 2): the ledger bills devices × wall-clock
    devices: int = 1
    latency_table: dict | None = None     # latency.search_table's view (deploy.latency: table)
    latency_table_arg: str | None = None  # --latency-table as given (workers get it too)


@dataclass
class Live:
    """What the progress display shows about the running trial."""
    number: int | None = None
    name: str = ""
    phase: str = ""
    epoch: int = 0
    accuracy: float | None = None
    started: float = 0.0
    events: list = field(default_factory=list)


# ---------------------------------------------------------------- storage and study
def run_directory(space: SearchSpace, options: Options) -> Path:
    return Path(options.runs_dir) / (options.study or space.name)


def make_sampler(name: str, seed: int, space: SearchSpace):
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    if name == "tpe":
        # multivariate + group: TPE models the conditional space (leaves that exist only
        # for some choices) jointly; constant liar keeps parallel workers apart
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True,
                                          constant_liar=True, n_startup_trials=8)
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=16)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if name == "gp":
        try:
            import scipy  # noqa: F401  (GPSampler fits with it)
        except ImportError:
            raise SpecError("--sampler gp needs scipy (Optuna's GP sampler fits with it): "
                            "pip install scipy", path="sampler") from None
        return optuna.samplers.GPSampler(seed=seed)
    raise SpecError(f"--sampler {name!r}: valid samplers are tpe (default), nsga2, gp, random",
                    path="sampler")


def open_study(space: SearchSpace, options: Options, run_dir: Path):
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    storage = make_storage(options.storage, run_dir)
    study = optuna.create_study(
        study_name=options.study or space.name, storage=storage,
        directions=["maximize", "maximize"], sampler=make_sampler(options.sampler, options.seed, space),
        load_if_exists=True)
    identity = space_identity(space)
    known = study.user_attrs.get("space")
    if known is None:
        study.set_user_attr("space", identity)
        study.set_metric_names(["accuracy", "images_per_s"])
    elif known != identity:
        raise SearchStopped(
            f"the study '{study.study_name}' in {run_dir} was made from another search space "
            f"(the leaves, task or settings differ); resume it with the space it was made "
            f"from, or start a new study with --study NEW_NAME")
    return study


def space_identity(space: SearchSpace) -> str:
    """What must not change for a study to be resumed: the template, task and settings."""
    import hashlib
    data = {"template": space.template, "file": space.file.model_dump(exclude={"budget",
                                                                               "description"})}
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ---------------------------------------------------------------- dead trials
def _process_start(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a recycled pid is another process: compare start times where /proc has them
    return start is None or _process_start(pid) in (None, start)


def requeue_dead(study) -> list[int]:
    """Trials left RUNNING by a worker of this host that is gone (kill -9, a power cut): mark
    them failed ('interrupted', cost kept) and enqueue the same parameters for a re-run.
    Journal storage has no heartbeats, so this is what keeps nothing RUNNING for ever."""
    host, requeued = socket.gethostname(), []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        attrs = t.user_attrs
        if attrs.get("host") != host or "pid" not in attrs:
            continue
        if _alive(int(attrs["pid"]), attrs.get("pid_start")):
            continue
        if _requeue_dead(study, t, "the worker process died while it ran"):
            requeued.append(t.number)
    return requeued


def _requeue(study, trial, why: str, set_attr=None, enqueue: bool = True) -> None:
    """Record `trial` (a live Trial, or a FrozenTrial of another process with `set_attr`)
    as interrupted and queue its parameters to run again (`retry_of` on the re-run)."""
    set_attr = set_attr or trial.set_user_attr
    for key, value in (("state", "interrupted"), ("reason", "interrupted"), ("requeued", True),
                       ("message", why)):
        set_attr(key, value)
    if enqueue:
        _enqueue_retry(study, trial)


def _enqueue_retry(study, trial) -> None:
    keep = {k: trial.user_attrs[k] for k in ("seed",) if k in trial.user_attrs}
    study.enqueue_trial(dict(trial.params), user_attrs={**keep, "retry_of": trial.number})


def _requeue_dead(study, frozen, why: str) -> bool:
    """Fail a dead process's RUNNING trial and queue its re-run, once across workers: every
    surviving worker looks for the dead between trials, so several can find the same one.
    The attributes go first (a finished trial takes none); the RUNNING → FAIL transition is
    the storage's single winner (a row lock on an RDB), and only the winner enqueues."""
    from optuna.exceptions import UpdateFinishedTrialError
    storage = study._storage      # the trial is another (dead) process's: by its id
    try:
        _requeue(study, frozen, why,
                 lambda key, value: storage.set_trial_user_attr(frozen._trial_id, key, value),
                 enqueue=False)
        storage.set_trial_state_values(frozen._trial_id, TrialState.FAIL)
    except UpdateFinishedTrialError:
        return False              # another worker (or the heartbeat) got there first
    _enqueue_retry(study, frozen)
    return True


def enqueue_seeds(study, space: SearchSpace, run_dir: Path) -> list[str]:
    """Enqueue the zoo designs the space can express, once per study. Workers starting
    together take a lock on the run directory, so that only one of them enqueues."""
    import fcntl
    with open(run_dir / ".seeds.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if study.user_attrs.get("seeded"):
            return []
        labels = []
        for label, values in space.seeds().items():
            try:
                candidate = space.fixed(values)
            except SpecError:
                continue
            study.enqueue_trial(candidate.params, user_attrs={"seed": label},
                                skip_if_exists=True)
            labels.append(label)
        study.set_user_attr("seeded", True)
    return labels


# ---------------------------------------------------------------- one trial
class Objective:
    def __init__(self, space: SearchSpace, options: Options, run_dir: Path, display):
        self.space, self.options, self.run_dir, self.display = space, options, run_dir, display
        self.deploy = options.deploy or space.file.deploy
        self.live = Live()
        self.proc: TrialProcess | None = None
        self.duplicate_streak = 0      # consecutive trials that were already-evaluated designs
        self.taken_over: int | None = None   # a trial failed and re-queued by another worker
        self.task_error = ""           # the task's data failed to load in a trial

    def __call__(self, trial: optuna.Trial):
        # the trial's cost runs from its creation (sampling included) to the moment its
        # subprocess is gone; it is written as it accrues and once more at the end
        started = trial.datetime_start.timestamp() if trial.datetime_start else time.time()
        try:
            return self._trial(trial, started)
        except KeyboardInterrupt:
            # Ctrl-C / SIGTERM: the child stops, the trial is recorded as interrupted with
            # what it cost so far, and the same parameters wait in the queue for the resume
            self._stop_child(force=True)
            _requeue(trial.study, trial, "stopped by Ctrl-C / SIGTERM")
            raise
        except (TrialFailed, optuna.TrialPruned):
            raise
        except StorageError:
            self._stop_child(force=True)     # nothing more can be recorded: stop, say why
            raise
        except UpdateFinishedTrialError:
            # another worker failed this trial and queued its re-run (this worker was paused
            # or cut off past the heartbeat grace): the re-run owns the design now, so this
            # copy stops without a word written onto the failed trial
            self._stop_child(force=True)
            self.taken_over = trial.number
            raise
        except Exception as exc:   # noqa: BLE001 — a fault of the worker's own, recorded
            trial.set_user_attr("state", "failed")
            trial.set_user_attr("reason", "error")
            trial.set_user_attr("message", f"{type(exc).__name__}: {exc}"[:4000])
            raise TrialFailed("error") from exc
        finally:
            self._stop_child()
            if self.taken_over != trial.number:
                try:
                    trial.set_user_attr(ledger.COST_ATTR,
                                        (time.time() - started) * self.options.devices)
                except (StorageError, UpdateFinishedTrialError):
                    pass      # the error on its way out says what happened

    def _trial(self, trial: optuna.Trial, started: float):
        self.live = Live(number=trial.number, started=started, phase="sampling")
        host_attrs = {"host": socket.gethostname(), "pid": os.getpid(),
                      "pid_start": _process_start(os.getpid()), "started": started,
                      "state": "running"}
        for key, value in host_attrs.items():
            trial.set_user_attr(key, value)

        def cost():
            return (time.time() - started) * self.options.devices

        def finish(state: str, **attrs):
            trial.set_user_attr("state", state)
            for key, value in attrs.items():
                trial.set_user_attr(key, value)
            trial.set_user_attr(ledger.COST_ATTR, cost())

        try:
            candidate = self.space.suggest(trial)
            backbone, training = candidate.backbone, candidate.training
        except SpecError as exc:
            # named too: the sampled values say which design could not be built
            trial.set_user_attr("name", design_name(trial.number, self.space, trial.params))
            return self._infeasible(trial, finish, "spec_error", str(exc), 0.0)
        name = design_name(trial.number, self.space, trial.params)
        backbone = backbone.model_copy(update={"name": name})
        self.live.name = name
        digest = candidate_hash(backbone, training)
        trial.set_user_attr("hash", digest)
        trial.set_user_attr("name", name)
        trial.set_user_attr("backbone", dump_backbone(backbone))
        # a design already evaluated (infeasible ones included) is reused, not redone
        twin = _finished_twin(trial.study, digest, trial.number) or \
            _await_running_twin(trial.study, digest, trial.number)
        if twin is not None:
            self.duplicate_streak += 1
            return self._reuse(trial, twin, finish)
        self.duplicate_streak = 0
        try:
            bind_stages(backbone)
            if self.deploy.resolution:
                bind_stages(backbone, self.deploy.resolution)
        except SpecError as exc:
            return self._infeasible(trial, finish, "spec_error", exc.detail if not exc.path
                                    else f"at '{exc.path}': {exc.detail}", 0.0)
        return self._run_child(trial, backbone, training, finish, cost)

    # -------------------------------------------------------- outcomes
    def _infeasible(self, trial, finish, reason: str, message: str, images_per_s: float,
                    violations: dict | None = None):
        # the sampler learns the region is infeasible (constraints > 0); never trained.
        # Measured constraints were set with the measurement; a spec error sets its own.
        if violations is None:
            trial.set_constraint(reason, 1.0)
        finish("infeasible", reason=reason, message=message[:4000])
        return 0.0, images_per_s

    def _reuse(self, trial, twin, finish):
        for key, value in twin.user_attrs.items():
            if key.startswith("rung_") or key in (
                    "images_per_s", "latency_ms", "spread", "params", "flops", "peak_memory_mb",
                    "accuracy", "reason", "message", "epochs", "compile_s", "iqr_ms", "noisy",
                    "latency_source"):
                trial.set_user_attr(key, value)
        trial.set_user_attr("duplicate_of", twin.number)
        state = twin.user_attrs["state"]
        if state == "pruned":
            finish("pruned")
            raise optuna.TrialPruned()
        for key, value in (twin.constraints or {}).items():
            trial.set_constraint(key, value)
        finish(state)
        return tuple(twin.values)

    def _run_child(self, trial, backbone, training, finish, cost):
        run_dir, options = self.run_dir, self.options
        rungs = self.space.file.pruning.rungs(training.epochs) if (
            options.prune and self.space.file.pruning.enabled) else []
        job = {
            "backbone": json.loads(json.dumps(_plain_backbone(backbone))),
            "deploy": self.deploy.model_dump(), "training": training.model_dump(),
            "task": self.space.file.task.model_dump(), "rungs": rungs,
            "seed": options.seed + trial.number, "threads": options.threads,
            "device": options.device, "min_run_time": self.deploy.measure_seconds,
            "cache_dir": str(throughput_cache(run_dir)),
            "latency_table": options.latency_table,
            "task_cache": str(Path(options.runs_dir) / ".cache" / "tasks"),
            # the trained model of a completed trial (report.py keeps the front's and, up
            # to --keep-weights-mb, the others')
            "weights": str(run_dir / WEIGHTS_DIR / f"trial_{trial.number:04d}.pt"),
        }
        (run_dir / WEIGHTS_DIR).mkdir(parents=True, exist_ok=True)
        logs = run_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        job["requested_at"] = time.time()    # the trial's start-up is timed from here
        with tempfile.NamedTemporaryFile("w", suffix=".json", dir=logs, delete=False) as f:
            json.dump(job, f)
            job_file = f.name
        log_path = logs / f"trial_{trial.number:04d}.log"
        constraints = self.space.file.constraints
        outcome = None
        # forked from the warm server (trial.py): a process of its own, in its own session
        # (Ctrl-C reaches the worker, which stops the child)
        self.proc = TrialProcess(job_file, log_path)
        self.live.phase = "measuring"
        deadline = time.time() + options.trial_timeout
        try:
            while outcome is None:
                if time.time() > deadline:
                    self._stop_child(force=True)
                    finish("failed", reason="timeout", message=f"trial exceeded "
                           f"{options.trial_timeout:.0f} s (--trial-timeout)")
                    raise TrialFailed("timeout")
                event = self.proc.next(timeout=0.5)
                self.display.refresh()
                if event is None:
                    if self.proc.closed:
                        code = self.proc.wait()
                        why = (f"the trial process was killed by signal {-code}" +
                               (" (the kernel's out-of-memory killer?)" if code == -9 else "")
                               if code < 0 else f"the trial process exited with {code} "
                               "without a result")
                        finish("failed", reason="oom" if code == -9 else "crash",
                               message=why + f"; log: {log_path}")
                        raise TrialFailed("crash")
                    continue
                trial.set_user_attr(ledger.COST_ATTR, cost())
                if "phases" in event:
                    trial.set_user_attr("phases", event["phases"])
                outcome = self._on_event(trial, event, constraints, finish)
        finally:
            self._stop_child()
            os.unlink(job_file)
        return outcome

    def _on_event(self, trial, event: dict, constraints, finish):
        kind = event["event"]
        if kind == "started":
            trial.set_user_attr("trial_pid", event["pid"])
            trial.set_user_attr("preloaded", event.get("preloaded", []))
            return None
        if kind == "measured":
            keys = ("images_per_s", "latency_ms", "spread", "iqr_ms", "params", "flops",
                    "peak_memory_mb", "compile_s", "cuda_graph", "cached")
            for key in keys:
                trial.set_user_attr(key, event[key])
            trial.set_user_attr("noisy", bool(event.get("noisy")))
            trial.set_user_attr("latency_source", event.get("latency_source", "measured"))
            if "parts_measured" in event:
                trial.set_user_attr("parts_measured", event["parts_measured"])
            trial.set_user_attr("fingerprint", event["fingerprint"])
            violations = constraint_values(event, constraints)
            for key, value in violations.items():
                trial.set_constraint(key, value)
            broken = {k: v for k, v in violations.items() if v > 0}
            if broken:
                self._send(False)
                return self._infeasible(trial, finish, "constraint", describe_violations(
                    event, constraints, broken), event["images_per_s"], violations)
            self._send(True)
            self.live.phase = "training"
            return None
        if kind == "epoch":
            self.live.epoch, self.live.accuracy = event["epoch"], event["accuracy"]
            trial.set_user_attr("epoch", event["epoch"])   # for the display of every worker
            return None
        if kind == "rung":
            epoch, accuracy = event["epoch"], event["accuracy"]
            trial.set_user_attr(f"rung_{epoch}", accuracy)
            throughput = trial.user_attrs["images_per_s"]
            others = [(t.user_attrs[f"rung_{epoch}"], t.user_attrs["images_per_s"])
                      for t in trial.study.get_trials(deepcopy=False)
                      if t.number != trial.number and f"rung_{epoch}" in t.user_attrs
                      and not t.user_attrs.get("duplicate_of")]
            keep = keep_at_rung((accuracy, throughput), others,
                                self.space.file.pruning.eta)
            self._send(keep)
            if not keep:
                finish("pruned", epochs=epoch, accuracy=accuracy)
                self._stop_child()
                raise optuna.TrialPruned()
            return None
        if kind == "done":
            weights = {"weights": f"{WEIGHTS_DIR}/{Path(event['weights']).name}"} \
                if event.get("weights") else {}
            finish("complete", accuracy=event["accuracy"], epochs=event["epochs"], **weights)
            return event["accuracy"], trial.user_attrs["images_per_s"]
        if kind == "error":
            reason = event["reason"]
            if reason == "spec_error":
                return self._infeasible(trial, finish, reason, event["message"],
                                        trial.user_attrs.get("images_per_s", 0.0))
            finish("failed", reason=reason, message=event["message"], phase=event.get("phase"))
            if reason == "task_error":     # checked before the search: changed since
                self.task_error = event["message"]
            raise TrialFailed(reason)
        return None

    def _send(self, go: bool) -> None:
        self.proc.send(go)

    def _stop_child(self, force: bool = False) -> None:
        if self.proc is not None:
            self.proc.stop(force=force)


def constraint_values(measured: dict, constraints) -> dict:
    """Optuna constraint values (feasible when ≤ 0), relative to each limit."""
    out = {}
    if constraints.max_params is not None:
        out["max_params"] = measured["params"] / constraints.max_params - 1
    if constraints.max_peak_memory_mb is not None:
        out["max_peak_memory_mb"] = measured["peak_memory_mb"] / constraints.max_peak_memory_mb - 1
    if constraints.min_throughput is not None:
        out["min_throughput"] = 1 - measured["images_per_s"] / constraints.min_throughput
    if constraints.max_latency_ms is not None:
        out["max_latency_ms"] = measured["latency_ms"] / constraints.max_latency_ms - 1
    return out


def describe_violations(measured: dict, constraints, broken: dict) -> str:
    measured_key = {"max_params": "params", "max_peak_memory_mb": "peak_memory_mb",
                    "min_throughput": "images_per_s", "max_latency_ms": "latency_ms"}
    return "; ".join(f"{key}: {measured[measured_key[key]]:.4g} against the limit "
                     f"{getattr(constraints, key):.4g}" for key in broken)


def candidate_hash(backbone, training) -> str:
    """What a trial computes: the backbone's canonical hash and the training settings (the
    same backbone trained with another learning rate is another trial; its throughput,
    which depends on the backbone only, is still measured once)."""
    import hashlib
    text = canonical_hash(backbone) + training.model_dump_json()
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _finished_twin(study, digest: str, number: int):
    for t in study.get_trials(deepcopy=False):
        if (t.number != number and t.user_attrs.get("hash") == digest
                and t.user_attrs.get("state") in REUSABLE and not t.user_attrs.get("duplicate_of")
                and t.state in (TrialState.COMPLETE, TrialState.PRUNED)):
            return t
    return None


def _await_running_twin(study, digest: str, number: int, poll_s: float = 1.0):
    """Another worker is training this very design right now (a random sampler on a small
    space, or the re-run of a killed trial meeting a fresh sample of it): wait for its
    result and reuse it rather than train the same thing twice at once. Only an earlier
    trial is waited for, so two twins never wait for each other; if it ends without a
    reusable result (killed, failed), this trial trains the design itself."""
    host = socket.gethostname()
    while True:
        running = [t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                   if t.number < number and t.user_attrs.get("hash") == digest
                   and not t.user_attrs.get("duplicate_of")
                   and (t.user_attrs.get("host") != host or "pid" not in t.user_attrs
                        or _alive(int(t.user_attrs["pid"]), t.user_attrs.get("pid_start")))]
        if not running:
            return _finished_twin(study, digest, number)
        time.sleep(poll_s)


def design_name(number: int, space, params: dict) -> str:
    """`t<number>_` and one word per stage saying which attention it chose: a zoo name as it
    is, an inline spec by the values sampled inside it — its application kind with its size
    (`window2`, `sliding3`), then any other sampled value as key+value (`pooled_ratio2`) —
    `none` for an MLP-only stage, alternating attentions joined by `+`."""
    data, _, _ = space.concretize(lambda leaf: params.get(leaf.name, leaf.default_value()))
    stages = []
    for i, stage in enumerate(data.get("stages") or []):
        attention = stage.get("attention") if isinstance(stage, dict) else None
        entries = attention if isinstance(attention, list) else [attention or "none"]
        inside = [leaf for leaf in space.leaves.values() if leaf.name in params
                  and leaf.path[:4] == ("backbone", "stages", i, "attention")
                  and any(isinstance(k, str) for k in leaf.path[4:])]
        stages.append("+".join(_attention_word(entry, inside, params) for entry in entries))
    return f"t{number}_" + "-".join(stages)


def _attention_word(entry, inside: list, params: dict) -> str:
    if not isinstance(entry, dict):
        return str(entry)
    word, size, extras = str(entry.get("name") or "spec"), "", []
    for leaf in inside:
        key = next(k for k in reversed(leaf.path) if isinstance(k, str))
        value = params[leaf.name]
        if key == "kind":
            word = str(value)
        elif key == "size":
            size = "x".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
        else:
            extras.append(f"{key}{value:g}" if isinstance(value, float) else f"{key}{value}")
    return "_".join([word + size, *extras])


def _plain_backbone(backbone):
    from ..model.spec import backbone_to_dict
    return backbone_to_dict(backbone)
