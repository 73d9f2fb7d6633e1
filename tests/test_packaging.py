"""A non-editable install works: the wheel carries the zoo, and the installed package
(not this checkout) lists it, shows a spec and compiles one."""
from __future__ import annotations

import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(*cmd, cwd):
    out = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, f"{cmd}:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}"
    return out.stdout


def test_wheel_installs_with_the_zoo(tmp_path):
    # build the wheel offline, with this environment's setuptools
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
        "-w", tmp_path / "dist", ROOT, cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("attndsl-*.whl")
    # a fresh venv; torch & co. come from this one's site-packages through a .pth file
    # (appended after the fresh venv's own, so the installed wheel is what imports)
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    fresh_site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))",
                          cwd=tmp_path).strip())
    (fresh_site / "deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    run(python, "-m", "pip", "install", "-q", "--no-deps", wheel, cwd=tmp_path)

    where = run(python, "-c", "import attndsl; print(attndsl.__file__)", cwd=tmp_path)
    assert where.startswith(str(fresh_site)), where
    zoo = run(env_dir / "bin" / "attndsl", "zoo", cwd=tmp_path)
    assert len(zoo.strip().splitlines()) >= 46 and "elsa " in zoo
    shown = run(env_dir / "bin" / "attndsl", "show", "elsa", "--dim", "48", "--resolution",
                "14", "14", cwd=tmp_path)
    assert "elsa" in shown
    y = run(python, "-c", "import torch, attndsl; m = attndsl.compile('unified_lsa_window_softmax',"
                          " dim=48, resolution=(14, 14), backend='eager');"
                          " print(tuple(m(torch.randn(1, 14, 14, 48)).shape))", cwd=tmp_path)
    assert y.strip() == "(1, 14, 14, 48)"
