"""A search's front as models a user can use: trained weights kept beside each pareto
YAML, `attndsl.evaluate` reproducing the search's accuracy exactly, `attndsl train`, each
design listed once, names that say what was chosen, and throughput that is flagged when it
is noise (never served from the cache, replaced by the re-measurement)."""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import attndsl
from attndsl.nas import measure as measure_module
from attndsl.nas.report import best_evidence, front_rows, prune_weights
from attndsl.nas.runner import design_name
from attndsl.nas.space import Deploy, load_space

ROOT = Path(__file__).resolve().parent.parent

SPACE = """\
name: designs
task: {kind: digits, resolution: 8}
backbone:
  patch: 2
  stages:
    - depth: 1
      dim: 16
      heads: 1
      mlp_ratio: 2
      attention:
        choice:
          - none
          - vit_mhsa
          - name: local
            heads: 1
            parameterization: {kind: additive, terms: [query_key]}
            normalization: {kind: softmax}
            application: {kind: {choice: [window, sliding]}, size: {choice: [2, 3]}}
    - {depth: 1, dim: 16, heads: 2, mlp_ratio: 2, attention: none}
training: {epochs: 2, batch_size: 128, lr: 0.005}
deploy: {batch: 16, backend: eager, measure_seconds: 0.05}
pruning: {enabled: false}
"""

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


# ---------------------------------------------------------------- names
def test_names_say_what_was_chosen(tmp_path):
    space = load_space(ROOT / "examples" / "search_digits.yaml")
    local = "stages[1].attention=local.application"
    cases = {
        "t3_nat-window2-vit_mhsa": {"stages[0].attention": "nat", "stages[1].attention":
                                    "local", f"{local}.kind": "window", f"{local}.size": 2},
        "t3_hilo-sliding3-vit_mhsa": {"stages[0].attention": "hilo", "stages[1].attention":
                                      "local", f"{local}.kind": "sliding", f"{local}.size": 3},
        "t3_none-pooled-vit_mhsa": {"stages[0].attention": "none",
                                    "stages[1].attention": "pooled"},
    }
    for expected, params in cases.items():
        assert design_name(3, space, params) == expected
    # two window sizes are two names (once both were `local`)
    assert design_name(1, space, {**cases["t3_nat-window2-vit_mhsa"], f"{local}.size": 3}) \
        == "t1_nat-window3-vit_mhsa"


# ---------------------------------------------------------------- the front
def _row(number, accuracy, ips, **extra):
    row = {"number": number, "name": f"t{number}", "state": "complete", "accuracy": accuracy,
           "images_per_s": ips, "spread": 0.1, "duplicate_of": "", "hash": f"h{number}",
           "noisy": False, "weights": None, "seed": "", "params": 10, "backbone": "x: 1\n"}
    row.update(extra)
    return row


def test_duplicates_of_trial_0_collapse_into_its_entry():
    """Trial 0's duplicates once reached the front as copies (`not 0` is True)."""
    rows = [_row(0, 0.9, 1000.0), _row(1, 0.9, 1000.0, duplicate_of=0, hash="h0"),
            _row(2, 0.9, 1000.0, duplicate_of=0, hash="h0"), _row(3, 0.95, 500.0)]
    front = front_rows(rows)
    assert [r["number"] for r in front] == [0, 3]
    assert front[0]["duplicates"] == [1, 2] and front[1]["duplicates"] == []


def test_the_front_is_ordered_by_the_best_evidence():
    front = front_rows([_row(0, 0.90, 1000.0), _row(1, 0.95, 900.0)])
    remeasure = {"entries": [
        {"number": 0, "name": "t0", "images_per_s": 700.0, "low": 650.0, "high": 750.0,
         "ties_with": []},
        {"number": 1, "name": "t1", "images_per_s": 950.0, "low": 900.0, "high": 990.0,
         "ties_with": [], "noisy": True}]}
    ordered = best_evidence(front, remeasure)
    assert [r["number"] for r in ordered] == [1, 0]
    assert ordered[0]["throughput"]["source"] == "re-measured"
    assert ordered[0]["throughput"]["noisy"] is True
    assert [r["number"] for r in best_evidence(front, None)] == [0, 1]


