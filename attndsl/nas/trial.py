"""One trial, in its own process, forked from a warm server.

A compile crash, an out-of-memory, a NaN loss or a hang costs this process only; memory
never accumulates across trials. A worker starts one fork server (multiprocessing's
forkserver, which imports torch and attndsl once: PRELOAD) and forks every trial from it,
so a trial starts in ~10 ms instead of the ~3 s a fresh interpreter spends importing torch,
and still runs in a process of its own. The trial talks to its worker over a pipe
(anything it prints goes to the trial's log, logs/trial_NNNN.log):

    child  → {"event": "started", "pid": …, "preloaded": [modules], "startup_s": …}
    child  → {"event": "measured", ...}           throughput, params, FLOPs, peak memory
    worker → {"go": true | false}                 false: infeasible (constraints) — stop
    child  → {"event": "rung", "epoch": 3, "accuracy": 0.71}
    worker → {"go": true | false}                 false: pruned
    child  → {"event": "done", "accuracy": 0.83, "epochs": 9}
    child  → {"event": "error", "reason": "nan_loss" | "oom" | "compile_error" | …}

Every event carries `phases`: the seconds spent so far in start-up, measurement (of which
`compile_s` built and compiled), loading the task's data, building the training model,
training steps, validation and saving the weights (the trial's cost breakdown).

The child exits when its worker does (it watches it), so a killed worker never leaves an
orphan training on. `python -m attndsl.nas.trial JOB.json` runs one trial by hand, in a
fresh interpreter, with the same events as JSON lines on stdout and answers on stdin.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
import threading
import time
import traceback

PREFIX = "@@attndsl "
# what the fork server imports once, so that a forked trial starts with it loaded (first:
# trial_server, which keeps multiprocessing from running the user's script in each trial)
PRELOAD = ["attndsl.nas.trial_server", "torch", "attndsl.model.net", "attndsl.model.train",
           "attndsl.nas.latency", "attndsl.nas.measure", "attndsl.nas.tasks", "attndsl.nas.trial"]
PHASES = ("startup", "measure", "data", "build", "train", "eval", "save")


def _log(text: str) -> None:
    """A line of the trial's log (logs/trial_NNNN.log: this process's stderr), stamped."""
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}", file=sys.stderr, flush=True)


def _logged(event: dict) -> None:
    _log(f"{event['event']}: " + ", ".join(f"{k}={v}" for k, v in event.items()
                                             if k not in ("event", "phases")))


def _gone() -> None:
    _log("the worker is gone: exiting")
    os._exit(3)


class LineChannel:
    """Events as JSON lines on stdout, answers on stdin (a trial run by hand)."""

    def __init__(self, out, inp):
        self.out, self.inp = out, inp

    def emit(self, event: dict) -> None:
        _logged(event)     # logged first: after "done" the worker may stop this process
        self.out.write(PREFIX + json.dumps(event) + "\n")
        self.out.flush()

    def answer(self) -> bool:
        line = self.inp.readline()
        if not line:
            _gone()
        return _heard(bool(json.loads(line).get("go")))


class PipeChannel:
    """Events and answers over the multiprocessing pipe to the worker (a forked trial)."""

    def __init__(self, conn):
        self.conn = conn

    def emit(self, event: dict) -> None:
        _logged(event)
        try:
            self.conn.send(event)
        except (BrokenPipeError, OSError):
            _gone()

    def answer(self) -> bool:
        try:
            message = self.conn.recv()
        except (EOFError, OSError):
            _gone()
        return _heard(bool(message.get("go")))


def _heard(go: bool) -> bool:
    _log("worker: go on" if go else "worker: stop (infeasible or pruned)")
    return go


def _watch_parent(parent: int) -> None:
    while True:
        if os.getppid() != parent:
            os._exit(3)
        time.sleep(0.5)


def _watch_worker(worker: int, server: int) -> None:
    # a forked trial's parent is the fork server, which exits with its worker: either
    # the worker vanishing or this process being re-parented means the worker is gone
    while True:
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            os._exit(3)
        except PermissionError:
            pass
        if os.getppid() != server:
            os._exit(3)
        time.sleep(0.5)


class Phases:
    """Seconds per phase of the trial, for its cost breakdown."""

    def __init__(self, startup_s: float):
        self.seconds = {name: 0.0 for name in PHASES}
        self.seconds["startup"] = max(0.0, startup_s)

    def add(self, name: str, seconds: float) -> None:
        self.seconds[name] += seconds

    @contextlib.contextmanager
    def timing(self, name: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - started)

    def event(self, event: dict) -> dict:
        return {**event, "phases": dict(self.seconds)}


def classify(exc: BaseException) -> str:
    """The reason a trial failed, from the exception."""
    import torch

    from ..errors import SpecError
    from ..model.train import NonFiniteLoss
    from .tasks import TaskError
    if isinstance(exc, TaskError):      # the data, not the design: never "infeasible"
        return "task_error"
    if isinstance(exc, SpecError):
        return "spec_error"
    if isinstance(exc, NonFiniteLoss):
        return "nan_loss"
    text = str(exc).lower()
    # CUDA says "out of memory"; torch's CPU allocator "can't allocate memory" (ENOMEM)
    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)) or any(
            words in text for words in ("out of memory", "can't allocate memory",
                                        "cannot allocate memory")):
        return "oom"
    module = type(exc).__module__ or ""
    if module.startswith(("torch._dynamo", "torch._inductor")) or type(exc).__name__ in (
            "LoweringError", "BackendCompilerFailed", "InductorError"):
        return "compile_error"
    return "error"


def run(job: dict, channel) -> int:
    import torch

    from ..model.net import BackboneNet
    from ..model.spec import load_backbone
    from ..model.train import Training, train, training_backend
    from .measure import default_device, measure
    from .hostlock import from_environment
    from .latency import table_measure
    from .space import Deploy
    from .tasks import TaskAdapter, load_task

    phases = Phases(time.time() - job.get("requested_at", time.time()))

    def emit(event: dict) -> None:
        channel.emit(phases.event(event))

    threads = job.get("threads")
    if threads:
        torch.set_num_threads(int(threads))
    emit({"event": "started", "pid": os.getpid(), "preloaded": job.get("preloaded", [])})
    _log(f"trial process {os.getpid()}: backbone {job['backbone'].get('name', '?')}, seed "
         f"{job.get('seed', 0)}, device {job.get('device') or 'default'}, threads "
         f"{torch.get_num_threads()}, rungs {job.get('rungs', [])}")
    torch.manual_seed(job.get("seed", 0))
    phase = "build"
    try:
        backbone = load_backbone(job["backbone"])
        deploy = Deploy.model_validate(job["deploy"])
        phase = "measure"
        lock = from_environment()      # several CPU workers on this host: time alone
        with phases.timing("measure"):
            if job.get("latency_table"):
                # composed from the table: no compile and no timing here, unless the table
                # lacks a part of this design (then that part, under the lock inside)
                result = table_measure(backbone, deploy, job["latency_table"],
                                       device=job.get("device"), lock=lock)
            else:
                with lock.exclusive() if lock else contextlib.nullcontext():
                    result = measure(backbone, deploy, device=job.get("device"),
                                     cache_dir=job.get("cache_dir"),
                                     min_run_time=job.get("min_run_time", 1.0))
        emit({"event": "measured", **result})
        if not channel.answer():
            return 0
        phase = "train"
        config = Training.model_validate(job["training"])
        with phases.timing("data"):
            data = load_task(TaskAdapter.validate_python(job["task"]), job.get("task_cache"))
        device = default_device(job.get("device"))
        with phases.timing("build"):
            model = BackboneNet(backbone, backend=training_backend(config, device),
                                device=device)
        rungs = set(job.get("rungs", []))
        reached = {"epoch": 0}

        def on_epoch(epoch: int, accuracy: float, loss: float) -> bool:
            reached["epoch"] = epoch
            emit({"event": "epoch", "epoch": epoch, "accuracy": accuracy, "loss": loss})
            if epoch in rungs:
                emit({"event": "rung", "epoch": epoch, "accuracy": accuracy})
                return channel.answer()
            return True

        accuracy = train(model, data, config, device=device, on_epoch=on_epoch,
                         step_guard=lock.shared if lock else None, timings=phases.seconds)
        if reached["epoch"] < config.epochs:
            return 0            # pruned: the worker already knows
        done = {"event": "done", "accuracy": accuracy, "epochs": reached["epoch"]}
        if job.get("weights"):
            # the trained model, written before the worker hears "done" (a front design is
            # a model to use, not a recipe to train again); eval mode, as it was evaluated
            phase = "save"
            model.eval()
            with phases.timing("save"):
                model.save(job["weights"], meta={
                    "accuracy": accuracy, "epochs": reached["epoch"], "seed": job.get("seed", 0),
                    "task": job["task"], "training": job["training"]})
            done["weights"] = job["weights"]
        emit(done)
        return 0
    except Exception as exc:   # noqa: BLE001 — every failure is this trial's, reported
        reason = classify(exc)
        emit({"event": "error", "reason": reason, "phase": phase,
              "message": f"{type(exc).__name__}: {exc}"[:4000]})
        traceback.print_exc(file=sys.stderr)
        return 1


def forked_main(conn, job_file: str, log_path: str, worker: int) -> None:
    """A trial forked from the worker's fork server (TrialProcess): its own session (the
    worker stops it and whatever it started with one killpg), its output to the log."""
    os.setsid()
    server = os.getppid()
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout = sys.stderr
    # as `python -m attndsl.nas.trial JOB.json` would have it (a task entry may read it)
    sys.argv = [__file__, job_file]
    threading.Thread(target=_watch_worker, args=(worker, server), daemon=True).start()
    with open(job_file) as f:
        job = json.load(f)
    # what the fork server had imported before this trial began: the proof of a warm start
    # (trials.csv's startup_s says what it saved, but timings swing on a shared machine)
    job["preloaded"] = [name for name in PRELOAD if name in sys.modules]
    raise SystemExit(run(job, PipeChannel(conn)))


def _context():
    import multiprocessing
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


def warm_up() -> None:
    """Start the fork server now (importing torch and attndsl takes it ~3 s), so that the
    first trial does not wait for it."""
    from multiprocessing import forkserver
    _context()
    forkserver.ensure_running()


class TrialProcess:
    """The worker's handle on one forked trial: its events, its answers, its end."""

    def __init__(self, job_file: str, log_path):
        context = _context()
        self.conn, child = context.Pipe(duplex=True)
        self.process = context.Process(target=forked_main, name="attndsl-trial",
                                       args=(child, job_file, str(log_path), os.getpid()))
        self.process.start()
        child.close()           # the child's end lives in the child only: EOF when it dies
        self.pid = self.process.pid
        self.closed = False

    def next(self, timeout: float) -> dict | None:
        """The next event, or None after `timeout` s or once the trial is gone (closed)."""
        from multiprocessing.connection import wait
        if self.closed:
            return None
        ready = wait([self.conn, self.process.sentinel], timeout)
        if not ready:
            return None
        if self.conn.poll():
            try:
                return self.conn.recv()
            except (EOFError, OSError):
                pass
        elif self.conn not in ready and self.process.exitcode is None:
            return None
        self.closed = True
        return None

    def send(self, go: bool) -> None:
        try:
            self.conn.send({"go": go})
        except (BrokenPipeError, OSError):
            pass

    def poll(self) -> int | None:
        return self.process.exitcode

    def wait(self, timeout: float | None = None) -> int | None:
        self.process.join(timeout)
        return self.process.exitcode

    def stop(self, force: bool = False) -> None:
        """Ask the trial to end (it exits at its next question), or kill it and all it
        started (its session) at once with `force` or when it does not end within 3 s."""
        if self.process.exitcode is None and not force:
            self.conn.close()
            self.process.join(3)
        if self.process.exitcode is None:
            self._kill()
            self.process.join()
        if not self.conn.closed:
            self.conn.close()

    def _kill(self) -> None:
        import signal
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            # not yet its own session leader: the process alone
            try:
                os.kill(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    with open(argv[0]) as f:
        job = json.load(f)
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
    # our JSON lines own stdout: anything else printed (warnings, user prints) goes to stderr
    out = sys.stdout
    sys.stdout = sys.stderr
    return run(job, LineChannel(out, sys.stdin))


if __name__ == "__main__":
    sys.exit(main())
