"""One trial, in its own subprocess: `python -m attndsl.nas.trial JOB.json`.

A compile crash, an out-of-memory, a NaN loss or a hang costs this process only; memory
never accumulates across trials. The process talks to its worker over stdin/stdout in JSON
lines (anything else it prints goes to the trial's log):

    child  → {"event": "measured", ...}           throughput, params, FLOPs, peak memory
    worker → {"go": true | false}                 false: infeasible (constraints) — stop
    child  → {"event": "rung", "epoch": 3, "accuracy": 0.71}
    worker → {"go": true | false}                 false: pruned
    child  → {"event": "done", "accuracy": 0.83, "epochs": 9}
    child  → {"event": "error", "reason": "nan_loss" | "oom" | "compile_error" | …}

The child exits when its worker does (it watches its parent), so a killed worker never
leaves an orphan training on.
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


def _log(text: str) -> None:
    """A line of the trial's log (logs/trial_NNNN.log: this process's stderr), stamped."""
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {text}", file=sys.stderr, flush=True)


def _emit(out, event: dict) -> None:
    # logged first: after "done" the worker may stop this process at once
    _log(f"{event['event']}: " + ", ".join(f"{k}={v}" for k, v in event.items()
                                             if k != "event"))
    out.write(PREFIX + json.dumps(event) + "\n")
    out.flush()


def _answer() -> bool:
    line = sys.stdin.readline()
    if not line:            # the worker is gone
        _log("the worker is gone: exiting")
        os._exit(3)
    go = bool(json.loads(line).get("go"))
    _log("worker: go on" if go else "worker: stop (infeasible or pruned)")
    return go


def _watch_parent(parent: int) -> None:
    while True:
        if os.getppid() != parent:
            os._exit(3)
        time.sleep(0.5)


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
    if isinstance(exc, (MemoryError, torch.OutOfMemoryError)) or "out of memory" in str(exc).lower():
        return "oom"
    module = type(exc).__module__ or ""
    if module.startswith(("torch._dynamo", "torch._inductor")) or type(exc).__name__ in (
            "LoweringError", "BackendCompilerFailed", "InductorError"):
        return "compile_error"
    return "error"


def run(job: dict, out) -> int:
    import torch

    from ..model.net import BackboneNet
    from ..model.spec import load_backbone
    from ..model.train import Training, train, training_backend
    from .measure import default_device, measure
    from .hostlock import from_environment
    from .space import Deploy
    from .tasks import TaskAdapter, load_task

    threads = job.get("threads")
    if threads:
        torch.set_num_threads(int(threads))
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
        with lock.exclusive() if lock else contextlib.nullcontext():
            result = measure(backbone, deploy, device=job.get("device"),
                             cache_dir=job.get("cache_dir"),
                             min_run_time=job.get("min_run_time", 1.0))
        _emit(out, {"event": "measured", **result})
        if not _answer():
            return 0
        phase = "train"
        config = Training.model_validate(job["training"])
        data = load_task(TaskAdapter.validate_python(job["task"]), job.get("task_cache"))
        device = default_device(job.get("device"))
        model = BackboneNet(backbone, backend=training_backend(config, device), device=device)
        rungs = set(job.get("rungs", []))
        reached = {"epoch": 0}

        def on_epoch(epoch: int, accuracy: float, loss: float) -> bool:
            reached["epoch"] = epoch
            _emit(out, {"event": "epoch", "epoch": epoch, "accuracy": accuracy, "loss": loss})
            if epoch in rungs:
                _emit(out, {"event": "rung", "epoch": epoch, "accuracy": accuracy})
                return _answer()
            return True

        accuracy = train(model, data, config, device=device, on_epoch=on_epoch,
                         step_guard=lock.shared if lock else None)
        if reached["epoch"] < config.epochs:
            return 0            # pruned: the worker already knows
        done = {"event": "done", "accuracy": accuracy, "epochs": reached["epoch"]}
        if job.get("weights"):
            # the trained model, written before the worker hears "done" (a front design is
            # a model to use, not a recipe to train again); eval mode, as it was evaluated
            phase = "save"
            model.eval()
            model.save(job["weights"], meta={"accuracy": accuracy, "epochs": reached["epoch"],
                                             "seed": job.get("seed", 0),
                                             "task": job["task"], "training": job["training"]})
            done["weights"] = job["weights"]
        _emit(out, done)
        return 0
    except Exception as exc:   # noqa: BLE001 — every failure is this trial's, reported
        reason = classify(exc)
        _emit(out, {"event": "error", "reason": reason, "phase": phase,
                    "message": f"{type(exc).__name__}: {exc}"[:4000]})
        traceback.print_exc(file=sys.stderr)
        return 1


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    with open(argv[0]) as f:
        job = json.load(f)
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
    # our JSON lines own stdout: anything else printed (warnings, user prints) goes to stderr
    out = sys.stdout
    sys.stdout = sys.stderr
    return run(job, out)


if __name__ == "__main__":
    sys.exit(main())
