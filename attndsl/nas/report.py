"""What a search leaves in its run directory, made from the study storage alone (so
`attndsl report RUN_DIR` regenerates all of it, and a killed search loses none of it):

    trials.csv           one row per trial: state, reason, params, accuracy per rung,
                         throughput (median, spread), parameters, FLOPs, memory, cost
    front.json           the Pareto front (accuracy × images/s), re-measured interleaved;
                         each design once (its duplicates named), ordered by the best
                         throughput evidence (the re-measurement where it ran)
    pareto/NN_<name>.yaml  each front design as a backbone file (`attndsl compile`,
                         `attndsl.model.build_model` take it as it is)
    pareto/NN_<name>.pt  its trained weights (`attndsl.load` → the trained model, eval
                         mode; `attndsl evaluate` reproduces its accuracy)
    weights/trial_NNNN.pt  every completed trial's model, the front's always kept, the
                         others while they fit in --keep-weights-mb (best accuracy first)
    pareto.png           accuracy against images/s: every trial, the front, the zoo seeds
    hypervolume.png      hypervolume of the front against device-hours spent
    pareto.html, hypervolume.html   the same with plotly, when plotly is installed
"""
from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from optuna.trial import TrialState

from .budget import COST_ATTR
from .pruner import hypervolume_2d, nondominated_fronts
from .trial import PHASES

COLUMNS = ["number", "name", "state", "reason", "seed", "accuracy", "images_per_s", "spread",
           "noisy", "latency_ms", "latency_source", "params", "flops", "peak_memory_mb", "compile_s", "epochs", "cost_s",
           "duplicate_of", "retry_of", "hash", "weights", "rungs", "search_params", "host",
           "pid", "message", *(f"{p}_s" for p in PHASES), "other_s"]
KEEP_WEIGHTS_MB = 1024   # the non-front trials' weights kept in weights/ (front: always)


def trial_rows(study) -> list[dict]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        a = t.user_attrs
        state = a.get("state") or t.state.name.lower()
        if t.state == TrialState.RUNNING:
            state = "running"
        elif t.state == TrialState.WAITING:
            state = "queued"
        elif t.state == TrialState.FAIL and state == "running":
            # its worker stopped recording (killed, paused past the heartbeat grace) and
            # Optuna failed it; the retry is another trial
            state = "interrupted"
        rungs = {k[len("rung_"):]: v for k, v in a.items() if k.startswith("rung_")}
        rows.append({
            "number": t.number, "name": a.get("name", ""), "state": state,
            "reason": a.get("reason", ""), "seed": a.get("seed", ""),
            "accuracy": a.get("accuracy"),   # the final one, or the last rung's when pruned
            "images_per_s": a.get("images_per_s"), "spread": a.get("spread"),
            "noisy": a.get("noisy", False), "weights": a.get("weights"),
            "latency_ms": a.get("latency_ms"), "params": a.get("params"),
            # table: composed from the latency table; measured: the whole model timed
            "latency_source": a.get("latency_source", "measured" if "images_per_s" in a else ""),
            "flops": a.get("flops"), "peak_memory_mb": a.get("peak_memory_mb"),
            "compile_s": a.get("compile_s"), "epochs": a.get("epochs"),
            "cost_s": a.get(COST_ATTR, 0.0),
            # "" when not a duplicate: trial 0 is a real number (`not 0` once let trial 0's
            # duplicates onto the front as copies of it)
            "duplicate_of": a.get("duplicate_of", ""),
            "retry_of": a.get("retry_of", ""), "hash": a.get("hash", ""),
            "rungs": json.dumps(dict(sorted(rungs.items(), key=lambda kv: int(kv[0])))),
            "search_params": json.dumps(t.params, default=str),
            "message": a.get("message", ""),
            "backbone": a.get("backbone"), "fingerprint": a.get("fingerprint"),
            "host": a.get("host"), "pid": a.get("pid"),
            "completed": t.datetime_complete.timestamp() if t.datetime_complete else None,
            **_breakdown(a),
        })
    return rows


