"""How much does a neighbour's training pollute a throughput measurement on a shared CPU, and
does the host lock (attndsl/nas/hostlock.py) take it out? One design of a space is measured
with the search's protocol (fresh measurement each time, no cache), interleaved in rounds:
alone; while a neighbour process trains without the lock; while it trains under the lock
(each step shared, the measurement exclusive).

    python -m benchmarks.search_concurrency [--space examples/search_digits.yaml] [--rounds 4]

Writes benchmarks/results/search_concurrency_<device>_<date>.json and .md.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.suite import RESULTS, device_info, save_result

NEIGHBOUR = """
import os, sys, json, torch
torch.set_num_threads(int(sys.argv[2]))
from attndsl.model import load_backbone, BackboneNet, Training, train
from attndsl.nas.hostlock import from_environment
from attndsl.nas.tasks import Digits, load_task
job = json.loads(open(sys.argv[1]).read())
net = BackboneNet(load_backbone(job["backbone"]), backend="eager")
data = load_task(Digits(resolution=16))
lock = from_environment()
print("training", flush=True)
train(net, data, Training(epochs=10_000), step_guard=lock.shared if lock else None)
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--space", default="examples/search_digits.yaml")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    import torch
    torch.set_num_threads(args.threads)
    from attndsl.model.spec import backbone_to_dict
    from attndsl.nas import load_space
    from attndsl.nas.hostlock import ENV, HostLock
    from attndsl.nas.measure import measure
    space = load_space(args.space)
    candidate = space.fixed(next(iter(space.seeds().values()), {}))
    deploy = space.file.deploy
    results: dict[str, list[float]] = {"alone": [], "neighbour, no lock": [],
                                       "neighbour, host lock": []}
    with tempfile.TemporaryDirectory() as tmp:
        job = Path(tmp) / "job.json"
        job.write_text(json.dumps({"backbone": backbone_to_dict(candidate.backbone)}))
        lock_path = str(Path(tmp) / "lock")

        @contextlib.contextmanager
        def neighbour(locked: bool):
            env = {k: v for k, v in os.environ.items() if k != ENV}
            if locked:
                env[ENV] = lock_path
            proc = subprocess.Popen([sys.executable, "-c", NEIGHBOUR, str(job),
                                     str(args.threads)], env=env, stdout=subprocess.PIPE,
                                    text=True)
            assert proc.stdout.readline().strip() == "training"
            time.sleep(1.0)
            try:
                yield
            finally:
                proc.kill()
                proc.wait()

        lock = HostLock(lock_path)
        for _ in range(args.rounds):
            results["alone"].append(measure(candidate.backbone, deploy)["images_per_s"])
            with neighbour(False):
                results["neighbour, no lock"].append(
                    measure(candidate.backbone, deploy)["images_per_s"])
            with neighbour(True):
                with lock.exclusive():
                    results["neighbour, host lock"].append(
                        measure(candidate.backbone, deploy)["images_per_s"])
    medians = {k: statistics.median(v) for k, v in results.items()}
    info = device_info("cpu", args.threads)
    result = {"benchmark": "search_concurrency", **info, "dtype": deploy.dtype,
              "design": candidate.backbone.name, "deploy": deploy.model_dump(),
              "rounds": results, "median_images_per_s": medians,
              "command": "python -m benchmarks.search_concurrency " + " ".join(argv or sys.argv[1:])}
    stamp = datetime.datetime.now().strftime("%Y-%m-%dT%H%M")
    path = save_result(RESULTS, f"search_concurrency_{info['device_kind']}_{stamp}", result)
    alone = medians["alone"]
    lines = [f"# A neighbour's training against a throughput measurement ({info['device_name']}, "
             f"{args.threads} threads each)", "",
             f"Design {candidate.backbone.name} at the deploy shape {deploy.model_dump()}, "
             f"{args.rounds} interleaved rounds.", "",
             "| condition | median images/s | vs alone | rounds |", "|---|---|---|---|"]
    for name, values in results.items():
        lines.append(f"| {name} | {medians[name]:,.0f} | {medians[name] / alone:.2f}× | "
                     + ", ".join(f"{v:,.0f}" for v in values) + " |")
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
