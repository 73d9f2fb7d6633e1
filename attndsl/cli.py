"""`attndsl` command line: validate, show, zoo, schema, compile, bench, search, report,
convert, export.

Every user error (a bad spec, a bad size, a missing file) is printed as one message
without a traceback, and the command exits with status 2.
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from .errors import ArgumentError, AttndslError
from .codegen.module import check_output_path

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)


# one default size for every command (show, compile, bench, export, convert, validate):
# Swin-T's first stage, 96 channels on the 56×56 token grid of a 224×224 image
DEFAULT_DIM = 96
DEFAULT_RESOLUTION = (56, 56)
DEFAULTS = f"--dim {DEFAULT_DIM} --resolution {DEFAULT_RESOLUTION[0]} {DEFAULT_RESOLUTION[1]}"


def _size_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dim", type=int, default=DEFAULT_DIM, help=f"model width C (default "
                   f"{DEFAULT_DIM})")
    p.add_argument("--resolution", type=int, nargs=2, metavar=("H", "W"),
                   default=list(DEFAULT_RESOLUTION), help="token grid (default "
                   f"{DEFAULT_RESOLUTION[0]} {DEFAULT_RESOLUTION[1]}: a 224×224 image's "
                   "first stage)")
    p.add_argument("--heads", type=_heads, default=None, help="override the spec's head "
                   "count (an integer, or 'channels': one head per channel)")


def _build(args, backend=None, spec=None):
    from .codegen.module import compile as compile_spec
    spec = args.spec if spec is None else spec
    _only_specs(spec, args.command)
    return compile_spec(spec, dim=args.dim, resolution=tuple(args.resolution),
                        heads=args.heads, backend=backend or getattr(args, "backend", "auto"),
                        dtype=getattr(args, "dtype", None))


def _only_specs(path, command: str) -> None:
    """Refuse a search-space (or, where only specs are taken, a backbone) file with what to
    run instead, before the spec loader reports its keys as unknown."""
    kind = yaml_kind(path)
    if kind == "space":
        raise AttndslError(
            f"{path} is a search space (a task and a backbone with choices), not an attention "
            f"spec: `attndsl search {path} --budget 15m` searches it and `attndsl validate "
            f"{path}` checks it; `attndsl {command}` takes a spec (a zoo name or spec YAML)"
            + (" or a backbone file, e.g. a search's RUN_DIR/pareto/*.yaml"
               if command in ("show", "compile") else ""))
    if kind == "backbone":
        raise AttndslError(f"{path} is a backbone file, not an attention spec: `attndsl "
                           f"show` and `attndsl compile` take backbones; `attndsl {command}` "
                           "takes one attention spec (a zoo name or spec YAML)")


# ---------------------------------------------------------------- commands
def cmd_validate(args) -> int:
    """Validate spec files, backbones and search spaces; a spec is also bound (the rules
    that need a width and a grid: heads dividing the width, windows against the grid,
    memory) at --dim/--resolution, or at the defaults, which the output names."""
    from .lang import bind, load_spec
    failed = 0
    defaults = args.dim is None and args.resolution is None
    dim = DEFAULT_DIM if args.dim is None else args.dim
    resolution = DEFAULT_RESOLUTION if args.resolution is None else args.resolution
    at = (f"dim {dim}, grid {resolution[0]}×{resolution[1]}"
          + (" — the defaults; check others with --dim/--resolution" if defaults else ""))
    for path in args.specs:
        kind = "spec"
        try:
            kind = yaml_kind(path)
            if kind == "space":
                from .nas.space import load_space
                space = load_space(path)
                seeds = space.seeds()
                out.print(f"[green]ok[/green]    {path}  (search space {space.name}: "
                          f"{len(space.leaves)} leaves, task {space.file.task.kind}"
                          + (f", zoo seeds {', '.join(seeds)}" if seeds else "") + ")")
                from .nas.space import option_warnings
                for warning in option_warnings(space):
                    out.print(f"[yellow]note[/yellow]  {escape(warning)}")
                continue
            if kind == "backbone":
                from .model.net import bind_stages
                from .model.spec import load_backbone
                backbone = load_backbone(path)
                grids = bind_stages(backbone)
                out.print(f"[green]ok[/green]    {path}  (backbone {backbone.name}: "
                          f"{len(backbone.stages)} stages, grids "
                          f"{', '.join(f'{g[0]}x{g[1]}' for g in grids)})")
                continue
            spec = load_spec(path)
            from .codegen.footprint import check_footprint
            check_footprint(bind(spec, dim, tuple(resolution)))
            out.print(f"[green]ok[/green]    {path}  ({spec.name}, {len(spec.branches)} "
                      f"branch{'es' if len(spec.branches) > 1 else ''}; binds at {at})")
        except AttndslError as exc:
            failed += 1
            where = "" if getattr(exc, "source", None) else f"{path}: "
            bound = f" (checked at {at})" if kind == "spec" and getattr(exc, "path", "") \
                not in ("", None) and defaults else ""
            err.print(f"[red]error[/red] {escape(where + str(exc) + bound)}")
    return 2 if failed else 0


def cmd_show(args) -> int:
    """Show what a spec lowers to: the plan, the generated forward, the graph, the params
    (for a backbone file: its stages, grids, attention, parameters and FLOPs)."""
    from .lang import dump_spec
    if yaml_kind(args.spec) == "backbone":
        return _show_backbone(args.spec)
    module = _build(args)
    plan = module.plan
    if args.plan:
        # the rules and evidence of the device asked for; nothing runs there, so a GPU
        # plan can be read on a machine without one
        import torch
        from .codegen.autoplan import explain
        from .codegen.module import check_attention, resolve_dtype
        out.print(escape(explain(plan, module.backend, device=args.device,
                                 dtype=resolve_dtype(args.dtype) or torch.float32,
                                 attention=check_attention(args.attention))))
    if not (args.code or args.graph or args.params or args.plan):
        out.print(escape(dump_spec(module.spec).rstrip()))
        out.print(f"# bound at dim={plan.dim}, resolution={plan.resolution}, heads={plan.heads} "
                  f"(d={plan.head_dim})")
        for bp in plan.branches:
            out.print(f"#   branch {bp.name}: {bp.heads} heads, channels {bp.channels}, "
                      f"q/k width {bp.qk_dim}, |S(i)| from {bp.spec.application.kind}")
        return 0
    if args.code:
        out.print(escape(module.code.strip()))
    if args.graph:
        out.print(escape(str(module.graph_module().graph)))
    if args.params:
        table = Table("parameter", "shape", "numel", title=f"{module.spec.name} parameters")
        total = 0
        for name, p in module.named_parameters():
            table.add_row(name, "×".join(map(str, p.shape)), f"{p.numel():,}")
            total += p.numel()
        table.add_row("[b]total[/b]", "", f"[b]{total:,}[/b]")
        out.print(table)
    return 0


def _show_backbone(path) -> int:
    from .model.net import bind_stages, build_model, count_flops, count_parameters
    from .model.spec import load_backbone
    backbone = load_backbone(path)
    grids = bind_stages(backbone)
    net = build_model(backbone, backend="eager")
    table = Table("stage", "grid", "depth", "dim", "heads", "mlp", "attention (per block)",
                  "params", title=f"{backbone.name}: {backbone.image_size}×"
                  f"{backbone.image_size}×{backbone.in_channels} → {backbone.classes} classes")
    for i, (stage, grid, module) in enumerate(zip(backbone.stages, grids, net.stages)):
        names = [s if s == "none" else s.name for s in stage.attention] or ["none"]
        extras = [x for x, on in (("peg", stage.peg), ("ffn dwconv", stage.ffn_dwconv)) if on]
        table.add_row(str(i), f"{grid[0]}×{grid[1]}", str(stage.depth), str(stage.dim),
                      str(stage.heads), f"{stage.mlp_ratio:g}",
                      escape(" / ".join(names) + (f" (+{', '.join(extras)})" if extras else "")),
                      f"{count_parameters(module):,}")
    out.print(table)
    out.print(f"{count_parameters(net):,} parameters, {count_flops(backbone) / 1e6:,.1f} MFLOPs "
              f"per image (a multiply-add counts 2)")
    return 0


def cmd_zoo(args) -> int:
    """List the zoo's specs, one line each: the name, what it is (the description up to
    its first colon or semicolon) and the paper's authors; --long for the whole
    descriptions and papers, --json for machines."""
    from .lang import load_spec
    from .zoo import zoo_paths
    if args.json:
        rows = [{"name": (s := load_spec(p)).name, "path": str(p), "description": s.description,
                 "paper": s.paper} for p in zoo_paths()]
        out.print(json.dumps(rows, indent=1))
        return 0
    specs = [load_spec(path) for path in zoo_paths()]
    if not args.long:
        # one line each, never cut: a line longer than the terminal wraps there
        width = max(len(s.name) for s in specs)
        out.print(f"[b]attndsl zoo[/b]: {len(specs)} specs (`attndsl zoo --long`: whole "
                  "descriptions and papers)")
        for spec in specs:
            cite = _authors(spec.paper)
            out.print(f"{spec.name:<{width}}  {escape(_lead(spec.description))}"
                      + (f" — {escape(cite)}" if cite else ""))
        return 0
    table = Table(title="attndsl zoo", show_lines=False)
    # names are what users type: never wrapped or cut, whatever the terminal's width
    table.add_column("name", no_wrap=True, min_width=max(len(s.name) for s in specs))
    table.add_column("description", overflow="fold")
    table.add_column("paper", overflow="fold")
    for spec in specs:
        table.add_row(spec.name, escape(spec.description), escape(spec.paper))
    out.print(table)
    return 0


def _lead(text: str) -> str:
    """A description's first clause: up to its first colon, semicolon or sentence end outside
    brackets, leaving out bracketed asides longer than a few words."""
    depth, start, kept = 0, 0, []
    for i, c in enumerate(text):
        if c in "([":
            if depth == 0:
                kept.append(text[start:i])
                start = i
            depth += 1
        elif c in ")]" and depth:
            depth -= 1
            if depth == 0:
                aside = text[start:i + 1]
                kept.append(aside if len(aside) <= 32 else "")
                start = i + 1
        elif depth == 0 and (c in ":;" or (c == "." and text[i + 1:i + 2] in (" ", ""))):
            break
    else:
        i = len(text)
    kept.append(text[start:i] if depth == 0 else "")
    return re.sub(r"\s+", " ", "".join(kept)).strip().rstrip(",")


def _authors(paper: str) -> str:
    """'Swin Transformer (Liu et al., ICCV 2021, arXiv:…)' → 'Liu et al., ICCV 2021'."""
    for group in reversed(re.findall(r"\(([^()]*)\)", paper)):
        if "et al" in group or "&" in group:
            return ", ".join(p.strip() for p in group.split(",")
                             if p.strip() and not p.strip().startswith("arXiv"))
    return ""


def cmd_schema(args) -> int:
    """Print the JSON Schema of specs (for editor validation and completion)."""
    from .lang.io import spec_json_schema
    print(json.dumps(spec_json_schema(), indent=1))
    return 0


def yaml_kind(path) -> str:
    """'space', 'backbone' or 'spec': what a YAML file (or zoo name) describes."""
    from .lang.io import is_yaml_path
    p = Path(str(path))
    if not is_yaml_path(str(path)) or not p.is_file():
        return "spec"
    import yaml
    try:
        data = yaml.safe_load(p.read_text())
    except (yaml.YAMLError, OSError, UnicodeDecodeError):
        return "spec"     # the spec loader reports the problem with its line
    from .model.spec import is_backbone_data
    from .nas.space import is_space_data
    if is_space_data(data):
        return "space"
    return "backbone" if is_backbone_data(data) else "spec"


def cmd_compile(args) -> int:
    """Compile a spec (or a backbone file, e.g. a search's pareto/*.yaml) and save it (spec +
    sizes + state dict); load with attndsl.load."""
    if yaml_kind(args.spec) == "backbone":
        from .model.net import build_model, count_parameters
        check_output_path(args.out, "model file")
        net = build_model(args.spec, backend=args.backend)
        net.save(args.out)
        out.print(f"wrote {args.out}: backbone {net.spec.name} for {net.image_size}×"
                  f"{net.image_size} images, {len(net.spec.stages)} stages, "
                  f"{count_parameters(net):,} parameters")
        return 0
    if args.out.suffix in (".onnx", ".pt2"):
        raise AttndslError(f"--out {args.out}: compile writes an attndsl module file (.pt, "
                           f"read back by attndsl.load); for {args.out.suffix} use `attndsl "
                           f"export {args.spec} --out {args.out}`")
    check_output_path(args.out, "module file")
    module = _build(args, backend=args.backend)
    module.save(args.out)
    n = sum(p.numel() for p in module.parameters())
    out.print(f"wrote {args.out}: {module.spec.name} at dim={module.dim}, "
              f"resolution={module.resolution}, {n:,} parameters")
    return 0


def _interleaved(calls: list, x_of: list, repeats: int) -> list[list[float]]:
    """Seconds of each call, in `repeats` rounds: every call runs once per round, the order
    rotating from round to round, so that a slow spell of a shared (or throttled) machine
    falls on all of them rather than on whichever ran then. One warm-up call each first
    (it compiles)."""
    import torch
    times: list[list[float]] = [[] for _ in calls]
    with torch.no_grad():
        for fn, x in zip(calls, x_of):
            fn(x)
        for r in range(repeats):
            for k in range(len(calls)):
                i = (k + r) % len(calls)
                t0 = time.perf_counter()
                calls[i](x_of[i])
                times[i].append(time.perf_counter() - t0)
    return times


def cmd_bench(args) -> int:
    """Validate, compile and run specs; time the chosen backend against the eager graph. Several
    specs are timed together, in interleaved rounds, into one table."""
    import torch
    torch.set_num_threads(args.threads)
    from .codegen.lower import lower
    if args.repeats < 1:
        raise AttndslError(f"--repeats must be at least 1, got {args.repeats}")
    H, W = args.resolution
    rows, calls, inputs = [], [], []
    for spec in args.specs:
        torch.manual_seed(0)
        module = _build(args, backend=args.backend, spec=spec).eval()
        x = torch.randn(args.batch, H, W, args.dim, dtype=module._dtype_device()[0])
        plan = module.plan
        n = sum(p.numel() for p in module.parameters())
        out.print(f"[b]{module.spec.name}[/b] — {escape(module.spec.description)}")
        out.print(f"  bound: dim={plan.dim}, resolution={plan.resolution}, heads={plan.heads}, "
                  f"branches={escape(str([b.name for b in plan.branches]))}, {n:,} parameters")
        t0 = time.perf_counter()
        gm = lower(plan, module._param_modules(), dtype=x.dtype, training=False,
                   passes=module.passes)
        out.print(f"  lowered to an fx graph of {len(gm.graph.nodes)} nodes "
                  f"in {1e3 * (time.perf_counter() - t0):.1f} ms")
        with torch.no_grad():
            y = module(x)
        out.print(f"  forward: x {tuple(x.shape)} → y {tuple(y.shape)}, "
                  f"finite={bool(torch.isfinite(y).all())}")
        rows.append((module.spec.name, "eager (fx graph)", len(calls)))
        calls.append(gm)
        inputs.append(x)
        if args.backend != "eager":
            rows.append((module.spec.name, args.backend, len(calls)))
            calls.append(module)
            inputs.append(x)
    times = _interleaved(calls, inputs, args.repeats)
    several = len(args.specs) > 1
    table = Table(*(["spec"] if several else []), "backend", "median ms", "min ms", "vs eager",
                  title=f"B={args.batch}, {H}×{W}, C={args.dim}, {inputs[0].dtype}, "
                        f"{args.threads} thread(s), {args.repeats} interleaved rounds")
    eager_median = {}
    for name, backend, i in rows:
        med = statistics.median(times[i])
        eager_median.setdefault(name, med)
        table.add_row(*([name] if several else []), backend, f"{1e3 * med:.2f}",
                      f"{1e3 * min(times[i]):.2f}", f"{eager_median[name] / med:.2f}×")
    out.print(table)
    return 0


def _load_state_dict(path: Path) -> dict:
    import torch
    if not path.exists():
        raise AttndslError(f"no such checkpoint: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise AttndslError(f"{path} is not a torch checkpoint torch.load(weights_only=True) "
                           f"can read: {type(exc).__name__}: {exc}") from exc
    # training checkpoints wrap the weights: {"model": …} (timm, Swin, LITv2), {"state_dict": …}
    for key in ("state_dict", "model", "module"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(hasattr(v, "shape") for v in obj.values()):
        raise AttndslError(f"{path} holds no state dict (a mapping of names to tensors)")
    return obj


def cmd_convert(args) -> int:
    """Convert a checkpoint between a known layout (timm, LITv2, ELSA, BOAT, CSWin, EfficientViT) and a zoo
    spec's attndsl parameter names, both ways (--reverse); --list shows the layouts."""
    import torch

    from .convert import LAYOUTS, convert
    if args.list:
        rows = [(name, "\n".join(LAYOUTS[name].zoo), LAYOUTS[name].module, LAYOUTS[name].source)
                for name in sorted(LAYOUTS)]
        _print_fitted(("layout", "zoo specs", "module", "source"), rows, names=2,
                      drop=("source", "module"), where="docs/layout-sources.md")
        return 0
    missing = [f"--{a}" for a in ("layout", "spec", "out") if not getattr(args, a)]
    if args.checkpoint is None or missing:
        raise AttndslError(f"convert needs CHECKPOINT and {', '.join(missing) or 'nothing'}"
                           "; see `attndsl convert --help`, `attndsl convert --list`")
    check_output_path(args.out, "converted state dict")
    module = _build(args, backend="eager")
    sd = _load_state_dict(args.checkpoint)
    result = convert(sd, args.layout, module, reverse=args.reverse, prefix=args.prefix)
    torch.save(result, args.out)
    direction = f"attndsl → {args.layout}" if args.reverse else f"{args.layout} → attndsl"
    out.print(f"wrote {args.out}: {len(result)} tensors ({direction}, spec "
              f"{module.spec.name}, dim={module.dim}, heads={module.plan.heads})")
    return 0