def _breakdown(attrs: dict) -> dict:
    """A trial's cost by phase (trial.py's PHASES, as its process reported them) and
    `other`: the rest of its cost — sampling, the storage, waiting on the process."""
    phases = attrs.get("phases")
    if not phases:
        return {**{f"{p}_s": None for p in PHASES}, "other_s": None}
    out = {f"{p}_s": phases.get(p, 0.0) for p in PHASES}
    out["other_s"] = max(0.0, attrs.get(COST_ATTR, 0.0) - sum(out.values()))
    return out


def cost_breakdown(rows: list[dict]) -> dict:
    """Where the study's device time went: seconds per phase over the trials that report
    phases, and the share spent learning (training steps and validation)."""
    timed = [r for r in rows if r.get("train_s") is not None]
    totals = {p: sum(r[f"{p}_s"] or 0.0 for r in timed) for p in (*PHASES, "other")}
    spent = sum(r["cost_s"] or 0.0 for r in timed)
    return {"trials": len(timed), "seconds": totals, "spent_s": spent,
            "learning_share": (totals["train"] + totals["eval"]) / spent if spent else None}


def describe_breakdown(breakdown: dict) -> str:
    spent = breakdown["spent_s"]
    if not spent:
        return ""
    parts = ", ".join(f"{name} {seconds / spent * 100:.0f}%" for name, seconds in
                      sorted(breakdown["seconds"].items(), key=lambda kv: -kv[1]) if seconds)
    return (f"device time by phase over {breakdown['trials']} trials: {parts} — "
            f"{breakdown['learning_share'] * 100:.0f}% learning (training and validation)")


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
    """Complete, feasible trials on the Pareto front, each design once (a duplicate — the
    same hash, reused — is listed under the trial it copied), fastest first by the
    in-search measurement."""
    done = [r for r in rows if r["state"] == "complete" and r["duplicate_of"] == ""
            and r["accuracy"] is not None and r["images_per_s"] is not None]
    if not done:
        return []
    points = [(r["accuracy"], r["images_per_s"]) for r in done]
    first = nondominated_fronts(points)[0]
    front = sorted((done[i] for i in first), key=lambda r: -r["images_per_s"])
    for r in front:
        r["duplicates"] = [d["number"] for d in rows if d["duplicate_of"] == r["number"]]
    return front


def best_evidence(front: list[dict], remeasure: dict | None) -> list[dict]:
    """The front with each design's best throughput evidence — the interleaved
    re-measurement where it ran, else the in-search measurement — as `throughput`
    {images_per_s, low, high (the IQR), source, noisy}, ordered fastest first by it."""
    again = {e["number"]: e for e in ((remeasure or {}).get("entries") or [])
             if "images_per_s" in e}
    out = []
    for r in front:
        e = again.get(r["number"])
        if e is not None:
            evidence = {"images_per_s": e["images_per_s"], "low": e["low"], "high": e["high"],
                        "source": "re-measured", "noisy": bool(e.get("noisy")),
                        "ties_with": e.get("ties_with", [])}
        else:
            ips, spread = r["images_per_s"], r["spread"] or 0.0
            evidence = {"images_per_s": ips, "low": ips * (1 - spread / 2),
                        "high": ips * (1 + spread / 2),
                        "source": "table" if r.get("latency_source") == "table" else "search",
                        "noisy": bool(r.get("noisy")), "ties_with": []}
        out.append({**r, "throughput": evidence})
    return sorted(out, key=lambda r: -r["throughput"]["images_per_s"])


def hypervolume_history(rows: list[dict], reference=(0.0, 0.0)) -> list[tuple[float, float]]:
    """(device-hours spent, hypervolume of the front so far) after each finished trial, in
    the order they finished; reference point (0 accuracy, 0 images/s) unless given."""
    finished = sorted((r for r in rows if r["completed"] is not None),
                      key=lambda r: r["completed"])
    spent, points, out = 0.0, [], []
    for r in finished:
        spent += r["cost_s"] or 0.0
        if r["state"] == "complete" and r["accuracy"] is not None and r["images_per_s"]:
            points.append((r["accuracy"], r["images_per_s"]))
        out.append((spent / 3600, hypervolume_2d(points, reference)))
    return out


