"""The README as a newcomer reads it: every Python block runs as written, the speed
summary is the one generated from the committed results, no link leaves the repository,
and the test command is the one CI runs."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)


def test_readme_has_python_blocks():
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_python_block_runs(index, tmp_path):
    """Run from a scratch folder holding a link to examples/ (the blocks use it as a user
    would from a checkout), so files they write land there."""
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    script = tmp_path / "block.py"
    script.write_text(BLOCKS[index])
    out = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, f"README block {index}:\n{BLOCKS[index]}\n{out.stderr[-3000:]}"


def test_speed_summary_is_generated_from_the_results():
    sys.path.insert(0, str(ROOT))
    from benchmarks.summary import README as path, render, rewrite
    assert rewrite(README, render()) == README, "run: python -m benchmarks.summary"
    assert path == ROOT / "README.md"


def test_search_quickstart_figures_are_generated_from_the_results():
    sys.path.insert(0, str(ROOT))
    from benchmarks.search_summary import render, rewrite
    assert rewrite(README, render()) == README, "run: python -m benchmarks.search_summary"


def test_links_stay_inside_the_repository():
    for target in re.findall(r"\]\(([^)]+)\)", README) + re.findall(r"`(\.\./[^`]+)`", README):
        assert not target.startswith(("../", "/")), target
        if not target.startswith(("http://", "https://", "#")):
            assert (ROOT / target.split("#")[0]).exists(), target


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    commands = [line.strip() for line in README.splitlines()
                if "pytest" in line and line.startswith("    ")]
    assert commands and commands[0] in ci


def test_gpu_runs_become_columns_beside_the_cpu_ones(tmp_path):
    """A committed benchmarks/gpu_check.py result adds its (dtype, GPU kind) columns to the
    README's table; a dry run (CPU) never does."""
    import json

    from benchmarks.summary import render
    paired = {"meta": {"date": "2026-11-21T09:20"}, "rows": [
        {"dtype": "float32", "stage": "stage1", "family": "nat", "best": "window_index",
         "ratio_vs": {"window_index": {"median": 0.7, "min": 0.6, "max": 0.8}}}]}
    gpu = {"environment": {"date": "2026-12-09T10:00", "device_key": "cuda-sm90"}, "bench": [
        {"family": "nat", "stage": "stage1", "dtype": "bfloat16", "best": "attndsl_flex",
         "auto_over_best": 1.0},
        {"family": "vit_mhsa", "stage": "stage1", "dtype": "bfloat16", "errors": {}}]}
    (tmp_path / "paired_cpu_x.json").write_text(json.dumps(paired))
    (tmp_path / "gpu_cuda-sm90_2026-12-09T1000.json").write_text(json.dumps(gpu))
    (tmp_path / "gpu_cpu_2026-12-09T1000_dry-run.json").write_text(json.dumps(
        {**gpu, "environment": {"date": "2026-12-09T11:00", "device_key": "cpu"}}))
    table = render(tmp_path)
    assert "| family | float32 stage1 | bfloat16 cuda-sm90 stage1 |" in table
    assert "| nat | 0.70× [0.60–0.80] vs window_index | 1.00× [1.00–1.00] vs attndsl_flex |" in table
    assert "dry-run" not in table and "vit_mhsa" not in table


def test_timm_coverage_table_is_generated_from_the_results():
    sys.path.insert(0, str(ROOT))
    from benchmarks.summary import rewrite
    from benchmarks.timm_coverage import BEGIN, DOCS, END, docs_block
    text = DOCS.read_text()
    assert rewrite(text, docs_block(), BEGIN, END) == text, \
        "run: python -m benchmarks.timm_coverage --docs"
