"""What a search leaves in its run directory, made from the study storage alone (so
`attndsl report RUN_DIR` regenerates all of it, and a killed search loses none of it):

    trials.csv           one row per trial: state, reason, params, accuracy per rung,
                         throughput (median, spread), parameters, FLOPs, memory, cost
    front.json           the Pareto front (accuracy × images/s), re-measured interleaved
    pareto/NN_<name>.yaml  each front design as a backbone file (`attndsl compile`,
                         `attndsl.model.build_model` take it as it is)
    pareto.png           accuracy against images/s: every trial, the front, the zoo seeds
    hypervolume.png      hypervolume of the front against device-hours spent
    pareto.html, hypervolume.html   the same with plotly, when plotly is installed
"""
from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from optuna.trial import TrialState

from .budget import COST_ATTR
from .pruner import hypervolume_2d, nondominated_fronts

COLUMNS = ["number", "name", "state", "reason", "seed", "accuracy", "images_per_s", "spread",
           "latency_ms", "params", "flops", "peak_memory_mb", "compile_s", "epochs", "cost_s",
           "duplicate_of", "retry_of", "hash", "rungs", "search_params", "host", "pid",
           "message"]


def trial_rows(study) -> list[dict]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        state = a.get("state") or t.state.name.lower()
        if t.state == TrialState.RUNNING:
            state = "running"
        elif t.state == TrialState.WAITING:
            state = "queued"
        rungs = {k[len("rung_"):]: v for k, v in a.items() if k.startswith("rung_")}
        rows.append({
            "number": t.number, "name": a.get("name", ""), "state": state,
            "reason": a.get("reason", ""), "seed": a.get("seed", ""),
            "accuracy": a.get("accuracy"),   # the final one, or the last rung's when pruned
            "images_per_s": a.get("images_per_s"), "spread": a.get("spread"),
            "latency_ms": a.get("latency_ms"), "params": a.get("params"),
            "flops": a.get("flops"), "peak_memory_mb": a.get("peak_memory_mb"),
            "compile_s": a.get("compile_s"), "epochs": a.get("epochs"),
            "cost_s": a.get(COST_ATTR, 0.0), "duplicate_of": a.get("duplicate_of", ""),
            "retry_of": a.get("retry_of", ""), "hash": a.get("hash", ""),
            "rungs": json.dumps(dict(sorted(rungs.items(), key=lambda kv: int(kv[0])))),
            "search_params": json.dumps(t.params, default=str),
            "message": a.get("message", ""),
            "backbone": a.get("backbone"), "fingerprint": a.get("fingerprint"),
            "host": a.get("host"), "pid": a.get("pid"),
            "completed": t.datetime_complete.timestamp() if t.datetime_complete else None,
        })
    return rows


def spend_by_worker(rows: list[dict]) -> dict:
    """Device-seconds per worker process (host:pid) and per host: who spent the budget."""
    per_worker: dict = {}
    per_host: dict = {}
    for r in rows:
        if not r.get("host") and not r["cost_s"]:
            continue    # never ran in a worker (queued, a reused duplicate): no phantom "?"
        host = r.get("host") or "unknown"
        key = f"{host}:{r.get('pid') or '?'}"
        per_worker[key] = per_worker.get(key, 0.0) + (r["cost_s"] or 0.0)
        per_host[host] = per_host.get(host, 0.0) + (r["cost_s"] or 0.0)
    return {"per_worker": per_worker, "per_host": per_host}


def front_rows(rows: list[dict]) -> list[dict]:
    """Complete, feasible, not-duplicate trials on the Pareto front, fastest first."""
    done = [r for r in rows if r["state"] == "complete" and not r["duplicate_of"]
            and r["accuracy"] is not None and r["images_per_s"] is not None]
    if not done:
        return []
    points = [(r["accuracy"], r["images_per_s"]) for r in done]
    first = nondominated_fronts(points)[0]
    return sorted((done[i] for i in first), key=lambda r: -r["images_per_s"])


