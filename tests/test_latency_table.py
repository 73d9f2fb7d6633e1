"""Latency tables (attndsl/nas/latency.py): a design's parts, composition on a fake clock,
resumed and incremental profiles, tables of another machine refused with what they lack,
the check, and `attndsl profile` / `attndsl search --latency-table` from the command line."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from attndsl.model.spec import load_backbone
from attndsl.nas import latency as L
from attndsl.nas.space import Deploy, load_space

SPACE = """\
name: tiny
task: {kind: digits, resolution: 8}
backbone:
  patch: 2
  stages:
    - depth: 2
      dim: 8
      heads: {choice: [1, 2]}
      mlp_ratio: 2
      peg: true
      attention: {choice: [none, vit_mhsa, swin_wmsa]}
    - {depth: 1, dim: 16, heads: 2, mlp_ratio: 2, attention: vit_mhsa}
training: {epochs: 1, batch_size: 64, lr: 0.003}
deploy: {batch: 4, backend: eager}
"""


class FakeClock:
    """A unit's samples on a fake clock: a fixed latency per unit (from its key), 10% more
    in each later session it is built in (a slower process), and a wobble over rounds
    (+1% a round); and a count of the units built."""

    def __init__(self):
        self.built: list[str] = []

    def __call__(self, unit, call, device, seconds):
        slower = 1 + 0.1 * self.built.count(unit.key)
        self.built.append(unit.key)
        base = self.latency_ms(unit) / 1e3 * slower
        samples = iter(base * (1 + 0.01 * k) for k in range(10_000))
        return type("Timer", (), {"sample": lambda self: next(samples)})()

    @staticmethod
    def latency_ms(unit) -> float:
        return 1.0 * (1 + int(unit.key.split("-")[1], 16) % 97)


@pytest.fixture
def space(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(SPACE)
    return load_space(path)


def _here(deploy, resolution=8):
    return L.table_fingerprint(torch.device("cpu"), deploy, resolution)


def test_design_parts_follow_the_forward(space):
    backbone = space.fixed({"stages[0].attention": "swin_wmsa"}).backbone
    parts = L.design_parts(backbone, 8)
    kinds = [p.kind for p in parts]
    # stem, block, PEG after the first block, block, downsample, block, head
    assert kinds == ["stem", "block", "peg", "block", "downsample", "block", "head"]
    assert parts[1].key == parts[3].key              # two occurrences of one part
    assert "swin_wmsa" in parts[1].label and "4×4" in parts[1].label
    # names are not what a part computes: a renamed spec is the same part
    renamed = load_backbone({**json.loads(json.dumps(_as_dict(backbone))), "name": "other"})
    assert [p.key for p in L.design_parts(renamed, 8)] == [p.key for p in parts]
    # an MLP-only block is one part whatever the stage's heads
    one = L.design_parts(space.fixed({"stages[0].attention": "none",
                                      "stages[0].heads": 1}).backbone, 8)
    two = L.design_parts(space.fixed({"stages[0].attention": "none",
                                      "stages[0].heads": 2}).backbone, 8)
    assert one[1].key == two[1].key


def _as_dict(backbone):
    from attndsl.model.spec import backbone_to_dict
    return backbone_to_dict(backbone)


def test_space_parts_lists_every_design_and_its_distinct_parts(space):
    listed = L.space_parts(space, 8)
    assert listed.exhaustive
    # heads 1|2 × attention none|vit|swin: six designs (the MLP-only pair differs in its
    # recorded heads only), whose stage-0 blocks are five parts
    assert len(listed.designs) == 6
    blocks0 = {p.key for p in listed.parts if p.kind == "block" and "dim 8" in p.label}
    assert len(blocks0) == 5                          # none, vit×2 heads, swin×2 heads
    assert sum(p.kind == "stem" for p in listed.parts) == 1


def test_composition_is_the_sum_of_the_parts_on_a_fake_clock(space, tmp_path):
    deploy = space.file.deploy
    table = L.LatencyTable.open(tmp_path / "t.json", _here(deploy))
    listed = L.space_parts(space, 8)
    clock = FakeClock()
    L.fill(table, listed.parts, deploy, sessions=2, rounds=5, timer=clock)
    for part in listed.parts:
        entry = table.parts[part.key]
        # the fastest round of either session: the first session's first; the spread is
        # how far the sessions' fastest rounds lie apart (the second session is 10% slower)
        base = FakeClock.latency_ms(part)
        assert entry["latency_ms"] == pytest.approx(base)
        assert entry["spread_ms"] == pytest.approx(0.1 * base)
        assert entry["session_count"] == 2 and entry["rounds"] == 10
    assert sorted(clock.built) == sorted(2 * [p.key for p in listed.parts])
    for _, backbone in listed.designs:
        parts = L.design_parts(backbone, 8)
        composed = table.compose(parts)
        assert composed["latency_ms"] == pytest.approx(sum(FakeClock.latency_ms(p)
                                                           for p in parts))
        assert composed["spread"] == pytest.approx(0.1)
    # on disk, as read back
    again = L.LatencyTable.open(tmp_path / "t.json")
    assert again.parts.keys() == table.parts.keys()


def test_a_killed_profile_resumes_and_a_grown_space_measures_only_new_parts(space, tmp_path):
    deploy = space.file.deploy
    path = tmp_path / "t.json"
    listed = L.space_parts(space, 8)
    table = L.LatencyTable.open(path, _here(deploy))
    rounds_seen = []

    def stop_after_two(results):
        table.record(listed.parts, "killed", results)
        table.save()
        rounds_seen.append(1)
        if len(rounds_seen) == 2:
            raise KeyboardInterrupt        # a Ctrl-C / kill after the second round

    with pytest.raises(KeyboardInterrupt):
        L.measure_session(listed.parts, deploy, rounds=6, timer=FakeClock(),
                          on_round=stop_after_two)
    saved = L.LatencyTable.open(path)
    assert {e["rounds"] for e in saved.parts.values()} == {2}
    killed = {k: list(e["sessions"]["killed"]["rounds_ms"]) for k, e in saved.parts.items()}
    # the cut session does not count as one; what it measured stays in the table
    assert saved.missing(listed.parts, 1, 6) == listed.parts
    measured = L.fill(saved, listed.parts, deploy, sessions=2, rounds=6, timer=FakeClock())
    assert len(measured) == len(listed.parts)
    for key, entry in saved.parts.items():
        assert entry["sessions"]["killed"]["rounds_ms"] == killed[key]
        assert len(entry["sessions"]) == 3 and entry["rounds"] == 2 + 6 + 6
    assert not L.LatencyTable.open(path).missing(listed.parts, 2, 6)

    # the space grows by one option: only its parts are built and measured
    grown_path = tmp_path / "grown.yaml"
    grown_path.write_text(SPACE.replace("[none, vit_mhsa, swin_wmsa]",
                                        "[none, vit_mhsa, swin_wmsa, linear_attention_elu]"))
    grown = L.space_parts(load_space(grown_path), 8)
    clock = FakeClock()
    new = L.fill(L.LatencyTable.open(path), grown.parts, deploy, rounds=6, timer=clock)
    assert new and all("linear_attention_elu" in p.label for p in new)
    assert sorted(clock.built) == sorted(p.key for p in new)


def test_a_table_of_another_machine_serves_only_when_it_holds_every_part(space, tmp_path):
    deploy = space.file.deploy
    listed = L.space_parts(space, 8)
    elsewhere = {**_here(deploy), "device": "Deployment CPU 9000", "threads": 4}
    path = tmp_path / "deploy_machine.json"
    table = L.LatencyTable.open(path, elsewhere)
    L.fill(table, listed.parts[:-2], deploy, rounds=3, timer=FakeClock())
    with pytest.raises(L.LatencyTableError) as refused:
        L.search_table(space, deploy, table=str(path), runs_dir=tmp_path)
    text = str(refused.value)
    assert "Deployment CPU 9000" in text and "lacks 2 part(s)" in text
    assert listed.parts[-1].label in text and "attndsl profile" in text
    assert "--threads 4" in text
    # the missing parts measured there: the search takes it, as another machine's table
    L.fill(table, listed.parts, deploy, rounds=3, timer=FakeClock())
    said = []
    info = L.search_table(space, deploy, table=str(path), runs_dir=tmp_path, say=said.append)
    assert info["foreign"] and info["path"] == str(path.resolve())
    assert "another machine's" in said[0] and "unverified" in said[0]
    # and a trial composes from it without measuring anything
    backbone = listed.designs[0][1]
    result = L.table_measure(backbone, deploy, info)
    assert result["parts_measured"] == 0 and result["latency_source"] == "table"
    assert result["latency_ms"] == pytest.approx(
        table.compose(L.design_parts(backbone, 8))["latency_ms"])
    # a table at another deploy setting is refused whatever the machine
    other = Deploy.model_validate({**deploy.model_dump(), "batch": 8})
    with pytest.raises(L.LatencyTableError, match="batch 4 .*deploys at 8"):
        L.search_table(space, other, table=str(path), runs_dir=tmp_path)


def test_a_trial_measures_the_parts_its_table_lacks_and_adds_them(space, tmp_path):
    deploy = space.file.deploy
    info = L.search_table(space, deploy, runs_dir=tmp_path)
    assert not info["foreign"] and "latency" in info["path"]
    backbone = space.fixed({"stages[0].attention": "vit_mhsa"}).backbone
    first = L.table_measure(backbone, deploy, info)
    n_parts = len({p.key for p in L.design_parts(backbone, 8)})
    assert first["parts_measured"] == n_parts and first["images_per_s"] > 0
    assert first["params"] > 0 and first["flops"] > 0 and first["peak_memory_mb"] > 0
    again = L.table_measure(backbone, deploy, info)
    assert again["parts_measured"] == 0 and again["latency_ms"] == first["latency_ms"]


def test_the_check_times_designs_whole_against_the_composition(space, tmp_path):
    deploy = Deploy.model_validate({**space.file.deploy.model_dump(), "measure_seconds": 0.01})
    table = L.LatencyTable.open(tmp_path / "t.json", _here(deploy))
    listed = L.space_parts(space, 8)
    L.fill(table, listed.parts, deploy, rounds=2, seconds=0.005)
    check = L.check_table(table, space, deploy, L.pick_check_designs(listed, 3), rounds=2,
                          seconds=0.005)
    assert check["designs"] == 3 and len(check["rows"]) == 3
    # the designs timed whole are in the table, by the parts' protocol
    assert len(table.designs) == 3
    assert {e["rounds"] for e in table.designs.values()} == {2}
    assert -1 <= check["kendall_tau"] <= 1 and -1 <= check["spearman"] <= 1
    assert check["mape"] >= 0
    for row in check["rows"]:
        assert row["composed_ms"] > 0 and row["whole_ms"] > 0
    assert L.LatencyTable.open(tmp_path / "t.json").data["check"]["designs"] == 3
    assert "Kendall τ" in L.describe_check(check)


class ReversingClock(FakeClock):
    """FakeClock's latencies in a unit's first session; their reciprocals in its second, so
    whole-model timing ranks the designs in one session the reverse of the other."""

    def __call__(self, unit, call, device, seconds):
        first = unit.key not in self.built
        self.built.append(unit.key)
        base = (self.latency_ms(unit) if first else 100.0 / self.latency_ms(unit)) / 1e3
        return type("Timer", (), {"sample": lambda self: base})()


@pytest.mark.parametrize("clock, ceiling", [(FakeClock, 1.0), (ReversingClock, -1.0)])
def test_the_check_reports_how_well_whole_timing_agrees_with_itself(space, tmp_path, clock,
                                                                     ceiling):
    deploy = space.file.deploy
    table = L.LatencyTable.open(tmp_path / "t.json", _here(deploy))
    listed = L.space_parts(space, 8)
    designs = L.pick_check_designs(listed, 3)
    L.fill(table, listed.parts, deploy, rounds=2, timer=FakeClock())
    timer = clock()
    once = L.check_table(table, space, deploy, designs, sessions=1, rounds=2, timer=timer)
    assert once["whole_repeat_tau"] is None          # one session: nothing to compare
    # a second session for each design (the check resumes: the first is kept)
    check = L.check_table(table, space, deploy, designs, sessions=2, rounds=2, timer=timer)
    assert check["sessions"] == 2
    assert check["whole_repeat_tau"] == pytest.approx(ceiling)
    assert f"agrees with itself across sessions at τ {ceiling:.3f}" in L.describe_check(check)


def test_profile_command_then_search_with_the_table(tmp_path):
    (tmp_path / "space.yaml").write_text(SPACE)
    run = subprocess.run(
        [sys.executable, "-m", "attndsl.cli", "profile", "space.yaml", "--threads", "1",
         "--sessions", "2", "--rounds", "2", "--seconds", "0.005", "--check", "3",
         "--no-progress", "--out", "table.json"], cwd=tmp_path, capture_output=True, text=True,
        timeout=600)
    assert run.returncode == 0, run.stderr
    assert "6 designs bind at 8px" in run.stderr and "Kendall τ" in run.stdout
    data = json.loads((tmp_path / "table.json").read_text())
    assert data["format"] == L.TABLE_FORMAT and data["fingerprint"]["threads"] == 1
    assert data["check"]["designs"] == 3 and len(data["designs"]) == 3
    # every part and design timed in two sessions, each a process of its own
    for entry in [*data["parts"].values(), *data["designs"].values()]:
        assert entry["session_count"] == 2 and entry["rounds"] == 4
    assert len({session["pid"] for e in data["parts"].values()
                for session in e["sessions"].values()}) == 2
    # run again: nothing to measure
    again = subprocess.run(
        [sys.executable, "-m", "attndsl.cli", "profile", "space.yaml", "--threads", "1",
         "--sessions", "2", "--rounds", "2", "--no-progress", "--out", "table.json"],
        cwd=tmp_path,
        capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "(0 measured now)" in again.stdout
    # a table with a part missing, said to be another machine's: refused before a trial
    data["fingerprint"]["device"] = "Deployment CPU 9000"
    data["parts"].pop(next(iter(data["parts"])))
    (tmp_path / "foreign.json").write_text(json.dumps(data))
    refused = subprocess.run(
        [sys.executable, "-m", "attndsl.cli", "search", "space.yaml", "--budget", "2trials",
         "--threads", "1", "--latency-table", "foreign.json", "--no-progress"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert refused.returncode != 0
    assert "lacks 1 part(s)" in refused.stderr and "attndsl profile" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert not (tmp_path / "attndsl-runs" / "tiny").exists()     # nothing opened or spent


def test_a_failed_session_is_one_clear_error_and_keeps_the_table(space, tmp_path):
    """A profiling session is a process of its own: when it dies, the error says which
    table and what the process said, and what the table held is still there."""
    deploy = space.file.deploy
    path = tmp_path / "t.json"
    table = L.LatencyTable.open(path, _here(deploy))
    listed = L.space_parts(space, 8)
    L.fill(table, listed.parts[:2], deploy, rounds=2, timer=FakeClock())
    broken = L.Part("block", json.dumps({"dim": 8}), "a block with no attention given")
    with pytest.raises(L.LatencyTableError) as failed:
        L.fill(table, [broken], deploy, isolate=True, rounds=2)
    text = str(failed.value)
    assert "profiling session" in text and str(path) in text and "KeyError" in text
    assert L.LatencyTable.open(path).parts.keys() == {p.key for p in listed.parts[:2]}


def test_an_older_table_is_refused_by_name_and_a_search_cache_begins_anew(space, tmp_path):
    deploy = space.file.deploy
    old = tmp_path / "old.json"
    old.write_text(json.dumps({"format": "attndsl-latency-table/1", "fingerprint": {},
                               "parts": {}}))
    with pytest.raises(L.LatencyTableError, match="older attndsl .*profile it again"):
        L.LatencyTable.open(old)
    cached = L.default_table_path(tmp_path, _here(deploy))
    cached.parent.mkdir(parents=True)
    cached.write_text(old.read_text())
    info = L.search_table(space, deploy, runs_dir=tmp_path)
    assert info["path"] == str(cached)
