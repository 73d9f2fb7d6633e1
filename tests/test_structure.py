"""The shape of the compiler itself: application kinds are one module each (found without a
list), the plan owns every derived size, autoplan's engine decision is made once and
followed, passes are torch.fx pass units, nodes carry the rule that emitted them, bind
errors carry YAML lines, and the package never imports the benchmarks."""
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import attndsl
from attndsl.applications import KINDS, Geometry
from attndsl.codegen.autoplan import decide
from attndsl.codegen.engines import BranchChoice, Engines
from attndsl.codegen.lower import lower
from attndsl.codegen.passes import ENGINES, PIPELINE, PROLOGUE
from attndsl.codegen.rules import PROVENANCE
from attndsl.errors import LoweringError, SpecError

ROOT = Path(__file__).resolve().parent.parent


def test_every_kind_is_one_registered_module():
    pkg = ROOT / "attndsl" / "applications"
    for name, kind in KINDS.items():
        module = sys.modules[type(kind).__module__]
        assert Path(module.__file__).parent == pkg, name
        assert kind.model.model_fields["kind"].default == name
        assert kind.doc and kind.model.__doc__, name
        assert kind.model.__module__ == module.__name__     # its spec component lives there
    # the spec's application axis is exactly the registered kinds
    from attndsl.lang import models as m
    assert set(m.APPLICATION_MODELS) == {k.model for k in KINDS.values()}


def test_bound_plan_owns_the_derived_sizes():
    """After bind, the geometry holds the sizes the rules use (a shrunk Swin window)."""
    plan = attndsl.bind(attndsl.load_spec("swin_swmsa"), 48, (4, 4), heads=3)
    geo = plan.branches[0].geometry
    assert isinstance(geo, Geometry)
    assert (geo.window, geo.shift, geo.blocks, geo.table_size()) == ((4, 4), (0, 0), (1, 16, 16), 49)
    plan = attndsl.bind(attndsl.load_spec("nat"), 48, (9, 10), heads=3)
    assert plan.branches[0].geometry.blocks == (90, 1, 49)


A_KIND = '''
"""stride — a demo kind written for a test: every query sees the tokens whose row and
column are multiples of `step`."""
from typing import Literal

import torch
from pydantic import Field

from ..lang.component import Component, Int
from .base import ApplicationKind, Geometry, Selection, register, split_heads


class Stride(Component):
    """Keys: the tokens at rows and columns 0, step, 2·step, …"""

    kind: Literal["stride"] = "stride"
    step: Int = Field(ge=1)


class StrideSelection(Selection):
    def block_k(self, t):
        return split_heads(t[:, ::self.app.step, ::self.app.step], self.bp.heads).unsqueeze(2)


@register
class StrideKind(ApplicationKind):
    model = Stride
    doc = "every query sees the tokens on a grid of stride `step`"
    grid_keys = False

    def bind(self, app, where):
        H, W = where.grid
        kv = -(-H // app.step) * -(-W // app.step)
        return Geometry(blocks=(1, H * W, kv), map_grid=(H, W), kv_tokens=kv)

    def rule(self, ctx):
        return StrideSelection(ctx)
'''


