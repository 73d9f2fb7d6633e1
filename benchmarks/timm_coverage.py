"""How much of timm `attndsl.patch(model)` takes, exactly, with no spec and no per-model code.

Per model (random init, float64, eval, a seeded random image at the model's own input
size): the attention modules it has, how many `patch(model, strict=False)` swapped, the
reasons for those it left, and the whole model's relative error max|after − before| /
max|before| after the swap.

    python -m benchmarks.timm_coverage [--models swin_tiny_patch4_window7_224 …] [--threads 1]

Needs timm (and torchvision): a venv with `pip install torch==2.14.1 torchvision==0.29.1
timm` on the CPU machines, or the GPU image; CI can't install torchvision for its torch.
Writes benchmarks/results/timm_coverage_<device>_<date>.json and .md.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
import warnings
from pathlib import Path

from benchmarks.suite import RESULTS, device_info, save_result

# the models the issue names: the first group must be exact with every attention swapped
FIRST = ["swin_tiny_patch4_window7_224", "swinv2_tiny_window8_256", "twins_svt_small",
         "twins_pcpvt_small", "pvt_v2_b0", "pvt_v2_b2_li", "vit_tiny_patch16_224",
         "deit_tiny_patch16_224", "maxvit_nano_rw_256", "halonet26t", "efficientvit_m0"]
SECOND = ["eva02_tiny_patch14_224", "xcit_nano_12_p16_224", "davit_tiny", "mvitv2_tiny",
          "levit_128s", "efficientformer_l1", "cait_xxs24_224", "convit_tiny", "volo_d1_224",
          "efficientvit_b0", "gcvit_xxtiny", "coat_lite_tiny", "botnet26t_256",
          "hiera_tiny_224"]
# non-square images (NAME@HxW: timm.create_model(NAME, img_size=(H, W))): timm's windows
# shrink per axis (Swin's last stage at 224×320 is 7×10: window [7, 7], shift [0, 3]; SwinV2
# at 192×288 ends 6×9: window [6, 8], shift [0, 4]) and MaxViT partitions are [7, 10]
NON_SQUARE = ["swin_tiny_patch4_window7_224@224x320", "swinv2_tiny_window8_256@192x288",
              "maxvit_nano_rw_256@224x320"]
ATTENTION = re.compile(r"(Attention|Attn|HiLo|MLA|GPSA|MHSA|XCA)", re.I)


def attention_modules(model) -> list[tuple[str, str]]:
    """The outermost modules whose class names say attention (with parameters)."""
    found = []
    for path, mod in model.named_modules():
        name = type(mod).__name__
        if path and ATTENTION.search(name) and any(True for _ in mod.parameters()) \
                and not re.search(r"Block|Stage|Layer$", name):
            if not any(path.startswith(p + ".") for p, _ in found):
                found.append((path, name))
    return found


def run_model(name: str) -> dict:
    """One model's coverage; NAME@HxW builds it for an H×W image."""
    import timm
    import torch

    import attndsl
    arch, _, image = name.partition("@")
    options = {"img_size": tuple(int(v) for v in image.split("x"))} if image else {}
    model = timm.create_model(arch, pretrained=False, **options).double().eval()
    # random init leaves branches silent (Swin-V2's post-norms, layer scales start at 0):
    # every parameter moved by seeded noise, so that every attention module shows in the
    # output
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    size = (model.pretrained_cfg["input_size"][0], *options["img_size"]) if image else \
        model.pretrained_cfg["input_size"]
    x = torch.randn(1, *size, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        before = model(x)
    attention = attention_modules(model)
    started = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            reports = attndsl.patch(model, strict=False, backend="eager", example=x)
    except attndsl.PatchError as exc:
        reports, failure = [], str(exc).splitlines()[0]
        if failure.startswith("no attention module of a class attndsl knows"):
            failure = ("none of its attention classes is recognized: "
                       + ", ".join(sorted({c for _, c in attention})))
    else:
        failure = None
    patch_s = time.perf_counter() - started
    with torch.no_grad():
        after = model(x)
    error = float((after - before).abs().max() / before.abs().max())
    swapped = [r for r in reports if r.swapped]
    left = {r.path: r.reason for r in reports if not r.swapped}
    recognized = {r.path for r in reports}
    unknown = [f"{p} ({c})" for p, c in attention if p not in recognized
               and not any(p.startswith(q + ".") or q.startswith(p + ".") for q in recognized)]
    return {"model": name, "input_size": list(size), "attention_modules": len(attention),
            "classes": sorted({c for _, c in attention}), "swapped": len(swapped),
            "left": left, "unrecognized": unknown, "failure": failure,
            "relative_error": error, "patch_s": patch_s,
            "max_swap_error": max((r.error or 0.0 for r in swapped), default=None)}


def markdown(result: dict) -> str:
    lines = [f"# timm coverage of attndsl.patch(model) — timm {result['timm']}", "",
             f"{result['device']['device_name']}, torch {result['device']['torch']}, "
             f"{result['date']}; random init with every parameter moved by seeded noise "
             "(σ 0.05: no branch silent), float64, eval, one seeded image at each model's "
             f"input size. Command: `{result['command']}`.", "",
             "| model | attention modules | swapped | whole-model relative error | left (why) |",
             "|---|---|---|---|---|"]
    for r in result["models"]:
        why = "; ".join(f"`{p}`: {w}" for p, w in list(r["left"].items())[:2])
        if len(r["left"]) > 2:
            why += f"; … ({len(r['left'])} in all)"
        if r["unrecognized"]:
            why += ("; " if why else "") + f"not recognized: {', '.join(sorted({u.split(' ')[1] for u in r['unrecognized']}))}"
        if r.get("failure"):
            why = r["failure"]
        lines.append(f"| {r['model']} | {r['attention_modules']} | {r['swapped']} | "
                     f"{r['relative_error']:.1e} | {why or '–'} |")
    return "\n".join(lines) + "\n"


DOCS = Path(__file__).resolve().parent.parent / "docs" / "timm.md"
BEGIN = "<!-- timm-coverage: generated by `python -m benchmarks.timm_coverage --docs`; do not edit -->"
END = "<!-- /timm-coverage -->"


def docs_block() -> str:
    """The coverage table of the newest committed result, for docs/timm.md."""
    found = sorted(RESULTS.glob("timm_coverage_*.json"))
    if not found:
        return BEGIN + "\n(no committed coverage run yet)\n" + END
    result = json.loads(found[-1].read_text())
    rel = found[-1].relative_to(RESULTS.parent.parent)
    return "\n".join([BEGIN, "", f"From [{rel.name}](../{rel}):", "", markdown(result).split(
        "\n", 2)[2].strip(), "", END])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=FIRST + NON_SQUARE + SECOND,
                        help="timm model names; NAME@HxW for an H×W image")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--docs", action="store_true", help="only rewrite docs/timm.md's "
                        "table from the newest committed result")
    args = parser.parse_args(argv)
    if args.docs:
        from benchmarks.summary import rewrite
        DOCS.write_text(rewrite(DOCS.read_text(), docs_block(), BEGIN, END))
        print(f"rewrote the coverage table of {DOCS}")
        return 0
    import timm
    import torch
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.models:
        try:
            rows.append(run_model(name))
        except Exception as exc:       # a model this timm lacks, or one that can't build
            rows.append({"model": name, "attention_modules": 0, "swapped": 0, "left": {},
                         "unrecognized": [], "relative_error": float("nan"),
                         "failure": f"{type(exc).__name__}: {exc}"[:200], "classes": []})
        r = rows[-1]
        print(f"{name}: {r['swapped']}/{r['attention_modules']} swapped, error "
              f"{r['relative_error']:.1e}", flush=True)
    device = device_info("cpu", args.threads)
    stamp = time.strftime("%Y-%m-%dT%H%M")
    result = {"benchmark": "timm_coverage", "date": stamp, "device": device,
              "timm": timm.__version__, "dtype": "float64",
              "command": "python -m benchmarks.timm_coverage " + " ".join(argv or sys.argv[1:]),
              "models": rows}
    stem = f"timm_coverage_{device['device_kind']}_{stamp}"
    save_result(RESULTS, stem, result)
    (RESULTS / f"{stem}.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
