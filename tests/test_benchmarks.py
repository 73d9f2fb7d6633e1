"""Smoke test of the benchmark suite (benchmarks/): --quick sizes, eager variants only
(--no-compile), no timing assertions.  Checks that every reference / baseline matches the
attndsl module numerically, that a wrong baseline is caught as a mismatch (not timed),
and that the JSON and markdown carry the required fields."""
from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import baselines as bl   # noqa: E402
from benchmarks import suite             # noqa: E402

FAMILIES = ["vit_mhsa", "swin_swmsa", "nat"]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    # one deliberately wrong baseline: the suite must refuse to time it
    fam = bl.FAMILIES["vit_mhsa"]

    def broken(c):
        f = bl.vit_sdpa(c)
        return lambda x: f(x) * 1.001

    patched = dataclasses.replace(fam, baselines=fam.baselines + [bl.Baseline("broken", broken)])
    saved = bl.FAMILIES["vit_mhsa"]
    bl.FAMILIES["vit_mhsa"] = patched
    try:
        rc = suite.main(["--quick", "--families", ",".join(FAMILIES), "--stages", "stage1",
                         "--dtypes", "float32", "--no-compile", "--in-process", "--repeats", "2",
                         "--warmup", "0", "--min-sample-ms", "0", "--out", str(out),
                         "--name", "smoke"])
    finally:
        bl.FAMILIES["vit_mhsa"] = saved
    assert rc == 0
    return out


def test_files_and_meta(smoke):
    doc = json.loads((smoke / "smoke.json").read_text())
    meta = doc["meta"]
    for key in ("device", "device_name", "device_kind", "torch", "threads", "dtypes", "date",
                "stages", "command"):
        assert key in meta, key
    assert meta["threads"] == 1 and meta["dtypes"] == ["float32"]
    assert doc["gemm_ceiling_gflops"]["float32"] > 0
    assert (smoke / "smoke.jsonl").read_text().count("\n") >= 1 + 2   # meta + rows
    md = (smoke / "smoke.md").read_text()
    assert "## Summary — float32" in md and "## All rows" in md and "GEMM ceiling" in md
    for fam in FAMILIES:
        assert f"| {fam} | stage1 |" in md


def test_every_variant_matches_attndsl(smoke):
    doc = json.loads((smoke / "smoke.json").read_text())
    rows = [r for r in doc["rows"] if r["variant"] != "broken"]
    seen = {(r["family"], r["variant"]) for r in rows}
    for fam in FAMILIES:
        expected = {"attndsl", "eager_ref"} | {b.name for b in bl.FAMILIES[fam].baselines
                                               if not b.compiled}
        assert {v for f, v in seen if f == fam} == expected, fam
    for r in rows:
        if r["variant"] == "natten" and r["status"] == "skipped":
            assert "not installed" in r["error"]
            continue
        assert r["status"] == "ok", (r["family"], r["variant"], r.get("error"))
        assert r["rel_err"] <= 1e-4, (r["family"], r["variant"], r["rel_err"])
        for key in ("median_ms", "min_ms", "max_ms", "iqr_ms", "gflop", "gflops", "frac_gemm",
                    "peak_mem_mb", "rss_max_mb", "first_call_s", "heads", "dtype", "stage"):
            assert r.get(key) is not None, (r["family"], r["variant"], key)
        assert r["min_ms"] <= r["median_ms"] <= r["max_ms"]


def test_mismatch_is_an_error_not_a_number(smoke):
    doc = json.loads((smoke / "smoke.json").read_text())
    (broken,) = [r for r in doc["rows"] if r["variant"] == "broken"]
    assert broken["status"] == "mismatch"
    assert broken.get("median_ms") is None and broken["rel_err"] > 1e-4


def test_summary_ratios(smoke):
    doc = json.loads((smoke / "smoke.json").read_text())
    summary = {(s["family"], s["stage"]): s for s in doc["summary"]}
    for fam in FAMILIES:
        s = summary[(fam, "stage1")]
        assert s["attndsl_ms"] > 0 and s["eager_ref_ms"] > 0 and s["best_baseline"]
        assert s["ratio_vs_best"] > 0 and s["speedup_vs_eager"] > 0
    assert any(t["target"].startswith("global") for t in doc["targets"])


def test_flops_are_positive_for_every_family():
    import attndsl
    for fam in bl.family_names():
        f = bl.FAMILIES[fam]
        m = attndsl.compile(f.zoo, dim=48, resolution=f.quick_resolution or (14, 14),
                            heads=suite.heads_for(fam, dict(heads=3)), backend="eager")
        assert bl.flops_for(fam, m, 2) > 0, fam


