"""Latency tables: a design's deployment latency composed from the measured latencies of
its parts, the way FBNet and ProxylessNAS compose theirs — and verified against whole-model
timing, which they do not do.

A backbone (model/net.py) is a chain of independent modules, so its forward time is the
sum of theirs plus what the chain itself costs (a permute at the stem, the calls between
modules). The parts are

    stem        patch conv + LN, on the deploy images
    downsample  conv 2×2 s2 + LN before a stage
    block       LN → attention → LN → MLP at one stage's grid: one per attention option ×
                heads × width × MLP ratio × extras the space can build there
    peg         CPVT's position code after a stage's first block
    head        LN → mean over tokens → linear

each keyed by what it computes (not by names), built with the deploy backend, dtype,
autocast and memory format, and timed alone. A table (JSON) holds the parts measured on
one machine at one deploy setting (the fingerprint); `attndsl profile` fills it and checks
it: N random designs timed whole, interleaved, against their composed estimates (Kendall τ,
Spearman ρ, MAPE, the median residual = what composition misses).

Measurement protocol: a part is timed in S sessions (3 for `attndsl profile`), each a fresh
process: it builds and warms up every part (the compile is timed apart), then times them
over R rounds, each round every part once, in a new random order, so that drift of the
machine falls on all parts alike. A sample is n back-to-back calls (n set once per part,
about 50 ms). A part's latency is its fastest round in any session: on a shared or busy
machine load, page faults and a slow state of one process (on this project's 2-core VM a
process keeps a speed state that differs from another's by up to ±30% for small parts)
only ever add time, so the minimum over sessions is what is repeatable — the median of
one process is not. The spread is how far apart the sessions' minima lie. The check times
whole designs by the same protocol, so composed and whole latency are comparable.
The table is written after every round: a killed profile resumes where it stopped (at the
session it was in), and a profile of a grown space measures only the new parts.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import os
import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import nn

from ..errors import AttndslError, SpecError
from ..model.spec import Backbone, Stage, canonical_hash
from ..lang.io import spec_to_dict

TABLE_FORMAT = "attndsl-latency-table/2"
DEFAULT_ROUNDS = 10          # rounds per part and session
DEFAULT_SESSIONS = 3         # fresh processes a profile times every part in
DEFAULT_PART_SECONDS = 0.05  # blocked_autorange's min_run_time per part and round
MAX_DESIGNS = 20_000         # designs enumerated to list a space's parts
MAX_PARTS = 256              # more distinct parts than this: profiled lazily
CHECK_WARN_TAU = 0.9         # a check with Kendall τ below this is warned about
# what a table's fingerprint says about the machine (may differ: a table measured on the
# deployment machine serves a search elsewhere) and about the deploy setting (must match)
MACHINE_KEYS = ("device", "device_type", "torch", "threads")
SETTING_KEYS = ("dtype", "batch", "resolution", "backend", "autocast", "channels_last")


class LatencyTableError(AttndslError):
    """A latency table that can't serve the search or profile asked of it."""


# ---------------------------------------------------------------- parts
@dataclass(frozen=True)
class Part:
    """One module of a backbone at its input shape: `config` is what it computes."""
    kind: str           # stem | downsample | block | peg | head
    config: str         # canonical JSON
    label: str          # for people: "stage 1 block: swin_wmsa, 2 heads, dim 64, mlp 2, 4×4"

    @property
    def key(self) -> str:
        text = self.kind + self.config
        return f"{self.kind}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"

    @property
    def settings(self) -> dict:
        return json.loads(self.config)

    def build(self, deploy, device) -> tuple[nn.Module, torch.Tensor]:
        return build_part(self, deploy, device)


def _part(kind: str, label: str, **config) -> Part:
    return Part(kind, json.dumps(config, sort_keys=True, separators=(",", ":")), label)


def _attention_config(spec) -> dict | str:
    """The attention spec as what it computes: names, papers and descriptions left out (two
    spellings of one mechanism are one part, as canonical_hash treats backbones)."""
    if spec is None:
        return "none"
    data = spec_to_dict(spec)
    for key in ("name", "paper", "description"):
        data.pop(key, None)
    return data


def design_parts(backbone: Backbone, resolution: int | None = None) -> list[Part]:
    """The parts of `backbone` at input size `resolution`, in forward order, each block
    once per occurrence (a design's latency is the sum over this list)."""
    size = resolution or backbone.image_size
    grids = backbone.grids(size)
    stages = backbone.stages
    parts = [_part("stem", f"stem: patch {backbone.patch}, {backbone.in_channels}→"
                   f"{stages[0].dim} channels, {size}×{size} images",
                   in_channels=backbone.in_channels, dim=stages[0].dim, patch=backbone.patch,
                   image=size)]
    for i, (stage, grid) in enumerate(zip(stages, grids)):
        if i:
            before = grids[i - 1]
            parts.append(_part("downsample", f"stage {i} downsample: {stages[i - 1].dim}→"
                               f"{stage.dim}, stride {stage.stride}, from {before[0]}×{before[1]}",
                               c_in=stages[i - 1].dim, c_out=stage.dim, stride=stage.stride,
                               grid=list(before)))
        for b in range(stage.depth):
            spec = stage.block_attention(b)
            parts.append(_part(
                "block", f"stage {i} block: {_attention_label(spec)}"
                f"{'' if spec is None else f', {stage.heads} heads'}, dim {stage.dim}, "
                f"mlp {stage.mlp_ratio:g}{', dwconv' if stage.ffn_dwconv else ''}, "
                f"{grid[0]}×{grid[1]}",
                # an MLP-only block has no heads: one part whatever the stage's heads
                dim=stage.dim, heads=None if spec is None else stage.heads,
                mlp_ratio=stage.mlp_ratio,
                ffn_dwconv=stage.ffn_dwconv, attention=_attention_config(spec),
                grid=list(grid)))
            if b == 0 and stage.peg:
                parts.append(_part("peg", f"stage {i} PEG: dim {stage.dim}, {grid[0]}×{grid[1]}",
                                   dim=stage.dim, grid=list(grid)))
    last = stages[-1]
    parts.append(_part("head", f"head: dim {last.dim} → {backbone.classes} classes, "
                       f"{grids[-1][0]}×{grids[-1][1]}", dim=last.dim,
                       classes=backbone.classes, grid=list(grids[-1])))
    return parts


