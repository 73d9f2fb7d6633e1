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

Measurement protocol (`measure_parts`): every part is built and warmed up (the compile is
timed apart), then timed over R rounds; each round times every part once, in a new random
order, with torch's blocked_autorange (CPU) or CUDA events (GPU), so drift of the machine
falls on all parts alike. A part's latency is the median of its rounds, its spread the IQR.
The table is written after every round: a killed profile resumes where it stopped, and a
profile of a grown space measures only the new parts.
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
from ..spec.io import spec_to_dict

TABLE_FORMAT = "attndsl-latency-table/1"
DEFAULT_ROUNDS = 15          # rounds per part: the median of 15 interleaved samples
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


# ---------------------------------------------------------------- measuring
def measure_parts(parts: list[Part], deploy, *, device=None, rounds: int = DEFAULT_ROUNDS,
                  seconds: float = DEFAULT_PART_SECONDS, seed: int = 0,
                  done: dict | None = None,
                  on_round: Callable[[dict], None] | None = None,
                  on_progress: Callable[[str, int, int], None] | None = None,
                  timer: Callable | None = None) -> dict:
    """Time `parts` interleaved over `rounds` rounds (see the module's docstring); `done`:
    rounds already recorded per part key (a resumed profile adds the rest). Returns
    {key: {"rounds_ms": [...], "compile_s": s}}; `on_round(results)` after every round.
    `timer(part, call, device, seconds)`: what samples a part (default: PartTimer; the
    tests give a fake clock)."""
    from .measure import _autocast, _sync, default_device
    device = default_device(device)
    results = {p.key: {"rounds_ms": list((done or {}).get(p.key, {}).get("rounds_ms", [])),
                       "compile_s": (done or {}).get(p.key, {}).get("compile_s")}
               for p in parts}
    todo = [p for p in parts if len(results[p.key]["rounds_ms"]) < rounds]
    calls = {}
    with torch.no_grad(), _autocast(deploy, device):
        for i, part in enumerate(todo):
            if on_progress:
                on_progress(f"building {part.label}", i, len(todo))
            started = time.perf_counter()
            module, x = build_part(part, deploy, device)
            module(x)                 # compiles (auto / inductor)
            _sync(device)
            if results[part.key]["compile_s"] is None:
                results[part.key]["compile_s"] = time.perf_counter() - started
            calls[part.key] = (timer or PartTimer)(part, lambda m=module, t=x: m(t), device,
                                                   seconds)
        rng = random.Random(seed)
        order = list(todo)
        for r in range(rounds):
            pending = [p for p in order if len(results[p.key]["rounds_ms"]) < rounds]
            if not pending:
                break
            rng.shuffle(pending)
            for part in pending:
                results[part.key]["rounds_ms"].append(calls[part.key].sample() * 1e3)
            if on_progress:
                on_progress(f"round {r + 1} of {rounds}", r + 1, rounds)
            if on_round:
                on_round(results)
    return results


class PartTimer:
    """Seconds per call of one part: `n` back-to-back calls between two clock readings (or
    two CUDA events around the replays of a captured CUDA graph), with `n` set once so that
    a sample lasts about `seconds`. torch's blocked_autorange calibrates anew on every call,
    which costs more than the sample itself at a table's 20 parts × 15 rounds."""

    def __init__(self, part: Part, call, device, seconds: float):
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