def test_eager_forms_of_compiled_baselines_match():
    """Baselines the suite wraps in torch.compile: their eager form, checked here without
    the compiler (the suite checks the compiled form itself before timing it)."""
    import attndsl
    import torch
    geo = suite.QUICK_STAGES["stage1"]
    for fam in bl.family_names():
        f = bl.FAMILIES[fam]
        wrapped = [b for b in f.baselines if b.wrap]
        if not wrapped:
            continue
        H, W = f.quick_resolution or (geo["H"], geo["W"])
        m = suite.randomize_(attndsl.compile(
            f.zoo, dim=geo["C"], resolution=(H, W),
            heads=suite.heads_for(fam, geo), backend="eager")).eval()
        x = torch.randn(geo["B"], H, W, geo["C"],
                        generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            y = m(x)
            for b in wrapped:
                assert bl.rel_err(b.build(bl.Ctx(m))(x), y) <= 1e-4, (fam, b.name)


def test_timeout_becomes_a_row(tmp_path):
    """A case that runs past --timeout is killed and recorded, not lost."""
    task = dict(type="case", family="dwconv", stage="stage1", geometry=suite.QUICK_STAGES["stage1"],
                dtype="float32", variant="eager_ref", kind="reference", threads=1, device="cpu",
                repeats=1, warmup=0, min_sample_ms=0, memory=False)
    row = suite._run_worker(task, 0.3, suite._worker_env(1))
    assert row["status"] == "timeout" and "timeout" in row["error"]


def test_assemble_survives_a_cut_jsonl(smoke, tmp_path):
    """A killed run leaves a .jsonl whose last line may be cut: --assemble rebuilds the
    JSON and markdown from the complete lines."""
    lines = [ln for ln in (smoke / "smoke.jsonl").read_text().splitlines()
             if json.loads(ln)["type"] in ("meta", "row")]         # killed before the end GEMM
    cut = tmp_path / "cut.jsonl"
    cut.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][: len(lines[-1]) // 2])
    assert suite.main(["--assemble", str(cut)]) == 0
    doc = json.loads(cut.with_suffix(".json").read_text())
    assert len(doc["rows"]) == len(lines) - 2    # meta and the cut row
    assert cut.with_suffix(".md").read_text().startswith("# attndsl benchmark suite")


def test_assemble_merges_runs(smoke, tmp_path):
    """Re-measured cases from a later run replace the same rows of an earlier one."""
    src = smoke / "smoke.jsonl"
    lines = src.read_text().splitlines()
    rows = [json.loads(ln) for ln in lines if json.loads(ln)["type"] == "row"]
    later = tmp_path / "later.jsonl"
    row = dict(rows[-1], median_ms=123456.0)
    later.write_text(lines[0] + "\n" + json.dumps(row) + "\n")
    assert suite.main(["--assemble", str(src), str(later), "--out", str(tmp_path),
                       "--name", "merged"]) == 0
    doc = json.loads((tmp_path / "merged.json").read_text())
    assert len(doc["rows"]) == len(rows)
    key = (row["family"], row["stage"], row["dtype"], row["variant"])
    (merged,) = [r for r in doc["rows"]
                 if (r["family"], r["stage"], r["dtype"], r["variant"]) == key]
    assert merged["median_ms"] == 123456.0 and merged["source"] == "later.jsonl"
    assert [m["file"] for m in doc["meta"]["merged_from"]] == ["smoke.jsonl", "later.jsonl"]


def test_paired_timing_writes_ratios(tmp_path):
    from benchmarks.paired import main as paired_main
    import json
    assert paired_main(["--quick", "--no-compile", "--families", "vit_mhsa,swin_wmsa",
                        "--stages", "stage1", "--rounds", "2", "--out", str(tmp_path),
                        "--name", "p"]) == 0
    data = json.loads((tmp_path / "p.json").read_text())
    rows = {r["family"]: r for r in data["rows"]}
    # which baseline is fastest is a measurement, not a fact to assert: only that the best
    # is one of the family's baselines and every ratio is well-formed
    assert rows["vit_mhsa"]["best"] in rows["vit_mhsa"]["ratio_vs"]
    ratio = rows["vit_mhsa"]["ratio_vs"]["sdpa"]
    assert 0 < ratio["min"] <= ratio["median"] <= ratio["max"]
    md = (tmp_path / "p.md").read_text()
    assert "| float32 | stage1 | vit_mhsa |" in md and "auto/best median" in md


def test_heads_option_of_families():
    """`heads` per family: the stage's count, the spec's own ("spec", "channels"), or a
    number; families whose branches fix their head split bind at both stages."""
    geo = dict(heads=6)
    assert suite.heads_for("vit_mhsa", geo) == 6
    assert suite.heads_for("dwconv", geo) is None
    assert suite.heads_for("efficientvit", geo) is None
    saved = bl.FAMILIES["vit_mhsa"]
    bl.FAMILIES["vit_mhsa"] = dataclasses.replace(saved, heads=4)
    try:
        assert suite.heads_for("vit_mhsa", geo) == 4
    finally:
        bl.FAMILIES["vit_mhsa"] = saved
    import attndsl
    for fam in ("cswin", "shunted", "axial_parallel", "efficientvit"):
        f = bl.FAMILIES[fam]
        for stage in suite.STAGES.values():
            plan = attndsl.compile(f.zoo, dim=stage["C"], resolution=(stage["H"], stage["W"]),
                                   heads=suite.heads_for(fam, stage), backend="eager").plan
            assert len({b.heads for b in plan.branches}) == 1, (fam, stage)


ZOO9 = ["swin_v2_wmsa", "swin_v2_swmsa", "cswin", "maxvit_block", "maxvit_grid",
        "axial_parallel", "axial_sequential", "pvt_v2_linear", "linear_attention_elu",
        "linear_attention_relu", "halonet", "shunted", "crossformer_sda", "crossformer_lda",
        "sigmoid_attention", "dinat_13", "efficientvit"]


@pytest.mark.parametrize("fam", ZOO9)
def test_zoo9_reference_and_eager_baselines_match(fam):
    """The paper-style reference and every baseline that runs without the compiler match
    the attndsl module at the smoke sizes (no torch.compile here)."""
    import attndsl
    import torch
    f = bl.FAMILIES[fam]
    geo = suite.QUICK_STAGES["stage1"]
    H, W = f.quick_resolution or (geo["H"], geo["W"])
    m = suite.randomize_(attndsl.compile(f.zoo, dim=geo["C"], resolution=(H, W),
                                         heads=suite.heads_for(fam, geo), backend="eager")).eval()
    x = torch.randn(geo["B"], H, W, geo["C"], generator=torch.Generator().manual_seed(0))
    c = bl.Ctx(m)
    with torch.no_grad():
        y = m(x)
        assert bl.rel_err(f.reference(c)(x), y) <= 1e-4, (fam, "reference")
        for b in f.baselines:
            if b.compiled and not b.wrap:
                continue
            try:
                fn = b.build(c)
            except bl.Skip:
                continue
            assert bl.rel_err(fn(x), y) <= 1e-4, (fam, b.name)
    assert bl.flops_for(fam, m, geo["B"]) > 0


def test_gpu_check_dry_run_writes_results_and_evidence(tmp_path):
    """benchmarks/gpu_check.py's own code paths on the CPU (the GPU run is the device's):
    the correctness rows against the float64 reference, the paired rows with attndsl's
    engines asked for by name, the report and the evidence file autoplan reads."""
    import subprocess
    out = subprocess.run([sys.executable, "-m", "benchmarks.gpu_check", "--dry-run",
                          "--out", str(tmp_path), "--workers", "1", "--specs", "nat,twins_gsa",
                          "--families", "nat", "--write-evidence", "--parts", "check,bench"],
                         cwd=Path(__file__).parent.parent, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(next(tmp_path.glob("gpu_*_dry-run.json")).read_text())
    rows = {(r["spec"], r["attention"]): r for r in result["check"]}
    assert set(rows) == {("nat", "auto"), ("nat", "flex"), ("twins_gsa", "auto")}
    assert all(r["ok"] for r in rows.values()), rows
    assert rows["nat", "auto"]["grads"] < 1e-3 and rows["nat", "flex"]["grads"] < 1e-3
    assert rows["nat", "flex"]["engines"] == {"attn": "flex"}
    (bench,) = result["bench"]
    assert {"attndsl_auto", "attndsl_flex", "attndsl_explicit"} <= set(bench["median_ms"])
    assert "attndsl_sdpa" in bench["errors"]          # neighbourhoods have no SDPA form
    assert result["gemm"]["tflops"] > 0 and result["environment"]["device_key"] == "cpu"
    evidence = json.loads((tmp_path / "attndsl/codegen/evidence/cpu_float32.json").read_text())
    assert set(evidence["forms"]["sliding+terms"]["engines_ms"]) == {"sdpa", "flex", "explicit"}
    md = next(tmp_path.glob("gpu_*_dry-run.md")).read_text()
    assert "| nat | eager | float32 | flex |" in md and "auto/best" in md


def _task_run(seeds: list[int], accuracies: dict[str, list[float]]) -> dict:
    from benchmarks.task_attention import DESIGNS, summary
    designs = {name: {"kind": DESIGNS[name][0], "seeds": list(seeds), "accuracies": accs,
                      "train_s": [1.0] * len(accs), "images_per_s": 100.0, "params": 10,
                      **summary(accs)} for name, accs in accuracies.items()}
    return {"date": f"s{seeds[0]}", "command": "c", "seeds": list(seeds),
            "training": {"epochs": 1, "batch_size": 64, "lr": 3e-3}, "template": {"patch": 2},
            "device": {"device_name": "cpu", "torch": "x"}, "threads": 1, "dtype": "float32",
            "deploy": {"batch": 64, "backend": "auto"},
            "tasks": {"texture_pair": {"describe": "t", "first_blocks": ["none", "none"],
                                       "late": "DESIGN", "designs": designs}}}


def test_task_attention_long_range_verdict_needs_three_seeds_a_learnt_task_and_a_margin():
    from benchmarks.task_attention import summary, verdict

    def designs(far: list[float], near: list[float]) -> dict:
        return {"vit_mhsa": {"kind": "global", "seeds": [0, 1, 2][:len(far)], **summary(far)},
                "swin_wmsa": {"kind": "window", "seeds": [0, 1, 2][:len(near)],
                              **summary(near)}}
    assert verdict("texture_pair", designs([0.9, 0.88], [0.5, 0.5])).startswith("No verdict")
    assert "PASS" in verdict("texture_pair", designs([0.9, 0.88, 0.92], [0.5, 0.48, 0.51]))
    # a margin inside the seed spread, or every design at chance, is no pass
    assert "FAIL" in verdict("texture_pair", designs([0.9, 0.6, 0.7], [0.55, 0.5, 0.65]))
    chance = verdict("texture_pair", designs([0.52, 0.49, 0.51], [0.5, 0.48, 0.51]))
    assert "FAIL" in chance and "no design learned" in chance


def test_task_attention_merge_pools_the_seeds_of_split_runs(tmp_path):
    from benchmarks.task_attention import merge
    a = tmp_path / "a.json"
    b = tmp_path / "b.json"
    a.write_text(json.dumps(_task_run([0, 1], {"vit_mhsa": [0.9, 0.88],
                                                "swin_wmsa": [0.5, 0.49]})))
    b.write_text(json.dumps(_task_run([2], {"vit_mhsa": [0.92], "swin_wmsa": [0.51]})))
    assert merge([a, b], tmp_path) == 0
    merged = json.loads((tmp_path / "a_merged.json").read_text())
    assert merged["seeds"] == [0, 1, 2]
    vit = merged["tasks"]["texture_pair"]["designs"]["vit_mhsa"]
    assert vit["accuracies"] == [0.9, 0.88, 0.92] and vit["min"] == 0.88
    assert "PASS" in merged["tasks"]["texture_pair"]["verdict"]
    assert "PASS" in (tmp_path / "a_merged.md").read_text()
    other = _task_run([2], {"vit_mhsa": [0.9]})
    other["training"]["epochs"] = 2
    b.write_text(json.dumps(other))
    with pytest.raises(SystemExit, match="other training settings"):
        merge([a, b], tmp_path)


def test_search_quality_summaries_from_the_curves():
    """The final and mean-over-the-budget hypervolumes, the minutes to 99% of the best
    front, and the bootstrap differences from random search, on hand-made curves."""
    from benchmarks.search_quality import GRID, summarize
    fast = [100.0] * GRID                              # at the ceiling from the first point
    slow = [50.0] * (GRID // 2) + [100.0] * (GRID - GRID // 2)
    never = [50.0] * GRID
    arms = {"default": {"hv_curves": [fast, fast, slow]},
            "random": {"hv_curves": [slow, never, never]}}
    summarize(arms, horizon_h=5 / 60)                  # 5 minutes: 0.25 min a grid step
    d, r = arms["default"], arms["random"]
    assert d["final_hv"] == [100.0, 100.0, 100.0] and d["median_hv"] == 100.0
    assert d["mean_hv"] == [100.0, 100.0, 75.0] and d["median_mean_hv"] == 100.0
    assert d["minutes_to_99"] == [0.25, 0.25, 2.75] and d["median_minutes_to_99"] == 0.25
    assert r["minutes_to_99"] == [2.75, None, None] and r["median_minutes_to_99"] is None
    assert d["vs_random"]["difference"] == 50.0 and d["mean_vs_random"]["difference"] == 50.0
    low, high = d["mean_vs_random"]["ci95"]
    assert low <= 50.0 <= high and "vs_random" not in r