def test_weights_off_the_front_are_kept_within_the_cap(tmp_path):
    (tmp_path / "weights").mkdir()
    rows = []
    for n, acc in enumerate([0.9, 0.8, 0.7, 0.6]):
        (tmp_path / "weights" / f"trial_{n}.pt").write_bytes(b"x" * 2**20)   # 1 MiB each
        rows.append(_row(n, acc, 100.0 * (n + 1), weights=f"weights/trial_{n}.pt"))
    front = [rows[3]]          # the front's are kept whatever the cap
    deleted = prune_weights(rows, front, tmp_path, keep_mb=2)
    assert deleted == [2]      # the two most accurate others fit in 2 MiB; trial 2 does not
    assert sorted(p.name for p in (tmp_path / "weights").iterdir()) == [
        "trial_0.pt", "trial_1.pt", "trial_3.pt"]


# ---------------------------------------------------------------- noisy throughput
def test_noisy_measurements_are_repeated_flagged_and_never_served(tmp_path, monkeypatch):
    from attndsl.model.spec import load_backbone
    backbone = load_backbone({"name": "m", "image_size": 8, "in_channels": 1, "classes": 10,
                              "patch": 2, "stages": [{"depth": 1, "dim": 8, "heads": 1,
                                                      "attention": "none"}]})
    deploy = Deploy(batch=2, backend="eager", measure_seconds=0.01)
    calls = []

    def noisy(model, x, min_run_time):        # IQR/median 100%: noise, every attempt
        calls.append(1)
        return [0.001, 0.001, 0.002, 0.003, 0.003, 0.003]

    monkeypatch.setattr(measure_module, "_cpu_times", noisy)
    first = measure_module.measure(backbone, deploy, device="cpu", cache_dir=tmp_path)
    assert first["noisy"] and first["attempts"] == 1 + measure_module.NOISY_RETRIES
    assert len(calls) == first["attempts"]
    again = measure_module.measure(backbone, deploy, device="cpu", cache_dir=tmp_path)
    assert not again["cached"]                 # a noisy figure is never reused

    quiet_after_one = iter([[0.001, 0.001, 0.002, 0.003, 0.003],
                            [0.0010, 0.0010, 0.00101, 0.00102, 0.00102]])
    monkeypatch.setattr(measure_module, "_cpu_times", lambda *a: next(quiet_after_one))
    settled = measure_module.measure(backbone, deploy, device="cpu", cache_dir=tmp_path)
    assert not settled["noisy"] and settled["attempts"] == 2
    assert settled["images_per_s"] == pytest.approx(2 / statistics.median(
        [0.0010, 0.0010, 0.00101, 0.00102, 0.00102]))
    assert measure_module.measure(backbone, deploy, device="cpu", cache_dir=tmp_path)["cached"]

    # the front's interleaved re-measurement replaces the cached figure
    print_ = measure_module.fingerprint(torch.device("cpu"), deploy, 8)
    measure_module.update_cached(tmp_path, backbone, print_, 1234.0, 0.05, deploy.batch)
    hit = measure_module.measure(backbone, deploy, device="cpu", cache_dir=tmp_path)
    assert hit["cached"] and hit["images_per_s"] == 1234.0 and hit["remeasured"]