def summarize(rounds_ms: list[float]) -> dict:
    from .measure import spread_of
    median = statistics.median(rounds_ms)
    return {"latency_ms": median, "iqr_ms": spread_of(rounds_ms) * median,
            "rounds": len(rounds_ms)}


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
    """A table on disk: {"format", "fingerprint", "parts": {key: entry}, "check"}. Every
    write merges with what is on disk under a lock (several workers may add parts) and
    replaces the file atomically (a reader never sees half of one)."""

    def __init__(self, path, data: dict):
        self.path, self.data = Path(path), data

    @classmethod
    def open(cls, path, fingerprint: dict | None = None) -> "LatencyTable":
        """Read `path`; a missing file is a new table for `fingerprint`."""
        path = Path(path)
        if not path.exists():
            if fingerprint is None:
                raise LatencyTableError(f"latency table {path}: no such file (attndsl profile "
                                        "SPACE.yaml --out TABLE.json makes one)")
            return cls(path, {"format": TABLE_FORMAT, "fingerprint": fingerprint, "parts": {},
                              "created": time.strftime("%Y-%m-%dT%H:%M:%S")})
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise LatencyTableError(f"latency table {path}: not readable as JSON ({exc}); "
                                    "remove it and profile again") from None
        if not isinstance(data, dict) or data.get("format") != TABLE_FORMAT:
            raise LatencyTableError(f"latency table {path}: not an attndsl latency table "
                                    f"(format {data.get('format') if isinstance(data, dict) else None!r}"
                                    f", expected {TABLE_FORMAT!r})")
        return cls(path, data)

    @property
    def fingerprint(self) -> dict:
        return self.data["fingerprint"]

    @property
    def parts(self) -> dict:
        return self.data.setdefault("parts", {})

    def complete(self, key: str, rounds: int = 1) -> bool:
        entry = self.parts.get(key)
        return entry is not None and len(entry.get("rounds_ms", [])) >= rounds

    def missing(self, parts, rounds: int = 1) -> list[Part]:
        seen, out = set(), []
        for p in parts:
            if p.key not in seen and not self.complete(p.key, rounds):
                seen.add(p.key)
                out.append(p)
        return out

    def record(self, parts: list[Part], results: dict) -> None:
        for p in parts:
            r = results.get(p.key)
            if r and r["rounds_ms"]:
                self.parts[p.key] = {"kind": p.kind, "label": p.label,
                                     "config": p.settings, **summarize(r["rounds_ms"]),
                                     "rounds_ms": r["rounds_ms"], "compile_s": r["compile_s"]}

    def save(self) -> None:
        """Merge into the file on disk (the entry with more rounds wins) and write."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if self.path.exists():
                try:
                    disk = json.loads(self.path.read_text())
                except (OSError, ValueError):
                    disk = {}
                for key, entry in (disk.get("parts") or {}).items():
                    mine = self.parts.get(key)
                    if mine is None or len(mine.get("rounds_ms", [])) < len(entry.get("rounds_ms", [])):
                        self.parts[key] = entry
                if "check" in disk and "check" not in self.data:
                    self.data["check"] = disk["check"]
            self.data["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(self.data, indent=1))
            tmp.replace(self.path)

    def compose(self, parts: list[Part]) -> dict:
        """A design's latency: the sum of its parts' (each occurrence counted). The spread
        is the sum of the parts' IQRs over the sum (a conservative bound: IQRs of
        independent parts add up to at most that)."""
        absent = [p for p in parts if p.key not in self.parts]
        if absent:
            raise LatencyTableError(f"latency table {self.path}: {len(absent)} part(s) of the "
                                    f"design are not in it: {absent[0].label}")
        total = sum(self.parts[p.key]["latency_ms"] for p in parts)
        iqr = sum(self.parts[p.key]["iqr_ms"] for p in parts)
        return {"latency_ms": total, "iqr_ms": iqr, "spread": iqr / total if total else 0.0}

    def mismatch(self, print_: dict) -> list[str]:
        """The deploy settings this table was measured at that differ from `print_`'s."""
        return [f"{k} {self.fingerprint.get(k)!r} (the search deploys at {print_.get(k)!r})"
                for k in SETTING_KEYS if self.fingerprint.get(k) != print_.get(k)]

    def same_machine(self, print_: dict) -> bool:
        return all(self.fingerprint.get(k) == print_.get(k) for k in MACHINE_KEYS)


def fill(table: LatencyTable, parts: list[Part], deploy, *, device=None,
         rounds: int = DEFAULT_ROUNDS, seconds: float = DEFAULT_PART_SECONDS, seed: int = 0,
         on_progress=None, timer=None) -> list[Part]:
    """Measure the parts the table lacks (or has fewer rounds of) and save after every
    round; returns the parts measured."""
    todo = table.missing(parts, rounds)
    if not todo:
        return []
    done = {p.key: table.parts[p.key] for p in todo if p.key in table.parts}

    def save(results):
        table.record(todo, results)
        table.save()

    measure_parts(todo, deploy, device=device, rounds=rounds, seconds=seconds, seed=seed,
                  done=done, on_round=save, on_progress=on_progress, timer=timer)
    return todo


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
                device=None, rounds: int = 5, seconds: float | None = None,
                seed: int = 0, on_progress=None) -> dict:
    """Time `designs` whole (interleaved, `rounds` rounds, as the front's re-measurement
    does) and compare with their composed latency: Kendall τ, Spearman ρ, MAPE and the
    median residual (whole − composed: what composition misses). Recorded in the table."""
    from scipy.stats import kendalltau, spearmanr

    from .measure import measure_interleaved
    from .runner import design_name
    resolution = deploy.resolution or designs[0][1].image_size
    composed = [table.compose(design_parts(b, resolution))["latency_ms"] for _, b in designs]
    if on_progress:
        on_progress(f"timing {len(designs)} designs whole", 0, len(designs))
    whole = measure_interleaved([b for _, b in designs], deploy, device=device, rounds=rounds,
                                min_run_time=seconds or deploy.measure_seconds, seed=seed)
    whole_ms = [deploy.batch / w["images_per_s"] * 1e3 for w in whole]
    tau = kendalltau(composed, whole_ms).statistic
    rho = spearmanr(composed, whole_ms).statistic
    errors = [abs(c - w) / w for c, w in zip(composed, whole_ms)]
    residual = [w - c for c, w in zip(composed, whole_ms)]
    check = {
        "designs": len(designs), "kendall_tau": _finite(tau), "spearman": _finite(rho),
        "mape": statistics.fmean(errors), "median_residual_ms": statistics.median(residual),
        "median_residual": statistics.median(r / w for r, w in zip(residual, whole_ms)),
        "rounds": rounds, "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "rows": [{"name": design_name(0, space, params).removeprefix("t0_"),
                  "hash": canonical_hash(b), "composed_ms": c, "whole_ms": w,
                  "whole_spread": r["spread"]}
                 for (params, b), c, w, r in zip(designs, composed, whole_ms, whole)],
    }
    table.data["check"] = check
    table.save()
    return check


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
            f"({check['median_residual'] * 100:+.1f}%)")