def write_outputs(study, run_dir: Path, *, remeasure: dict | None = None,
                  unit: str = "device", rows: list[dict] | None = None,
                  keep_weights_mb: float = KEEP_WEIGHTS_MB) -> dict:
    """Write every output file; returns the summary (front, counts, spent). `rows`: the
    study's trial_rows, if the caller has them."""
    run_dir = Path(run_dir)
    rows = trial_rows(study) if rows is None else rows
    front = front_rows(rows)
    _write_csv(rows, run_dir / "trials.csv")
    previous = _read_json(run_dir / "front.json")
    hashes = sorted(r["hash"] for r in front)
    if remeasure is None and previous and previous.get("remeasured_hashes") == hashes:
        remeasure = previous.get("remeasure")      # the same front: keep its re-measurement
    front = best_evidence(front, remeasure)
    weights = _write_pareto_files(front, run_dir)
    summary = {
        "study": study.study_name, "unit": f"{unit}-hours",
        "objectives": ["accuracy (validation, max)", "images_per_s (deploy shape, max)"],
        "counts": _counts(rows),
        "spent_device_s": sum(r["cost_s"] or 0.0 for r in rows),
        "spend": spend_by_worker(rows),
        "cost_breakdown": cost_breakdown(rows),
        "front": [_front_entry(r, i, weights[r["number"]]) for i, r in enumerate(front, 1)],
        "seeds": [_front_entry(r, 0) for r in rows if r["seed"] and r["state"] == "complete"],
        "latency": latency_summary(study),
        "remeasure": remeasure, "remeasured_hashes": hashes if remeasure else None,
        "weights_pruned": prune_weights(rows, front, run_dir, keep_weights_mb),
    }
    (run_dir / "front.json").write_text(json.dumps(summary, indent=1, default=str))
    history = hypervolume_history(rows)
    _plots(rows, front, history, run_dir, unit)
    return summary


def latency_summary(study) -> dict | None:
    """Where the study's throughput came from: the latency table (path, whether another
    machine's, and its check as it stands now: a profile --check after the search counts)
    or whole-model measurement."""
    recorded = study.user_attrs.get("latency")
    if not recorded or recorded.get("source") != "table":
        return recorded
    from .latency import LatencyTable, LatencyTableError
    try:
        table = LatencyTable.open(recorded["table"])
    except LatencyTableError:
        return {**recorded, "parts": None, "check": None, "missing_file": True}
    return {**recorded, "parts": len(table.parts), "check": table.data.get("check")}


def _front_entry(r: dict, position: int, weights: str | None = None) -> dict:
    entry = {k: r[k] for k in ("number", "name", "seed", "accuracy", "images_per_s", "spread",
                               "noisy", "latency_ms", "latency_source", "params", "flops", "peak_memory_mb",
                               "cost_s", "hash")}
    entry["rungs"] = json.loads(r["rungs"])
    entry["search_params"] = json.loads(r["search_params"])
    entry["fingerprint"] = r["fingerprint"]
    entry["cost_by_phase"] = {p: r.get(f"{p}_s") for p in (*PHASES, "other")}
    if position:
        entry["duplicates"] = r.get("duplicates", [])
        entry["throughput"] = r["throughput"]
        entry["file"] = f"pareto/{pareto_file_name(position, r['name'])}"
        entry["weights"] = weights
    return entry


def pareto_file_name(position: int, name: str, suffix: str = ".yaml") -> str:
    return f"{position:02d}_{name}{suffix}"


