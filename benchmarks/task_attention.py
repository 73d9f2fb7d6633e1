"""Does the attention choice matter where a task is built for it? Zoo seeds per task, equal budget.

Per generated task, the zoo seeds (global vit_mhsa, window swin_wmsa, neighbourhood nat, a
PVT-like pooled spec, HiLo, dilated dinat) are trained in one backbone template at equal
budget (same epochs, lr, batch size) over several seeds; their final validation accuracy
and throughput are compared with the issue's criteria:

- texture_pair (long-range: two texture strips at the edges of a 56×56 image, 40 px apart,
  same class or not; same_different, with glyphs, is the other long-range option): the best
  of global/pooled/dilated must beat the best of window/neighbourhood by more than the
  largest seed spread (max − min) of those designs;
- textures (local: any small neighbourhood tells the class): the best window/neighbourhood design
  must reach global's mean accuracy within global's seed spread, at higher images/s.

    python -m benchmarks.task_attention [--tasks texture_pair textures] [--seeds 3]
        [--epochs 10] [--threads 1] [--train N --val N] [--first-blocks none DESIGN]
        [--late none|DESIGN|ZOO_NAME] [--set TASK.FIELD=VALUE ...] [--out DIR]

Template (patch 2): stage 0 has two blocks at dim 32 whose MLPs have LITv2's 3×3 depthwise
conv, stage 1 one block at dim 64. Where the row's attention (DESIGN) sits is the task's
(TASKS; `--first-blocks`, `--late` override it): for the long-range tasks it is the
network's only attention, stage 1's, after two attention-free blocks that build features —
one layer, so that stacked local layers cannot add up to a global reach; for textures it is
stage 0's second block, at the 21×21 grid where windows are much cheaper than global
attention. Seeds vary the initialisation and the batch order; the task's data stay fixed
(task seed 0). Throughput: attndsl.nas.measure
(batch 64, `--throughput` backend, auto by default), once per design and task. Designs
interleave within a seed, so machine drift falls on all alike. Writes
benchmarks/results/task_attention_<device>_<date>.json and .md (the JSON after every seed).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

from benchmarks.suite import RESULTS, device_info, save_result

# the PVT-like pooled spec of examples/search_digits.yaml
POOLED = {"name": "pooled", "heads": 2, "projections": {"layout": "q_kv"},
          "parameterization": {"kind": "additive", "terms": ["query_key"]},
          "normalization": {"kind": "softmax"},
          "application": {"kind": "pooled", "op": "avg", "ratio": 2}}
DESIGNS = {"vit_mhsa": ("global", "vit_mhsa"), "swin_wmsa": ("window", "swin_wmsa"),
           "nat": ("neighbourhood", "nat"), "pooled": ("pooled", POOLED),
           "hilo": ("hilo", "hilo"), "dinat": ("dilated", "dinat")}
LONG, LOCAL = ("global", "pooled", "dilated"), ("window", "neighbourhood")
LONG_RANGE_TASKS = ("texture_pair", "same_different")
# Per task: its settings beyond the task's defaults, and where the row's attention sits in
# the template (DESIGN: in stage 0's blocks, or `late`: stage 1's one block).
TASKS = {
    # long-range: the row's attention is the only attention, in stage 1 (14×14 tokens of
    # 4 px) after two attention-free blocks that build texture features. The 40-px gap
    # between the strips is more than a 7×7 window there can hold, and more than a 7×7
    # neighbourhood plus stage 0's depthwise convolutions reach (a token's receptive field
    # spans at most 36 px).
    "texture_pair": {"task": {}, "first_blocks": ["none", "none"], "late": "DESIGN"},
    # the same placement for glyph pairs (no design leaves chance on this CPU: see the task)
    "same_different": {"task": {"resolution": 56, "min_distance": 40},
                       "first_blocks": ["none", "none"], "late": "DESIGN"},
    # local: the row's attention at stage 0's 21×21 tokens (three 7×7 windows a side),
    # where global attention costs 9× a window's; noise 1.5 so that it is not solved at once
    "textures": {"task": {"resolution": 42, "noise": 1.5, "classes": 8},
                 "first_blocks": ["none", "DESIGN"], "late": "none"},
    # digits are 8×8, too small for 7×7 windows at patch 2
    "digits": {"task": {"resolution": 32}, "first_blocks": ["none", "DESIGN"], "late": "none"},
}


# one template for every design: only stage 0's second block's attention differs
TEMPLATE = {"patch": 2, "stages": [
    {"depth": 2, "dim": 32, "heads": 2, "mlp_ratio": 2, "ffn_dwconv": True,
     "attention": ["none", "DESIGN"]},
    {"depth": 1, "dim": 64, "heads": 4, "mlp_ratio": 2, "attention": "LATE"}]}


def backbone_for(name: str, attention, data, late: str, first_blocks=("none", "DESIGN"),
                 patch: int = TEMPLATE["patch"]):
    """The template with DESIGN (in stage 0's blocks or as `late`) set to `attention`."""
    from attndsl.model.spec import load_backbone
    first, second = TEMPLATE["stages"]
    return load_backbone({
        "name": f"task_attention_{name}", "image_size": data.image_size,
        "in_channels": data.channels, "classes": data.classes, "patch": patch,
        "stages": [{**first, "depth": len(first_blocks),
                    "attention": [attention if b == "DESIGN" else b for b in first_blocks]},
                   {**second, "attention": attention if late == "DESIGN" else late}]})


def load(kind: str, args):
    from attndsl.nas.tasks import TaskAdapter, load_task
    settings = {"kind": kind, **TASKS[kind]["task"]}
    for item in args.set or []:      # --set same_different.glyphs=2: a task's own setting
        name, _, value = item.partition("=")
        task_kind, _, field = name.partition(".")
        if task_kind == kind:
            settings[field] = json.loads(value)
    for key in ("train", "val"):
        if kind != "digits" and getattr(args, key) is not None:   # digits has no sizes
            settings[key] = getattr(args, key)
    task = TaskAdapter.validate_python(settings)
    return task, load_task(task, cache_dir=None)


def summary(accuracies: list[float]) -> dict:
    if not accuracies:
        return {"mean": None, "min": None, "max": None, "std": None}
    return {"mean": statistics.mean(accuracies), "min": min(accuracies),
            "max": max(accuracies),
            "std": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0}


def verdict(kind: str, designs: dict) -> str | None:
    done = {n: d for n, d in designs.items() if d.get("mean") is not None}
    seeds = min((len(d.get("seeds", [])) for d in done.values()), default=0)
    if seeds < 3:
        # one or two seeds give no spread worth the name: no verdict either way
        return f"No verdict: {seeds} seed(s) per design; the criteria need ≥ 3."

    def of(kinds):
        return [(n, d) for n, d in done.items() if d["kind"] in kinds]
    if kind in LONG_RANGE_TASKS:
        far, near = of(LONG), of(LOCAL)
        if not far or not near:
            return "Long-range: no verdict (a group has no trained design)."
        (fn, fd), (nn_, nd) = (max(g, key=lambda x: x[1]["mean"]) for g in (far, near))
        margin = fd["mean"] - nd["mean"]
        spread = max(d["max"] - d["min"] for _, d in far + near)
        worst = min(d["mean"] for _, d in far) - nd["mean"]
        # a margin between designs all at chance says nothing about reach
        learned = fd["mean"] > 0.5 + spread
        passed = learned and margin > spread
        return (f"**Long-range: {'PASS' if passed else 'FAIL'}**"
                f"{'' if learned else ' (no design learned the task above chance)'} — best of "
                f"global/pooled/dilated ({fn} {fd['mean']:.3f}) − best of window/neighbourhood "
                f"({nn_} {nd['mean']:.3f}) = {margin:+.3f} "
                f"{'>' if margin > spread else '≤'} {spread:.3f}, the largest seed spread "
                f"(max − min) of those designs. (Worst of global/pooled/dilated − best "
                f"window/neighbourhood: {worst:+.3f}.)")
    if kind == "textures":
        near = of(LOCAL)
        if "vit_mhsa" not in done or not near:
            return "Local: no verdict (global or every local design is missing)."
        g = done["vit_mhsa"]
        name, best = max(near, key=lambda x: x[1]["mean"])
        spread = g["max"] - g["min"]
        matches = best["mean"] >= g["mean"] - spread
        faster = (best.get("images_per_s") or 0) > (g.get("images_per_s") or float("inf"))
        return (f"**Local: {'PASS' if matches and faster else 'FAIL'}** — best local design "
                f"{name}: mean {best['mean']:.3f} vs global {g['mean']:.3f} "
                f"({'≥' if matches else '<'} global's mean − its seed spread {spread:.3f}); "
                f"{best.get('images_per_s') or 0:.0f} vs {g.get('images_per_s') or 0:.0f} "
                f"images/s ({'faster' if faster else 'not faster'}).")
    return None


def markdown(result: dict) -> str:
    dev, t = result["device"], result["training"]
    lines = [f"# Attention choice per task — {dev['device_name']}", "",
             (f"torch {dev['torch']}, {result['threads']} thread(s), {result['dtype']}, "
              f"{result['date']}. Every design: {t['epochs']} epochs, batch {t['batch_size']}, "
              f"AdamW lr {t['lr']:g}, seeds {result['seeds']}; template "
              f"`{result['template']}` (DESIGN: the row's attention). "
              f"Throughput: batch {result['deploy']['batch']}, backend "
              f"{result['deploy']['backend']}. Command: `{result['command']}`."), ""]
    for task in result["tasks"].values():
        lines += [f"## {task['describe']}", "",
                  f"Stage 0's blocks: {task['first_blocks']}; stage 1: {task['late']}.", "",
                  "| design | kind | mean acc | min–max over seeds | images/s | params |",
                  "|---|---|---|---|---|---|"]
        for name, d in task["designs"].items():
            if d.get("mean") is None:
                why = d.get("skipped") or f"{len(d.get('errors', []))} seed(s) diverged"
                lines.append(f"| {name} | {d['kind']} | – | {why} | – | – |")
                continue
            noisy = " (noisy)" if d.get("noisy") else ""
            lines.append(f"| {name} | {d['kind']} | {d['mean']:.3f} | {d['min']:.3f}–"
                         f"{d['max']:.3f} | {d['images_per_s']:.0f}{noisy} | "
                         f"{d['params']:,} |")
        if task.get("verdict"):
            lines += ["", task["verdict"]]
        lines.append("")
    return "\n".join(lines)


def merge(paths: list[Path], out: Path) -> int:
    """One result from runs of the same command over different seeds (`--first-seed`): the
    first run's throughput, every run's seeds, the summaries and verdicts recomputed."""
    runs = [json.loads(Path(p).read_text()) for p in paths]
    result = runs[0]
    for other in runs[1:]:
        if other["training"] != result["training"] or other["template"] != result["template"]:
            raise SystemExit(f"{other['date']}: other training settings or template than "
                             f"{result['date']}; only seeds of one setting can be merged")
        result["seeds"] = sorted(set(result["seeds"]) | set(other["seeds"]))
        for task_kind, entry in other["tasks"].items():
            mine = result["tasks"].setdefault(task_kind, entry)
            if mine is entry:
                continue
            for name, row in entry["designs"].items():
                have = mine["designs"].setdefault(name, row)
                if have is row:
                    continue
                for key in ("seeds", "accuracies", "train_s"):
                    have[key] = have.get(key, []) + row.get(key, [])
                if row.get("errors"):
                    have.setdefault("errors", []).extend(row["errors"])
    for task_kind, entry in result["tasks"].items():
        for row in entry["designs"].values():
            row.update(summary(row.get("accuracies", [])))
        entry["verdict"] = verdict(task_kind, entry["designs"])
    result["merged_from"] = [str(p) for p in paths]
    result["command"] += " (merged: " + ", ".join(r["command"] for r in runs[1:]) + ")"
    stem = Path(paths[0]).stem + "_merged"
    save_result(out, stem, result)
    (out / f"{stem}.md").write_text(markdown(result))
    print(markdown(result))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["texture_pair", "textures"],
                        choices=sorted(TASKS))
    parser.add_argument("--designs", nargs="+", default=list(DESIGNS), choices=list(DESIGNS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--train", type=int, default=None, help="training images per task")
    parser.add_argument("--val", type=int, default=None, help="validation images per task")
    parser.add_argument("--first-blocks", nargs="+", default=None,
                        help="stage 0's blocks: DESIGN (the row's attention), none or a zoo "
                             "name (default: the task's, see TASKS)")
    parser.add_argument("--late", default=None,
                        help="attention of stage 1: none, a zoo name, or DESIGN (the row's; "
                             "default: the task's)")
    parser.add_argument("--patch", type=int, default=TEMPLATE["patch"],
                        help="patch size of the stem (the template's default: 2)")
    parser.add_argument("--throughput", choices=["auto", "eager", "inductor"], default="auto")
    parser.add_argument("--set", nargs="*", metavar="TASK.FIELD=VALUE",
                        help="a task setting, e.g. same_different.glyphs=2 textures.noise=1.0")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--first-seed", type=int, default=0,
                        help="seeds FIRST … FIRST+SEEDS−1: split a long run over processes")
    parser.add_argument("--merge", nargs="+", type=Path, metavar="RESULT.json",
                        help="combine the seeds of runs of the same settings into one result")
    args = parser.parse_args(argv)
    if args.merge:
        return merge(args.merge, args.out)
    seeds = list(range(args.first_seed, args.first_seed + args.seeds))

    import torch

    from attndsl.errors import SpecError
    from attndsl.model.net import BackboneNet, bind_stages, count_parameters
    from attndsl.model.train import NonFiniteLoss, Training, train, training_backend
    from attndsl.nas.measure import default_device, measure
    from attndsl.nas.space import Deploy
    from attndsl.nas.tasks import describe_task
    torch.set_num_threads(args.threads)
    device = default_device()
    deploy = Deploy(backend=args.throughput)
    base = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
            "warmup_epochs": 1}     # one budget for every design
    info = device_info(device.type, args.threads)
    stamp = time.strftime("%Y-%m-%dT%H%M")
    result = {"benchmark": "task_attention", "date": stamp, "device": info,
              "torch": torch.__version__, "threads": args.threads, "dtype": "float32",
              "command": "python -m benchmarks.task_attention " + " ".join(
                  sys.argv[1:] if argv is None else argv),
              "template": {**TEMPLATE, "patch": args.patch},
              "training": Training(**base).model_dump(exclude={"seed"}),
              "seeds": seeds, "deploy": deploy.model_dump(), "tasks": {}}
    kind = info["device_kind"].rsplit("-", 1)[0] if device.type == "cpu" else info["device_kind"]
    stem = f"task_attention_{kind}_{stamp}"

    # data, backbones and throughput first: one measurement per design and task
    data, backbones = {}, {}
    for task_kind in args.tasks:
        task, data[task_kind] = load(task_kind, args)
        placed = {key: getattr(args, key) or TASKS[task_kind][key]
                  for key in ("first_blocks", "late")}
        entry = result["tasks"][task_kind] = {"task": task.model_dump(),
                                              "describe": describe_task(task), **placed,
                                              "designs": {}}
        for name in args.designs:
            design_kind, attention = DESIGNS[name]
            row = entry["designs"][name] = {"kind": design_kind, "seeds": [],
                                            "accuracies": [], "train_s": []}
            try:
                backbone = backbone_for(name, attention, data[task_kind], placed["late"],
                                        placed["first_blocks"], args.patch)
                bind_stages(backbone)
            except SpecError as exc:     # a design that cannot bind at the grid: reported
                row["skipped"] = f"does not bind: {exc.detail}"[:300]
                print(f"{task_kind} {name}: {row['skipped']}", flush=True)
                continue
            backbones[task_kind, name] = backbone
            m = measure(backbone, deploy, device=device, cache_dir=None,
                        min_run_time=deploy.measure_seconds)
            row.update(images_per_s=m["images_per_s"], params=m["params"],
                       latency_ms=m["latency_ms"], spread=m["spread"], noisy=m["noisy"],
                       compile_s=m["compile_s"])
            print(f"{task_kind} {name}: {m['images_per_s']:.0f} images/s", flush=True)

    # seed-major: every design of every task trains once per seed before the next seed
    for seed in seeds:
        for task_kind in args.tasks:
            for name in args.designs:
                if (task_kind, name) not in backbones:
                    continue
                row = result["tasks"][task_kind]["designs"][name]
                config = Training(**base, seed=seed)       # the batch order
                torch.manual_seed(seed)                    # the initialisation
                model = BackboneNet(backbones[task_kind, name],
                                    backend=training_backend(config, device), device=device)
                row["params"] = count_parameters(model)
                started = time.perf_counter()
                try:
                    accuracy = train(model, data[task_kind], config, device=device)
                except NonFiniteLoss as exc:   # a diverged run is a result, not a crash
                    row.setdefault("errors", []).append(f"seed {seed}: {exc}")
                    print(f"seed {seed} {task_kind} {name}: {exc}", flush=True)
                    continue
                row["train_s"].append(time.perf_counter() - started)
                row["seeds"].append(seed)
                row["accuracies"].append(accuracy)
                row.update(summary(row["accuracies"]))
                print(f"seed {seed} {task_kind} {name}: accuracy {accuracy:.3f} in "
                      f"{row['train_s'][-1]:.0f} s", flush=True)
        for task_kind, entry in result["tasks"].items():
            entry["verdict"] = verdict(task_kind, entry["designs"])
        save_result(args.out, stem, result)   # a killed run keeps its finished seeds
    (args.out / f"{stem}.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