def _attention_label(spec) -> str:
    """The spec's name, with its application's kind and size when the name alone may not
    tell (an inline spec whose window is searched)."""
    if spec is None:
        return "none"
    details = []
    for branch in spec.branches:
        application = branch.application
        size = getattr(application, "size", None)
        details.append(application.kind + ("" if size is None else f" {size}"))
    return f"{spec.name or 'attention'} ({' + '.join(details)})"


class _Stem(nn.Module):
    # BackboneNet.forward's first step: images (B, C, S, S) → tokens (B, H, W, dim)
    def __init__(self, c_in: int, dim: int, patch: int):
        super().__init__()
        from ..model.net import ChannelsLastConv
        self.embed = ChannelsLastConv(c_in, dim, patch)

    def forward(self, images):
        return self.embed(images.permute(0, 2, 3, 1))


class _Head(nn.Module):
    # BackboneNet.forward's last step: tokens → logits
    def __init__(self, dim: int, classes: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        return self.head(self.norm(x).mean(dim=(1, 2)))


def build_part(part: Part, deploy, device) -> tuple[nn.Module, torch.Tensor]:
    """The part as BackboneNet builds it (deploy backend, dtype, device, memory format), in
    eval mode, and an input batch of the shape it sees in the model."""
    from ..codegen.module import compile as compile_attention
    from ..model.net import Block, ChannelsLastConv, Peg
    from .measure import DTYPES
    c, dtype, batch = part.settings, DTYPES[deploy.dtype], deploy.batch

    def tokens(grid, dim):
        return torch.randn(batch, grid[0], grid[1], dim, device=device, dtype=dtype)

    if part.kind == "stem":
        module = _Stem(c["in_channels"], c["dim"], c["patch"])
        x = torch.randn(batch, c["in_channels"], c["image"], c["image"], device=device,
                        dtype=dtype)
        if deploy.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
    elif part.kind == "downsample":
        module, x = ChannelsLastConv(c["c_in"], c["c_out"], c["stride"]), tokens(c["grid"], c["c_in"])
    elif part.kind == "peg":
        module, x = Peg(c["dim"]), tokens(c["grid"], c["dim"])
    elif part.kind == "head":
        module, x = _Head(c["dim"], c["classes"]), tokens(c["grid"], c["dim"])
    elif part.kind == "block":
        attention = c["attention"]
        if isinstance(attention, dict):      # the key leaves names out; a spec needs one
            attention = {"name": "part", **attention}
        stage = Stage(depth=1, dim=c["dim"], heads=c["heads"] or 1, mlp_ratio=c["mlp_ratio"],
                      ffn_dwconv=c["ffn_dwconv"], attention=(attention,))
        spec = stage.block_attention(0)
        attn = None if spec is None else compile_attention(
            spec, dim=c["dim"], resolution=tuple(c["grid"]), heads=c["heads"],
            backend=deploy.backend, dtype=dtype, device=device)
        module, x = Block(stage, attn, 0.0), tokens(c["grid"], c["dim"])
    else:
        raise ValueError(f"unknown part kind {part.kind!r}")
    module = module.to(device=device, dtype=dtype).eval()
    if deploy.channels_last:
        module = module.to(memory_format=torch.channels_last)
    return module, x


# ---------------------------------------------------------------- what is timed
@dataclass(frozen=True)
class WholeDesign:
    """A design built and timed whole (the check), by the protocol its parts are timed by."""
    backbone: Backbone
    name: str
    resolution: int

    @property
    def key(self) -> str:
        return f"design-{canonical_hash(self.backbone)}"

    @property
    def label(self) -> str:
        return f"{self.name}, whole"

    def build(self, deploy, device) -> tuple[nn.Module, torch.Tensor]:
        from .measure import _deployed
        return _deployed(self.backbone, deploy, self.resolution, device)


def _unit_to_json(unit) -> dict:
    if isinstance(unit, Part):
        return {"part": {"kind": unit.kind, "config": unit.config, "label": unit.label}}
    from ..model.spec import backbone_to_dict
    return {"design": {"backbone": backbone_to_dict(unit.backbone), "name": unit.name,
                       "resolution": unit.resolution}}


def _unit_from_json(data: dict):
    if "part" in data:
        return Part(**data["part"])
    from ..model.spec import load_backbone
    d = data["design"]
    return WholeDesign(load_backbone(d["backbone"]), d["name"], d["resolution"])


def _section(unit) -> str:
    # where a table keeps a unit's entry: parts are composed, designs only checked against
    return "parts" if isinstance(unit, Part) else "designs"


# ---------------------------------------------------------------- measuring
def measure_session(units: list, deploy, *, device=None, rounds: int = DEFAULT_ROUNDS,
                    seconds: float = DEFAULT_PART_SECONDS, seed: int = 0,
                    on_round: Callable[[dict], None] | None = None,
                    on_progress: Callable[[str, int, int], None] | None = None,
                    timer: Callable | None = None) -> dict:
    """One session (see the module's docstring): build and warm up every unit (parts or
    whole designs; the compile is timed apart), then time them over `rounds` rounds, each
    round every unit once in a new random order. Returns {key: {"rounds_ms": [...],
    "compile_s": s}}; `on_round(results)` after every round. `timer(unit, call, device,
    seconds)` samples a unit (default: PartTimer; the tests give a fake clock)."""
    from .measure import _autocast, _sync, default_device
    device = default_device(device)
    results = {u.key: {"rounds_ms": [], "compile_s": None} for u in units}
    calls = {}
    with torch.no_grad(), _autocast(deploy, device):
        for i, unit in enumerate(units):
            if on_progress:
                on_progress(f"building {unit.label}", i, len(units))
            started = time.perf_counter()
            module, x = unit.build(deploy, device)
            module(x)                 # compiles (auto / inductor)
            _sync(device)
            results[unit.key]["compile_s"] = time.perf_counter() - started
            calls[unit.key] = (timer or PartTimer)(unit, lambda m=module, t=x: m(t), device,
                                                   seconds)
        rng = random.Random(seed)
        order = list(units)
        for r in range(rounds):
            rng.shuffle(order)
            for unit in order:
                results[unit.key]["rounds_ms"].append(calls[unit.key].sample() * 1e3)
            if on_progress:
                on_progress(f"round {r + 1} of {rounds}", r + 1, rounds)
            if on_round:
                on_round(results)
    return results


class PartTimer:
    """Seconds per call of one part: `n` back-to-back calls between two clock readings (or
    two CUDA events around the replays of a captured CUDA graph), with `n` set once so that
    a sample lasts about `seconds`. torch's blocked_autorange calibrates anew on every call,
    which costs more than the sample itself at a table's 20 parts × 10 rounds."""

    def __init__(self, unit, call, device, seconds: float):
        self.device, self.call = device, call
        if device.type == "cuda":
            self.call = _graphed(call)
        for _ in range(2):
            self.call()
        self.n = 1
        once = self._time(1)
        self.n = max(1, min(10_000, round(seconds / max(once, 1e-7))))

    def _time(self, n: int) -> float:
        if self.device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize(self.device)
            start.record()
            for _ in range(n):
                self.call()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3 / n
        started = time.perf_counter()
        for _ in range(n):
            self.call()
        return (time.perf_counter() - started) / n

    def sample(self) -> float:
        return self._time(self.n)


def _graphed(call):
    """`call` captured into a CUDA graph (replays: no launch gaps, as measure.cuda_times
    times whole models), or `call` itself when the program can't be captured."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            call()
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    try:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            call()
        graph.replay()
        torch.cuda.synchronize()
        return graph.replay
    except Exception:      # host syncs, dynamic shapes: plain calls
        torch.cuda.synchronize()
        return call


def summarize(sessions: dict) -> dict:
    """An entry's figures from its sessions' rounds: the latency is the fastest round of
    any session (what the machine can do; load, page faults and a slow state of the
    process only ever add time), the spread how far apart the sessions' fastest rounds
    are (max − min), or with one session the IQR of its rounds."""
    from .measure import spread_of
    best = [min(s["rounds_ms"]) for s in sessions.values() if s.get("rounds_ms")]
    latency = min(best)
    if len(best) >= 2:
        spread_ms = max(best) - latency
    else:
        rounds = next(s["rounds_ms"] for s in sessions.values() if s.get("rounds_ms"))
        spread_ms = spread_of(rounds) * statistics.median(rounds)
    return {"latency_ms": latency, "spread_ms": spread_ms, "session_count": len(best),
            "rounds": sum(len(s["rounds_ms"]) for s in sessions.values())}


def new_session_id() -> str:
    return f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{os.urandom(3).hex()}"


# ---------------------------------------------------------------- the table
def table_fingerprint(device, deploy, resolution: int, threads: int | None = None) -> dict:
    from .measure import fingerprint
    out = fingerprint(device, deploy, resolution)
    # which GPU of a node measured does not matter to a table: the workers on the GPUs of
    # one node (--gpus 0,1,2,3) share one table, each adding the parts it meets
    out.pop("cuda_visible_devices", None)
    if threads:
        out["threads"] = int(threads)
    return out


def fingerprint_key(print_: dict) -> str:
    return hashlib.sha256(json.dumps(print_, sort_keys=True).encode()).hexdigest()[:12]


def default_table_path(runs_dir, print_: dict) -> Path:
    """Where a search keeps the table of its fingerprint when none is given: beside the
    throughput cache, shared by every study under the same runs folder."""
    return Path(runs_dir).resolve() / ".cache" / "latency" / f"{fingerprint_key(print_)}.json"


def describe_fingerprint(print_: dict) -> str:
    threads = f", {print_['threads']} threads" if print_.get("device_type") == "cpu" else ""
    return (f"{print_.get('device')}{threads}, torch {print_.get('torch')}, {print_.get('dtype')}"
            f"{'' if print_.get('autocast') in (None, 'none') else ' autocast ' + print_['autocast']}"
            f", batch {print_.get('batch')}, {print_.get('resolution')}px, backend "
            f"{print_.get('backend')}")


class LatencyTable:
    """A table on disk: {"format", "fingerprint", "parts": {key: entry}, "designs": {key:
    entry} (designs timed whole by the check), "check"}; an entry holds its sessions'
    rounds and the figures summarize() draws from them. Every write merges with what is on
    disk under a lock (several workers may add parts; their sessions add up) and replaces
    the file atomically (a reader never sees half of one)."""

    def __init__(self, path, data: dict):
        self.path, self.data = Path(path), data

    @classmethod
    def open(cls, path, fingerprint: dict | None = None, *,
             replace_outdated: bool = False) -> "LatencyTable":
        """Read `path`; a missing file is a new table for `fingerprint`. A table of an older
        format is refused, or with `replace_outdated` (a search's own cached table) begun
        anew."""
        path = Path(path)
        if not path.exists():
            if fingerprint is None:
                raise LatencyTableError(f"latency table {path}: no such file (attndsl profile "
                                        "SPACE.yaml --out TABLE.json makes one)")
            return cls.new(path, fingerprint)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise LatencyTableError(f"latency table {path}: not readable as JSON ({exc}); "
                                    "remove it and profile again") from None
        found = data.get("format") if isinstance(data, dict) else None
        if found != TABLE_FORMAT:
            older = isinstance(found, str) and found.startswith(TABLE_FORMAT.rsplit("/", 1)[0])
            if older and replace_outdated and fingerprint is not None:
                return cls.new(path, fingerprint)
            raise LatencyTableError(
                f"latency table {path}: " + (
                    f"made by an older attndsl (format {found!r}, this one reads "
                    f"{TABLE_FORMAT!r}); profile it again" if older else
                    f"not an attndsl latency table (format {found!r}, expected "
                    f"{TABLE_FORMAT!r})"))
        return cls(path, data)

    @classmethod
    def new(cls, path, fingerprint: dict) -> "LatencyTable":
        return cls(Path(path), {"format": TABLE_FORMAT, "fingerprint": fingerprint, "parts": {},
                                "designs": {}, "created": time.strftime("%Y-%m-%dT%H:%M:%S")})

    @property
    def fingerprint(self) -> dict:
        return self.data["fingerprint"]

    @property
    def parts(self) -> dict:
        return self.data.setdefault("parts", {})

    @property
    def designs(self) -> dict:
        return self.data.setdefault("designs", {})

    def entry(self, unit) -> dict | None:
        return self.data.get(_section(unit), {}).get(unit.key)

    def full_sessions(self, unit, rounds: int = 1) -> int:
        entry = self.entry(unit)
        return 0 if entry is None else sum(
            len(s.get("rounds_ms", [])) >= rounds for s in entry.get("sessions", {}).values())

    def missing(self, units, sessions: int = 1, rounds: int = 1) -> list:
        """The distinct units with fewer than `sessions` sessions of `rounds` rounds."""
        seen, out = set(), []
        for u in units:
            if u.key not in seen and self.full_sessions(u, rounds) < sessions:
                seen.add(u.key)
                out.append(u)
        return out

    def record(self, units: list, session: str, results: dict) -> None:
        """Add (or extend) session `session`'s rounds of `units`."""
        for u in units:
            r = results.get(u.key)
            if not r or not r["rounds_ms"]:
                continue
            entry = self.data.setdefault(_section(u), {}).setdefault(
                u.key, {"label": u.label, "sessions": {}})
            if isinstance(u, Part):
                entry.update(kind=u.kind, config=u.settings)
            entry["sessions"][session] = {"rounds_ms": list(r["rounds_ms"]),
                                          "compile_s": r["compile_s"], "pid": os.getpid()}
            entry.update(summarize(entry["sessions"]))

    def save(self) -> None:
        """Merge into the file on disk (every session of either; of one session, the longer
        record) and write."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self.path.exists():
                try:
                    disk = json.loads(self.path.read_text())
                except (OSError, ValueError):
                    disk = {}
                if disk.get("format") == TABLE_FORMAT:
                    self._merge(disk)
            self.data["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(self.data, indent=1))
            tmp.replace(self.path)

    def _merge(self, disk: dict) -> None:
        for section in ("parts", "designs"):
            mine = self.data.setdefault(section, {})
            for key, theirs in (disk.get(section) or {}).items():
                entry = mine.setdefault(key, theirs)
                if entry is theirs:
                    continue
                for sid, session in theirs.get("sessions", {}).items():
                    have = entry["sessions"].get(sid)
                    if have is None or len(have["rounds_ms"]) < len(session["rounds_ms"]):
                        entry["sessions"][sid] = session
                entry.update(summarize(entry["sessions"]))
        if "check" in disk and "check" not in self.data:
            self.data["check"] = disk["check"]

    def reload(self) -> None:
        """Take in what other processes (a profile's sessions, other workers) wrote."""
        if self.path.exists():
            self._merge(json.loads(self.path.read_text()))

    def compose(self, parts: list[Part]) -> dict:
        """A design's latency: the sum of its parts' (each occurrence counted). Its spread
        is the sum of the parts' spreads over the sum (the parts' spreads can add up to at
        most that)."""
        absent = [p for p in parts if p.key not in self.parts]
        if absent:
            raise LatencyTableError(f"latency table {self.path}: {len(absent)} part(s) of the "
                                    f"design are not in it: {absent[0].label}")
        total = sum(self.parts[p.key]["latency_ms"] for p in parts)
        spread = sum(self.parts[p.key]["spread_ms"] for p in parts)
        return {"latency_ms": total, "spread_ms": spread,
                "spread": spread / total if total else 0.0}

    def mismatch(self, print_: dict) -> list[str]:
        """The deploy settings this table was measured at that differ from `print_`'s."""
        return [f"{k} {self.fingerprint.get(k)!r} (the search deploys at {print_.get(k)!r})"
                for k in SETTING_KEYS if self.fingerprint.get(k) != print_.get(k)]

    def same_machine(self, print_: dict) -> bool:
        return all(self.fingerprint.get(k) == print_.get(k) for k in MACHINE_KEYS)


def fill(table: LatencyTable, units: list, deploy, *, sessions: int = 1,
         isolate: bool = False, device=None, rounds: int = DEFAULT_ROUNDS,
         seconds: float = DEFAULT_PART_SECONDS, seed: int = 0, on_progress=None,
         timer=None) -> list:
    """Measure what the table lacks until every unit (part or whole design) has `sessions`
    sessions of `rounds` rounds, one session at a time — each in a fresh process with
    `isolate` (a profile: a process's own speed state is one of the things a table must
    not inherit), else in this one (a trial's lazy parts). The table is saved after every
    round. Returns the units measured."""
    measured: dict = {}
    for s in range(sessions):
        todo = table.missing(units, s + 1, rounds)
        if not todo:
            continue
        for u in todo:
            measured.setdefault(u.key, u)
        session = new_session_id()
        say = on_progress
        if on_progress and sessions > 1:
            def say(what, done, total, s=s):
                on_progress(f"session {s + 1} of {sessions}: {what}", done, total)
        if isolate:
            _session_in_a_process(table, todo, deploy, session, device=device, rounds=rounds,
                                  seconds=seconds, seed=seed + s, on_progress=say)
            table.reload()
            continue

        def save(results, todo=todo, session=session):
            table.record(todo, session, results)
            table.save()

        measure_session(todo, deploy, device=device, rounds=rounds, seconds=seconds,
                        seed=seed + s, on_round=save, on_progress=say, timer=timer)
    return list(measured.values())


def _session_in_a_process(table: LatencyTable, units: list, deploy, session: str, *, device,
                          rounds: int, seconds: float, seed: int, on_progress) -> None:
    """One session in a fresh interpreter (`python -m attndsl.nas.latency JOB.json`), at
    this process's thread count, writing its rounds to the table as it goes."""
    import subprocess
    import sys
    import tempfile
    from .measure import default_device
    job = {"table": str(table.path), "fingerprint": table.fingerprint, "session": session,
           "deploy": deploy.model_dump(), "device": str(default_device(device)),
           "threads": torch.get_num_threads(), "rounds": rounds, "seconds": seconds,
           "seed": seed, "units": [_unit_to_json(u) for u in units]}
    table.save()      # the session process merges into the file: it must hold what we hold
    with tempfile.TemporaryDirectory(prefix="attndsl-profile-") as tmp:
        job_file, err_file = Path(tmp) / "job.json", Path(tmp) / "stderr.txt"
        job_file.write_text(json.dumps(job))
        env = dict(os.environ)
        package_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_root,
                                                          env.get("PYTHONPATH")]))
        with open(err_file, "w") as err:
            proc = subprocess.Popen([sys.executable, "-m", "attndsl.nas.latency",
                                     str(job_file)], stdout=subprocess.PIPE, stderr=err,
                                    text=True, env=env)
            try:
                for line in proc.stdout:
                    if on_progress and line.startswith("{"):
                        event = json.loads(line)
                        on_progress(event["what"], event["done"], event["total"])
                code = proc.wait()
            except BaseException:      # Ctrl-C: the session stops with us
                proc.kill()
                proc.wait()
                raise
        if code != 0:
            tail = err_file.read_text()[-1500:].strip()
            raise LatencyTableError(f"a profiling session (a process of its own) failed with "
                                    f"exit code {code} while timing {len(units)} part(s) for "
                                    f"{table.path}; what it said:\n{tail}")


