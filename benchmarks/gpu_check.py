"""One prepared run on a lent GPU: correctness of every zoo spec on CUDA, the paired
benchmark at realistic GPU stages, and the timm tests on a real install — in ≤ 8 minutes.

    # on the GPU machine, from the repository root (no install: the image has torch)
    PYTHONPATH=. python -m benchmarks.gpu_check --out "$OUT" --write-evidence
    # here, on a CPU: the same code paths at tiny sizes (eager, float32), in ~1 minute
    python -m benchmarks.gpu_check --dry-run --out /tmp/gpu-dry-run

Parts (each bounded by its share of --budget-s; what did not fit is listed, not dropped):

check  every zoo spec, in --workers parallel processes: the module on CUDA — backend eager
       and inductor, float32 and bfloat16, attention "auto" and (where it runs) "flex" —
       against the independent float64 reference (tests/zoo_references.py, on the CPU,
       same weights): ‖y − ref‖ / ‖ref‖ for the output, ∂x and every parameter's gradient.
       TF32 is off for the float32 rows. Bounds: float32 1e-4 (output) / 1e-3 (gradients),
       bfloat16 2e-2 / 5e-2.
bench  for each family of benchmarks/baselines/ at B=64 — stage 1 56×56 C96 3 heads,
       stage 2 28×28 C192 6 heads, stage 3 14×14 C384 12 heads — in bfloat16: attndsl
       with attention auto / sdpa / flex / explicit, the family's hand-picked baselines
       (SDPA, FlexAttention, NATTEN when importable, …) and torch.compile of the paper-style
       reference; each checked against the float32 module first, then timed interleaved
       (rounds in shuffled order) with the search's CUDA protocol
       (attndsl.nas.measure.cuda_times: warm-up, CUDA-graph replay, events). The bf16
       GEMM ceiling is measured in the same run; compile time per variant is recorded.
       Compiles are warmed first in parallel worker processes (inductor's on-disk caches),
       so the timing process mostly reads cached programs.
timm   `pytest tests/test_patch_timm.py` (Swin-T, Twins-SVT-S, PVT-v2-b0, ViT-Ti swapped
       and checked), concurrently with `check`.

Outputs (in --out): gpu_<device>_<date>.json (every row, the environment, the budget
spent) and .md (tables, targets), and with --write-evidence
attndsl/codegen/evidence/<device kind>_<dtype>.json (under --out) for autoplan's CUDA
rules: per form, the median ms of the engines attndsl can pick.
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import json
import os
import random
import statistics
import subprocess
import sys
import time
import traceback
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BOUNDS = {"float32": (1e-4, 1e-3), "bfloat16": (2e-2, 5e-2), "float64": (1e-10, 1e-9)}
STAGES = {
    "stage1": dict(B=64, H=56, W=56, C=96, heads=3),
    "stage2": dict(B=64, H=28, W=28, C=192, heads=6),
    "stage3": dict(B=64, H=14, W=14, C=384, heads=12),
}
DRY_STAGES = {"stage1": dict(B=2, H=14, W=14, C=48, heads=3)}
DRY_SPECS = ("swin_swmsa", "nat", "vit_mhsa", "twins_gsa")
DRY_FAMILIES = ("vit_mhsa", "nat")
# the families whose figures the targets name come first: if the budget runs out, these
# are the ones measured
PRIORITY = ("vit_mhsa", "swin_wmsa", "swin_swmsa", "nat", "dinat", "twins_lsa", "twins_gsa",
            "hilo", "cswin", "maxvit_grid", "halonet", "elsa")
ATTENTIONS = ("auto", "sdpa", "flex", "explicit")
CHECK_SHARE, BENCH_SHARE = 0.4, 0.55     # of --budget-s; the rest writes the results


def _torch():
    import torch
    return torch


def _tests_on_path():
    tests = str(ROOT / "tests")
    if tests not in sys.path:
        sys.path.insert(0, tests)


def environment(device: str) -> dict:
    torch = _torch()
    env = {"torch": torch.__version__, "python": sys.version.split()[0], "device": device,
           "date": _dt.datetime.now().isoformat(timespec="seconds"),
           "command": " ".join(["python -m benchmarks.gpu_check"] + sys.argv[1:])}
    try:
        env["git"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                                    capture_output=True, text=True).stdout.strip() or None
    except OSError:
        env["git"] = None
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        env.update(device_name=props.name, capability=f"{props.major}.{props.minor}",
                   memory_gib=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda)
        try:
            import triton
            env["triton"] = triton.__version__
        except ImportError:
            env["triton"] = None
    else:
        from attndsl.nas.measure import device_name
        env["device_name"] = device_name(torch.device("cpu"))
        env["threads"] = torch.get_num_threads()
    from attndsl.codegen.evidence import device_key
    env["device_key"] = device_key(device)
    return env


def rel(a, b) -> float:
    """‖a − b‖ / ‖b‖ in float64 (a NaN anywhere fails every bound)."""
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


# ============================================================================ check
def _randomized(module, seed=0):
    _tests_on_path()
    from zoo_helpers import randomize
    return randomize(module, seed)


# breadth first: every spec's cheap rows before any spec's expensive ones, so that a budget
# that runs out leaves every spec checked eagerly and most compiled
CHECK_PASSES = (("eager", "float32", "auto"), ("eager", "bfloat16", "auto"),
                ("eager", "float32", "flex"), ("inductor", "float32", "auto"),
                ("inductor", "bfloat16", "auto"), ("inductor", "bfloat16", "flex"),
                ("inductor", "float32", "flex"), ("eager", "bfloat16", "flex"))
DRY_PASSES = (("eager", "float32", "auto"), ("eager", "float32", "flex"))


class Reference:
    """One spec's float64 module, input, cotangent, reference output and gradients."""

    def __init__(self, name: str, device: str):
        torch = _torch()
        import attndsl
        from attndsl.codegen.autoplan import decide
        from attndsl.errors import AttndslError
        _tests_on_path()
        from zoo_references import DIM, GEOMETRY, RES, reference_for
        dim, res = GEOMETRY.get(name, (DIM, RES))
        self.m64 = _randomized(attndsl.compile(name, dim=dim, resolution=res,
                                               backend="eager", dtype=torch.float64))
        gen = torch.Generator().manual_seed(1)
        self.x = torch.randn(2, *res, dim, generator=gen, dtype=torch.float64).requires_grad_(True)
        self.g = torch.randn(2, *res, dim, generator=gen, dtype=torch.float64)
        self.names = [n for n, _ in self.m64.named_parameters()]
        self.out = reference_for(name)(self.m64, self.x)
        self.grads = torch.autograd.grad((self.out * self.g).sum(),
                                         [self.x, *self.m64.parameters()], allow_unused=True)
        try:
            decide(self.m64.plan, "inductor", attention="flex", device=device)
            self.flex = True
        except AttndslError:
            self.flex = False