def _print_fitted(headers, rows, *, names: int, drop=(), where: str = "") -> None:
    """A table whose first `names` columns (what users type: names, never wrapped or cut)
    are printed whole; the other columns wrap between words, and when the terminal is too
    narrow for their longest words they are left out in the order `drop` (and a line says
    so). Nothing is cut."""
    def need(i):
        cells = [headers[i], *(r[i] for r in rows)]
        if i < names:
            return max(len(line) for c in cells for line in c.splitlines() or [""])
        return max(len(w) for c in cells for w in c.split() or [""])
    keep = list(range(len(headers)))
    dropped = []
    for name in drop:
        if sum(need(i) for i in keep) + 3 * len(keep) + 1 <= out.width:
            break
        i = headers.index(name)
        keep.remove(i)
        dropped.append(name)
    table = Table(*(), show_lines=len(keep) > names)
    for i in keep:
        if i < names:
            table.add_column(headers[i], no_wrap=True, min_width=need(i))
        else:
            table.add_column(headers[i], overflow="fold", min_width=need(i))
    for row in rows:
        table.add_row(*(escape(row[i]) for i in keep))
    out.print(table)
    if dropped:
        out.print(f"(left out at {out.width} columns: {', '.join(dropped)}; a wider terminal "
                  f"shows them{f', and {where} has them' if where else ''})")