def main(argv=None) -> int:
    """`python -m attndsl.nas.latency JOB.json`: one profiling session (fill's `isolate`)."""
    import sys
    from attndsl.nas import latency as this          # not __main__'s copy of the classes
    from attndsl.nas.space import Deploy
    argv = sys.argv[1:] if argv is None else argv
    job = json.loads(Path(argv[0]).read_text())
    torch.set_num_threads(job["threads"])
    table = this.LatencyTable.open(job["table"], job["fingerprint"])
    units = [this._unit_from_json(u) for u in job["units"]]

    def save(results):
        table.record(units, job["session"], results)
        table.save()

    def progress(what, done, total):
        print(json.dumps({"what": what, "done": done, "total": total}), flush=True)

    this.measure_session(units, Deploy.model_validate(job["deploy"]),
                         device=torch.device(job["device"]), rounds=job["rounds"],
                         seconds=job["seconds"], seed=job["seed"], on_round=save,
                         on_progress=progress)
    return 0


# ---------------------------------------------------------------- a space's designs
@dataclass
class SpaceParts:
    """What a space can build at a deploy size: its designs (enumerated, or sampled when
    there are more than MAX_DESIGNS) and their distinct parts."""
    designs: list[tuple[dict, Backbone]]      # (params, backbone), feasible ones
    parts: list[Part]
    exhaustive: bool                          # every design of the space is listed
    infeasible: int                           # designs that don't bind at that size