def test_a_new_kind_is_one_new_file(tmp_path):
    """Copy the package, add one module to attndsl/applications/, and the kind validates,
    binds, compiles and computes what it says (checked against F.sdpa on the strided keys),
    with no other file touched."""
    shutil.copytree(ROOT / "attndsl", tmp_path / "attndsl",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "attndsl" / "applications" / "stride.py").write_text(A_KIND)
    script = textwrap.dedent('''
        import torch, torch.nn.functional as F, attndsl
        assert attndsl.__file__.startswith(%r)
        spec = """
        name: strided
        heads: 2
        parameterization: {kind: additive, terms: [query_key]}
        normalization: {kind: softmax}
        application: {kind: stride, step: 2}
        """
        torch.manual_seed(0)
        m = attndsl.compile(spec, dim=8, resolution=(5, 6), backend="eager").double()
        x = torch.randn(2, 5, 6, 8, dtype=torch.float64)
        q, k, v = m.attn.qkv(x).split(8, -1)
        heads = lambda t: t.reshape(2, -1, 2, 4).transpose(1, 2)
        keys = lambda t: heads(t[:, ::2, ::2])
        y = F.scaled_dot_product_attention(heads(q), keys(k), keys(v))
        y = m.attn.proj(y.transpose(1, 2).reshape(2, 5, 6, 8))
        print("max error", float((m(x) - y).abs().max()))
        assert torch.allclose(m(x), y, atol=1e-12)
        try:
            attndsl.load_spec(spec.replace("step: 2", "step: 0"))
        except attndsl.SpecError as e:
            assert "application.step" in str(e), e
        print("ok")
    ''' % str(tmp_path))
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-3000:]


A_NORMALIZATION = textwrap.dedent('''
    """square — w² / Σ_j w² (a test's normalization)."""
    from typing import Literal

    from pydantic import Field

    from ..errors import SpecError
    from ..lang.component import Component, Float
    from .base import KEY_AXIS, NormalizationKind, register


    class Square(Component):
        kind: Literal["square"] = "square"
        eps: Float = Field(default=1e-9, gt=0)


    @register
    class SquareNormalization(NormalizationKind):
        model = Square
        doc = "w² / (Σ_j w² + eps)"

        def check(self, where):
            if where.branch.application.kind != "global":
                raise SpecError("square wants global keys", path=where.path)

        def lower(self, ctx, norm, w):
            return w * w / ((w * w).sum(KEY_AXIS, keepdim=True) + norm.eps)
''')


def test_a_new_normalization_is_one_new_file(tmp_path):
    """Copy the package, add one module to attndsl/normalizations/, and the normalization
    validates (its field bounds, its bind-time check) and computes what it says, checked
    against a hand computation, with no other file touched."""
    shutil.copytree(ROOT / "attndsl", tmp_path / "attndsl",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "attndsl" / "normalizations" / "square.py").write_text(A_NORMALIZATION)
    script = textwrap.dedent('''
        import torch, attndsl
        assert attndsl.__file__.startswith(%r)
        spec = """
        name: squared
        heads: 2
        parameterization: {kind: additive, terms: [query_key]}
        normalization: {kind: square}
        application: {kind: global}
        """
        torch.manual_seed(0)
        m = attndsl.compile(spec, dim=8, resolution=(3, 4), backend="eager").double()
        x = torch.randn(2, 3, 4, 8, dtype=torch.float64)
        q, k, v = m.attn.qkv(x).split(8, -1)
        heads = lambda t: t.reshape(2, -1, 2, 4).transpose(1, 2)
        w = heads(q) @ heads(k).transpose(-1, -2) / 2.0
        y = (w * w / ((w * w).sum(-1, keepdim=True) + 1e-9)) @ heads(v)
        y = m.attn.proj(y.transpose(1, 2).reshape(2, 3, 4, 8))
        assert torch.allclose(m(x), y, atol=1e-12), float((m(x) - y).abs().max())
        for bad, where in (("{kind: square, eps: 0}", "normalization.eps"),):
            try:
                attndsl.load_spec(spec.replace("{kind: square}", bad))
                raise SystemExit("accepted " + bad)
            except attndsl.SpecError as e:
                assert where in str(e), e
        try:
            attndsl.compile(spec.replace("{kind: global}", "{kind: window, size: 2}"), dim=8,
                            resolution=(4, 4))
            raise SystemExit("bound square over windows")
        except attndsl.SpecError as e:
            assert "square wants global keys" in str(e) and "normalization" in str(e), e
        print("ok")
    ''' % str(tmp_path))
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-3000:]


