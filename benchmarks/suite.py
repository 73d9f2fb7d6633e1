"""The attndsl benchmark suite: every zoo family, two stages, one run.

    python -m benchmarks.suite                       # all families, stage1+2, float32+bfloat16
    python -m benchmarks.suite --dtypes float32 --repeats 3 --timeout 300
    python -m benchmarks.suite --quick --families vit_mhsa,nat --no-compile --in-process
    python -m benchmarks.suite --assemble benchmarks/results/<run>.jsonl   # rebuild .json/.md

For every (dtype, stage, family) it times, in this order:
  attndsl            attndsl.compile(zoo, backend="auto")         (the thing under test)
  attndsl_inductor   backend="inductor"                            (context, not a target)
  eager_ref          the paper-style eager reference              (benchmarks/baselines/)
  compiled_ref       torch.compile(eager_ref)
  <baselines>        the hand-picked baselines of the family (SDPA, FlexAttention, conv2d, …)

Each variant runs in its own worker process (isolation, peak memory, --timeout per case;
--in-process runs them in this process without timeouts).  A worker first checks the
variant numerically against the attndsl module at the timed shape: max|y − y_ref| /
max|y_ref| ≤ 1e-4 in float32 (for a bfloat16 row: the same variant code run in float32,
with the bf16-rounded weights and input, then the bf16 output must stay within 0.1 of the
float32 module; BOAT: float64, see baselines/boat.py) — a mismatch is recorded as an error row
and not timed.  Rows are appended to a
JSON-lines file as they finish and the JSON + markdown are re-assembled after every row,
so a killed run keeps what it measured.

Timing: torch.set_num_threads(--threads) (1 by default) in every worker; the first call
(compile included) is timed on its own; then --warmup calls; then --repeats samples, each
one or more calls (enough calls for ≥ --min-sample-ms) divided by the call count; median,
min, max and IQR of the samples are reported.

Peak memory (CPU): bytes the CPU allocator hands out during one call beyond what was
allocated before it, from torch.profiler(profile_memory=True) allocation events (the
running total's high-water mark minus the starting total); also the worker process's RSS
high-water mark (resource.getrusage, includes torch, the check and compilation).
On CUDA: torch.cuda.max_memory_allocated() − memory_allocated() before the call.

GEMM ceiling: float32 / bfloat16 torch.mm of n×n for n in 1024, 2048, 3072 on the same
thread count, in a worker at the start of the run and again at the end; the ceiling is the
best rate seen.  "% GEMM" = a variant's GFLOP/s / the ceiling of its dtype.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import os
import platform
import re
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"

STAGES = {
    "stage1": dict(B=8, H=56, W=56, C=96, heads=3),
    "stage2": dict(B=8, H=28, W=28, C=192, heads=6),
}
QUICK_STAGES = {
    "stage1": dict(B=2, H=14, W=14, C=48, heads=3),
    "stage2": dict(B=2, H=14, W=14, C=96, heads=6),
}
TOL = {"float32": 1e-4, "bfloat16": 3e-2, "float16": 3e-2, "float64": 1e-9}
# low-precision rows are gated by a float32 check of the same variant code (TOL float32);
# their own output only has to stay within this sanity bound of the float32 module
SANITY = {"bfloat16": 0.1, "float16": 0.1}
ATTNDSL_VARIANTS = ("attndsl", "attndsl_inductor")
SEED = 1234


# =============================================================================== worker
def _torch():
    import torch
    return torch


def _dtype(name):
    torch = _torch()
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16,
            "float64": torch.float64}[name]


def randomize_(m):
    """Deterministic weights of a useful scale (the zoo's init is std 0.02, which makes
    every softmax nearly uniform and every rel-pos term invisible to the check)."""
    torch = _torch()
    g = torch.Generator().manual_seed(SEED)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if name.endswith("norm.weight"):
                v = 1 + 0.1 * torch.randn(p.shape, generator=g)
            elif p.dim() >= 2 and name.endswith("weight"):
                v = torch.randn(p.shape, generator=g) * p[0].numel() ** -0.5
            else:
                v = 0.2 * torch.randn(p.shape, generator=g)
            p.copy_(v.to(p))
    return m


def heads_for(family, geo):
    from .baselines import FAMILIES
    heads = FAMILIES[family].heads
    if heads in ("channels", "spec"):
        return None                 # the spec's own heads ("channels": depthwise)
    return geo["heads"] if heads == "stage" else int(heads)


def _build_attndsl(family, geo, backend):
    """attndsl.compile of the family's zoo spec at the stage geometry (float32, CPU; the
    caller loads the state and moves it)."""
    import attndsl
    from .baselines import FAMILIES
    return attndsl.compile(FAMILIES[family].zoo, dim=geo["C"], resolution=(geo["H"], geo["W"]),
                           heads=heads_for(family, geo), backend=backend)


def _sync(device):
    torch = _torch()
    if device.startswith("cuda"):
        return torch.cuda.synchronize
    return lambda: None


def peak_memory_bytes(fn, x, device):
    """Extra bytes allocated at the high-water mark of one call (see module docstring)."""
    torch = _torch()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        fn(x)
        torch.cuda.synchronize()
        return int(torch.cuda.max_memory_allocated() - base), "cuda max_memory_allocated"
    from torch._C._profiler import _EventType
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn(x)
    allocs = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        e = stack.pop()
        if e.tag == _EventType.Allocation:
            allocs.append((e.start_time_ns, e.extra_fields.alloc_size,
                           e.extra_fields.total_allocated))
        stack.extend(e.children)
    if not allocs:
        return 0, "profiler: no allocations"
    allocs.sort(key=lambda a: a[0])
    start = allocs[0][2] - allocs[0][1]
    return int(max(a[2] for a in allocs) - start), "profiler allocation high-water"


def measure(fn, x, repeats, warmup, min_sample_s, sync):
    for _ in range(warmup):
        fn(x)
    sync()
    t0 = time.perf_counter()
    fn(x)
    sync()
    est = time.perf_counter() - t0
    inner = max(1, int(math.ceil(min_sample_s / max(est, 1e-7))))
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn(x)
        sync()
        samples.append((time.perf_counter() - t0) / inner)
    return samples, inner


def _stats(samples):
    s = sorted(samples)
    q = statistics.quantiles(s, n=4, method="inclusive") if len(s) >= 2 else [s[0]] * 3
    return dict(median_ms=1e3 * statistics.median(s), min_ms=1e3 * s[0], max_ms=1e3 * s[-1],
                q1_ms=1e3 * q[0], q3_ms=1e3 * q[2], iqr_ms=1e3 * (q[2] - q[0]),
                samples_ms=[round(1e3 * v, 4) for v in samples])


def _variant_fn(family, variant, geo, backend, state, dtype, device):
    """The callable to time for a variant, built on an attndsl module holding `state`."""
    torch = _torch()
    from . import baselines as bl
    m = _build_attndsl(family, geo, backend if variant in ATTNDSL_VARIANTS else "eager")
    m.load_state_dict(state)
    m = m.to(device=device, dtype=dtype).eval()
    if variant in ATTNDSL_VARIANTS:
        return m, m
    if variant == "eager_ref":
        return bl.build_reference(family, m), m
    if variant == "compiled_ref":
        return torch.compile(bl.build_reference(family, m), dynamic=False), m
    return bl.build_baseline(family, variant, m), m


def _explain(plan, backend):
    """attndsl's own account of what backend="auto" chose (attndsl show --plan), if the
    installed attndsl has one."""
    try:
        from attndsl.codegen.autoplan import explain
    except Exception:
        return None
    try:
        try:
            return explain(plan, backend)
        except TypeError:
            return explain(plan)
    except Exception as exc:
        return f"(explain failed: {type(exc).__name__}: {exc})"


def _token_agreement(y, ref, tol):
    """Fraction of tokens whose output vector is within tol·max|ref| of the reference."""
    y, ref = y.detach().double(), ref.detach().double()
    off = (y - ref).abs().amax(-1) > tol * ref.abs().max()
    return float(1.0 - off.double().mean())


def run_case(task: dict) -> dict:
    """One (family, stage, dtype, variant): build, check, time, measure memory."""
    torch = _torch()
    import copy
    from . import baselines as bl
    threads, device = task["threads"], task["device"]
    torch.set_num_threads(threads)
    family, variant, geo = task["family"], task["variant"], task["geometry"]
    dtype_name = task["dtype"]
    dtype = _dtype(dtype_name)
    fam = bl.FAMILIES[family]
    row = dict(family=family, zoo=fam.zoo, stage=task["stage"], dtype=dtype_name,
               variant=variant, kind=task["kind"], B=geo["B"], H=geo["H"], W=geo["W"],
               C=geo["C"], status="error", error=None, note=task.get("note", ""))
    t_start = time.perf_counter()
    try:
        # ground truth: the attndsl module, eager backend, float32, weights (and input)
        # rounded through the timed dtype
        ref_mod = randomize_(_build_attndsl(family, geo, "eager"))
        g = torch.Generator().manual_seed(SEED + 1)
        x32 = torch.randn(geo["B"], geo["H"], geo["W"], geo["C"], generator=g)
        if dtype != torch.float32:
            with torch.no_grad():
                for p in ref_mod.parameters():
                    p.copy_(p.to(dtype).float())
            x32 = x32.to(dtype).float()
        ref_mod = ref_mod.to(device).eval()
        x32 = x32.to(device)
        state = ref_mod.state_dict()
        plan = ref_mod.plan
        row["heads"] = plan.heads
        row["branches"] = {b.name: b.heads for b in plan.branches}
        row["gflop"] = bl.flops_for(family, ref_mod, geo["B"]) / 1e9
        backend = "inductor" if variant == "attndsl_inductor" else task.get("attndsl_backend", "auto")
        if variant in ATTNDSL_VARIANTS:
            row["backend"] = backend
        sync = _sync(device)
        # the strict check runs in float32 (or the family's check dtype, BOAT: float64) on the
        # same variant code at the timed shape; low-precision rows then get a sanity bound
        check_dtype = fam.check_dtype or ("float32" if dtype != torch.float32 else None)
        with torch.no_grad():
            if check_dtype:
                # the same variant code at check_dtype, full shape, before anything is timed
                cdt = _dtype(check_dtype)
                y_chk = copy.deepcopy(ref_mod).to(cdt)(x32.to(cdt))
                fn_chk, _ = _variant_fn(family, variant, geo, backend, state, cdt, device)
                err = bl.rel_err(fn_chk(x32.to(cdt)), y_chk)
                tol = TOL[check_dtype] if check_dtype in TOL else 1e-10
                row.update(check_dtype=check_dtype, rel_err=err, tol=tol)
                del fn_chk, y_chk
                if not math.isfinite(err) or err > tol:
                    row["status"] = "mismatch"
                    row["error"] = (f"output differs from the attndsl module in {check_dtype}: "
                                    f"rel err {err:.3g} > {tol:g}")
                    return row
            y_ref = ref_mod(x32)
            fn, m = _variant_fn(family, variant, geo, backend, state, dtype, device)
            if variant in ATTNDSL_VARIANTS:
                row["plan"] = _explain(m.plan, backend)
            x = x32.to(dtype)
            t0 = time.perf_counter()
            y = fn(x)
            sync()
            row["first_call_s"] = time.perf_counter() - t0
            err = bl.rel_err(y, y_ref)
            if check_dtype:
                row["rel_err_timed_dtype"] = err
                row["tokens_agreeing_timed_dtype"] = _token_agreement(y, y_ref, TOL[dtype_name])
                bound = SANITY.get(dtype_name)
                if not fam.check_dtype and bound is not None and (not math.isfinite(err) or err > bound):
                    row["status"] = "mismatch"
                    row["error"] = (f"{dtype_name} output far from the float32 module: rel err "
                                    f"{err:.3g} > {bound:g} (the float32 check passed)")
                    return row
            else:
                row["rel_err"] = err
                row["tol"] = TOL[dtype_name]
                if not math.isfinite(err) or err > TOL[dtype_name]:
                    row["status"] = "mismatch"
                    row["error"] = (f"output differs from the attndsl module: rel err {err:.3g} > "
                                    f"{TOL[dtype_name]:g}")
                    return row
            del y, y_ref
            samples, inner = measure(fn, x, task["repeats"], task["warmup"],
                                     task["min_sample_ms"] / 1e3, sync)
            row.update(_stats(samples))
            row["inner_loops"] = inner
            if task.get("memory", True):
                try:
                    peak, how = peak_memory_bytes(fn, x, device)
                    row["peak_mem_mb"] = peak / 2**20
                    row["peak_mem_method"] = how
                except Exception as exc:
                    row["peak_mem_mb"] = None
                    row["peak_mem_method"] = f"failed: {type(exc).__name__}: {exc}"
        row["gflops"] = row["gflop"] / (row["median_ms"] / 1e3)
        row["status"] = "ok"
    except bl.Skip as exc:
        row["status"] = "skipped"
        row["error"] = str(exc)
    except Exception as exc:
        row["status"] = "error"
        msg = str(exc).strip()
        row["error"] = f"{type(exc).__name__}: {msg.splitlines()[0][:400] if msg else ''}"
        row["traceback"] = traceback.format_exc()[-3000:]
    finally:
        row["rss_max_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        row["wall_s"] = time.perf_counter() - t_start
        try:
            row["loadavg_1m"] = os.getloadavg()[0]
        except OSError:
            pass
    return row


def run_gemm(task: dict) -> dict:
    """GEMM ceiling: best torch.mm rate over square sizes and two operand layouts (NN:
    torch.mm(a, b); NT: torch.mm(a, b.t()), the nn.Linear layout), per dtype.  Sizes grow
    from the list until one call takes more than `max_call_s` (a slow path, e.g. bfloat16
    NN on AVX2, stops early instead of running for minutes)."""
    torch = _torch()
    torch.set_num_threads(task["threads"])
    device = task["device"]
    sync = _sync(device)
    out = {}
    names = list(task["dtypes"])
    if "float32" not in names and any(n in LOW_PRECISION for n in names):
        names.append("float32")          # the low-precision ceiling includes it (gemm_ceiling)
    for name in names:
        dtype = _dtype(name)
        rates = {}
        for layout in ("nn", "nt"):
            for n in task["sizes"]:
                a = torch.randn(n, n, device=device).to(dtype)
                b = torch.randn(n, n, device=device).to(dtype)
                if layout == "nn":
                    fn = lambda _x: torch.mm(a, b)        # noqa: E731
                else:
                    fn = lambda _x: torch.mm(a, b.t())    # noqa: E731
                t0 = time.perf_counter()
                fn(None)
                sync()
                first = time.perf_counter() - t0
                samples, _ = measure(fn, None, 3, 0, 0.2, sync)
                rates[f"{layout}{n}"] = 2.0 * n ** 3 / min(samples) / 1e9
                if first > task.get("max_call_s", 1.0):
                    break
        out[name] = dict(gflops_by_size=rates, best_gflops=max(rates.values()))
    return out


def worker_main(task_file: str, result_file: str) -> int:
    task = json.loads(Path(task_file).read_text())
    result = run_gemm(task) if task["type"] == "gemm" else run_case(task)
    Path(result_file).write_text(json.dumps(result))
    return 0


# =============================================================================== parent
def device_info(device: str, threads: int) -> dict:
    torch = _torch()
    if device.startswith("cuda"):
        name = torch.cuda.get_device_name()
        kind = "cuda-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    else:
        name = platform.processor() or platform.machine()
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
        kind = "cpu-" + re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") + f"-{threads}t"
    flags = ""
    try:
        text = Path("/proc/cpuinfo").read_text()
        f = set(re.search(r"^flags\s*:(.*)$", text, re.M).group(1).split())
        flags = " ".join(sorted(x for x in f if x.startswith(("avx512", "amx")) or x in ("avx2", "fma")))
    except Exception:
        pass
    return dict(device=device, device_name=name, device_kind=kind, cpu_flags=flags,
                cpu_count=os.cpu_count(), threads=threads, torch=torch.__version__,
                python=platform.python_version())


def save_result(out: Path, stem: str, result: dict) -> Path:
    """Write a benchmark's JSON result as out/stem.json and say where."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{stem}.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"wrote {path}")
    return path