def check_row(name: str, ref: Reference, backend: str, dtype_name: str, attention: str,
              device: str) -> dict:
    row = dict(spec=name, backend=backend, dtype=dtype_name, attention=attention)
    t0 = time.perf_counter()
    try:
        row.update(_check_variant(ref, backend, getattr(_torch(), dtype_name), attention,
                                  device))
    except Exception as exc:       # a crash is a failed row, never the run
        row.update(ok=False, error=f"{type(exc).__name__}: "
                   f"{str(exc).splitlines()[0][:300] if str(exc) else ''}")
    row["seconds"] = round(time.perf_counter() - t0, 2)
    return row


def _check_variant(ref: Reference, backend, dtype, attention, device):
    torch = _torch()
    import attndsl
    m64 = ref.m64
    m = attndsl.compile(m64.spec, dim=m64.dim, resolution=m64.resolution, backend=backend,
                        dtype=dtype, device=device, attention=attention)
    m.load_state_dict(m64.state_dict())
    m.train()
    x = ref.x.detach().to(device=device, dtype=dtype).requires_grad_(True)
    with warnings.catch_warnings():     # the CPU's dense FlexAttention gradients, expected
        warnings.simplefilter("ignore", UserWarning)
        y = m(x)
    out = {"engines": {c.branch: c.engine for c in
                       m.graph_module(training=True).meta["attndsl_engines"].branches}}
    out["out"] = rel(y, ref.out)
    grads = torch.autograd.grad((y * ref.g.to(y)).sum(), [x, *m.parameters()],
                                allow_unused=True)
    per = {"x": rel(grads[0], ref.grads[0])}
    for pname, a, b in zip(ref.names, grads[1:], ref.grads[1:]):
        if a is not None and b is not None and b.norm() > 0:
            per[pname] = rel(a, b)
    worst = max(per, key=per.get)
    out["grads"], out["worst_grad"] = per[worst], worst
    bound_out, bound_grad = BOUNDS[str(dtype).removeprefix("torch.")]
    out["ok"] = bool(out["out"] <= bound_out and out["grads"] <= bound_grad)
    return out


