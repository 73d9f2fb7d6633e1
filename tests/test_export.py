"""Export: torch.export of every zoo spec at a fixed grid with a dynamic batch, ONNX where
the ops allow it (run in onnxruntime), precise errors where they don't."""
import pytest
import torch

import attndsl
from attndsl.export import ExportError, export, export_onnx
from zoo_helpers import ZOO

from zoo_references import GEOMETRY

GRIDS = {name: res for name, (_, res) in GEOMETRY.items()}
# ONNX has no stable sort, which BOAT's balanced clustering needs
NO_ONNX = {"boat_fsla": "aten.sort.stable — from application: clusters"}


def module(name, dtype=torch.float64):
    torch.manual_seed(0)
    return attndsl.compile(name, dim=48, resolution=GRIDS.get(name, (14, 14)),
                           backend="eager", dtype=dtype).eval()


@pytest.mark.parametrize("name", ZOO)
def test_torch_export_with_a_dynamic_batch(name):
    m = module(name)
    program = export(m)
    x = torch.randn(3, *m.resolution, 48, dtype=torch.float64)   # traced with batch 2
    with torch.no_grad():
        assert (program.module()(x) - m(x)).abs().max().item() <= 1e-12


def test_fixed_batch_and_other_grids():
    m = module("swin_swmsa")
    program = export(m, resolution=(21, 21), dynamic_batch=False)
    x = torch.randn(2, 21, 21, 48, dtype=torch.float64)
    with torch.no_grad():
        assert (program.module()(x) - m(x)).abs().max().item() <= 1e-12
    with pytest.raises(AssertionError, match=r"x\.size\(\)\[0\] == 2"):   # torch.export's guard
        program.module()(torch.randn(3, 21, 21, 48, dtype=torch.float64))


def strided_halo():
    from test_kinds_halo_pvt2 import halo_spec
    torch.manual_seed(0)
    return attndsl.compile(halo_spec(block=8, halo=2, stride=2), dim=48, resolution=(16, 16),
                           backend="eager", dtype=torch.float32).eval()


def test_strided_halo_exports_with_its_smaller_output_grid():
    """HaloNet's stride 2: an output grid half the input's, through torch.export."""
    m = strided_halo()
    x = torch.randn(3, 16, 16, 48)
    with torch.no_grad():
        want = m(x)
        assert want.shape == (3, 8, 8, 48)
        assert (export(m).module()(x) - want).abs().max().item() <= 1e-5 * want.abs().max()


def grid_bound(name) -> bool:
    """Whether some application kind of the spec says a program can't take a symbolic
    grid (ApplicationKind.dynamic_resolution); the tests below hold it to that both ways."""
    from attndsl.export import _grid_bound_axes
    return bool(_grid_bound_axes(module(name).plan))


@pytest.mark.parametrize("name", [n for n in ZOO if not grid_bound(n)])
def test_dynamic_resolution_export_runs_at_other_grids(name):
    m = module(name)
    program = export(m, dynamic_resolution=True)
    for grid in ((16, 24), (21, 17)):
        other = attndsl.compile(name, dim=48, resolution=grid, backend="eager",
                                dtype=torch.float64).eval()
        other.load_state_dict(m.state_dict())
        x = torch.randn(3, *grid, 48, dtype=torch.float64)
        with torch.no_grad():
            assert (program.module()(x) - other(x)).abs().max().item() <= 1e-12, grid


@pytest.mark.parametrize("name", [n for n in ZOO if grid_bound(n)])
def test_grid_bound_specs_refuse_a_dynamic_resolution(name):
    with pytest.raises(ExportError, match="can't be exported at a dynamic resolution: "
                                          "branch '.*': application: "):
        export(module(name), dynamic_resolution=True)


@pytest.mark.parametrize("name,axis", [
    ("swin_swmsa", "application: window"), ("nat", "application: sliding .border: clamp"),
    ("boat_fsla", "application: clusters"), ("linformer", "application: soft_select"),
    ("hilo", "branch 'hifi': application: window")])
def test_dynamic_resolution_names_the_grid_bound_axis(name, axis):
    with pytest.raises(ExportError, match=f"can't be exported at a dynamic resolution: .*{axis}"
                                          ".*resolution=\\(H, W\\)"):
        export(module(name), dynamic_resolution=True)


def test_dynamic_resolution_keeps_the_ranges_the_rules_need():
    """GSA's 8×8 sub-sampling conv needs H, W ≥ 8·… : the program says so."""
    program = export(module("twins_gsa"), dynamic_resolution=True)
    lows = sorted(int(r.lower) for r in program.range_constraints.values())
    assert lows[-1] >= 8


def needs_onnx():
    """torch.onnx's exporter needs onnx and onnxscript (the [onnx] extra): skip, saying so."""
    for package in ("onnx", "onnxscript"):
        pytest.importorskip(package, reason=f"{package} is not installed: "
                                             'pip install "attndsl[onnx]"')


@pytest.mark.parametrize("name", [n for n in ZOO if n not in NO_ONNX])
def test_onnx_export_runs_in_onnxruntime(name, tmp_path):
    needs_onnx()
    ort = pytest.importorskip("onnxruntime")
    m = module(name, torch.float32)
    path = export_onnx(m, tmp_path / f"{name}.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(3, *m.resolution, 48)
    (y,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        ref = m(x)
    assert (torch.from_numpy(y) - ref).abs().max() <= 1e-5 * ref.abs().max()


def test_strided_halo_runs_in_onnxruntime(tmp_path):
    needs_onnx()
    ort = pytest.importorskip("onnxruntime")
    m = strided_halo()
    session = ort.InferenceSession(str(export_onnx(m, tmp_path / "halo.onnx")),
                                   providers=["CPUExecutionProvider"])
    x = torch.randn(3, 16, 16, 48)
    (y,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        ref = m(x)
    assert (torch.from_numpy(y) - ref).abs().max() <= 1e-5 * ref.abs().max()


@pytest.mark.parametrize("name", NO_ONNX)
def test_onnx_failure_names_the_op_and_the_axis(name, tmp_path):
    needs_onnx()
    with pytest.raises(ExportError, match=NO_ONNX[name]):
        export_onnx(module(name, torch.float32), tmp_path / "x.onnx")