def _leaf_values(leaf) -> list | None:
    if leaf.kind == "choice":
        return list(leaf.labels)
    if leaf.kind == "int":
        step = int(leaf.step or 1)
        values = list(range(int(leaf.low), int(leaf.high) + 1, step))
        return values if len(values) <= 64 else None
    return None          # a real-valued range in the backbone: not enumerable


class _Need(Exception):
    def __init__(self, leaf):
        self.leaf = leaf


def enumerate_designs(space, limit: int = MAX_DESIGNS) -> Iterator[dict] | None:
    """Every assignment of the space's backbone leaves (define-by-run: a leaf inside an
    option exists only when that option is chosen); None when a backbone leaf is a real
    range or there are more than `limit`."""
    out: list[dict] = []
    stack: list[dict] = [{}]
    while stack:
        assigned = stack.pop()

        def pick(leaf):
            if leaf.name in assigned:
                return assigned[leaf.name]
            raise _Need(leaf)
        try:
            space.backbone_data(pick)
        except _Need as need:
            values = _leaf_values(need.leaf)
            if values is None:
                return None
            stack.extend({**assigned, need.leaf.name: v} for v in reversed(values))
            continue
        out.append(assigned)
        if len(out) > limit:
            return None
    return iter(out)


def _backbone_of(space, params: dict) -> Backbone | None:
    from ..model.spec import validate_backbone
    try:
        data, _ = space.backbone_data(lambda leaf: params.get(leaf.name, leaf.default_value()))
        return validate_backbone(data, lines=space.lines, origin=space.origin,
                                 prefix=("backbone",))
    except SpecError:
        return None