def hypervolume_history(rows: list[dict]) -> list[tuple[float, float]]:
    """(device-hours spent, hypervolume of the front so far) after each finished trial, in
    the order they finished; reference point (0 accuracy, 0 images/s)."""
    finished = sorted((r for r in rows if r["completed"] is not None),
                      key=lambda r: r["completed"])
    spent, points, out = 0.0, [], []
    for r in finished:
        spent += r["cost_s"] or 0.0
        if r["state"] == "complete" and r["accuracy"] is not None and r["images_per_s"]:
            points.append((r["accuracy"], r["images_per_s"]))
        out.append((spent / 3600, hypervolume_2d(points)))
    return out


def write_outputs(study, run_dir: Path, *, remeasure: dict | None = None,
                  unit: str = "device", rows: list[dict] | None = None) -> dict:
    """Write every output file; returns the summary (front, counts, spent). `rows`: the
    study's trial_rows, if the caller has them."""
    run_dir = Path(run_dir)
    rows = trial_rows(study) if rows is None else rows
    front = front_rows(rows)
    _write_csv(rows, run_dir / "trials.csv")
    previous = _read_json(run_dir / "front.json")
    if remeasure is None and previous and previous.get("remeasured_hashes") == [
            r["hash"] for r in front]:
        remeasure = previous.get("remeasure")      # the same front: keep its re-measurement
    summary = {
        "study": study.study_name, "unit": f"{unit}-hours",
        "objectives": ["accuracy (validation, max)", "images_per_s (deploy shape, max)"],
        "counts": _counts(rows),
        "spent_device_s": sum(r["cost_s"] or 0.0 for r in rows),
        "spend": spend_by_worker(rows),
        "front": [_front_entry(r, i) for i, r in enumerate(front, 1)],
        "seeds": [_front_entry(r, 0) for r in rows if r["seed"] and r["state"] == "complete"],
        "remeasure": remeasure, "remeasured_hashes": [r["hash"] for r in front] if remeasure else None,
    }
    (run_dir / "front.json").write_text(json.dumps(summary, indent=1, default=str))
    _write_pareto_files(front, run_dir / "pareto")
    history = hypervolume_history(rows)
    _plots(rows, front, history, run_dir, unit)
    return summary


def _front_entry(r: dict, position: int) -> dict:
    entry = {k: r[k] for k in ("number", "name", "seed", "accuracy", "images_per_s", "spread",
                               "latency_ms", "params", "flops", "peak_memory_mb", "cost_s",
                               "hash")}
    entry["rungs"] = json.loads(r["rungs"])
    entry["search_params"] = json.loads(r["search_params"])
    entry["fingerprint"] = r["fingerprint"]
    if position:
        entry["file"] = f"pareto/{pareto_file_name(position, r['name'])}"
    return entry


def pareto_file_name(position: int, name: str) -> str:
    return f"{position:02d}_{name}.yaml"


def _write_pareto_files(front: list[dict], folder: Path) -> None:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for i, r in enumerate(front, 1):
        header = (f"# attndsl search front #{i}: trial {r['number']}, validation accuracy "
                  f"{r['accuracy']:.4f}, {r['images_per_s']:.1f} images/s at the deploy shape "
                  f"(spread {100 * (r['spread'] or 0):.1f}%), {r['params']:,} parameters\n")
        (folder / pareto_file_name(i, r["name"])).write_text(header + r["backbone"])


def _counts(rows) -> dict:
    counts: dict = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    return counts


