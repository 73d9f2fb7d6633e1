"""The zoo: one YAML spec per mechanism, in attndsl/specs/ (package data, so an installed
wheel has it; the repository's top-level specs/ is a link to it)."""
from __future__ import annotations

from pathlib import Path

SPECS_DIR = Path(__file__).resolve().parent / "specs"   # package data: ships in the wheel


def zoo_paths() -> list[Path]:
    """Every zoo spec, sorted by name (specs/**/*.yaml)."""
    return sorted(SPECS_DIR.rglob("*.yaml"), key=lambda p: p.stem)


def zoo_path(name: str) -> Path | None:
    for path in zoo_paths():
        if path.stem == name:
            return path
    return None


def zoo_names() -> list[str]:
    return [p.stem for p in zoo_paths()]