def cmd_export(args) -> int:
    """Export a compiled spec with torch.export (.pt2) or to ONNX (.onnx), at one grid (or
    any grid, --dynamic-resolution) with a dynamic batch size."""
    import torch

    from .export import export, export_onnx
    if args.out.suffix not in (".onnx", ".pt2"):
        raise AttndslError(f"--out {args.out}: export writes FILE.pt2 (torch.export) or "
                           f"FILE.onnx; for a module file attndsl.load reads, use `attndsl "
                           f"compile {args.spec} --out {args.out.with_suffix('.pt')}`")
    check_output_path(args.out, "exported program")
    module = _build(args, backend="eager").eval()
    if args.out.suffix == ".onnx":
        if args.dynamic_resolution:
            raise AttndslError("--dynamic-resolution is for torch.export (.pt2) files")
        export_onnx(module, args.out)
    else:
        program = export(module, dynamic_resolution=args.dynamic_resolution)
        torch.export.save(program, str(args.out))
    grid = "any grid" if args.dynamic_resolution else f"grid {module.resolution}"
    out.print(f"wrote {args.out}: {module.spec.name} at dim={module.dim}, {grid}, "
              "dynamic batch")
    return 0


# ---------------------------------------------------------------- parser
def cmd_search(args) -> int:
    """Search a space of attention designs for the Pareto front of validation accuracy
    against measured throughput, within a device-hour budget (resumable: run the same
    command again)."""
    from .nas import SearchStopped, search
    try:
        result = search(args.space, args.budget, runs_dir=args.runs_dir, study=args.study,
                        storage=args.storage, sampler=args.sampler, seed=args.seed,
                        seed_zoo=args.seed_zoo, prune=not args.no_prune,
                        deploy_resolution=args.deploy_resolution,
                        deploy_batch=args.deploy_batch, deploy_dtype=args.deploy_dtype,
                        deploy_autocast=args.deploy_autocast, latency=args.latency,
                        latency_table=args.latency_table,
                        trial_timeout=args.trial_timeout, threads=args.threads,
                        device=args.device, progress=False if args.worker else
                        "lines" if args.no_progress else True,
                        remeasure=not args.no_remeasure, workers=args.workers,
                        gpus=args.gpus, devices_per_worker=args.devices_per_worker,
                        console=err, _worker=args.worker)
    except SearchStopped as exc:
        err.print(f"[yellow]stopped:[/yellow] {escape(str(exc))}")
        return 2
    except KeyboardInterrupt as exc:
        where = getattr(exc, "run_dir", None)
        err.print("interrupted: finished trials are kept and the running one will re-run; "
                  "run the same command again to resume" + (f" ({where})" if where else ""))
        return 130
    err.print(f"search ended: {escape(result.stop_reason)}")
    if not args.worker:
        _print_front(result.summary, result.run_dir)
    return 0