def pick_check_designs(parts: SpaceParts, n: int, seed: int = 0) -> list[tuple[dict, Backbone]]:
    rng = random.Random(seed)
    designs = list(parts.designs)
    rng.shuffle(designs)
    return designs[:n]


__all__ = ["LatencyTable", "LatencyTableError", "Part", "SpaceParts", "check_table",
           "default_table_path", "describe_check", "design_parts", "enumerate_designs",
           "fill", "measure_parts", "pick_check_designs", "space_parts", "table_fingerprint"]


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
            deploy=None, rounds: int = DEFAULT_ROUNDS, seconds: float = DEFAULT_PART_SECONDS,
            check: int = 0, check_rounds: int = 5, max_parts: int = MAX_PARTS, seed: int = 0,
            on_progress=None, say=print, timer=None) -> ProfileResult:
    """Measure the latency table of `space` at its deploy setting on this machine (see the
    module's docstring), then with `check` > 0 verify it on that many random designs timed
    whole. `out`: the table file (default: the one a search under `runs_dir` with the same
    fingerprint uses). Resumable and incremental: parts already in the table with `rounds`
    rounds are not measured again."""
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
        f"parts; {len(table.missing(wanted, rounds))} to measure on {describe_fingerprint(print_)}"
        + (f"; {deferred} more are measured lazily, as the search meets them (--max-parts "
           f"{max_parts})" if deferred else ""))
    measured = fill(table, wanted, deploy, device=device, rounds=rounds, seconds=seconds,
                    seed=seed, on_progress=on_progress, timer=timer)
    result = None
    if check:
        chosen = pick_check_designs(parts, check, seed)
        # a design of the check whose parts were deferred: its parts now
        fill(table, [p for _, b in chosen for p in design_parts(b, resolution)], deploy,
             device=device, rounds=rounds, seconds=seconds, seed=seed, on_progress=on_progress,
             timer=timer)
        if len(chosen) < check:
            say(f"the space has {len(chosen)} distinct designs that bind: the check times all "
                "of them")
        result = check_table(table, space, deploy, chosen, device=device, rounds=check_rounds,
                             seed=seed, on_progress=on_progress)
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
        opened = LatencyTable.open(path, here)
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
    table = LatencyTable.open(info["path"], info["fingerprint"])
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
            table = LatencyTable.open(info["path"], info["fingerprint"])  # another's parts
            fill(table, parts, deploy, device=device)
    measured_s = time.perf_counter() - started
    composed = table.compose(parts)
    eager = BackboneNet(backbone, image_size=resolution, backend="eager",
                        dtype=DTYPES[deploy.dtype]).eval()
    latency_s = composed["latency_ms"] / 1e3
    return {
        "images_per_s": deploy.batch / latency_s, "latency_ms": composed["latency_ms"],
        "spread": composed["spread"], "iqr_ms": composed["iqr_ms"],
        "samples": min(table.parts[p.key]["rounds"] for p in parts), "attempts": 1,
        "noisy": composed["spread"] > NOISY_SPREAD, "compile_s": measured_s,
        "params": count_parameters(eager), "flops": count_flops(backbone, net=eager),
        "peak_memory_mb": peak_tensor_memory(eager, deploy.batch) / 2**20,
        "cuda_graph": device.type == "cuda", "fingerprint": table.fingerprint,
        "latency_source": "table", "parts": len(parts), "parts_measured": len(missing),
        "cached": not missing,
    }