def test_engines_are_decided_once_and_followed():
    """Lowering records an SDPA core only where autoplan says so; the pass follows."""
    m = attndsl.compile("swin_wmsa", dim=48, resolution=(14, 14), heads=3, backend="eager")
    engines = decide(m.plan, "eager")
    assert engines.of("attn").engine == "sdpa" and not engines.compiled
    gm = m.graph_module()
    assert gm.meta[ENGINES] == engines
    assert any(n.target is F.scaled_dot_product_attention for n in gm.graph.nodes)
    # the same plan with autoplan's decision overridden: no SDPA anywhere, same output
    eager_only = Engines(compiled=False, branches=(BranchChoice("attn", "eager", "test"),))
    gm2 = lower(m.plan, m._param_modules(), engines=eager_only)
    assert not any(n.target is F.scaled_dot_product_attention for n in gm2.graph.nodes)
    x = torch.randn(2, 14, 14, 48)
    torch.testing.assert_close(gm(x), gm2(x), rtol=1e-5, atol=1e-6)
    # training with attention dropout: decided off SDPA (its masks differ)
    spec = attndsl.load_spec("vit_mhsa").model_copy()
    spec_dict = attndsl.lang.spec_to_dict(spec)
    spec_dict["dropout"] = {"attention": 0.1}
    plan = attndsl.bind(attndsl.load_spec(spec_dict), 48, (4, 4), heads=3)
    choice = decide(plan, "eager", training=True).of("attn")
    assert choice.engine == "eager" and "dropout" in choice.reason
    # low precision on a CPU: convolutions in float32 (decided, with its evidence)
    assert decide(plan, "eager", dtype=torch.bfloat16).conv_dtype == torch.float32
    assert decide(plan, "eager", dtype=torch.float32).conv_dtype is None


def test_passes_check_what_they_require_and_ensure():
    m = attndsl.compile("swin_wmsa", dim=48, resolution=(14, 14), heads=3, backend="eager",
                        passes=[])
    gm = m.graph_module()
    sdpa = PIPELINE[0]
    del gm.meta[ENGINES]
    with pytest.raises(LoweringError, match="softmax_attention_to_sdpa' requires"):
        sdpa(gm)
    gm = lower(m.plan, m._param_modules(), engines=decide(m.plan, "eager"), passes=[])
    for node in gm.graph.nodes:     # lose the recorded core: requires notices
        node.meta.pop("attndsl_attention_core", None)
    with pytest.raises(LoweringError, match="attention cores recorded for \\[\\]"):
        sdpa(gm)


def test_a_later_change_of_passes_builds_another_program():
    """`m.passes = []` after a first call: the next call runs a graph without the passes
    (no SDPA, no prologue split), compiled as its own program, with the same output."""
    from attndsl.codegen import module as M
    torch.manual_seed(0)
    m = attndsl.compile("swin_wmsa", dim=24, resolution=(4, 4), heads=2, backend="inductor")
    x = torch.randn(2, 4, 4, 24)
    y = m(x)
    assert PROLOGUE in m.graph_module().meta
    before = M.compile_stats["compiled"]
    m.passes = []
    gm = m.graph_module()
    assert not any(n.target is F.scaled_dot_product_attention for n in gm.graph.nodes)
    assert PROLOGUE not in gm.meta
    torch.testing.assert_close(m(x), y, rtol=1e-5, atol=1e-6)
    assert M.compile_stats["compiled"] == before + 1


def test_nodes_carry_the_rule_that_emitted_them():
    m = attndsl.compile("swin_swmsa", dim=48, resolution=(14, 14), heads=3, backend="eager")
    rules = {n.meta.get(PROVENANCE) for n in m.graph_module().graph.nodes}
    assert {"application: window", "projections: qkv", "parameterization: rel_pos_bias",
            "projections: out"} <= rules
    roll = [n for n in m.graph_module().graph.nodes if n.target is torch.roll]
    assert len(roll) == 2 and all(n.meta[PROVENANCE].startswith("application: window")
                                  for n in roll)
    sdpa = [n for n in m.graph_module().graph.nodes
            if n.target is F.scaled_dot_product_attention]
    assert sdpa and PROVENANCE in sdpa[0].meta          # the pass keeps provenance
    from attndsl.export import _axis_of
    assert "application: window" in _axis_of(m.graph_module(), "aten.roll.default")