def _feasible(backbone: Backbone, resolution: int) -> bool:
    from ..model.net import bind_stages
    try:
        bind_stages(backbone)
        bind_stages(backbone, resolution)
    except SpecError:
        return False
    return True


def space_parts(space, resolution: int, *, limit: int = MAX_DESIGNS, sample: int = 2000,
                seed: int = 0) -> SpaceParts:
    """The designs of `space` that bind at `resolution` and their distinct parts. A space
    with a real-valued backbone leaf or more than `limit` designs is sampled (`sample`
    random designs, seeded) instead of listed."""
    assignments = enumerate_designs(space, limit)
    exhaustive = assignments is not None
    if not exhaustive:
        assignments = _sampled_assignments(space, sample, seed)
    designs, seen, infeasible, parts = [], set(), 0, {}
    for params in assignments:
        backbone = _backbone_of(space, params)
        if backbone is None or not _feasible(backbone, resolution):
            infeasible += 1
            continue
        digest = canonical_hash(backbone)
        if digest in seen:
            continue
        seen.add(digest)
        designs.append((params, backbone))
        for p in design_parts(backbone, resolution):
            parts.setdefault(p.key, p)
    return SpaceParts(designs, list(parts.values()), exhaustive, infeasible)


def _sampled_assignments(space, n: int, seed: int) -> list[dict]:
    import optuna

    from .space import suggest
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    out = []
    for _ in range(n):
        trial = study.ask()
        _, params = space.backbone_data(lambda leaf: suggest(trial, leaf))
        out.append(params)
        study.tell(trial, 0.0)
    return out