def check_worker(specs: list[str], device: str, dry: bool, jsonl: Path, deadline: float):
    torch = _torch()
    if device == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    refs: dict[str, Reference | str] = {}
    with open(jsonl, "a") as f:
        for backend, dtype_name, attention in (DRY_PASSES if dry else CHECK_PASSES):
            for name in specs:
                if time.time() > deadline:
                    f.write(json.dumps(dict(spec=name, backend=backend, dtype=dtype_name,
                                            attention=attention, skipped="budget")) + "\n")
                    continue
                if name not in refs:
                    try:
                        refs[name] = Reference(name, device)
                    except Exception as exc:
                        refs[name] = f"{type(exc).__name__}: {exc}"[:300]
                ref = refs[name]
                if isinstance(ref, str):
                    row = dict(spec=name, backend=backend, dtype=dtype_name,
                               attention=attention, ok=False, error=f"reference: {ref}")
                elif attention == "flex" and not ref.flex:
                    continue
                else:
                    row = check_row(name, ref, backend, dtype_name, attention, device)
                f.write(json.dumps(row) + "\n")
                f.flush()
                if device == "cuda":
                    torch.cuda.empty_cache()


# ============================================================================ bench
def gemm_ceiling(device: str, dtype, dry: bool) -> dict:
    """Rate of a large matrix product in `dtype` on this device (TFLOP/s), random data."""
    torch = _torch()
    n = 512 if dry else 8192
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    seconds = _median_seconds(lambda: a @ b, device, 0.3)
    return {"n": n, "dtype": str(dtype).removeprefix("torch."), "ms": seconds * 1e3,
            "tflops": 2 * n ** 3 / seconds / 1e12}


def _median_seconds(call, device: str, min_run_time: float) -> float:
    """The search's protocol (attndsl.nas.measure): CUDA graphs and events on a GPU,
    blocked_autorange on a CPU."""
    from attndsl.nas.measure import cpu_times, cuda_times
    if device == "cuda":
        return statistics.median(cuda_times(call, min_run_time)[0])
    call()
    return statistics.median(cpu_times(call, min_run_time))


def _module(family, geo, backend, attention, device, dtype, state):
    import attndsl
    from .baselines import FAMILIES
    from .suite import heads_for
    m = attndsl.compile(FAMILIES[family].zoo, dim=geo["C"], resolution=(geo["H"], geo["W"]),
                        heads=heads_for(family, geo), backend=backend, dtype=dtype,
                        device=device, attention=attention)
    m.load_state_dict(state)
    return m.eval()