def _write_pareto_files(front: list[dict], run_dir: Path) -> dict:
    """pareto/NN_<name>.yaml for each front design and, where its trained weights are in
    the run directory, pareto/NN_<name>.pt beside it. Returns {trial number: the .pt's path
    in the run directory, or None}."""
    folder = run_dir / "pareto"
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    written = {}
    for i, r in enumerate(front, 1):
        t = r["throughput"]
        evidence = (f"{t['images_per_s']:.1f} images/s at the deploy shape ({t['source']}, "
                    f"IQR {t['low']:.1f}–{t['high']:.1f}"
                    + ("; NOISY: the spread stayed above the bound, treat as a rough figure"
                       if t["noisy"] else "") + ")")
        ties = f"; ties with {', '.join(t['ties_with'])}" if t["ties_with"] else ""
        dups = (f"; also sampled as trial(s) {', '.join(map(str, r['duplicates']))}"
                if r.get("duplicates") else "")
        header = (f"# attndsl search front #{i}: trial {r['number']}, validation accuracy "
                  f"{r['accuracy']:.4f}, {evidence}{ties}, {r['params']:,} parameters{dups}\n")
        source = run_dir / r["weights"] if r.get("weights") else None
        written[r["number"]] = None
        if source is not None and source.is_file():
            target = pareto_file_name(i, r["name"], ".pt")
            try:
                os.link(source, folder / target)      # no second copy on disk
            except OSError:
                shutil.copyfile(source, folder / target)
            written[r["number"]] = f"pareto/{target}"
        elif source is not None:
            header = (f"# (trained weights {r['weights']} are missing from the run "
                      "directory: `attndsl train` this file to get a model)\n") + header
        (folder / pareto_file_name(i, r["name"])).write_text(header + r["backbone"])
    return written


def prune_weights(rows: list[dict], front: list[dict], run_dir: Path,
                  keep_mb: float) -> list[int]:
    """Keep every front design's weights; keep the other completed trials' while their
    total stays within `keep_mb` (the most accurate first); delete the rest. A trial off
    the front never returns to it (trials are only ever added), so nothing the front will
    need is deleted. Returns the trial numbers whose weights were deleted."""
    on_front = {r["number"] for r in front}
    others = sorted((r for r in rows if r.get("weights") and r["number"] not in on_front),
                    key=lambda r: -(r["accuracy"] or 0.0))
    kept_bytes, deleted = 0, []
    for r in others:
        path = run_dir / r["weights"]
        try:
            size = path.stat().st_size
        except OSError:
            continue
        if kept_bytes + size <= keep_mb * 2**20:
            kept_bytes += size
            continue
        path.unlink(missing_ok=True)
        deleted.append(r["number"])
    return deleted


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
    noisy = [r for r in rows if r.get("noisy") and r["accuracy"] is not None
             and r["images_per_s"]]
    if noisy:   # hollow rings: their throughput stayed noisier than the bound
        ax.scatter([r["images_per_s"] for r in noisy], [r["accuracy"] for r in noisy],
                   facecolors="none", edgecolors="tab:purple", s=70, lw=1,
                   label="noisy throughput", zorder=2)
    if front:
        # the best evidence (the interleaved re-measurement where it ran), with its IQR
        xs = [r["throughput"]["images_per_s"] for r in front]
        ys = [r["accuracy"] for r in front]
        lows = [x - r["throughput"]["low"] for x, r in zip(xs, front)]
        highs = [r["throughput"]["high"] - x for x, r in zip(xs, front)]
        order = sorted(range(len(xs)), key=lambda i: xs[i])
        ax.step([xs[i] for i in order], [ys[i] for i in order], where="post", c="tab:red",
                lw=1.5, label="Pareto front" + (" (re-measured, IQR bars)" if any(
                    r["throughput"]["source"] == "re-measured" for r in front) else
                    " (IQR bars)"))
        ax.errorbar(xs, ys, xerr=[lows, highs], fmt="o", c="tab:red", ms=6, capsize=3,
                    zorder=4)
        for i, (x, r) in enumerate(zip(xs, front), 1):
            ax.annotate(f"{i:02d}", (x, r["accuracy"]), fontsize=7,
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


def throughput_cache(run_dir: Path) -> Path:
    """Where the trials of every study under the same runs folder cache their throughput
    (runner.py's job["cache_dir"])."""
    return Path(run_dir).resolve().parent / ".cache" / "throughput"


def remeasure_front(front: list[dict], deploy, *, rounds: int = 5, threads=None,
                    device=None, timeout: float = 1800, cache_dir=None) -> dict | None:
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
                                   "threads": threads, "device": device,
                                   "cache_dir": str(cache_dir) if cache_dir else None}))
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