def cmd_search_slurm(argv: list[str]) -> int:
    """`attndsl search slurm SPACE --budget B --array N [...]`: write an sbatch script whose
    array tasks are workers of one study, and say how to submit it."""
    p = argparse.ArgumentParser(prog="attndsl search slurm", description=cmd_search_slurm.__doc__)
    p.add_argument("space", metavar="SPACE")
    p.add_argument("--budget", required=True, help="the study's total (50gpu-h, 40trials, …)")
    p.add_argument("--array", type=int, required=True, help="array tasks (workers)")
    p.add_argument("--throttle", type=int, default=None, help="at most this many at once (%%K)")
    p.add_argument("--gpus-per-task", type=int, default=1)
    p.add_argument("--cpus-per-task", type=int, default=8)
    p.add_argument("--partition", default=None)
    p.add_argument("--time", default=None, help="time limit per task, e.g. 04:00:00")
    p.add_argument("--storage", default=None, help="postgresql://USER@HOST/DB (recommended); "
                   "default: the journal file on a shared filesystem")
    p.add_argument("--study", default=None, help="study name (default: the space's name)")
    p.add_argument("--runs-dir", type=Path, default=Path("attndsl-runs"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seed-zoo", action="store_true", help="enqueue the zoo seeds now, once")
    p.add_argument("--out", type=Path, default=None, help="the script (default RUN_DIR/slurm/"
                   "<study>.sbatch)")
    p.add_argument("--latency", choices=["table", "measured"], default=None,
                   help="throughput from a latency table (default) or timed whole per trial")
    p.add_argument("--latency-table", type=Path, default=None, metavar="TABLE.json",
                   help="a table from attndsl profile on the deployment machine; without "
                        "one each node's workers add parts to their own table as they go")
    args = p.parse_args(argv)
    from .nas import prepare_study
    from .nas.workers import slurm_script
    if args.array < 1 or args.gpus_per_task < 0:
        raise AttndslError("--array must be ≥ 1 and --gpus-per-task ≥ 0")
    run_dir, study, space_path = prepare_study(args.space, args.budget, runs_dir=args.runs_dir,
                                               study=args.study, storage=args.storage,
                                               seed_zoo=args.seed_zoo, workers=args.array)
    script = args.out or run_dir / "slurm" / f"{study}.sbatch"
    script.parent.mkdir(parents=True, exist_ok=True)
    (run_dir / "slurm").mkdir(parents=True, exist_ok=True)
    script.write_text(slurm_script(
        space_path=space_path, budget=args.budget, study=study, runs_dir=args.runs_dir,
        array=args.array, gpus_per_task=args.gpus_per_task, cpus_per_task=args.cpus_per_task,
        partition=args.partition, time_limit=args.time, storage=args.storage, seed=args.seed,
        throttle=args.throttle, script=script, latency=args.latency,
        latency_table=args.latency_table))
    script.chmod(0o600)     # it may hold the storage password (see workers.slurm_script)
    from .nas.storage import redact
    shown = redact(args.storage) if args.storage else None
    out.print(f"wrote {script}: {args.array} workers of study '{study}', "
              f"{args.gpus_per_task} GPU(s) each, on {shown or 'the journal file'}")
    out.print(f"submit:   sbatch {script}")
    report = f"attndsl report {run_dir}" + (f" --storage '{shown}'" if shown else "")
    out.print(f"progress: {report}   (any time; it also writes the outputs at the end)")
    if not args.storage:
        out.print("note: without --storage every node must see the same filesystem at "
                  f"{run_dir.resolve()} (the journal file's lock works on NFS); for many "
                  "nodes prefer PostgreSQL")
    return 0


def cmd_evaluate(args) -> int:
    """Top-1 accuracy of a trained model (a search's pareto/NN_….pt, or `attndsl train
    --out`) on a space's task's validation split — the split and preprocessing the search
    used, so a front model reproduces the accuracy the search reported."""
    from .nas.designs import evaluate, task_of
    if (args.space is None) == (args.task is None):
        raise ArgumentError("give the task with --space SPACE.yaml or --task "
                            "'{kind: digits, resolution: 16}' (one of them)", argument="space")
    task = task_of(args.space if args.space is not None else args.task)
    accuracy = evaluate(args.model, task, device=args.device)
    out.print(f"{args.model}: validation accuracy {accuracy:.4f} on "
              f"{escape(_describe_task(task))}")
    return 0


def _describe_task(task) -> str:
    from .nas.tasks import describe_task
    return describe_task(task)


def cmd_train(args) -> int:
    """Train a design (a search's pareto/NN_….yaml, or any backbone YAML) on a space's task
    with the space's training settings — or those the search trained it with, read from
    the weights file beside a pareto YAML — with a progress bar and per-epoch validation;
    save the trained model for `attndsl.load` and `attndsl evaluate`."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, \
        TimeRemainingColumn

    from .nas.designs import train_design, training_settings
    from .nas.space import load_space
    space = load_space(args.space)
    config, source = training_settings(space, args.backbone, epochs=args.epochs, lr=args.lr)
    err.print(f"training {args.backbone} on {escape(_describe_task(space.file.task))}: "
              f"{config.epochs} epochs, lr {config.lr:g}, batch {config.batch_size} — "
              f"{escape(source)}")
    with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                  MofNCompleteColumn(), TimeRemainingColumn(), console=err,
                  disable=args.no_progress) as progress:
        bar = progress.add_task("training", total=None)

        def on_step(step: int, total: int) -> None:
            progress.update(bar, completed=step, total=total)

        def on_epoch(epoch: int, accuracy: float, loss: float) -> None:
            line = f"epoch {epoch}/{config.epochs}: loss {loss:.4f}, val accuracy {accuracy:.4f}"
            progress.console.print(line)     # above the bar, or plainly without one

        _, accuracy = train_design(args.backbone, space, epochs=args.epochs, lr=args.lr,
                                   init=args.init, out=args.out, device=args.device,
                                   on_epoch=on_epoch, on_step=on_step)
    out.print(f"validation accuracy {accuracy:.4f}; saved {args.out} "
              f"(attndsl evaluate {args.out} --space {args.space})")
    return 0


def cmd_profile(args) -> int:
    """Measure a space's latency table on this machine: every distinct part its designs
    are built from (stem, each stage's blocks per attention option × heads × width × MLP
    ratio, downsampling, head), timed interleaved at the deploy setting; a design's latency
    is then the sum of its parts'. --check N verifies the table on N random designs timed
    whole. Each part is timed in --sessions fresh processes. Resumable and incremental: run
    it again to finish or extend a table."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, \
        TimeRemainingColumn

    from .nas import _deploy
    from .nas.latency import CHECK_WARN_TAU, describe_check, profile
    from .nas.space import load_space
    space = load_space(args.space)
    deploy = _deploy(space, args.deploy_resolution, args.deploy_batch, args.deploy_dtype,
                     args.deploy_autocast)
    with Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                  MofNCompleteColumn(), TimeRemainingColumn(), console=err,
                  disable=args.no_progress) as progress:
        bar = progress.add_task("profiling", total=None)

        def on_progress(what: str, done: int, total: int) -> None:
            progress.update(bar, description=escape(what[:70]), completed=done, total=total)

        result = profile(space, out=args.out, runs_dir=args.runs_dir, device=args.device,
                         threads=args.threads, deploy=deploy, sessions=args.sessions,
                         rounds=args.rounds,
                         seconds=args.seconds, check=args.check, max_parts=args.max_parts,
                         seed=args.seed, on_progress=on_progress,
                         say=lambda text: progress.console.print(escape(text)))
    table = result.table
    out.print(f"latency table {result.path}: {len(table.parts)} parts "
              f"({len(result.measured)} measured now)")
    if result.check is not None:
        line = describe_check(result.check)
        warn = result.check["kendall_tau"] < CHECK_WARN_TAU
        out.print(("[yellow]warning:[/yellow] " if warn else "") + escape(line) + (
            f" — below τ {CHECK_WARN_TAU}: composed latency may rank designs wrongly here"
            if warn else ""))
    out.print(f"search with it: attndsl search {args.space} --latency-table {result.path}")
    return 0


def cmd_report(args) -> int:
    """Print a search's front and regenerate its files (trials.csv, front.json, pareto/,
    plots) from the study storage."""
    from .nas import report
    summary = report(args.run_dir, storage=args.storage, study=args.study,
                     remeasure=args.remeasure, threads=args.threads,
                     keep_weights_mb=args.keep_weights_mb)
    _print_front(summary, Path(args.run_dir))
    return 0


def _print_front(summary: dict, run_dir: Path) -> None:
    counts = summary["counts"]
    out.print(f"[b]{summary['study']}[/b]: " + ", ".join(f"{n} {state}" for state, n in
                                                           sorted(counts.items())) +
              f"; spent {summary['spent_device_s'] / 3600:.3f} {summary['unit']} "
              f"({summary['spent_device_s']:.0f} s)")
    # nothing a user reads or copies is cut: the figures never wrap, and the design name
    # (the last column) folds onto more lines when the terminal is narrow
    table = Table(title="Pareto front (accuracy × throughput), fastest first by the best "
                  "evidence (the interleaved re-measurement where it ran)")
    for header in ("#", "val acc", "images/s", "IQR", "source", "params"):
        table.add_column(header, no_wrap=True)
    table.add_column("design", overflow="fold", min_width=12)
    position = {r["number"]: i for i, r in enumerate(summary["front"], 1)}
    ties, noisy = [], []
    for i, r in enumerate(summary["front"], 1):
        t = r.get("throughput") or {"images_per_s": r["images_per_s"], "low": r["images_per_s"],
                                    "high": r["images_per_s"], "source": "search",
                                    "noisy": False, "ties_with": []}
        ties += [(i, position[n["number"]]) for n in summary["front"]
                 if n["name"] in t["ties_with"] and position[n["number"]] > i]
        if t["noisy"]:
            noisy.append(i)
        extra = []
        if r["seed"]:
            extra.append("seed")
        if r.get("duplicates"):
            extra.append("also trials " + ", ".join(map(str, r["duplicates"])))
        table.add_row(f"{i:02d}", f"{r['accuracy']:.3f}", f"{t['images_per_s']:,.0f}"
                      + (" noisy" if t["noisy"] else ""),
                      f"{t['low']:,.0f}–{t['high']:,.0f}",
                      {"re-measured": "remeasure"}.get(t["source"], t["source"]),
                      f"{r['params']:,}",
                      escape(r["name"]) + (f" ({'; '.join(extra)})" if extra else ""))
    out.print(table)
    if ties:
        out.print("ties in the interleaved re-measurement (interquartile ranges overlap): " +
                  ", ".join(f"{a:02d} ~ {b:02d}" for a, b in ties))
    if noisy:
        out.print("noisy: the throughput of " + ", ".join(f"{i:02d}" for i in noisy) +
                  " stayed above the spread bound after repeated measurement (the machine "
                  "was busy): treat those figures as rough; `attndsl report RUN --remeasure` "
                  "times the front again")
    from .nas.report import describe_breakdown
    breakdown = summary.get("cost_breakdown")
    if breakdown and describe_breakdown(breakdown):
        out.print(escape(describe_breakdown(breakdown)))
    latency = summary.get("latency") or {}
    if latency.get("source") == "table":
        from .nas.latency import CHECK_WARN_TAU, describe_check
        check = latency.get("check")
        warn = bool(check) and check["kendall_tau"] < CHECK_WARN_TAU
        out.print(("[yellow]warning:[/yellow] " if warn else "") + "throughput composed from "
                  f"the latency table {escape(str(latency['table']))}"
                  + (" (another machine's)" if latency.get("foreign") else "") + ": "
                  + escape(describe_check(check)))
    weights = [r["weights"] for r in summary["front"] if r.get("weights")]
    if weights:
        out.print(f"trained models: {run_dir}/pareto/NN_<name>.pt ({len(weights)} of "
                  f"{len(summary['front'])}); check one with `attndsl evaluate "
                  f"{run_dir}/{weights[0]} --space {run_dir}/space.yaml`")
    out.print(f"files: {run_dir}/pareto/*.yaml (compile with `attndsl compile FILE --out m.pt`), "
              f"trials.csv, front.json, pareto.png, hypervolume.png")
    spend = summary.get("spend") or {}
    if len(spend.get("per_worker", {})) > 1:
        out.print("device-hours per host: " + ", ".join(
            f"{host} {s / 3600:.3f}" for host, s in sorted(spend["per_host"].items())) +
            "; per worker (host:pid): " + ", ".join(
            f"{w} {s / 3600:.3f}" for w, s in sorted(spend["per_worker"].items())))
    journal = run_dir / "journal.log"
    if journal.exists():
        out.print(f"look deeper: optuna-dashboard {journal}   (pip install optuna-dashboard)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="attndsl", description="A compiler for vision attention: YAML specs of the "
        "unified local-attention paradigm, lowered through torch.fx into nn.Modules.")
    from . import __version__
    parser.add_argument("--version", action="version", version=f"attndsl {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("validate", help=cmd_validate.__doc__, description=cmd_validate.__doc__)
    p.add_argument("specs", nargs="+", metavar="SPEC", help="YAML file (a spec, a backbone "
                   "or a search space) or zoo name")
    p.add_argument("--dim", type=int, default=None, help="width at which specs are bound "
                   f"(default {DEFAULT_DIM})")
    p.add_argument("--resolution", type=int, nargs=2, default=None, metavar=("H", "W"),
                   help="token grid at which specs are bound (default "
                   f"{DEFAULT_RESOLUTION[0]} {DEFAULT_RESOLUTION[1]})")
    p.set_defaults(fn=cmd_validate)

    p = sub.add_parser("show", help=cmd_show.__doc__, description=cmd_show.__doc__)
    p.add_argument("spec", metavar="SPEC", help="YAML file or zoo name")
    _size_args(p)
    p.add_argument("--code", action="store_true", help="print the generated forward")
    p.add_argument("--graph", action="store_true", help="print the fx graph")
    p.add_argument("--params", action="store_true", help="list parameters (stable names)")
    p.add_argument("--plan", action="store_true", help="which engine runs each branch, and "
                   "why (SDPA, inductor, eager)")
    p.add_argument("--backend", default="auto", help="eager | inductor | auto (for --plan)")
    p.add_argument("--device", default="cpu", help="whose rules --plan applies: cpu, cuda "
                   "(the CUDA kind measured), or a kind such as cuda-sm90; no GPU is needed")
    p.add_argument("--dtype", default=None, help="dtype the plan is for (float32 | bfloat16 | "
                   "float16 | float64; default float32)")
    p.add_argument("--attention", default="auto", help="auto | sdpa | flex | explicit: the "
                   "engine asked for the softmax-attention branches (for --plan)")
    p.set_defaults(fn=cmd_show)

    p = sub.add_parser("zoo", help=cmd_zoo.__doc__, description=cmd_zoo.__doc__)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--long", action="store_true", help="a table of the whole descriptions "
                   "and papers (wrapped to the terminal)")
    p.set_defaults(fn=cmd_zoo)

    p = sub.add_parser("schema", help=cmd_schema.__doc__, description=cmd_schema.__doc__)
    p.set_defaults(fn=cmd_schema)

    p = sub.add_parser("compile", help=cmd_compile.__doc__, description=cmd_compile.__doc__)
    p.add_argument("spec", metavar="SPEC", help="YAML file or zoo name")
    _size_args(p)
    p.add_argument("--out", required=True, type=Path, help="output module file (.pt)")
    p.add_argument("--backend", default="auto", help="eager | inductor | auto")
    p.add_argument("--dtype", default=None, help="float32 | float64 | bfloat16")
    p.set_defaults(fn=cmd_compile)

    p = sub.add_parser("bench", help=cmd_bench.__doc__, description=cmd_bench.__doc__ + (
        " With --suite (and no SPEC), run the whole benchmark suite instead: "
        "`attndsl bench --suite --help` lists its options."))
    p.add_argument("specs", nargs="+", metavar="SPEC", help="YAML files or zoo names; "
                   "several are timed in interleaved rounds into one table")
    p.add_argument("--suite", action="store_true", help="run benchmarks/suite.py (all "
                   "families, baselines, JSON + markdown results)")
    _size_args(p)
    p.add_argument("--batch", type=int, default=2, help="images per call (default 2)")
    p.add_argument("--backend", default="inductor", help="backend to time against eager "
                   "(default inductor)")
    p.add_argument("--dtype", default=None, help="float32 | float64 | bfloat16")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: this "
                   "machine's timings are noisy with more)")
    p.add_argument("--repeats", type=int, default=10, help="rounds: in each, every spec and "
                   "backend is called once, in a rotating order (default 10; the median is "
                   "reported)")
    p.set_defaults(fn=cmd_bench)

    p = sub.add_parser("search", help=cmd_search.__doc__, description=cmd_search.__doc__)
    p.add_argument("space", metavar="SPACE", help="search-space YAML (attndsl validate checks it)")
    p.add_argument("--budget", default=None, help="device time (50gpu-h, 2h, 12m, 90s) or a "
                   "trial count (40trials); the study's total, so a resume counts what was spent")
    p.add_argument("--runs-dir", default="attndsl-runs", help="where run directories go "
                   "(default ./attndsl-runs; the run is RUNS_DIR/<study>)")
    p.add_argument("--study", default=None, help="study name (default: the space's name)")
    p.add_argument("--storage", default=None, help="Optuna storage URL (sqlite:///f.db, "
                   "postgresql://…) or a journal file; default RUN_DIR/journal.log")
    p.add_argument("--sampler", default="tpe", help="tpe (default; multi-objective TPE), "
                   "nsga2, gp (needs scipy), random")
    p.add_argument("--seed", type=int, default=0, help="sampler and training seed (default 0)")
    p.add_argument("--seed-zoo", action="store_true", help="start from the zoo designs the "
                   "space can express (labelled as seeds in every output)")
    p.add_argument("--no-prune", action="store_true", help="train every trial to the end "
                   "(no MO-ASHA pruning)")
    p.add_argument("--deploy-resolution", type=int, default=None, help="image size at which "
                   "throughput is measured (default: the space's deploy.resolution, else the task's)")
    p.add_argument("--deploy-batch", type=int, default=None, help="batch at which throughput "
                   "is measured (default: the space's deploy.batch, 64)")
    p.add_argument("--deploy-dtype", default=None, help="float32 | bfloat16 | float16")
    p.add_argument("--deploy-autocast", default=None, help="none | bfloat16 | float16: measure "
                   "a float32 model under torch.autocast (mixed precision)")
    p.add_argument("--latency", choices=["table", "measured"], default=None, help="table: "
                   "a design's latency is the sum of its parts' in a latency table (attndsl "
                   "profile; missing parts are measured as trials meet them); measured: each "
                   "trial compiles and times its whole model (default: the space's "
                   "deploy.latency, table)")
    p.add_argument("--latency-table", default=None, metavar="TABLE.json", help="a table "
                   "measured with attndsl profile, on this machine or on the deployment "
                   "machine (then it must hold every part of the space)")
    p.add_argument("--trial-timeout", type=float, default=3600.0, help="seconds before a "
                   "trial is stopped and recorded as timed out (default 3600)")
    p.add_argument("--threads", type=int, default=None, help="torch threads in each trial")
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda when present)")
    p.add_argument("--no-progress", action="store_true", help="no live display: one line per trial")
    p.add_argument("--no-remeasure", action="store_true", help="skip the interleaved "
                   "re-measurement of the final front")
    p.add_argument("--workers", type=int, default=1, help="worker processes on this machine, "
                   "sharing the study and the budget (default 1)")
    p.add_argument("--gpus", type=_gpu_list, default=None, help="one worker per listed GPU, "
                   "e.g. 0,1,2,3 (CUDA_VISIBLE_DEVICES set per worker)")
    p.add_argument("--devices-per-worker", type=int, default=1, help="devices each worker "
                   "holds (the ledger bills devices × wall-clock; default 1)")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)   # spawned by --workers
    p.set_defaults(fn=cmd_search)

    p = sub.add_parser("profile", help=cmd_profile.__doc__, description=cmd_profile.__doc__)
    p.add_argument("space", metavar="SPACE", help="search-space YAML")
    p.add_argument("--out", default=None, help="the table file (default: the one `attndsl "
                   "search` uses for this machine and deploy setting, under --runs-dir)")
    p.add_argument("--runs-dir", default="attndsl-runs", help="where the default table lives "
                   "(RUNS_DIR/.cache/latency/)")
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda when present)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (a CPU table is "
                   "for one thread count; the search's --threads must match)")
    p.add_argument("--deploy-resolution", type=int, default=None, help="image size "
                   "(default: the space's deploy.resolution, else the task's)")
    p.add_argument("--deploy-batch", type=int, default=None, help="batch (default: the "
                   "space's deploy.batch)")
    p.add_argument("--deploy-dtype", default=None, help="float32 | bfloat16 | float16")
    p.add_argument("--deploy-autocast", default=None, help="none | bfloat16 | float16")
    p.add_argument("--sessions", type=_positive_int, default=3, help="fresh processes every "
                   "part is timed in (default 3; a part's latency is its fastest round in "
                   "any of them)")
    p.add_argument("--rounds", type=_positive_int, default=10, help="interleaved rounds per "
                   "part and session (default 10)")
    p.add_argument("--seconds", type=float, default=0.05, help="seconds per part and round "
                   "(default 0.05)")
    p.add_argument("--check", type=int, default=0, metavar="N", help="time N random designs "
                   "whole against their composed latency (Kendall τ, Spearman ρ, MAPE), "
                   "recorded in the table")
    p.add_argument("--max-parts", type=_positive_int, default=256, help="measure at most this "
                   "many parts now; a search measures the rest as it meets them (default 256)")
    p.add_argument("--seed", type=int, default=0, help="order of the rounds and the check's "
                   "designs (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(fn=cmd_profile)

    p = sub.add_parser("report", help=cmd_report.__doc__, description=cmd_report.__doc__)
    p.add_argument("run_dir", metavar="RUN_DIR", help="a search's run directory "
                   "(./attndsl-runs/<study>)")
    p.add_argument("--storage", default=None, help="the study's storage URL, if not the run "
                   "directory's journal")
    p.add_argument("--study", default=None, help="study name (default: the only one)")
    p.add_argument("--remeasure", action="store_true", help="re-time the front interleaved")
    p.add_argument("--threads", type=int, default=None, help="torch threads for --remeasure")
    p.add_argument("--keep-weights-mb", type=float, default=None, help="trained weights of "
                   "trials off the front kept in RUN_DIR/weights (most accurate first; "
                   "default 1024; the front's are always kept)")
    p.set_defaults(fn=cmd_report)

    p = sub.add_parser("evaluate", help=cmd_evaluate.__doc__, description=cmd_evaluate.__doc__)
    p.add_argument("model", metavar="MODEL.pt", help="a trained model file")
    p.add_argument("--space", default=None, help="the search space whose task to evaluate on")
    p.add_argument("--task", default=None, help="or the task itself, as YAML: "
                   "'{kind: digits, resolution: 16}'")
    p.add_argument("--device", default=None, help="cpu | cuda (default: where the model is)")
    p.set_defaults(fn=cmd_evaluate)

    p = sub.add_parser("train", help=cmd_train.__doc__, description=cmd_train.__doc__)
    p.add_argument("backbone", metavar="BACKBONE.yaml", help="a backbone file (a search's "
                   "pareto/NN_….yaml)")
    p.add_argument("--space", required=True, help="the search space: its task and training "
                   "settings")
    p.add_argument("--epochs", type=int, default=None, help="epochs (default: the settings')")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default: the "
                   "settings')")
    p.add_argument("--init", default=None, help="start from this model file's weights (e.g. "
                   "the search's pareto/NN_….pt, to train it longer)")
    p.add_argument("--out", required=True, type=Path, help="where to save the trained model")
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda when present)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser("convert", help=cmd_convert.__doc__, description=cmd_convert.__doc__)
    p.add_argument("checkpoint", metavar="CHECKPOINT", nargs="?", type=Path,
                   help="a torch state dict (or a training checkpoint holding one)")
    p.add_argument("--layout", help="the foreign layout (attndsl convert --list)")
    p.add_argument("--spec", help="the zoo spec (or YAML) whose module takes the weights")
    _size_args(p)
    p.add_argument("--prefix", default="", help="pick one module out of a model checkpoint, "
                   "e.g. layers.0.blocks.1.attn.")
    p.add_argument("--reverse", action="store_true", help="attndsl state dict → the layout")
    p.add_argument("--out", type=Path, help="output state dict (.pt)")
    p.add_argument("--list", action="store_true", help="list the known layouts")
    p.set_defaults(fn=cmd_convert)

    p = sub.add_parser("export", help=cmd_export.__doc__, description=cmd_export.__doc__)
    p.add_argument("spec", metavar="SPEC", help="YAML file or zoo name")
    _size_args(p)
    p.add_argument("--out", required=True, type=Path, help="FILE.pt2 (torch.export) or "
                   "FILE.onnx")
    p.add_argument("--dynamic-resolution", action="store_true", help="symbolic H and W "
                   "(specs whose rules derive every size from the grid)")
    p.set_defaults(fn=cmd_export)
    return parser