# ---------------------------------------------------------------- the check
def check_table(table: LatencyTable, space, deploy, designs: list[tuple[dict, Backbone]], *,
                device=None, sessions: int = 1, isolate: bool = False,
                rounds: int = DEFAULT_ROUNDS, seconds: float = DEFAULT_PART_SECONDS,
                seed: int = 0, on_progress=None, timer=None) -> dict:
    """Time `designs` whole by the parts' protocol (`sessions` sessions of `rounds`
    rounds) and compare with their composed latency: Kendall τ, Spearman ρ, MAPE and the
    median residual (whole − composed: what composition misses). Recorded in the table;
    resumable like the parts (the designs' sessions are in it)."""
    from scipy.stats import kendalltau, spearmanr

    from .runner import design_name
    resolution = deploy.resolution or designs[0][1].image_size
    units = [WholeDesign(b, design_name(0, space, params).removeprefix("t0_"), resolution)
             for params, b in designs]
    composed = [table.compose(design_parts(b, resolution))["latency_ms"] for _, b in designs]
    fill(table, units, deploy, sessions=sessions, isolate=isolate, device=device,
         rounds=rounds, seconds=seconds, seed=seed, on_progress=on_progress, timer=timer)
    entries = [table.designs[u.key] for u in units]
    whole_ms = [e["latency_ms"] for e in entries]
    tau = kendalltau(composed, whole_ms).statistic
    rho = spearmanr(composed, whole_ms).statistic
    errors = [abs(c - w) / w for c, w in zip(composed, whole_ms)]
    residual = [w - c for c, w in zip(composed, whole_ms)]
    check = {
        "designs": len(designs), "kendall_tau": _finite(tau), "spearman": _finite(rho),
        "whole_repeat_tau": _session_agreement(entries),
        "mape": statistics.fmean(errors), "median_residual_ms": statistics.median(residual),
        "median_residual": statistics.median(r / w for r, w in zip(residual, whole_ms)),
        "sessions": min(e["session_count"] for e in entries), "rounds": rounds,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "rows": [{"name": u.name, "hash": canonical_hash(u.backbone), "composed_ms": c,
                  "whole_ms": w, "whole_spread": e["spread_ms"] / w}
                 for u, c, w, e in zip(units, composed, whole_ms, entries)],
    }
    table.data["check"] = check
    table.save()
    return check


def _session_agreement(entries: list[dict]) -> float | None:
    """Kendall τ of whole-model timing with itself: the designs' fastest rounds in one
    session against another's, median over the session pairs that timed every design.
    The ceiling of the check's τ — composition can't rank designs more consistently with
    whole-model timing than that timing ranks them with itself. None with one session."""
    from itertools import combinations

    from scipy.stats import kendalltau
    shared = set.intersection(*(set(e["sessions"]) for e in entries)) if entries else set()
    best = {s: [min(e["sessions"][s]["rounds_ms"]) for e in entries] for s in sorted(shared)
            if all(e["sessions"][s].get("rounds_ms") for e in entries)}
    taus = [_finite(kendalltau(best[a], best[b]).statistic) for a, b in combinations(best, 2)]
    return statistics.median(taus) if taus else None


