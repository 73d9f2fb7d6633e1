"""`attndsl search` / `report` / `validate` as a new user meets them: every mistake is one
clear message (exit 2), never a traceback; and the search's other endings — a timed-out
trial, candidates refused by a constraint, a resumed run whose space changed — through the
Python API."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import attndsl
from attndsl.cli import main
from attndsl.nas import SearchStopped

ROOT = Path(__file__).resolve().parent.parent
SPACE = """\
name: tiny
task: {kind: digits}
backbone:
  patch: 2
  stages:
    - {depth: 1, dim: 16, heads: 1, mlp_ratio: 2, attention: {choice: [none, vit_mhsa]}}
training: {epochs: 2, batch_size: 256}
deploy: {batch: 8, backend: eager, measure_seconds: 0.05}
"""


@pytest.fixture
def space(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(SPACE)
    return path


def _states(result) -> list[str]:
    return [r["state"] for r in result.trials]


def _failures(result) -> str:
    """What went wrong in a run's failed trials: reasons, messages and their logs' tails."""
    out = []
    for r in result.trials:
        if r["state"] == "failed":
            log = result.run_dir / "logs" / f"trial_{int(r['number']):04d}.log"
            tail = log.read_text()[-2000:] if log.exists() else "(no log)"
            out.append(f"trial {r['number']}: {r['reason']}: {r['message']}\n{tail}")
    return "\n".join(out)


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out + out.err


@pytest.mark.parametrize("argv, message", [
    (["search", "nope.yaml", "--budget", "1trials"], "search space file not found: nope.yaml"),
    (["search", ROOT / "specs" / "elsa.yaml", "--budget", "1trials"], "needs 'task' and 'backbone'"),
    (["search", "{space}", "--budget", "0h"], "budget '0h' is not understood"),
    (["search", "{space}"], "no budget"),
    (["search", "{space}", "--budget", "1trials", "--sampler", "bayes"], "tpe (default), nsga2, gp, random"),
    (["search", "{space}", "--budget", "1trials", "--study", "../escape"], "--study"),
    (["search", "{space}", "--budget", "1trials", "--storage", "redis://x"], "sqlite:///"),
    (["search", "{space}", "--budget", "1trials", "--deploy-dtype", "int8"], "float32"),
    (["report", "/nonexistent/run"], "not a search run directory"),
    (["search", "{space}", "--budget", "1trials", "--workers", "2", "--storage",
      "sqlite:///x.db"], "database is locked"),
    (["search", "{space}", "--budget", "1trials", "--workers", "0"], "positive number"),
])
def test_user_mistakes_are_one_message(capsys, space, argv, message):
    argv = [str(space) if a == "{space}" else a for a in argv]
    code, text = run_cli(capsys, *argv)
    assert code == 2, text
    assert message in text, text
    assert "Traceback" not in text


def test_validate_a_bad_space_names_path_and_line(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(SPACE.replace("[none, vit_mhsa]", "[none, vit_mhsaa]"))
    code, text = run_cli(capsys, "validate", bad)
    assert code == 2
    assert re.search(r"bad\.yaml:6 at 'backbone\.stages\[0\]\.attention'", text), text
    assert "vit_mhsaa" in text and "did you mean vit_mhsa" in text


def test_validate_a_good_space_and_a_backbone(capsys, space):
    code, text = run_cli(capsys, "validate", space, ROOT / "examples" / "search_digits.yaml")
    oks = [line for line in text.splitlines() if line.startswith("ok")]
    assert code == 0 and len(oks) == 2 and "zoo seeds" in text


def test_timeout_constraint_and_changed_space(tmp_path, space):
    runs = tmp_path / "runs"
    # a trial that cannot finish in time is recorded as timed out; the search ends normally
    result = attndsl.search(space, "1trials", runs_dir=runs, study="slow", trial_timeout=0.5,
                            progress=False, remeasure=False)
    (row,) = result.trials
    assert (row["state"], row["reason"]) == ("failed", "timeout"), _failures(result)
    assert "trial budget is spent" in result.stop_reason
    # a constraint refuses candidates after measuring them: never trained
    tight = tmp_path / "tight.yaml"
    tight.write_text(SPACE.replace("deploy:", "constraints: {max_params: 1000}\ndeploy:"))
    result = attndsl.search(tight, "2trials", runs_dir=runs, progress=False, remeasure=False)
    assert [r["state"] for r in result.trials] == ["infeasible", "infeasible"]
    for r in result.trials:
        assert r["reason"] == "constraint" and "max_params" in r["message"]
        assert r["params"] > 1000 and r["epochs"] is None and r["images_per_s"] > 0
    assert result.front == []
    # the same study with another space is refused, not mixed
    tight.write_text(SPACE.replace("mlp_ratio: 2", "mlp_ratio: 3"))
    with pytest.raises(SearchStopped, match="another search space"):
        attndsl.search(tight, "3trials", runs_dir=runs, study="tiny", progress=False)


def test_report_writes_html_with_plotly(tmp_path, space):
    pytest.importorskip("plotly", reason="plotly is in the [test] extra; HTML plots need it")
    result = attndsl.search(space, "2trials", runs_dir=tmp_path, progress=False,
                            remeasure=True)
    run = result.run_dir
    assert (run / "pareto.html").exists() and (run / "hypervolume.html").exists()
    front = json.loads((run / "front.json").read_text())
    assert front["front"] and front["remeasure"]["entries"]
    entry = front["remeasure"]["entries"][0]
    assert entry["images_per_s"] > 0 and len(entry["rounds"]) == 5
    again = attndsl.report(run)
    assert again["front"] == front["front"]


def test_sqlite_storage_with_heartbeats(tmp_path, space):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    result = attndsl.search(space, "2trials", runs_dir=tmp_path / "runs", storage=url,
                            progress=False, remeasure=False)
    assert _states(result) == ["complete", "complete"], _failures(result)
    summary = attndsl.report(result.run_dir, storage=url)
    assert summary["counts"] == {"complete": 2}


def test_show_and_compile_a_backbone_file(capsys, tmp_path):
    path = tmp_path / "net.yaml"
    path.write_text("name: net\nimage_size: 16\nin_channels: 1\nclasses: 10\npatch: 2\n"
                    "stages:\n  - {depth: 1, dim: 16, heads: 2, attention: swin_wmsa}\n"
                    "  - {depth: 1, dim: 32, heads: 2, attention: [none, vit_mhsa], peg: true}\n")
    code, text = run_cli(capsys, "show", path)
    assert code == 0 and "8×8" in text and "4×4" in text and "none / vit_mhsa (+peg)" in text
    assert "MFLOPs" in text
    code, text = run_cli(capsys, "compile", path, "--out", tmp_path / "net.pt", "--backend", "eager")
    assert code == 0 and "backbone net" in text
    net = attndsl.load(tmp_path / "net.pt")
    import torch
    assert net(torch.randn(3, 1, 16, 16)).shape == (3, 10)


def test_search_takes_a_space_as_a_dict(tmp_path):
    import yaml
    result = attndsl.search(yaml.safe_load(SPACE), "1trials", runs_dir=tmp_path,
                            progress=False, remeasure=False)
    assert len(result.trials) == 1 and (result.run_dir / "space.yaml").exists()


def test_validate_notes_options_that_bind_with_nothing(capsys, tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(SPACE.replace("[none, vit_mhsa]", "[none, vit_mhsa, nat]"))
    code, text = run_cli(capsys, "validate", path)
    assert code == 0
    # nat's 7×7 neighbourhood on the 4×4 grid of digits at patch 2
    assert re.search(r"note .*line 6, 'backbone.stages\[0\].attention' = 'nat'", text), text
    assert "4×4" in text or "4x4" in text


# ---------------------------------------------------------------- papercuts (issue #18 §5)
def test_a_one_trial_search_logs_its_trial_and_plots_its_point(tmp_path, space, monkeypatch):
    """logs/trial_NNNN.log of a completed trial says what the trial did; hypervolume.png of
    a one-trial run draws that trial's point (a step through one point draws nothing)."""
    import matplotlib.figure
    drawn = {}
    save = matplotlib.figure.Figure.savefig

    def keep(fig, path, *args, **kwargs):
        drawn[Path(path).name] = [(list(line.get_xdata()), line.get_marker())
                                  for line in fig.axes[0].lines]
        return save(fig, path, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", keep)
    result = attndsl.search(space, "1trials", runs_dir=tmp_path, progress=False,
                            remeasure=False)
    assert _states(result) == ["complete"], _failures(result)
    log = (result.run_dir / "logs" / "trial_0000.log").read_text()
    for step in ("trial process", "measured: images_per_s=", "worker: go on", "epoch: epoch=1",
                 "rung: epoch=1", "done: accuracy="):
        assert step in log, step
    (points,) = drawn["hypervolume.png"]
    assert len(points[0]) == 1 and points[1] == "o"
    assert not any("?" in key for key in result.summary["spend"]["per_worker"])


def test_spend_has_no_phantom_worker():
    from attndsl.nas.report import spend_by_worker
    rows = [{"host": "vm", "pid": 7, "cost_s": 30.0},
            {"host": None, "pid": None, "cost_s": 0.0},      # queued, or a reused duplicate
            {"host": None, "pid": None, "cost_s": 5.0}]      # spent, by a worker not recorded
    assert spend_by_worker(rows) == {"per_worker": {"vm:7": 30.0, "unknown:?": 5.0},
                                     "per_host": {"vm": 30.0, "unknown": 5.0}}
    assert spend_by_worker(rows[:2]) == {"per_worker": {"vm:7": 30.0}, "per_host": {"vm": 30.0}}


class _Study:
    def __init__(self, trials):
        self.trials = trials

    def get_trials(self, deepcopy=False):
        return self.trials


def _trial(number, state, optuna_state="COMPLETE", **attrs):
    from types import SimpleNamespace
    return SimpleNamespace(number=number, system_attrs={}, user_attrs={"state": state, **attrs},
                           state=SimpleNamespace(name=optuna_state,
                                                 is_finished=lambda: optuna_state != "RUNNING"))


def _rendered(display) -> str:
    from rich.console import Console
    console = Console(record=True, width=200)
    console.print(display.render())
    return console.export_text()


@pytest.mark.parametrize("budget", ["60s", "2trials"])
def test_the_live_display_says_the_last_trial_is_finishing(budget):
    from attndsl.nas import parse_budget
    from attndsl.nas.progress import Display
    done = _trial(0, "complete", cost_s=40.0, accuracy=0.5, images_per_s=100.0, name="a")
    last = _trial(1, "running", optuna_state="RUNNING", cost_s=35.0, name="b")
    text = _rendered(Display(_Study([done, last]), parse_budget(budget), "device", "t"))
    assert "budget spent · finishing the last trial" in text
    assert "ETA ~0 s" not in text and "left 0.000" not in text
    text = _rendered(Display(_Study([done]), parse_budget("1h"), "device", "t"))
    assert "left 0.989 · ETA ~59 min" in text and "finishing" not in text


def test_a_reused_duplicate_line_reads(capsys):
    from io import StringIO

    from rich.console import Console

    from attndsl.nas import parse_budget
    from attndsl.nas.progress import Display
    trials = [_trial(0, "infeasible", reason="spec_error", cost_s=1.0, name="a"),
              _trial(1, "infeasible", reason="spec_error", duplicate_of=0, name="a")]
    sink = StringIO()
    display = Display(_Study(trials), parse_budget("2trials"), "device", "t",
                      console=Console(file=sink, width=200))
    display.trial_finished(1)
    assert "infeasible spec_error (duplicate of trial 0, reused) a" in sink.getvalue()
