"""Paired timing: attndsl (backend="auto") against each family's hand-picked baselines and
torch.compile of the paper-style reference, interleaved call by call in ONE process.

Why, next to suite.py: on this VM (heavy CPU steal) the same compiled program measured in
two worker processes differs by up to 1.5× (suite runs of 2026-11-21: swin_swmsa stage 1,
attndsl auto 74 ms vs attndsl inductor 51 ms, one program). Interleaving the variants in
one process and taking the median of per-round ratios cancels most of that drift; the
spread of the ratios is reported. suite.py stays the reference for absolute times, memory,
GFLOP/s and the eager references.

    .venv/bin/python -m benchmarks.paired                       # float32, both stages
    .venv/bin/python -m benchmarks.paired --dtypes bfloat16 --families nat,elsa
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import torch

from . import baselines as bl
from .suite import QUICK_STAGES, STAGES, _build_attndsl, device_info, randomize_

RESULTS = Path(__file__).parent / "results"
# baselines measured (suite.py) to be far slower than the best one: not worth the time here
SLOW = {"flex_compiled", "sdpa_dense_mask", "gather_compiled", "gather_matmul_compiled",
        "natten", "dwconv_static+unfold"}
MIN_CALL_S = 0.03      # a timed sample repeats fast calls up to this long


def _sample(fn, x) -> float:
    n, t0 = 0, time.perf_counter()
    while True:
        fn(x)
        n += 1
        dt = time.perf_counter() - t0
        if dt >= MIN_CALL_S:
            return dt / n


def run_case(family, stage, geo, dtype, rounds, compile=True) -> dict:
    fam = bl.FAMILIES[family]
    torch.manual_seed(0)
    m = randomize_(_build_attndsl(family, geo, "auto" if compile else "eager")).eval()
    x32 = torch.randn(geo["B"], geo["H"], geo["W"], geo["C"],
                      generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y32 = m(x32) if dtype == torch.float32 else None
    if dtype != torch.float32:
        ref = randomize_(_build_attndsl(family, geo, "eager")).eval()
        with torch.no_grad():
            y32 = ref(x32)
        m = m.to(dtype)
    x = x32.to(dtype)
    fns = {"attndsl": m}
    errors = {}
    candidates = [(b.name, lambda b=b: b.make(bl.Ctx(m))) for b in fam.baselines
                  if b.name not in SLOW and (compile or not b.compiled)]
    if compile:
        candidates.append(("compiled_ref", lambda: torch.compile(
            bl.build_reference(family, m), dynamic=False)))
    tol = 1e-4 if dtype == torch.float32 else 0.1
    with torch.no_grad():
        for name, make in candidates:
            try:
                fn = make()
                err = bl.rel_err(fn(x), y32)
                if not err <= tol and fam.check_dtype is None:
                    errors[name] = f"rel err {err:.2e} > {tol}"
                    continue
                fns[name] = fn
            except Exception as exc:     # a baseline that can't run here is a row, not a crash
                errors[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
        for fn in fns.values():          # compile and warm up
            fn(x)
            fn(x)
        times = {k: [] for k in fns}
        order = list(fns)
        for _ in range(rounds):
            random.shuffle(order)
            for k in order:
                times[k].append(_sample(fns[k], x))
    med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    ratios = {k: [a / b for a, b in zip(times["attndsl"], v)] for k, v in times.items()
              if k != "attndsl"}
    best = min(ratios, key=lambda k: med[k]) if ratios else None
    out = dict(family=family, stage=stage, dtype=str(dtype).replace("torch.", ""),
               rounds=rounds, median_ms=med, errors=errors, best=best,
               ratio_vs={k: dict(median=statistics.median(r), min=min(r), max=max(r))
                         for k, r in ratios.items()})
    return out


def render(meta, rows) -> str:
    L = ["# Paired timing — attndsl auto vs the fastest comparison, one process", "",
         f"- device: {meta['device']}; torch {meta['torch']}; threads {meta['threads']}; "
         f"date {meta['date']}; attndsl {meta['git']}; command `{meta['command']}`",
         f"- {meta['rounds']} rounds; in each, every variant is timed once (≥ {MIN_CALL_S * 1e3:.0f} ms "
         "of calls) in a shuffled order; ratio = attndsl ÷ comparison per round, median "
         "[min–max] over rounds. Baselines known to be far slower are skipped "
         f"({', '.join(sorted(SLOW))}).", "",
         "| dtype | stage | family | attndsl ms | fastest comparison | its ms | auto/best median [min–max] | ≤ 1.0× |",
         "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if not r.get("best"):
            L.append(f"| {r['dtype']} | {r['stage']} | {r['family']} | — | — | — | — | — |")
            continue
        q = r["ratio_vs"][r["best"]]
        ok = "yes" if q["median"] <= 1.0 else ("within spread" if q["min"] <= 1.0 else "**no**")
        L.append(f"| {r['dtype']} | {r['stage']} | {r['family']} | {r['median_ms']['attndsl']:.2f} | "
                 f"{r['best']} | {r['median_ms'][r['best']]:.2f} | {q['median']:.2f}× "
                 f"[{q['min']:.2f}–{q['max']:.2f}] | {ok} |")
    errs = [(r, k, v) for r in rows for k, v in r["errors"].items()]
    if errs:
        L += ["", "Comparisons that did not run:", ""]
        L += [f"- {r['dtype']} {r['stage']} {r['family']} / {k}: {v}" for r, k, v in errs]
    return "\n".join(L) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--families", default=",".join(bl.family_names()))
    p.add_argument("--stages", default="stage1,stage2")
    p.add_argument("--dtypes", default="float32")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="tiny shapes (smoke test)")
    p.add_argument("--no-compile", action="store_true", help="attndsl eager, no compiled "
                   "comparisons (smoke test)")
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--name", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    table = QUICK_STAGES if args.quick else STAGES
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                         text=True, cwd=Path(__file__).parent).stdout.strip()
    info = device_info("cpu", args.threads)
    meta = dict(device=f"{info['device_name']} ({info['device_kind']})",
                torch=torch.__version__, threads=args.threads, rounds=args.rounds,
                date=datetime.now().isoformat(timespec="seconds"), git=git,
                command="python -m benchmarks.paired " + " ".join(
                    sys.argv[1:] if argv is None else argv))
    stem = args.name or (f"paired_{info['device_kind']}_{datetime.now():%Y-%m-%dT%H%M}_"
                         f"{args.dtypes.replace(',', '+')}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for dtype_name in args.dtypes.split(","):
        dtype = getattr(torch, dtype_name)
        for stage in args.stages.split(","):
            for family in args.families.split(","):
                t0 = time.perf_counter()
                row = run_case(family, stage, table[stage], dtype, args.rounds,
                               compile=not args.no_compile)
                rows.append(row)
                best = row.get("best")
                msg = (f"{row['median_ms']['attndsl']:.2f} ms vs {best} "
                       f"{row['median_ms'][best]:.2f}: {row['ratio_vs'][best]['median']:.2f}×"
                       if best else "no comparison ran")
                print(f"[paired] {dtype_name} {stage} {family:32s} {msg} "
                      f"({time.perf_counter() - t0:.0f} s)", flush=True)
                (out / f"{stem}.json").write_text(json.dumps(dict(meta=meta, rows=rows), indent=1))
                (out / f"{stem}.md").write_text(render(meta, rows))
    print(f"[paired] wrote {out / stem}.json and .md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