def _finite(value) -> float:
    # scipy gives NaN when one side is constant (a one-design check): no rank information
    return 0.0 if value != value else float(value)


def describe_check(check: dict | None) -> str:
    if not check:
        return ("unverified: no check on record (attndsl profile SPACE.yaml --check 30 times "
                "30 designs whole against their composed latency)")
    return (f"checked on {check['designs']} designs timed whole: Kendall τ "
            f"{check['kendall_tau']:.3f}, Spearman ρ {check['spearman']:.3f}, MAPE "
            f"{check['mape'] * 100:.1f}%, median residual {check['median_residual_ms']:+.2f} ms "
            f"({check['median_residual'] * 100:+.1f}%)"
            + (f"; whole-model timing agrees with itself across sessions at τ "
               f"{check['whole_repeat_tau']:.3f} (the ceiling)"
               if check.get("whole_repeat_tau") is not None else ""))


def pick_check_designs(parts: SpaceParts, n: int, seed: int = 0) -> list[tuple[dict, Backbone]]:
    rng = random.Random(seed)
    designs = list(parts.designs)
    rng.shuffle(designs)
    return designs[:n]


__all__ = ["LatencyTable", "LatencyTableError", "Part", "SpaceParts", "WholeDesign",
           "check_table", "default_table_path", "describe_check", "design_parts",
           "enumerate_designs", "fill", "measure_session", "pick_check_designs", "profile",
           "space_parts", "table_fingerprint"]


# ---------------------------------------------------------------- attndsl profile
@dataclass
class ProfileResult:
    path: Path
    table: LatencyTable
    parts: SpaceParts
    measured: list[Part]          # parts measured by this run (the others were in the table)
    deferred: int                 # distinct parts left for the search to measure lazily
    check: dict | None


def profile(space, *, out=None, runs_dir="attndsl-runs", device=None, threads=None,
            deploy=None, sessions: int = DEFAULT_SESSIONS, rounds: int = DEFAULT_ROUNDS,
            seconds: float = DEFAULT_PART_SECONDS, check: int = 0, max_parts: int = MAX_PARTS,
            seed: int = 0, on_progress=None, say=print, timer=None) -> ProfileResult:
    """Measure the latency table of `space` at its deploy setting on this machine (see the
    module's docstring), then with `check` > 0 verify it on that many random designs timed
    whole. `out`: the table file (default: the one a search under `runs_dir` with the same
    fingerprint uses). Every session runs in a fresh process (in this one when the tests
    give a fake `timer`). Resumable and incremental: parts already in the table with
    `sessions` sessions of `rounds` rounds are not measured again."""
    from .measure import default_device
    from .space import SearchSpace, load_space
    space = space if isinstance(space, SearchSpace) else load_space(space)
    deploy = deploy or space.file.deploy
    if threads:
        torch.set_num_threads(int(threads))
    device = default_device(device)
    resolution = deploy.resolution or space.template["image_size"]
    print_ = table_fingerprint(device, deploy, resolution)
    path = Path(out) if out else default_table_path(runs_dir, print_)
    table = LatencyTable.open(path, print_)
    if table.fingerprint != print_:
        differs = [f"{k}: table {table.fingerprint.get(k)!r}, here {print_.get(k)!r}"
                   for k in sorted(set(table.fingerprint) | set(print_))
                   if table.fingerprint.get(k) != print_.get(k)]
        raise LatencyTableError(f"latency table {path} was measured elsewhere or at another "
                                f"setting ({'; '.join(differs)}); give another --out, or "
                                "profile with the same settings")
    parts = space_parts(space, resolution, seed=seed)
    if not parts.designs:
        raise LatencyTableError(f"{space.name}: no design of the space binds at {resolution}px "
                                "(every combination fails a bind-time rule): nothing to profile")
    wanted, deferred = parts.parts, 0
    if len(wanted) > max_parts:
        # too many to time up front: those of the first designs (seeded), the rest lazily
        chosen: dict = {}
        for _, backbone in pick_check_designs(parts, len(parts.designs), seed):
            for p in design_parts(backbone, resolution):
                if len(chosen) < max_parts or p.key in chosen:
                    chosen.setdefault(p.key, p)
        deferred, wanted = len(wanted) - len(chosen), list(chosen.values())
    scope = (f"{len(parts.designs)} designs" if parts.exhaustive else
             f"{len(parts.designs)} sampled designs (the space has too many to list)")
    say(f"{space.name}: {scope} bind at {resolution}px, with {len(parts.parts)} distinct "
        f"parts; {len(table.missing(wanted, sessions, rounds))} to measure on "
        f"{describe_fingerprint(print_)}, in {sessions} session(s) of {rounds} rounds"
        + (f"; {deferred} more are measured lazily, as the search meets them (--max-parts "
           f"{max_parts})" if deferred else ""))
    timing = dict(sessions=sessions, isolate=timer is None, device=device, rounds=rounds,
                  seconds=seconds, seed=seed, on_progress=on_progress, timer=timer)
    measured = fill(table, wanted, deploy, **timing)
    result = None
    if check:
        chosen = pick_check_designs(parts, check, seed)
        # a design of the check whose parts were deferred: its parts now
        fill(table, [p for _, b in chosen for p in design_parts(b, resolution)], deploy,
             **timing)
        if len(chosen) < check:
            say(f"the space has {len(chosen)} distinct designs that bind: the check times all "
                "of them")
        result = check_table(table, space, deploy, chosen, **timing)
    table.save()
    return ProfileResult(path, table, parts, measured, deferred, result)