def _write_csv(rows: list[dict], path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in COLUMNS})
    tmp.replace(path)


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _plots(rows, front, history, run_dir: Path, unit: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    groups = {
        "complete": ("tab:blue", "o"), "pruned": ("tab:gray", "x"),
    }
    for state, (color, marker) in groups.items():
        pts = [(r["images_per_s"], r["accuracy"]) for r in rows if r["state"] == state
               and r["accuracy"] is not None and r["images_per_s"] and not r["seed"]]
        if pts:
            label = "trials" if state == "complete" else "pruned (rung accuracy)"
            ax.scatter(*zip(*pts), c=color, marker=marker, s=22, alpha=0.7, label=label)
    seeds = [r for r in rows if r["seed"] and r["accuracy"] is not None and r["images_per_s"]]
    if seeds:
        ax.scatter([r["images_per_s"] for r in seeds], [r["accuracy"] for r in seeds],
                   marker="*", s=140, c="tab:orange", edgecolors="k", label="zoo seeds", zorder=3)
        for r in seeds:
            ax.annotate(r["seed"], (r["images_per_s"], r["accuracy"]), fontsize=7,
                        xytext=(4, 4), textcoords="offset points")
    if front:
        xs = [r["images_per_s"] for r in front]
        ys = [r["accuracy"] for r in front]
        ax.step(xs, ys, where="post", c="tab:red", lw=1.5, label="Pareto front")
        ax.scatter(xs, ys, c="tab:red", s=36, zorder=4)
        for i, r in enumerate(front, 1):
            ax.annotate(f"{i:02d}", (r["images_per_s"], r["accuracy"]), fontsize=7,
                        xytext=(-10, -10), textcoords="offset points", color="tab:red")
    ax.set_xlabel("throughput at the deploy shape (images/s)")
    ax.set_ylabel("validation accuracy")
    ax.set_title("attndsl search: accuracy × throughput")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(run_dir / "pareto.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(6, 3.8))
    if history:     # markers too: one finished trial is one point, which a step cannot draw
        ax.step([h for h, _ in history], [v for _, v in history], where="post", marker="o")
        if len(history) == 1:
            ax.annotate(f"one trial so far: hypervolume {history[0][1]:,.3g}", history[0],
                        xytext=(8, -12), textcoords="offset points", fontsize=8)
    else:
        ax.text(0.5, 0.5, "no completed trial yet", ha="center", va="center",
                transform=ax.transAxes, color="tab:gray")
    ax.set_xlabel(f"{unit}-hours spent")
    ax.set_ylabel("hypervolume (accuracy × images/s)")
    ax.set_title("front hypervolume against budget spent")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(run_dir / "hypervolume.png", dpi=120)
    plt.close(fig)
    _plotly(rows, front, history, run_dir, unit)


def _plotly(rows, front, history, run_dir: Path, unit: str) -> None:
    try:
        import plotly.graph_objects as go
    except ImportError:
        return
    fig = go.Figure()
    done = [r for r in rows if r["accuracy"] is not None and r["images_per_s"]]
    fig.add_trace(go.Scatter(x=[r["images_per_s"] for r in done], y=[r["accuracy"] for r in done],
                             mode="markers", name="trials",
                             text=[f"#{r['number']} {r['name']} ({r['state']})" for r in done]))
    fig.add_trace(go.Scatter(x=[r["images_per_s"] for r in front], y=[r["accuracy"] for r in front],
                             mode="lines+markers", line_shape="hv", name="Pareto front",
                             text=[r["name"] for r in front]))
    fig.update_layout(xaxis_title="images/s", yaxis_title="validation accuracy")
    fig.write_html(run_dir / "pareto.html")
    hv = go.Figure(go.Scatter(x=[h for h, _ in history], y=[v for _, v in history],
                              line_shape="hv"))
    hv.update_layout(xaxis_title=f"{unit}-hours spent", yaxis_title="hypervolume")
    hv.write_html(run_dir / "hypervolume.html")


def remeasure_front(front: list[dict], deploy, *, rounds: int = 5, threads=None,
                    device=None, timeout: float = 1800) -> dict | None:
    """Re-measure the front's throughput interleaved, in a fresh process; differences
    inside the spread (interquartile ranges that overlap) are reported as ties."""
    if len(front) < 1:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        job = Path(tmp) / "job.json"
        out = Path(tmp) / "out.json"
        job.write_text(json.dumps({"backbones": [r["backbone"] for r in front],
                                   "deploy": deploy.model_dump(), "rounds": rounds,
                                   "min_run_time": deploy.measure_seconds,
                                   "threads": threads, "device": device}))
        proc = subprocess.run([sys.executable, "-m", "attndsl.nas.measure", str(job),
                               str(out)], capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            return {"error": proc.stderr[-2000:]}
        results = json.loads(out.read_text())
    entries = []
    for r, m in zip(front, results):
        entries.append({"number": r["number"], "name": r["name"],
                        "search_images_per_s": r["images_per_s"], **m})
    for a in entries:
        a["ties_with"] = [b["name"] for b in entries if b is not a
                          and a["low"] <= b["high"] and b["low"] <= a["high"]]
    points = [(r["accuracy"], e["images_per_s"]) for r, e in zip(front, entries)]
    still = set(nondominated_fronts(points)[0])
    return {"rounds": rounds, "entries": entries,
            "dropped_from_front": [e["name"] for i, e in enumerate(entries) if i not in still]}