def run_suite(argv: list[str]) -> int:
    """`attndsl bench --suite [suite options]`: the benchmark suite of benchmarks/suite.py
    (every zoo family against its eager reference, torch.compile of it and hand-picked
    baselines); its own --help lists the options."""
    root = Path(__file__).resolve().parent.parent
    if not (root / "benchmarks" / "suite.py").exists():
        err.print("error: the benchmark suite lives in the repository's benchmarks/ folder; "
                  "run from a checkout installed with `pip install -e .`")
        return 2
    # run as its own process: the package never imports the benchmarks
    import subprocess
    return subprocess.call([sys.executable, "-m", "benchmarks.suite", *argv], cwd=root)


# the API's words in error messages, as the command line spells them
CLI_WORDS = {"dim": "--dim", "resolution": "--resolution", "heads": "--heads",
             "dtype": "--dtype", "backend": "--backend", "path": "--out"}
CLI_HINTS = {
    "export(module, resolution=(H, W))":
        "attndsl export SPEC --resolution H W --out FILE (without --dynamic-resolution)",
}


def cli_message(exc: AttndslError) -> str:
    """An error as a command-line user reads it: flags, not Python keyword arguments."""
    path = getattr(exc, "path", "")
    detail = getattr(exc, "detail", None)
    if path in CLI_WORDS and detail is not None:
        flag = CLI_WORDS[path]
        text = re.sub(rf"^{path}\b", flag, detail)   # "dim must be …" → "--dim must be …"
        text = f"{flag}: {text}" if not text.startswith(flag) else text
        text = text.replace(f"in {path} ", f"in {flag} ")
    else:
        text = str(exc)
    for api, cli in CLI_HINTS.items():
        text = text.replace(api, cli)
    return text


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        number = 0
    if number < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {value!r}")
    return number


def _gpu_list(value: str) -> list[str]:
    """--gpus: comma-separated GPU indices (or UUIDs), as CUDA_VISIBLE_DEVICES takes them."""
    gpus = [g.strip() for g in value.split(",") if g.strip()]
    if not gpus or len(set(gpus)) != len(gpus):
        raise argparse.ArgumentTypeError(f"expected distinct GPU ids like 0,1,2,3, got {value!r}")
    return gpus


def _heads(value: str):
    """--heads: a positive integer or 'channels' (one head per channel)."""
    if value == "channels":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer or 'channels', got "
                                         f"{value!r}") from None


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"] and "--suite" in argv:
        return run_suite([a for a in argv[1:] if a != "--suite"])
    try:
        if argv[:2] == ["search", "slurm"]:
            return cmd_search_slurm(argv[2:])
        args = build_parser().parse_args(argv)
        return args.fn(args)
    except AttndslError as exc:
        err.print(f"[red]error:[/red] {escape(cli_message(exc))}")
        return 2
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
