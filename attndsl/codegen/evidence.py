"""Measured evidence for autoplan's rules, per device kind and dtype.

The CPU rules quote their measurements in `autoplan.EVIDENCE`. Rules for other devices are
read from files in this folder, one per (device kind, dtype), written by
`python -m benchmarks.gpu_check --write-evidence` from a paired run on that device:

    attndsl/codegen/evidence/cuda-sm90_bfloat16.json
    {"format": "attndsl-evidence/1", "device": "cuda-sm90", "device_name": "NVIDIA H200",
     "dtype": "bfloat16", "torch": "2.11.0+cu130", "source": "benchmarks/results/….json",
     "forms": {"window+terms": {"spec": "swin_wmsa", "stage": "B64 56x56 C96",
                                "engines_ms": {"sdpa": 1.9, "flex": 1.4, "explicit": 3.1}}}}

A *form* is what the measurement generalises over: the application kind, and whether the
logits carry terms besides q·k (a table gather, a per-sample relative term).
`attndsl show --plan --device cuda` reads these files, so it explains a GPU plan on a
machine without one.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

import torch

from ..errors import ArgumentError
from ..terms import term_of

EVIDENCE_DIR = Path(__file__).with_name("evidence")
FORMAT = "attndsl-evidence/1"
GPU_CHECK = "python -m benchmarks.gpu_check --write-evidence"


def device_key(device) -> str:
    """"cpu", "cuda-sm90" (kind and compute capability), or "cuda" where the capability
    can't be read here (no GPU in this process). Accepts a torch.device, "cuda:1", or a
    key itself ("cuda-sm90")."""
    if isinstance(device, str) and device.startswith("cuda-sm") and device[7:].isdigit():
        return device
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ArgumentError(f"unknown device {device!r}; valid: 'cpu', 'cuda', 'cuda:N' or "
                            "a device kind such as 'cuda-sm90'", argument="device") from None
    if dev.type == "cuda":
        if torch.cuda.is_available() and (dev.index or 0) < torch.cuda.device_count():
            major, minor = torch.cuda.get_device_capability(dev)
            return f"cuda-sm{major}{minor}"
        return "cuda"
    return dev.type


def device_kind(device) -> str:
    return device_key(device).split("-")[0]


def dtype_name(dtype) -> str:
    return str(dtype).removeprefix("torch.")


def form_of(bp) -> str:
    """What a measurement of this branch generalises to (module docstring)."""
    par = bp.spec.parameterization
    terms = [t for t in getattr(par, "terms", ()) if t.kind != "query_key"]
    form = bp.spec.application.kind
    if any(term_of(t).per_sample for t in terms):
        form += "+per_sample"
    elif terms:
        form += "+terms"
    return form


@functools.lru_cache(maxsize=None)
def _files() -> tuple[tuple[str, str, Path], ...]:
    found = []
    for path in sorted(EVIDENCE_DIR.glob("*.json")):
        device, _, dtype = path.stem.partition("_")
        found.append((device, dtype, path))
    return tuple(found)


@functools.lru_cache(maxsize=None)
def _read(path: Path) -> dict:
    data = json.loads(path.read_text())
    if data.get("format") != FORMAT:
        raise ValueError(f"{path}: not an {FORMAT} file")
    return data


def load(device, dtype) -> dict | None:
    """The evidence measured on this device kind in this dtype (None: none committed).
    A "cuda" key without a capability takes the file of the only CUDA kind measured."""
    key, name = device_key(device), dtype_name(dtype)
    matches = [p for d, t, p in _files() if t == name and
               (d == key or (key == "cuda" and d.startswith("cuda-")))]
    if len(matches) != 1:
        return None
    return _read(matches[0]) | {"file": f"attndsl/codegen/evidence/{matches[0].name}"}


def measured(evidence: dict | None, bp, candidates) -> tuple[str, str] | None:
    """(fastest measured engine among `candidates`, the figures) for the branch's form, or
    None when the evidence has no measurement of it."""
    if evidence is None:
        return None
    entry = evidence.get("forms", {}).get(form_of(bp))
    if entry is None:
        return None
    times = {e: ms for e, ms in entry.get("engines_ms", {}).items()
             if e in candidates and ms is not None}
    if not times:
        return None
    best = min(times, key=times.get)
    figures = ", ".join(f"{e} {ms:.3g} ms" for e, ms in sorted(times.items(), key=lambda i: i[1]))
    return best, (f"measured on {evidence['device_name']} ({evidence['device']}, "
                  f"{evidence['dtype']}, torch {evidence['torch']}), {entry['spec']} at "
                  f"{entry['stage']}: {figures} ({evidence['file']})")