def test_bind_errors_name_the_yaml_line(tmp_path):
    path = tmp_path / "w.yaml"
    path.write_text("name: demo\nheads: 2\n"
                    "parameterization: {kind: additive, terms: [query_key]}\n"
                    "normalization: {kind: softmax}\n"
                    "application:\n  kind: window\n  size: 5\n  shift: 7\n")
    with pytest.raises(SpecError) as info:
        attndsl.compile(path, dim=32, resolution=(10, 10))
    assert info.value.line == 8 and info.value.path == "application.shift"
    assert str(info.value).startswith(f"{path}:8 at 'application.shift'")
    # a size that is no field of the file keeps no line
    with pytest.raises(SpecError) as info:
        attndsl.compile(path, dim=33, resolution=(10, 10))
    assert info.value.path == "heads" and info.value.line == 2


def test_the_package_never_imports_the_benchmarks():
    script = ("import sys, attndsl, attndsl.cli, attndsl.nas.runner, attndsl.export; "
              "bad = [m for m in sys.modules if m.split('.')[0] in ('benchmarks', 'tests')]; "
              "assert not bad, bad")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=ROOT / "tests", timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    for path in (ROOT / "attndsl").rglob("*.py"):
        text = path.read_text()
        assert "from benchmarks" not in text and "import benchmarks" not in text, path


def _module_imports() -> dict[str, set[str]]:
    """Each attndsl module → the attndsl modules it imports (at the top or inside a
    function alike), read from the source: `from . import x` names the module x, not its
    package."""
    import ast
    root = ROOT / "attndsl"

    def name_of(path: Path) -> str:
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)

    modules = {name_of(p): p for p in root.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[:len(package.split(".")) - node.level + 1] \
                    if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                named = {f"{target}.{a.name}" for a in node.names} & modules.keys()
                found |= named if len(named) == len(node.names) else named | {target}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names}
        graph[name] = {t for t in found if t in modules and t != name}
    return graph


def test_the_layers_import_downwards_only():
    """lang → applications / terms → codegen → model → nas, cli: a lower layer never
    imports a higher one, and no two modules of the compiler import each other."""
    graph = _module_imports()
    for name, targets in graph.items():
        if name.startswith(("attndsl.codegen", "attndsl.lang", "attndsl.applications",
                            "attndsl.terms")):
            assert not {t for t in targets if t.startswith(("attndsl.model", "attndsl.nas"))}, name

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            for t in graph.get(todo.pop(), ()):
                if t == goal:
                    return True
                if t not in seen and t.count(".") > 1:      # not through a package's __init__
                    seen.add(t)
                    todo.append(t)
        return False

    circles = sorted({tuple(sorted((a, b))) for a, targets in graph.items() for b in targets
                      if a.startswith(("attndsl.codegen.", "attndsl.lang.", "attndsl.model."))
                      and reaches(b, a)})
    assert not circles, circles


def test_docs_list_every_kind():
    from attndsl.applications import kinds_table
    text = (ROOT / "docs" / "mechanisms.md").read_text()
    inside = text.split("<!-- kinds -->\n")[1].split("\n<!-- /kinds -->")[0]
    assert inside == kinds_table(), "regenerate the table in docs/mechanisms.md"
    from attndsl.normalizations import normalizations_table
    inside = text.split("<!-- normalizations -->\n")[1].split("\n<!-- /normalizations -->")[0]
    assert inside == normalizations_table(), "regenerate the table in docs/mechanisms.md"