def bench_variants(family: str, geo: dict, device: str, dtype, dry: bool):
    """(name → callable on x, name → why it could not run, the float32 output, x, the
    eager module in the timed dtype)."""
    torch = _torch()
    from . import baselines as bl
    from .suite import _build_attndsl, randomize_
    torch.manual_seed(0)
    base = randomize_(_build_attndsl(family, geo, "eager")).eval()
    state = base.state_dict()
    gen = torch.Generator().manual_seed(1)
    x32 = torch.randn(geo["B"], geo["H"], geo["W"], geo["C"], generator=gen).to(device)
    eager32 = base.to(device)
    with torch.no_grad():
        y32 = eager32(x32)
    x = x32.to(dtype)
    fns, errors = {}, {}
    backend = "eager" if dry else "auto"
    for attention in ATTENTIONS:
        try:
            fns[f"attndsl_{attention}"] = _module(family, geo, backend, attention, device,
                                                  dtype, state)
        except Exception as exc:        # not expressible in that engine: recorded
            errors[f"attndsl_{attention}"] = str(exc).splitlines()[0][:200]
    eager_dt = _module(family, geo, "eager", "auto", device, dtype, state)
    fam = bl.FAMILIES[family]
    for b in fam.baselines:
        if dry and b.compiled:
            continue
        try:
            fns[b.name] = b.make(bl.Ctx(eager_dt))
        except Exception as exc:
            errors[b.name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
    if not dry:
        try:
            fns["compiled_ref"] = torch.compile(bl.build_reference(family, eager_dt),
                                                dynamic=False)
        except Exception as exc:
            errors["compiled_ref"] = f"{type(exc).__name__}: {exc}"[:200]
    return fns, errors, y32, x, eager_dt


def bench_case(family: str, stage: str, geo: dict, device: str, dtype, dry: bool,
               rounds: int, min_run_time: float) -> dict:
    torch = _torch()
    from . import baselines as bl
    row = dict(family=family, stage=stage, dtype=str(dtype).removeprefix("torch."),
               geometry=geo, median_ms={}, compile_s={}, errors={}, check={})
    fns, row["errors"], y32, x, eager_dt = bench_variants(family, geo, device, dtype, dry)
    tol = 1e-4 if dtype == torch.float32 else 0.1
    timed = {}
    with torch.no_grad():
        for name, fn in fns.items():
            try:
                t0 = time.perf_counter()
                y = fn(x)
                if device == "cuda":
                    torch.cuda.synchronize()
                row["compile_s"][name] = round(time.perf_counter() - t0, 2)
                err = bl.rel_err(y.float(), y32)
                row["check"][name] = err
                if not err <= tol and bl.FAMILIES[family].check_dtype is None:
                    row["errors"][name] = f"max-rel error {err:.2e} > {tol} against float32"
                    continue
                timed[name] = fn
            except Exception as exc:
                row["errors"][name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
        samples = {k: [] for k in timed}
        order = list(timed)
        for _ in range(rounds):
            random.shuffle(order)
            for k in order:
                try:
                    samples[k].append(_median_seconds(lambda fn=timed[k]: fn(x), device,
                                                      min_run_time))
                except Exception as exc:
                    row["errors"][k] = f"timing: {type(exc).__name__}: {exc}"[:200]
    row["median_ms"] = {k: statistics.median(v) * 1e3 for k, v in samples.items() if v}
    row["spread"] = {k: (max(v) - min(v)) / statistics.median(v)
                     for k, v in samples.items() if len(v) > 1}
    ours = {k: v for k, v in row["median_ms"].items() if k.startswith("attndsl_")}
    theirs = {k: v for k, v in row["median_ms"].items() if not k.startswith("attndsl_")}
    # the best hand-picked comparison includes attndsl's own engines asked for by name:
    # auto must match the best of everything a user could have picked
    best = min({**theirs, **{k: v for k, v in ours.items() if k != "attndsl_auto"}}.items(),
               key=lambda i: i[1], default=(None, None))
    row["best"] = best[0]
    if "attndsl_auto" in row["median_ms"] and best[0]:
        row["auto_over_best"] = row["median_ms"]["attndsl_auto"] / best[1]
    try:
        row["flops"] = bl.flops_for(family, eager_dt, geo["B"])
    except Exception:                  # a family without a FLOP formula
        row["flops"] = None
    return row


def warm_worker(cases: list[tuple[str, str]], stages: dict, device: str, dtype_name: str,
                deadline: float):
    """Compile every variant of the cases once (filling inductor's on-disk caches)."""
    torch = _torch()
    for family, stage in cases:
        if time.time() > deadline:
            return
        try:
            fns, _, _, x, _ = bench_variants(family, stages[stage], device,
                                             getattr(torch, dtype_name), False)
            with torch.no_grad():
                for fn in fns.values():
                    with contextlib.suppress(Exception):
                        fn(x)
        except Exception:
            traceback.print_exc()
        torch.cuda.empty_cache()


# ============================================================================ evidence
def evidence_from(rows: list[dict], env: dict, dtype: str) -> dict:
    """Per form (codegen/evidence.py), the engines' medians at the first stage measured."""
    import attndsl
    from attndsl.codegen.evidence import FORMAT, form_of
    from .baselines import FAMILIES
    from .suite import heads_for
    forms = {}
    engine_of = {"attndsl_sdpa": "sdpa", "attndsl_flex": "flex", "attndsl_explicit": "explicit"}
    for row in rows:
        if row.get("dtype") != dtype or not row.get("median_ms"):
            continue
        geo = row["geometry"]
        plan = attndsl.bind(attndsl.load_spec(FAMILIES[row["family"]].zoo), geo["C"],
                            (geo["H"], geo["W"]), heads_for(row["family"], geo))
        if len(plan.branches) != 1:
            continue                   # a form is one branch's; hybrids measure several
        form = form_of(plan.branches[0])
        engines = {e: row["median_ms"].get(k) for k, e in engine_of.items()}
        if form in forms or not any(v is not None for v in engines.values()):
            continue
        forms[form] = {"spec": FAMILIES[row["family"]].zoo,
                       "stage": f"B{geo['B']} {geo['H']}x{geo['W']} C{geo['C']}",
                       "engines_ms": engines}
    return {"format": FORMAT, "device": env["device_key"], "device_name": env["device_name"],
            "dtype": dtype, "torch": env["torch"], "source": env.get("results_file"),
            "forms": forms}


# ============================================================================ report
def render(result: dict) -> str:
    env, L = result["environment"], []
    L += [f"# GPU check — {env['device_name']} ({env['device_key']})", "",
          f"- torch {env['torch']}, CUDA {env.get('cuda')}, triton {env.get('triton')}, "
          f"Python {env['python']}; attndsl {env.get('git')}; {env['date']}",
          f"- command: `{env['command']}`; spent {result['spent_s']:.0f} s of "
          f"{result['budget_s']:.0f} s", ""]
    check = [r for r in result["check"] if "backend" in r and not r.get("skipped")]
    if check:
        bad = [r for r in check if not r.get("ok")]
        L += ["## Correctness against the float64 reference", "",
              f"{len(check)} rows, {len(check) - len(bad)} within bounds "
              f"(float32 {BOUNDS['float32']}, bfloat16 {BOUNDS['bfloat16']}: output, "
              "gradients; ‖y − ref‖/‖ref‖).", "",
              "| spec | backend | dtype | attention | out | grads (worst) | ok |",
              "|---|---|---|---|---|---|---|"]
        for r in check:
            grads = "—" if r.get("grads") is None else f"{r['grads']:.1e} ({r.get('worst_grad')})"
            out = f"{r['out']:.1e}" if "out" in r else r.get("error", "")[:80]
            L.append(f"| {r['spec']} | {r['backend']} | {r['dtype']} | {r['attention']} | "
                     f"{out} | {grads} | {'yes' if r.get('ok') else '**no**'} |")
        skipped = [f"{r['spec']} ({r['backend']}, {r['dtype']}, {r['attention']})"
                   for r in result["check"] if r.get("skipped")]
        if skipped:
            L += ["", f"Not checked within the budget ({len(skipped)}): {', '.join(skipped)}"]
        L.append("")
    if result.get("gemm"):
        g = result["gemm"]
        L += [f"## Paired benchmark ({g['dtype']})", "",
              f"GEMM ceiling: {g['tflops']:.3g} TFLOP/s ({g['dtype']} {g['n']}³, this run).", "",
              "| stage | family | auto ms | best comparison | its ms | auto/best | flex | sdpa | explicit | compile s (auto) |",
              "|---|---|---|---|---|---|---|---|---|---|"]
        for r in result["bench"]:
            ms = r.get("median_ms", {})
            fmt = lambda k: f"{ms[k]:.3f}" if k in ms else "—"   # noqa: E731
            ratio = f"{r['auto_over_best']:.2f}×" if "auto_over_best" in r else "—"
            L.append(f"| {r['stage']} | {r['family']} | {fmt('attndsl_auto')} | "
                     f"{r.get('best') or '—'} | {fmt(r['best']) if r.get('best') else '—'} | "
                     f"{ratio} | {fmt('attndsl_flex')} | {fmt('attndsl_sdpa')} | "
                     f"{fmt('attndsl_explicit')} | {r.get('compile_s', {}).get('attndsl_auto', '—')} |")
        vit = [r for r in result["bench"] if r["family"] == "vit_mhsa" and "attndsl_auto" in
               r.get("median_ms", {}) and r.get("flops")]
        for r in vit:
            rate = r["flops"] / (r["median_ms"]["attndsl_auto"] / 1e3) / 1e12
            L.append(f"\nGlobal attention ({r['stage']}): {rate:.3g} TFLOP/s = "
                     f"{100 * rate / g['tflops']:.0f}% of the GEMM ceiling (module FLOPs).")
        errs = [(r, k, v) for r in result["bench"] for k, v in r.get("errors", {}).items()]
        if errs:
            L += ["", "Variants that did not run:", ""]
            L += [f"- {r['stage']} {r['family']} / {k}: {v}" for r, k, v in errs]
        missing = result.get("bench_skipped")
        if missing:
            L += ["", f"Not measured (budget): {', '.join(missing)}"]
        L.append("")
    if result.get("timm"):
        t = result["timm"]
        L += ["## timm on a real install", "", f"`{t['command']}` → exit {t['returncode']}: "
              f"{t['summary']}", ""]
    return "\n".join(L) + "\n"


# ============================================================================ main
def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="on the CPU: tiny sizes, eager, "
                   "float32, a few specs and families (checks the script itself)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--budget-s", type=float, default=480.0)
    # compiling is CPU work (dynamo's tracing is one thread per process): the image's 16
    # cores take ten checking processes, six warming the benchmark's programs
    p.add_argument("--workers", type=int, default=10, help="check processes (warm-up: "
                   "at most 6)")
    p.add_argument("--parts", default="check,bench,timm")
    p.add_argument("--specs", default=None, help="comma-separated zoo specs (check)")
    p.add_argument("--families", default=None, help="comma-separated families (bench)")
    p.add_argument("--stages", default=None, help="comma-separated: stage1,stage2,stage3")
    p.add_argument("--write-evidence", action="store_true")
    p.add_argument("--worker", choices=("check", "warm"), help=argparse.SUPPRESS)
    p.add_argument("--jsonl", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    torch = _torch()
    device = "cpu" if args.dry_run else "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here: run with --dry-run on a CPU", file=sys.stderr)
        return 2
    stages = DRY_STAGES if args.dry_run else STAGES
    if args.stages:
        stages = {k: v for k, v in stages.items() if k in args.stages.split(",")}
    if args.worker == "check":
        check_worker(args.specs.split(","), device, args.dry_run, args.jsonl, args.deadline)
        return 0
    if args.worker == "warm":
        cases = [tuple(c.split(":")) for c in args.specs.split(",")]
        warm_worker(cases, stages, device, "bfloat16", args.deadline)
        return 0

    started = time.time()
    budget_end = started + args.budget_s
    parts = set(args.parts.split(","))
    env = environment(device)
    stamp = _dt.datetime.now().strftime("%Y-%m-%dT%H%M")
    name = f"gpu_{env['device_key']}_{stamp}{'_dry-run' if args.dry_run else ''}"
    args.out.mkdir(parents=True, exist_ok=True)
    env["results_file"] = f"benchmarks/results/{name}.json"
    result = {"environment": env, "budget_s": args.budget_s, "check": [], "bench": []}
    py = [sys.executable, "-m", "benchmarks.gpu_check"] + (["--dry-run"] if args.dry_run else [])
    child_env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}

    timm_run = None      # the timm tests run beside the check (their own process)
    if "timm" in parts:
        import importlib.util
        if importlib.util.find_spec("timm") is None:
            result["timm"] = {"command": "pytest tests/test_patch_timm.py", "returncode": None,
                              "summary": "timm is not installed here"}
        else:
            cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                   "tests/test_patch_timm.py"]
            timm_run = (subprocess.Popen(cmd, cwd=ROOT, env=child_env, stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, text=True), cmd)

    if "check" in parts:
        from attndsl import map_zoo_names
        specs = args.specs.split(",") if args.specs else (
            list(DRY_SPECS) if args.dry_run else map_zoo_names())
        deadline = started + CHECK_SHARE * args.budget_s
        n = max(1, min(args.workers, len(specs)))
        shards = [specs[i::n] for i in range(n)]
        jsonls = [args.out / f".{name}_check{i}.jsonl" for i in range(n)]
        procs = [subprocess.Popen(py + ["--worker", "check", "--specs", ",".join(s),
                                        "--jsonl", str(j), "--deadline", str(deadline)],
                                  cwd=ROOT, env=child_env)
                 for s, j in zip(shards, jsonls)]
        for proc in procs:
            try:
                proc.wait(timeout=max(5.0, deadline - time.time() + 60))
            except subprocess.TimeoutExpired:
                proc.kill()
        for j in jsonls:
            if j.exists():
                result["check"] += [json.loads(line) for line in j.read_text().splitlines()]
                j.unlink()
        print(f"check: {sum(1 for r in result['check'] if r.get('ok'))} of "
              f"{sum(1 for r in result['check'] if not r.get('skipped'))} rows within "
              f"bounds, {sum(1 for r in result['check'] if r.get('skipped'))} not reached",
              flush=True)

    if "bench" in parts:
        from . import baselines as bl
        families = args.families.split(",") if args.families else (
            list(DRY_FAMILIES) if args.dry_run else
            [f for f in PRIORITY if f in bl.FAMILIES]
            + [f for f in bl.FAMILIES if f not in PRIORITY])
        cases = [(f, s) for s in stages for f in families]
        bench_end = min(budget_end - 20, time.time() + BENCH_SHARE * args.budget_s)
        if not args.dry_run and args.workers > 1:     # compile in parallel, time alone
            warm_end = time.time() + 0.4 * (bench_end - time.time())
            n_warm = min(args.workers, 6)
            shards = [cases[i::n_warm] for i in range(n_warm)]
            procs = [subprocess.Popen(py + ["--worker", "warm", "--specs",
                                            ",".join(f"{f}:{s}" for f, s in shard),
                                            "--deadline", str(warm_end)],
                                      cwd=ROOT, env=child_env) for shard in shards if shard]
            for proc in procs:
                try:
                    proc.wait(timeout=max(5.0, warm_end - time.time() + 30))
                except subprocess.TimeoutExpired:
                    proc.kill()
        dtype = torch.float32 if args.dry_run else torch.bfloat16
        result["gemm"] = gemm_ceiling(device, dtype, args.dry_run)
        skipped = []
        for family, stage in cases:
            if time.time() > bench_end:
                skipped.append(f"{stage}/{family}")
                continue
            try:
                row = bench_case(family, stage, stages[stage], device, dtype, args.dry_run,
                                 rounds=3, min_run_time=0.05 if args.dry_run else 0.15)
            except Exception as exc:
                row = dict(family=family, stage=stage, errors={"case": f"{type(exc).__name__}: {exc}"[:300]})
            result["bench"].append(row)
            print(f"bench {stage} {family}: auto/best "
                  f"{row.get('auto_over_best', float('nan')):.2f} ({row.get('best')})", flush=True)
            if device == "cuda":
                torch.cuda.empty_cache()
        result["bench_skipped"] = skipped

    if timm_run is not None:
        proc, cmd = timm_run
        try:
            out, _ = proc.communicate(timeout=max(10.0, budget_end - time.time()))
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        tail = [line for line in out.strip().splitlines() if line.strip()]
        result["timm"] = {"command": " ".join(cmd[2:]), "returncode": proc.returncode,
                          "summary": tail[-1] if tail else "", "output_tail": tail[-40:]}

    result["spent_s"] = time.time() - started
    (args.out / f"{name}.json").write_text(json.dumps(result, indent=1, default=str))
    (args.out / f"{name}.md").write_text(render(result))
    if args.write_evidence and result["bench"]:
        dtype_name = str(dtype).removeprefix("torch.")
        target = (args.out / "attndsl" / "codegen" / "evidence" /
                  f"{env['device_key']}_{dtype_name}.json")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(evidence_from(result["bench"], env, dtype_name), indent=1))
        print(f"evidence: {target}")
    print(render(result)[-6000:])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
