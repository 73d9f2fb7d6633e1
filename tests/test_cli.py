"""The `attndsl` command line."""
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

import attndsl
from attndsl.cli import build_parser, main


def test_zoo_lists_every_spec_with_its_paper(capsys):
    assert main(["zoo", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    names = {r["name"] for r in rows}
    assert {"elsa", "boat_fsla", "hilo", "swin_swmsa", "nat", "twins_peg", "linformer"} <= names
    assert all(r["description"] and r["paper"] for r in rows)


def test_validate_accepts_the_zoo(capsys):
    from attndsl import zoo_paths
    assert main(["validate", *map(str, zoo_paths())]) == 0
    assert capsys.readouterr().out.count("ok") == len(zoo_paths())


def test_show_code_params_graph(capsys):
    assert main(["show", "swin_swmsa", "--dim", "48", "--resolution", "14", "14",
                 "--code"]) == 0
    code = capsys.readouterr().out
    assert "def forward(self, x)" in code and "scaled_dot_product_attention" in code
    assert "roll" in code
    assert main(["show", "hilo", "--dim", "48", "--resolution", "14", "14", "--params"]) == 0
    out = capsys.readouterr().out
    assert "hifi.qkv.weight" in out and "lofi.kv.weight" in out
    assert main(["show", "nat", "--dim", "48", "--resolution", "14", "14", "--graph"]) == 0
    graph = capsys.readouterr().out
    assert "placeholder[target=x]" in graph and "call_module[target=attn.qkv]" in graph
    assert main(["show", "hilo", "--dim", "48", "--resolution", "14", "14"]) == 0
    assert "branch lofi: 10 heads" in capsys.readouterr().out


def test_bench_eager(capsys):
    assert main(["bench", "dwconv", "--dim", "24", "--resolution", "14", "14",
                 "--backend", "eager", "--repeats", "2"]) == 0
    out = capsys.readouterr().out
    assert "eager (fx graph)" in out and "forward: x (2, 14, 14, 24)" in out


def test_errors_exit_2_without_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nheads: 3\nparameterization: {kind: additive, terms: "
                   "[query_key]}\nnormalization: {kind: softmax}\napplication: "
                   "{kind: windw, size: 7}\n")
    assert main(["validate", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "unknown kind 'windw'" in err and "bad.yaml:5" in err and "Traceback" not in err
    assert main(["show", "swin_wmsa", "--dim", "50"]) == 2
    assert "not divisible by heads 3" in capsys.readouterr().err


def test_console_script_help():
    out = subprocess.run([sys.executable, "-m", "attndsl.cli", "--help"], capture_output=True,
                         text=True)
    assert out.returncode == 0
    for command in ("validate", "show", "zoo", "schema", "compile", "bench"):
        assert command in out.stdout


def test_show_plan_names_each_branch_and_its_engine(capsys):
    assert main(["show", "hilo", "--dim", "48", "--resolution", "28", "28", "--plan"]) == 0
    out = capsys.readouterr().out
    assert "branch hifi (2 heads, window): sdpa" in out
    assert "branch lofi (10 heads, pooled): sdpa" in out and "torch.compile" in out
    assert main(["show", "hilo", "--dim", "48", "--resolution", "14", "14", "--plan"]) == 0
    assert "branch lofi (10 heads, pooled): inductor — only 49 keys per query" in \
        capsys.readouterr().out
    assert main(["show", "vit_mhsa", "--dim", "48", "--resolution", "14", "14", "--plan"]) == 0
    assert "eager fx GraphModule" in capsys.readouterr().out
    assert main(["show", "nat", "--dim", "48", "--resolution", "14", "14", "--plan"]) == 0
    out = capsys.readouterr().out
    assert "inductor" in out and "gather" in out and "torch.compile" in out


def test_show_plan_for_a_gpu_without_one(capsys):
    """The CUDA rules explained on a CPU machine: provisional until evidence is committed,
    FlexAttention for the neighbourhood with its tiles; a refusal is an error line."""
    assert main(["show", "nat", "--plan", "--device", "cuda", "--dtype", "bfloat16"]) == 0
    out = capsys.readouterr().out
    assert "device cuda, bfloat16" in out and "evidence: none committed" in out
    assert "branch attn (3 heads, sliding): flex" in out and "tiles" in out
    assert "provisional" in out
    assert main(["show", "boat_fsla", "--plan", "--device", "cuda", "--attention", "flex"]) == 2
    assert "clusters keys depend on the data" in capsys.readouterr().err
    assert main(["show", "nat", "--plan", "--device", "tpu9"]) == 2
    assert "unknown device 'tpu9'" in capsys.readouterr().err


def test_convert_both_ways_and_list(tmp_path, capsys):
    import torch
    import layout_modules as lm
    foreign = lm.TimmWindowAttention(48, 3, 7, dtype=torch.float32)
    ckpt = tmp_path / "swin.pth"
    torch.save({"model": {f"layers.0.blocks.1.attn.{k}": v
                          for k, v in foreign.state_dict().items()}}, ckpt)
    size = ["--spec", "swin_wmsa", "--dim", "48", "--heads", "3", "--resolution", "14", "14"]
    assert main(["convert", str(ckpt), "--layout", "timm.swin", *size,
                 "--prefix", "layers.0.blocks.1.attn.", "--out", str(tmp_path / "a.pt")]) == 0
    ours = torch.load(tmp_path / "a.pt")
    assert torch.equal(ours["attn.rel_pos.bias"], foreign.relative_position_bias_table.t())
    assert main(["convert", str(tmp_path / "a.pt"), "--layout", "timm.swin", *size,
                 "--reverse", "--out", str(tmp_path / "b.pt")]) == 0
    back = torch.load(tmp_path / "b.pt")
    assert all(torch.equal(back[k], v) for k, v in foreign.state_dict().items())
    assert main(["convert", "--list"]) == 0
    assert "litv2.hilo" in capsys.readouterr().out
    # errors: exit 2, one message
    assert main(["convert", str(ckpt), "--layout", "timm.swin", *size,
                 "--out", str(tmp_path / "c.pt")]) == 2
    assert "pass prefix=" in capsys.readouterr().err
    assert main(["convert", str(tmp_path / "nope.pth"), "--layout", "timm.swin", *size,
                 "--out", str(tmp_path / "c.pt")]) == 2
    assert "no such checkpoint" in capsys.readouterr().err


def test_export_writes_a_program(tmp_path, capsys):
    import torch
    path = tmp_path / "dwconv.pt2"
    assert main(["export", "dwconv", "--dim", "16", "--resolution", "9", "9",
                 "--out", str(path)]) == 0
    program = torch.export.load(str(path))
    assert program.module()(torch.randn(3, 9, 9, 16)).shape == (3, 9, 9, 16)


def test_version_and_help_on_every_option(capsys):
    import argparse
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.strip() == f"attndsl {attndsl.__version__}"
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    missing = [f"{name} {act.option_strings or act.dest}" for name, p in sub.choices.items()
               for act in p._actions if act.help is None]
    assert not missing


def test_zoo_names_are_never_cut(capsys, monkeypatch):
    from attndsl.cli import out
    monkeypatch.setattr(out, "_width", 60)      # a narrow terminal
    assert main(["zoo"]) == 0
    text = capsys.readouterr().out
    for name in attndsl.zoo_names():
        assert re.search(rf"\b{name}\b", text), name


def test_errors_speak_in_flags(capsys):
    assert main(["show", "swin_wmsa", "--dim", "48", "--heads", "5"]) == 2
    assert "--heads: dim 48 is not divisible by heads 5" in capsys.readouterr().err
    assert main(["show", "swin_wmsa", "--dim", "0"]) == 2
    assert "--dim must be a positive integer" in capsys.readouterr().err
    assert main(["export", "swin_wmsa", "--dim", "48", "--resolution", "14", "14", "--out",
                 "x.pt2", "--dynamic-resolution"]) == 2
    err = capsys.readouterr().err
    assert "attndsl export SPEC --resolution H W" in err and "export(module" not in err


def test_output_paths_are_checked(capsys, tmp_path):
    assert main(["compile", "swin_wmsa", "--out", str(tmp_path / "m.onnx")]) == 2
    assert "use `attndsl export swin_wmsa --out" in capsys.readouterr().err
    assert main(["compile", "swin_wmsa", "--out", str(tmp_path / "no" / "m.pt")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["export", "swin_wmsa", "--out", str(tmp_path)]) == 2
    assert "FILE.pt2" in capsys.readouterr().err
    assert main(["export", "swin_wmsa", "--out", str(tmp_path / "no" / "m.pt2")]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("name,foreign", [("elsa", ["Swin", "twins", "NAT"]),
                                          ("dynamic_dwconv", ["ELSA", "Swin", "dynconv_relu"]),
                                          ("nat", ["ELSA", "twins_lsa"])])
def test_plan_quotes_only_its_own_evidence(capsys, name, foreign):
    assert main(["show", name, "--dim", "48", "--resolution", "14", "14", "--plan"]) == 0
    text = capsys.readouterr().out
    for word in foreign:
        assert word not in text, word


# ---------------------------------------------------------------- papercuts (issue #18 §5)
@pytest.mark.parametrize("width", [60, 80, 200])
def test_convert_list_never_cuts_a_layout_name(capsys, monkeypatch, width):
    """What --layout takes (and the zoo specs) are printed whole; the reading columns wrap,
    or are left out — source first, then module — with a line that says so."""
    from attndsl.cli import out
    from attndsl.convert import LAYOUTS
    monkeypatch.setattr(out, "_width", width)
    assert main(["convert", "--list"]) == 0
    text = capsys.readouterr().out
    assert "…" not in text
    for name, layout in LAYOUTS.items():
        assert re.search(rf"│ {re.escape(name)} +│", text), name
        for spec in layout.zoo:
            assert re.search(rf"\b{spec}\b", text), spec
    note = re.search(r"\(left out at \d+ columns: ([a-z, ]+);", text)
    assert all(len(line) <= width for line in text.splitlines() if not line.startswith("("))
    if width == 200:
        assert note is None and "timm/models/pvt_v2.py" in text
    else:
        assert note.group(1).split(", ")[0] == "source"
        assert "docs/layout-sources.md" in text


def test_zoo_is_one_line_each(capsys, monkeypatch):
    from attndsl.cli import out
    monkeypatch.setattr(out, "_width", 80)
    assert main(["zoo"]) == 0
    lines = capsys.readouterr().out.splitlines()
    names = attndsl.zoo_names()
    assert len(lines) == 1 + len(names) and "attndsl zoo --long" in lines[0]
    assert [line.split()[0] for line in lines[1:]] == sorted(names)
    by_name = {line.split()[0]: line for line in lines[1:]}
    assert by_name["swin_wmsa"].split(None, 1)[1] == "Swin W-MSA — Liu et al., ICCV 2021"
    assert "CrossFormer long-distance attention — Wang et al." in by_name["crossformer_lda"]
    monkeypatch.setattr(out, "_width", 400)
    assert main(["zoo", "--long"]) == 0       # the whole descriptions (wrapped when narrow)
    assert "softmax attention in 7x7 windows with a relative position bias (i - j table)" \
        in capsys.readouterr().out


def test_bench_times_several_specs_in_one_table(capsys):
    assert main(["bench", "dwconv", "nat", "--dim", "24", "--resolution", "14", "14",
                 "--backend", "eager", "--repeats", "2"]) == 0
    text = capsys.readouterr().out
    assert text.count("forward: x (2, 14, 14, 24)") == 2
    assert text.count("┏") == 1 and "2 interleaved rounds" in text
    rows = [line for line in text.splitlines() if "eager (fx graph)" in line]
    assert [row.split("│")[1].strip() for row in rows] == ["dwconv", "nat"]


def test_bench_rounds_rotate_the_order():
    from attndsl.cli import _interleaved
    order = []
    calls = [lambda x, i=i: order.append(i) for i in range(3)]
    times = _interleaved(calls, [None] * 3, repeats=3)
    assert [len(t) for t in times] == [3, 3, 3]
    assert order == [0, 1, 2] + [0, 1, 2] + [1, 2, 0] + [2, 0, 1]   # warm-up, then rounds


def test_every_command_has_one_default_grid():
    from attndsl.cli import DEFAULT_DIM, DEFAULT_RESOLUTION
    parser = build_parser()
    for argv in (["show", "nat"], ["compile", "nat", "--out", "m.pt"], ["bench", "nat"],
                 ["export", "nat", "--out", "m.pt2"], ["convert", "--list"]):
        args = parser.parse_args(argv)
        assert (args.dim, tuple(args.resolution)) == (DEFAULT_DIM, DEFAULT_RESOLUTION), argv
    assert (DEFAULT_DIM, DEFAULT_RESOLUTION) == (96, (56, 56))


def test_validate_binds_at_the_defaults_and_says_so(capsys, tmp_path):
    five = tmp_path / "five.yaml"
    five.write_text(attndsl.zoo_path("swin_wmsa").read_text().replace("heads: 3", "heads: 5"))
    assert main(["validate", str(five)]) == 2
    text = capsys.readouterr().err
    assert "dim 96 is not divisible by heads 5" in text
    assert "checked at dim 96, grid 56×56 — the defaults" in text
    assert main(["validate", "nat"]) == 0
    assert "binds at dim 96, grid 56×56 — the defaults" in capsys.readouterr().out
    assert main(["validate", str(five), "--dim", "80", "--resolution", "28", "28"]) == 0
    text = capsys.readouterr().out
    assert "binds at dim 80, grid 28×28)" in text and "defaults" not in text


@pytest.mark.parametrize("command", [["show"], ["compile", "--out", "m.pt"], ["bench"],
                                     ["export", "--out", "m.pt2"]])
def test_a_search_space_where_a_spec_is_wanted_says_what_to_do(capsys, command):
    space = str(Path(attndsl.__file__).parent.parent / "examples" / "search_digits.yaml")
    assert main([command[0], space, *command[1:]]) == 2
    text = capsys.readouterr().err
    assert f"{space} is a search space" in text and "unknown key" not in text
    assert f"attndsl search {space} --budget" in text and f"attndsl validate {space}" in text


def test_search_of_a_zoo_name_says_it_is_a_spec(capsys):
    assert main(["search", "nat", "--budget", "1m"]) == 2
    text = capsys.readouterr().err
    assert "'nat' is a zoo spec (one attention mechanism), not a search space file" in text
    assert "examples/search_digits.yaml" in text


def test_export_onnx_prints_nothing_the_user_cannot_act_on(tmp_path):
    for package in ("onnx", "onnxscript"):
        pytest.importorskip(package, reason='ONNX export needs pip install "attndsl[onnx]"')
    proc = subprocess.run([sys.executable, "-m", "attndsl.cli", "export", "dwconv", "--dim", "8",
                           "--resolution", "7", "7", "--out", str(tmp_path / "d.onnx")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("wrote ") and proc.stderr == ""