# ---------------------------------------------------------------- in a search
def search_table(space, deploy, *, table=None, runs_dir="attndsl-runs", device=None,
                 threads=None, say=None) -> dict | None:
    """The latency table a search composes its throughput from (deploy.latency: table):
    `table` (--latency-table) or, without one, the runs folder's table of this machine and
    setting. A table from another machine (the deployment machine) must hold every part
    of the space: the search refuses before its first trial otherwise, naming the parts
    and the command that measures them there. Returns the job's view of it."""
    from .measure import default_device
    if deploy.latency != "table":
        return None
    device = default_device(device)
    resolution = deploy.resolution or space.template["image_size"]
    here = table_fingerprint(device, deploy, resolution, threads or torch.get_num_threads())
    if table is None:
        path = default_table_path(runs_dir, here)
        opened = LatencyTable.open(path, here, replace_outdated=True)   # a cache of ours
        foreign = False
    else:
        path = Path(table).resolve()
        opened = LatencyTable.open(path)
        wrong = opened.mismatch(here)
        if wrong:
            raise LatencyTableError(
                f"--latency-table {table} was measured at another deploy setting: "
                f"{'; '.join(wrong)}. Profile it at the space's setting, or search at the "
                "table's (--deploy-batch, --deploy-resolution, --deploy-dtype, "
                "--deploy-autocast)")
        foreign = not opened.same_machine(here)
        if not foreign and opened.fingerprint != here:
            foreign = True          # same machine, another detail of the fingerprint
    if foreign:
        parts = space_parts(space, resolution)
        missing = opened.missing(parts.parts)
        if missing:
            print_ = opened.fingerprint
            shown = "; ".join(p.label for p in missing[:8]) + (
                f"; … {len(missing) - 8} more" if len(missing) > 8 else "")
            threads_arg = (f" --threads {print_.get('threads')}"
                           if print_.get("device_type") == "cpu" else "")
            raise LatencyTableError(
                f"--latency-table {table} was measured on {describe_fingerprint(print_)}, not "
                f"on this machine ({describe_fingerprint(here)}), and lacks {len(missing)} "
                f"part(s) this space can build: {shown}. Measure them on that machine "
                f"(the table grows, nothing is measured twice): attndsl profile "
                f"{space.origin or 'SPACE.yaml'} --device {print_.get('device_type')}"
                f"{threads_arg} --out {Path(table).name}")
        if not parts.exhaustive and say:
            say(f"the space has too many designs to check the table for all of them: a trial "
                f"that meets a part {path.name} lacks fails, saying which")
    if say:
        check = opened.data.get("check")
        where = "another machine's" if foreign else "this machine's"
        say(f"latency from {where} table {path} ({len(opened.parts)} parts): "
            + describe_check(check))
        if check and check["kendall_tau"] < CHECK_WARN_TAU:
            say(f"warning: the table's check has Kendall τ {check['kendall_tau']:.3f} < "
                f"{CHECK_WARN_TAU}: composed latency may rank designs wrongly on this space; "
                "consider deploy.latency: measured")
    return {"path": str(path), "foreign": foreign, "fingerprint": opened.fingerprint,
            "check": opened.data.get("check")}


def table_measure(backbone: Backbone, deploy, info: dict, *, device=None, lock=None) -> dict:
    """A trial's throughput and model figures with the latency composed from the table:
    parts the table lacks are measured now (under the host's measurement lock when several
    workers share the CPU) and added — unless the table is another machine's. Parameters,
    FLOPs and the peak memory come from an eager build (no compile at all)."""
    import contextlib

    from ..model.net import BackboneNet, count_flops, count_parameters
    from .measure import DTYPES, NOISY_SPREAD, default_device, peak_tensor_memory
    device = default_device(device)
    resolution = deploy.resolution or backbone.image_size
    parts = design_parts(backbone, resolution)
    started = time.perf_counter()
    table = LatencyTable.open(info["path"], info["fingerprint"],
                              replace_outdated=not info.get("foreign"))
    missing = table.missing(parts)
    if missing and info.get("foreign"):
        raise LatencyTableError(f"the latency table {info['path']} (another machine's) lacks "
                                f"{len(missing)} part(s) of this design: "
                                + "; ".join(p.label for p in missing[:4]))
    if missing:
        here = table_fingerprint(device, deploy, resolution)
        if here != table.fingerprint:
            raise LatencyTableError(f"this trial runs on {describe_fingerprint(here)}, not on "
                                    f"the table's {describe_fingerprint(table.fingerprint)}")
        with lock.exclusive() if lock else contextlib.nullcontext():
            table.reload()     # parts another worker measured meanwhile are not redone
            fill(table, parts, deploy, device=device)   # one session, in this process
    measured_s = time.perf_counter() - started
    composed = table.compose(parts)
    eager = BackboneNet(backbone, image_size=resolution, backend="eager",
                        dtype=DTYPES[deploy.dtype]).eval()
    latency_s = composed["latency_ms"] / 1e3
    return {
        "images_per_s": deploy.batch / latency_s, "latency_ms": composed["latency_ms"],
        "spread": composed["spread"], "iqr_ms": composed["spread_ms"],
        "samples": min(table.parts[p.key]["rounds"] for p in parts), "attempts": 1,
        "noisy": composed["spread"] > NOISY_SPREAD, "compile_s": measured_s,
        "params": count_parameters(eager), "flops": count_flops(backbone, net=eager),
        "peak_memory_mb": peak_tensor_memory(eager, deploy.batch) / 2**20,
        "cuda_graph": device.type == "cuda", "fingerprint": table.fingerprint,
        "latency_source": "table", "parts": len(parts), "parts_measured": len(missing),
        "cached": not missing,
    }


if __name__ == "__main__":
    raise SystemExit(main())