# ---------------------------------------------------------------- a real search
# evaluate reproduces the search's figure on the same machine at the same thread count
# (threads may split a reduction differently): the trials run with --threads 1, and so
# does every evaluation here, in this process and in the CLI's
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A short real search (digits 8×8, four designs, no pruning) with the re-measurement."""
    work = tmp_path_factory.mktemp("designs")
    (work / "space.yaml").write_text(SPACE)
    proc = subprocess.run(
        [sys.executable, "-m", "attndsl.cli", "search", "space.yaml", "--budget", "5trials",
         "--runs-dir", "runs", "--no-progress", "--threads", "1", "--sampler", "random"],
        cwd=work, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return work, work / "runs" / "designs", proc.stdout + proc.stderr


def test_front_models_reload_trained_and_reproduce_their_accuracy(finished_run, one_thread):
    work, run, _ = finished_run
    summary = json.loads((run / "front.json").read_text())
    assert summary["front"]
    for entry in summary["front"]:
        assert entry["weights"] == entry["file"][:-len(".yaml")] + ".pt"
        model = attndsl.load(run / entry["weights"])
        assert not model.training                      # eval mode: ready to evaluate
        assert model.meta["accuracy"] == entry["accuracy"]
        # the same split, preprocessing and evaluation: exactly the search's figure
        assert attndsl.evaluate(model, work / "space.yaml") == entry["accuracy"]
        assert attndsl.evaluate(run / entry["weights"],
                                {"kind": "digits", "resolution": 8}) == entry["accuracy"]
    # an untrained build of the same design does not (the bug: the front came back untrained)
    first = summary["front"][0]
    fresh = attndsl.build_model(run / first["file"], backend="eager")
    torch.manual_seed(123)
    assert attndsl.evaluate(fresh, work / "space.yaml") != first["accuracy"]


def test_every_trial_has_a_name_and_a_design_is_listed_once(finished_run):
    _, run, _ = finished_run
    import csv
    with open(run / "trials.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows and all(r["name"] for r in rows)
    summary = json.loads((run / "front.json").read_text())
    hashes = [e["hash"] for e in summary["front"]]
    assert len(hashes) == len(set(hashes))
    listed = {e["number"] for e in summary["front"]} | {
        d for e in summary["front"] for d in e["duplicates"]}
    copies = [r for r in rows if r["duplicate_of"] != "" and int(r["duplicate_of"]) in listed]
    assert all(int(r["number"]) in listed for r in copies)


def test_cli_evaluate_and_train(finished_run, tmp_path, one_thread):
    work, run, _ = finished_run
    entry = json.loads((run / "front.json").read_text())["front"][0]
    res = subprocess.run([sys.executable, "-m", "attndsl.cli", "evaluate",
                          str(run / entry["weights"]), "--space", "space.yaml"],
                         cwd=work, capture_output=True, text=True, timeout=300, env=ONE_THREAD)
    assert res.returncode == 0, res.stderr
    assert f"validation accuracy {entry['accuracy']:.4f}" in res.stdout
    out = tmp_path / "longer.pt"
    res = subprocess.run([sys.executable, "-m", "attndsl.cli", "train", str(run / entry["file"]),
                          "--space", "space.yaml", "--epochs", "1", "--out", str(out),
                          "--no-progress"], cwd=work, capture_output=True, text=True,
                         timeout=300, env=ONE_THREAD)
    assert res.returncode == 0, res.stderr
    assert "epoch 1/1" in res.stderr and "the settings the search trained it with" in res.stderr
    model = attndsl.load(out)
    assert model.meta["epochs"] == 1
    assert attndsl.evaluate(out, work / "space.yaml") == model.meta["accuracy"]
    # neither --space nor --task: said plainly
    res = subprocess.run([sys.executable, "-m", "attndsl.cli", "evaluate", str(out)],
                         cwd=work, capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "--space" in res.stderr and "Traceback" not in res.stderr


def test_a_trial_failed_by_the_heartbeat_check_is_not_reported_running():
    import optuna
    from attndsl.nas.report import trial_rows
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(directions=["maximize", "maximize"])
    trial = study.ask()
    trial.set_user_attr("state", "running")          # what the worker wrote, then it died
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    assert trial_rows(study)[0]["state"] == "interrupted"
