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