def _git_rev():
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, text=True,
                             capture_output=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "attndsl"], cwd=ROOT, text=True,
                               capture_output=True, timeout=10).stdout.strip()
        return rev + ("+dirty(attndsl/)" if dirty else "")
    except Exception:
        return ""


def variants_for(family: str, args) -> list[tuple[str, str, str]]:
    """(variant, kind, note) in timing order; skipped-by-option variants are left out."""
    from .baselines import FAMILIES
    fam = FAMILIES[family]
    out = [("attndsl", "attndsl", "")]
    if args.inductor_row and not args.no_compile:
        out.append(("attndsl_inductor", "attndsl_inductor", ""))
    out.append(("eager_ref", "reference", ""))
    if not args.no_compile:
        out.append(("compiled_ref", "compiled_reference", ""))
    for b in fam.baselines:
        if b.compiled and args.no_compile:
            continue
        out.append((b.name, "baseline", b.note))
    return out


def make_snapshot() -> tuple[Path, str]:
    """Copy attndsl/, specs/ and benchmarks/*.py to a temporary tree the workers run from,
    so edits made to the working tree during a long run do not mix versions.  Returns
    (root, sha256 of the attndsl sources and specs)."""
    import hashlib
    import shutil
    root = Path(tempfile.mkdtemp(prefix="attndsl-bench-snapshot-"))
    h = hashlib.sha256()
    for sub in ("attndsl", "specs"):
        src = ROOT / sub
        shutil.copytree(src, root / sub, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        for f in sorted((root / sub).rglob("*")):
            if f.is_file():
                h.update(str(f.relative_to(root)).encode())
                h.update(f.read_bytes())
    (root / "benchmarks").mkdir()
    for f in (ROOT / "benchmarks").glob("*.py"):
        shutil.copy2(f, root / "benchmarks" / f.name)
    return root, h.hexdigest()[:16]


def _run_worker(task: dict, timeout: float, env: dict, cwd: Path = ROOT) -> dict:
    with tempfile.TemporaryDirectory(prefix="attndsl-bench-") as tmp:
        tf, rf = Path(tmp) / "task.json", Path(tmp) / "result.json"
        tf.write_text(json.dumps(task))
        cmd = [sys.executable, "-m", "benchmarks.suite", "--worker", str(tf), str(rf)]
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        try:
            out, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            out, _ = proc.communicate()
            return dict(status="timeout", error=f"killed after the {timeout:g} s per-case timeout",
                        output_tail=(out or "")[-2000:])
        if rf.exists():
            return json.loads(rf.read_text())
        return dict(status="error", error=f"worker exited with code {proc.returncode} and no result",
                    output_tail=(out or "")[-3000:])


def _worker_env(threads: int, root: Path = ROOT) -> dict:
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", str(threads))
    env.setdefault("MKL_NUM_THREADS", str(threads))
    env.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")
    env["PYTHONPATH"] = str(root) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def parse_args(argv):
    from .baselines import family_names
    p = argparse.ArgumentParser(prog="python -m benchmarks.suite",
                                description="attndsl benchmark suite (see the module docstring)")
    p.add_argument("--families", default="all",
                   help=f"comma list or 'all' ({', '.join(family_names())})")
    p.add_argument("--stages", default="stage1,stage2", help="comma list of stage1, stage2")
    p.add_argument("--dtypes", default="float32,bfloat16", help="comma list: float32, bfloat16")
    p.add_argument("--threads", type=int, default=1, help="torch threads per worker (CPU)")
    p.add_argument("--repeats", type=int, default=5, help="timed samples per case")
    p.add_argument("--warmup", type=int, default=1, help="untimed calls after the first call")
    p.add_argument("--min-sample-ms", type=float, default=50.0,
                   help="repeat short calls inside one sample up to this duration")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per case (worker)")
    p.add_argument("--quick", action="store_true", help="tiny sizes (smoke tests)")
    p.add_argument("--no-compile", action="store_true",
                   help="skip every torch.compile variant (compiled_ref, compiled baselines, "
                        "attndsl_inductor) and run attndsl with the eager backend")
    p.add_argument("--no-inductor-row", dest="inductor_row", action="store_false",
                   help="do not time attndsl backend='inductor' as context")
    p.add_argument("--no-memory", dest="memory", action="store_false",
                   help="skip the peak-memory measurement")
    p.add_argument("--in-process", action="store_true",
                   help="run cases in this process (no isolation, no timeouts)")
    p.add_argument("--no-snapshot", dest="snapshot", action="store_false",
                   help="workers import attndsl from the working tree instead of a copy taken "
                        "at the start of the run")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.add_argument("--out", default=str(RESULTS), help="output directory")
    p.add_argument("--name", default=None, help="file stem (default: <device kind>_<date>_<dtypes>)")
    p.add_argument("--gemm-only", action="store_true",
                   help="only measure the GEMM ceiling (a .jsonl to merge into other runs)")
    p.add_argument("--assemble", metavar="JSONL", nargs="+",
                   help="only rebuild .json/.md from a .jsonl; with several, merge them (a row of "
                        "a later file replaces the same family/stage/dtype/variant of an earlier "
                        "one) into --out/--name (default: <first stem>_merged)")
    p.add_argument("--worker", nargs=2, metavar=("TASK", "RESULT"), help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["--worker"]:
        return worker_main(argv[1], argv[2])
    args = parse_args(argv)
    if args.assemble:
        if len(args.assemble) == 1:
            jl = Path(args.assemble[0])
        else:
            first = Path(args.assemble[0])
            out = Path(args.out) if args.out != str(RESULTS) else first.parent
            jl = out / f"{args.name or first.stem + '_merged'}.jsonl"
            merge_jsonl([Path(a) for a in args.assemble], jl)
        paths = assemble(jl, jl.with_suffix(".json"), jl.with_suffix(".md"))
        print("\n".join(str(p) for p in paths))
        return 0
    from .baselines import family_names
    torch = _torch()
    families = family_names() if args.families == "all" else [f.strip() for f in args.families.split(",") if f.strip()]
    unknown = [f for f in families if f not in family_names()]
    if unknown:
        raise SystemExit(f"unknown families {unknown}; valid: {family_names()}")
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    table = QUICK_STAGES if args.quick else STAGES
    for s in stages:
        if s not in table:
            raise SystemExit(f"unknown stage {s!r}; valid: {list(table)}")
    for d in dtypes:
        if d not in TOL:
            raise SystemExit(f"unknown dtype {d!r}; valid: {list(TOL)}")
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    torch.set_num_threads(args.threads)
    info = device_info(device, args.threads)
    now = _dt.datetime.now()
    stem = args.name or (f"{info['device_kind']}_{now:%Y-%m-%dT%H%M}_{'+'.join(dtypes)}"
                         + ("_quick" if args.quick else ""))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    jl, js, md = out / f"{stem}.jsonl", out / f"{stem}.json", out / f"{stem}.md"
    meta = dict(type="meta", **info, date=now.isoformat(timespec="seconds"),
                command="python -m benchmarks.suite " + " ".join(argv), attndsl_git=_git_rev(),
                repeats=args.repeats, warmup=args.warmup, min_sample_ms=args.min_sample_ms,
                timeout_s=args.timeout, quick=args.quick, no_compile=args.no_compile,
                in_process=args.in_process, stages={s: table[s] for s in stages},
                families=families, dtypes=dtypes)
    snap_root = ROOT
    if args.snapshot and not args.in_process:
        snap_root, sha = make_snapshot()
        meta["snapshot"] = str(snap_root)
        meta["attndsl_sources_sha"] = sha
    jl.write_text(json.dumps(meta) + "\n")
    env = _worker_env(args.threads, snap_root)

    def run(task, timeout):
        if args.in_process:
            return run_gemm(task) if task["type"] == "gemm" else run_case(task)
        return _run_worker(task, timeout, env, snap_root)

    def append(rec):
        with jl.open("a") as f:
            f.write(json.dumps(rec) + "\n")
        assemble(jl, js, md)

    gemm_task = dict(type="gemm", threads=args.threads, device=device, dtypes=dtypes,
                     sizes=[256, 512] if args.quick else [256, 512, 1024, 2048, 3072, 4096],
                     max_call_s=0.05 if args.quick else 1.0)
    g = run(gemm_task, max(args.timeout, 300))
    append(dict(type="gemm", when="start", result=g))
    print(f"[suite] {info['device_name']} · torch {info['torch']} · {args.threads} thread(s) · "
          f"GEMM {json.dumps({k: round(v['best_gflops'], 1) for k, v in g.items() if isinstance(v, dict) and 'best_gflops' in v})} GFLOP/s",
          flush=True)
    attndsl_backend = "eager" if args.no_compile else "auto"
    for dtype in ([] if args.gemm_only else dtypes):
        for stage in stages:
            geo = table[stage]
            for family in families:
                for variant, kind, note in variants_for(family, args):
                    task = dict(type="case", family=family, stage=stage, geometry=geo,
                                dtype=dtype, variant=variant, kind=kind, note=note,
                                threads=args.threads, device=device, repeats=args.repeats,
                                warmup=args.warmup, min_sample_ms=args.min_sample_ms,
                                memory=args.memory, attndsl_backend=attndsl_backend)
                    t0 = time.perf_counter()
                    row = run(task, args.timeout)
                    for k in ("family", "stage", "dtype", "variant", "kind"):
                        row.setdefault(k, task[k])
                    row.setdefault("note", note)
                    row["type"] = "row"
                    append(row)
                    med = f"{row['median_ms']:9.2f} ms" if row.get("median_ms") is not None else " " * 12
                    print(f"[suite] {dtype:8s} {stage} {family:32s} {variant:34s} {row['status']:8s} "
                          f"{med} ({time.perf_counter() - t0:5.1f} s) {row.get('error') or ''}",
                          flush=True)
    if not args.gemm_only:
        g2 = run(gemm_task, max(args.timeout, 300))
        append(dict(type="gemm", when="end", result=g2))
    print(f"[suite] wrote {js} and {md}", flush=True)
    return 0


# =============================================================================== assembly
def load_jsonl(path: Path):
    meta, gemms, rows = {}, [], []
    for line in Path(path).read_text().splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue          # a line cut by a kill
        t = rec.get("type")
        if t == "meta":
            meta = rec
        elif t == "gemm":
            gemms.append(rec)
        elif t == "row":
            rows.append(rec)
    return meta, gemms, rows


def merge_jsonl(sources: list[Path], dest: Path) -> None:
    """Merge runs: meta of the first (plus `merged_from`), every GEMM line, and rows keyed by
    (family, stage, dtype, variant) with later files replacing earlier ones."""
    meta, gemms, rows, merged = {}, [], {}, []
    for src in sources:
        m, g, rs = load_jsonl(src)
        if not meta:
            meta = dict(m)
        merged.append(dict(file=src.name, date=m.get("date"), command=m.get("command"),
                           attndsl_git=m.get("attndsl_git"),
                           attndsl_sources_sha=m.get("attndsl_sources_sha")))
        gemms.extend(g)
        for r in rs:
            r = dict(r, source=src.name)
            rows[(r["family"], r["stage"], r["dtype"], r["variant"])] = r
    meta["merged_from"] = merged
    meta["type"] = "meta"
    with dest.open("w") as f:
        f.write(json.dumps(meta) + "\n")
        for g in gemms:
            f.write(json.dumps(g) + "\n")
        for r in rows.values():
            f.write(json.dumps(r) + "\n")


LOW_PRECISION = ("bfloat16", "float16")


def gemm_ceiling(gemms) -> dict:
    """Best GEMM rate per dtype.  A low-precision dtype's ceiling is at least the float32
    rate: a kernel may upcast (CPU SDPA does; on a CPU without native bf16 the bf16 GEMM is
    far below float32), so the bf16 torch.mm rate alone is not a ceiling."""
    best = {}
    for g in gemms:
        for dt, v in (g.get("result") or {}).items():
            if isinstance(v, dict) and "best_gflops" in v:
                best[dt] = max(best.get(dt, 0.0), v["best_gflops"])
    out = dict(best)
    for dt in LOW_PRECISION:
        if dt in out and "float32" in best:
            out[dt] = max(out[dt], best["float32"])
    return out


def derive(rows, ceiling):
    """Per (family, stage, dtype): best baseline, ratios and % of the GEMM ceiling."""
    cases = {}
    for r in rows:
        cases.setdefault((r["family"], r["stage"], r["dtype"]), []).append(r)
    summary = []
    for (family, stage, dtype), rs in cases.items():
        ok = {r["variant"]: r for r in rs if r.get("status") == "ok"}
        cands = [r for r in ok.values()
                 if r["kind"] in ("baseline", "compiled_reference", "reference")]
        best = min(cands, key=lambda r: r["median_ms"]) if cands else None
        hand = [r for r in ok.values() if r["kind"] == "baseline"]
        best_hand = min(hand, key=lambda r: r["median_ms"]) if hand else None
        eager = ok.get("eager_ref")
        for r in rs:
            if r.get("status") != "ok":
                continue
            if dtype in ceiling and r.get("gflops"):
                r["frac_gemm"] = r["gflops"] / ceiling[dtype]
            if best:
                r["ratio_vs_best_baseline"] = r["median_ms"] / best["median_ms"]
            if eager:
                r["ratio_vs_eager_ref"] = r["median_ms"] / eager["median_ms"]
        a = ok.get("attndsl")
        any_row = rs[0]
        summary.append(dict(
            family=family, stage=stage, dtype=dtype, heads=any_row.get("heads"),
            branches=any_row.get("branches"),
            attndsl_ms=a and a["median_ms"], attndsl_min_ms=a and a["min_ms"],
            attndsl_max_ms=a and a["max_ms"], attndsl_status=(a or {}).get("status") or next(
                (r.get("status") for r in rs if r["variant"] == "attndsl"), "missing"),
            attndsl_inductor_ms=ok.get("attndsl_inductor", {}).get("median_ms"),
            eager_ref_ms=eager and eager["median_ms"],
            compiled_ref_ms=ok.get("compiled_ref", {}).get("median_ms"),
            best_baseline=best and best["variant"], best_baseline_ms=best and best["median_ms"],
            best_hand_picked=best_hand and best_hand["variant"],
            best_hand_picked_ms=best_hand and best_hand["median_ms"],
            ratio_vs_best=(a["median_ms"] / best["median_ms"]) if a and best else None,
            speedup_vs_eager=(eager["median_ms"] / a["median_ms"]) if a and eager else None,
            gflops=a and a.get("gflops"), frac_gemm=a and a.get("frac_gemm"),
            peak_mem_mb=a and a.get("peak_mem_mb"),
            loadavg_attndsl=a and a.get("loadavg_1m"),
            loadavg_best=best and best.get("loadavg_1m"),
            loadavg_eager=eager and eager.get("loadavg_1m")))
    return summary


TARGET_SPEEDUP_FAMILIES = ("nat", "dinat", "hilo")


def targets(summary, device):
    out = []
    for s in summary:
        if device == "cpu" or device.startswith("cuda"):
            if s["ratio_vs_best"] is not None:
                out.append(dict(target="auto ≤ 1.0× best baseline", family=s["family"],
                                stage=s["stage"], dtype=s["dtype"],
                                value=f"{s['ratio_vs_best']:.2f}×",
                                met=s["ratio_vs_best"] <= 1.0))
        if s["family"] in TARGET_SPEEDUP_FAMILIES and s["speedup_vs_eager"] is not None:
            out.append(dict(target="≥ 3× faster than eager ref", family=s["family"],
                            stage=s["stage"], dtype=s["dtype"],
                            value=f"{s['speedup_vs_eager']:.2f}×", met=s["speedup_vs_eager"] >= 3.0))
        if s["family"] == "vit_mhsa" and s["frac_gemm"] is not None:
            out.append(dict(target="global ≥ 60% of GEMM ceiling", family=s["family"],
                            stage=s["stage"], dtype=s["dtype"],
                            value=f"{100 * s['frac_gemm']:.0f}%", met=s["frac_gemm"] >= 0.6))
    return out


def _contended(r, threads):
    """Rows measured while the 1-minute load average exceeded the worker's threads by more
    than 0.75 (other work on the machine): marked † in the tables."""
    la = r.get("loadavg_1m")
    return la is not None and la > (threads or 1) + 0.75


def _f(v, fmt="{:.2f}", none="—"):
    return none if v is None else fmt.format(v)


def render_markdown(meta, ceiling, gemms, rows, summary, tgts) -> str:
    from .baselines import FAMILIES, FLOP_FORMULAS
    L = []
    L.append(f"# attndsl benchmark suite — {meta.get('device_name', '?')}")
    L.append("")
    L.append(f"- device: **{meta.get('device_name')}** ({meta.get('device')}, kind "
             f"`{meta.get('device_kind')}`, {meta.get('cpu_count')} CPUs, flags: "
             f"{meta.get('cpu_flags') or '?'})")
    L.append(f"- torch {meta.get('torch')}, Python {meta.get('python')}, threads: "
             f"**{meta.get('threads')}**, attndsl {meta.get('attndsl_git')}"
             + (f" (sources sha {meta['attndsl_sources_sha']}, run from a snapshot)"
                if meta.get("attndsl_sources_sha") else ""))
    L.append(f"- date: {meta.get('date')}; command: `{meta.get('command')}`")
    for src in meta.get("merged_from") or []:
        L.append(f"  - merged: `{src['file']}` ({src.get('date')}, attndsl {src.get('attndsl_git')}, "
                 f"sources sha {src.get('attndsl_sources_sha')}): `{src.get('command')}`")
    L.append(f"- timing: first call (compile) timed apart, {meta.get('warmup')} warm-up call(s), "
             f"{meta.get('repeats')} samples (each ≥ {meta.get('min_sample_ms')} ms of calls); "
             f"median and [min–max]; per-case timeout {meta.get('timeout_s')} s")
    gl = ", ".join(f"{dt}: **{v:.1f} GFLOP/s**" for dt, v in ceiling.items())
    if any(dt in LOW_PRECISION for dt in ceiling):
        gl += " (a low-precision ceiling is at least the float32 rate: kernels may upcast)"
    L.append(f"- GEMM ceiling (best torch.mm n×n over sizes and the NN / NT (nn.Linear) layouts, "
             f"same threads, start and end of run): {gl or '—'}")
    for g in gemms:
        res = g.get("result") or {}
        parts = [f"{dt} " + ", ".join(f"{n}: {r:.1f}" for n, r in v['gflops_by_size'].items())
                 for dt, v in res.items() if isinstance(v, dict) and "gflops_by_size" in v]
        if parts:
            L.append(f"  - {g.get('when')}: " + "; ".join(parts))
    stg = meta.get("stages") or {}
    L.append("- stages: " + "; ".join(
        f"{k}: B={v['B']}, {v['H']}×{v['W']}, C={v['C']}, {v['heads']} heads" for k, v in stg.items()))
    L.append("- ratios: *auto/best* = attndsl (backend=\"auto\") median ÷ the fastest other row (the "
             "hand-picked baselines, torch.compile(reference) and the eager reference itself); "
             "*eager/auto* = eager reference ÷ attndsl. "
             "GFLOP/s counts the mechanism's FLOPs (formulas below) for every variant, so a dense-mask "
             "baseline is not credited for its wasted work. † = measured while the 1-minute load "
             "average exceeded the thread count by > 0.75 (other work on the machine; per-row "
             "`loadavg_1m` in the JSON).")
    L.append("")
    dtypes = list(dict.fromkeys(s["dtype"] for s in summary))
    for dt in dtypes:
        L.append(f"## Summary — {dt}")
        L.append("")
        L.append("| family | stage | heads | attndsl auto ms [min–max] | attndsl inductor ms | eager ref ms | "
                 "compile(ref) ms | best baseline | best ms | auto/best | eager/auto | GFLOP/s | % GEMM | peak MB |")
        L.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for s in summary:
            if s["dtype"] != dt:
                continue
            heads = s["heads"]
            if s.get("branches") and len(s["branches"]) > 1:
                heads = f"{heads} (" + " + ".join(f"{k} {v}" for k, v in s["branches"].items()) + ")"
            th = meta.get("threads") or 1
            dag = lambda key: "†" if (s.get(key) or 0) > th + 0.75 else ""   # noqa: E731
            a = (f"{s['attndsl_ms']:.2f}{dag('loadavg_attndsl')} [{s['attndsl_min_ms']:.2f}–{s['attndsl_max_ms']:.2f}]"
                 if s["attndsl_ms"] is not None else s["attndsl_status"])
            L.append(f"| {s['family']} | {s['stage']} | {heads} | {a} | {_f(s['attndsl_inductor_ms'])} | "
                     f"{_f(s['eager_ref_ms'])}{dag('loadavg_eager')} | {_f(s['compiled_ref_ms'])} | {s['best_baseline'] or '—'} | "
                     f"{_f(s['best_baseline_ms'])}{dag('loadavg_best')} | {_f(s['ratio_vs_best'], '{:.2f}×')} | "
                     f"{_f(s['speedup_vs_eager'], '{:.1f}×')} | {_f(s['gflops'], '{:.1f}')} | "
                     f"{_f(s['frac_gemm'], '{:.0%}')} | {_f(s['peak_mem_mb'], '{:.0f}')} |")
        L.append("")
    if tgts:
        L.append("## Targets (issue #3, benchmark figures)")
        L.append("")
        L.append("| target | family | stage | dtype | value | met |")
        L.append("|---|---|---|---|---|---|")
        for t in tgts:
            L.append(f"| {t['target']} | {t['family']} | {t['stage']} | {t['dtype']} | {t['value']} | "
                     f"{'yes' if t['met'] else '**no**'} |")
        L.append("")
    L.append("## All rows")
    L.append("")
    L.append("| dtype | stage | family | variant | status | median ms | [min–max] | IQR ms | GFLOP/s | "
             "% GEMM | vs best | vs eager | peak MB | RSS MB | first call s | rel err |")
    L.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ok = r.get("status") == "ok"
        L.append(f"| {r['dtype']} | {r['stage']} | {r['family']} | {r['variant']} | {r.get('status')} | "
                 f"{(_f(r.get('median_ms')) + ('†' if _contended(r, meta.get('threads')) else '')) if ok else '—'} | "
                 f"{(_f(r.get('min_ms')) + '–' + _f(r.get('max_ms'))) if ok else '—'} | "
                 f"{_f(r.get('iqr_ms')) if ok else '—'} | {_f(r.get('gflops'), '{:.1f}')} | "
                 f"{_f(r.get('frac_gemm'), '{:.0%}')} | {_f(r.get('ratio_vs_best_baseline'), '{:.2f}×')} | "
                 f"{_f(r.get('ratio_vs_eager_ref'), '{:.2f}×')} | {_f(r.get('peak_mem_mb'), '{:.0f}')} | "
                 f"{_f(r.get('rss_max_mb'), '{:.0f}')} | {_f(r.get('first_call_s'), '{:.1f}')} | "
                 f"{_err_cell(r)} |")
    L.append("")
    bad = [r for r in rows if r.get("status") != "ok"]
    if bad:
        L.append("## Not timed (skipped, errors, mismatches, timeouts)")
        L.append("")
        for r in bad:
            L.append(f"- {r['dtype']} {r['stage']} {r['family']} / {r['variant']}: **{r.get('status')}** — "
                     f"{(r.get('error') or '').replace('|', '/')}")
        L.append("")
    notes = [r for r in rows if r.get("status") == "ok" and r.get("check_dtype")
             and r["check_dtype"] not in ("float32", r.get("dtype"))]
    if notes:
        L.append("## Checked in another dtype")
        L.append("")
        for r in notes:
            L.append(f"- {r['dtype']} {r['stage']} {r['family']} / {r['variant']}: checked in "
                     f"{r['check_dtype']} (rel err {r['rel_err']:.1e}); in the timed dtype rel err "
                     f"{r.get('rel_err_timed_dtype', float('nan')):.2g}, "
                     f"{100 * r.get('tokens_agreeing_timed_dtype', float('nan')):.1f}% of tokens agree "
                     "(cluster-sort near-ties)")
        L.append("")
    plans = {}
    for r in rows:
        if r["variant"] == "attndsl" and r.get("plan") and not str(r["plan"]).startswith("(explain"):
            plans.setdefault((r["family"], r["stage"]), r["plan"])
    if plans:
        L.append("## attndsl auto plans")
        L.append("")
        for (fam, stage), p in plans.items():
            L.append(f"- **{fam}** ({stage}): {' '.join(str(p).split())}")
        L.append("")
    L.append("## Variants and FLOP formulas")
    L.append("")
    L.append("N = H·W tokens, C channels, G heads, d = C/G, K kernel, ws window; multiply-add = 2 FLOPs; "
             "softmax, norms, bias adds and gathers are not counted. Every variant of a case is credited "
             "with the same FLOPs.")
    L.append("")
    fams_seen = list(dict.fromkeys(r["family"] for r in rows))
    for fam in fams_seen:
        F_ = FAMILIES.get(fam)
        if F_ is None:
            continue
        bls = ", ".join(f"`{b.name}`" + (" (compiled)" if b.compiled else "") for b in F_.baselines)
        L.append(f"- **{fam}** (zoo `{F_.zoo}`; FLOPs: {FLOP_FORMULAS[F_.kind]}): reference — "
                 f"{' '.join((F_.reference.__doc__ or _doc_of(F_)).split())} Baselines: {bls}.")
    L.append("")
    L.append("Peak memory: CPU — bytes handed out by the CPU allocator at the high-water mark of one "
             "call beyond the total before it (torch.profiler profile_memory allocation events); "
             "RSS MB — the worker process's ru_maxrss (torch, the numerical check and compilation "
             "included). CUDA — max_memory_allocated − memory_allocated before the call.")
    L.append("")
    return "\n".join(L)


def _err_cell(r):
    """The gating error (in its check dtype) and, when it differs, the timed dtype's."""
    if r.get("rel_err") is None:
        return "—"
    cell = f"{r['rel_err']:.1e}"
    if r.get("check_dtype") and r["check_dtype"] != r.get("dtype"):
        cell += f" ({r['check_dtype']})"
        if r.get("rel_err_timed_dtype") is not None:
            cell += f"; {r['dtype']} {r['rel_err_timed_dtype']:.1e}"
    return cell


def _doc_of(fam):
    try:
        from . import baselines as bl
        ref_names = {"swin_wmsa": bl.swin_reference, "swin_swmsa": bl.swin_reference,
                     "dynconv_relu": bl.swin_reference, "boat_fsla": bl.boat_attention}
        return (ref_names.get(fam.name).__doc__ or "") if fam.name in ref_names else ""
    except Exception:
        return ""


def assemble(jl: Path, js: Path, md: Path):
    meta, gemms, rows = load_jsonl(jl)
    ceiling = gemm_ceiling(gemms)
    summary = derive(rows, ceiling)
    tgts = targets(summary, meta.get("device", "cpu"))
    doc = dict(meta={k: v for k, v in meta.items() if k != "type"}, gemm_ceiling_gflops=ceiling,
               gemm_runs=gemms, summary=summary, targets=tgts,
               rows=[{k: v for k, v in r.items() if k != "type"} for r in rows])
    tmp = js.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=1))
    tmp.replace(js)
    tmp = md.with_suffix(".md.tmp")
    tmp.write_text(render_markdown(meta, ceiling, gemms, rows, summary, tgts))
    tmp.replace(md)
    return js, md


if __name__ == "__main__":
    sys.exit(main())
