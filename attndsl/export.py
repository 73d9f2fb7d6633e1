"""Export compiled modules: torch.export (a fixed grid or, where the spec allows, a
dynamic one; any batch size) and ONNX.

A fixed-grid program is the lowered graph of the module at that grid (eval mode, passes
applied, the forms the module runs). A dynamic-resolution program is the lowering rules run
with symbolic H and W. A failure names the op or the spec axis behind it.
"""
from __future__ import annotations

import contextlib
import re
from pathlib import Path

import torch
import torch.fx as fx

from .errors import AttndslError

class ExportError(AttndslError):
    """A compiled module could not be exported; says which op, rule and spec axis."""


def _example(module, resolution, batch):
    dtype, device = module._dtype_device()
    H, W = resolution
    if module._class_tokens is not None:        # tokens (B, P + H·W, C): class tokens first
        return torch.randn(batch, module._class_tokens + H * W, module.dim, dtype=dtype,
                           device=device)
    return torch.randn(batch, H, W, module.dim, dtype=dtype, device=device)


class _ClassTokensEntry(torch.nn.Module):
    """The program of a class-attention module takes what its forward_tokens takes:
    (B, P + H·W, C) with the P class tokens first → (B, P, C); the lowered graph runs the
    tokens as one row."""

    def __init__(self, graph: torch.nn.Module):
        super().__init__()
        self.lowered = graph

    def forward(self, x):
        return self.lowered(x.unsqueeze(1)).flatten(1, 2)


def _entry(module, graph):
    return graph if module._class_tokens is None else _ClassTokensEntry(graph)


def _axis_of(gm: fx.GraphModule, op: str) -> str:
    """'aten.sort.stable' → the rules (and their spec axes) that emitted nodes calling it,
    from the provenance each rule tags its nodes with while lowering."""
    from .codegen.rules import PROVENANCE
    base = op.split(".")[1]
    found = {node.meta[PROVENANCE] for node in gm.graph.nodes
             if getattr(node.target, "__name__", str(node.target)) == base
             and PROVENANCE in node.meta}
    return ", ".join(sorted(found)) or "a rule shared by every spec"


def export(module, *, resolution=None, dynamic_batch: bool = True,
           dynamic_resolution: bool = False, example_batch: int = 2, max_size: int = 4096):
    """torch.export the module (eval mode) → torch.export.ExportedProgram.

    By default: the lowered graph at `resolution` (the bound grid unless given), with the
    passes applied, and a dynamic batch size. dynamic_resolution=True exports the lowering
    rules run with the grid read from the input (H and W symbolic, the passes not applied):
    it works for specs whose rules derive every size from the grid (global, pooled,
    zero-padded sliding neighbourhoods, static filters, …) and fails with an ExportError
    naming the spec axes that build a table, mask or partition for one grid.
    Class attention's program takes tokens, as its forward_tokens: (B, P + H·W, C) with
    the P class tokens first → (B, P, C); dynamic_resolution makes the token count
    symbolic."""
    if dynamic_resolution:
        return _export_dynamic_resolution(module, dynamic_batch, example_batch, max_size)
    resolution = tuple(resolution or module.resolution)
    gm = _entry(module, module.graph_module(resolution, training=False))
    x = _example(module, resolution, example_batch)
    shapes = ({0: torch.export.Dim("batch", min=1, max=4096)},) if dynamic_batch else None
    try:
        return torch.export.export(gm, (x,), dynamic_shapes=shapes)
    except Exception as exc:
        raise ExportError(f"torch.export of spec '{module.spec.name}' at {resolution} failed: "
                          f"{type(exc).__name__}: {str(exc).splitlines()[0]}") from exc


def _grid_bound_axes(plan) -> list[str]:
    """The branches whose rules build something for one grid (so H, W can't be symbolic):
    each application kind says why (ApplicationKind.dynamic_resolution)."""
    out = []
    for bp in plan.branches:
        why = bp.kind.dynamic_resolution(bp)
        if why:
            out.append(f"branch '{bp.name}': application: {bp.kind.name} ({why})")
    return out


def _export_dynamic_resolution(module, dynamic_batch, example_batch, max_size):
    from .codegen.lower import shape_generic_module
    axes = _grid_bound_axes(module.plan)
    if axes:      # refused up front: some of these would export and be silently wrong
        raise ExportError(
            f"spec '{module.spec.name}' can't be exported at a dynamic resolution: "
            f"{'; '.join(axes)}. Export one program per grid: "
            "export(module, resolution=(H, W))")
    dtype, device = module._dtype_device()
    root = _entry(module, shape_generic_module(module.plan, module._param_modules(),
                                               dtype=dtype, device=device))
    x = _example(module, module.resolution, example_batch)
    Dim = torch.export.Dim
    bounds = {"H": (2, max_size), "W": (2, max_size)}
    tokens = module._class_tokens

    def shapes():
        if tokens is not None:     # one symbolic token count
            dims = {1: Dim("tokens", min=tokens + 1, max=max_size * max_size)}
        else:
            dims = {1: Dim("H", min=bounds["H"][0], max=bounds["H"][1]),
                    2: Dim("W", min=bounds["W"][0], max=bounds["W"][1])}
        if dynamic_batch:
            dims[0] = Dim("batch", min=1, max=4096)
        return (dims,)
    for attempt in range(2):
        try:
            with torch.no_grad():
                return torch.export.export(root, (x,), dynamic_shapes=shapes())
        except Exception as exc:
            text = str(exc)
            fixes = re.findall(r"(\w+) = Dim\('\w+'(?:, min=(\d+))?(?:, max=(\d+))?\)", text)
            specialized = "specialized it to be a constant" in text
            if attempt == 0 and fixes and not specialized:
                for name, lo, hi in fixes:      # a range the rules need (e.g. H ≥ pool ratio)
                    if name in bounds:
                        bounds[name] = (int(lo or bounds[name][0]), int(hi or bounds[name][1]))
                continue
            raise ExportError(
                f"spec '{module.spec.name}' can't be exported at a dynamic resolution: "
                f"{type(exc).__name__}: {text.splitlines()[0]}. Export one program per "
                "grid: export(module, resolution=(H, W))") from exc


class _DropTorchvisionNotes:
    """A logging filter: torch.onnx's op registry logs 'torchvision is not installed.
    Skipping torchvision::nms' (and three more) though no attention uses those ops."""

    def filter(self, record) -> bool:
        return "torchvision is not installed" not in record.getMessage()


@contextlib.contextmanager
def _quiet_onnx_exporter():
    """Silence what torch.onnx says that a user of attndsl can't act on — the torchvision
    notes and pytree's FutureWarning about LeafSpec (torch's own call) — and nothing else."""
    import logging
    import warnings
    registry = logging.getLogger("torch.onnx._internal.exporter._registration")
    drop = _DropTorchvisionNotes()
    registry.addFilter(drop)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=FutureWarning,
                                    message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
            yield
    finally:
        registry.removeFilter(drop)


def export_onnx(module, path, *, resolution=None, dynamic_batch: bool = True) -> Path:
    """Export to an ONNX file (through torch.export and torch.onnx's dynamo exporter; needs
    `pip install 'attndsl[onnx]'`). An op ONNX can't express is named with its spec axis."""
    program = export(module, resolution=resolution, dynamic_batch=dynamic_batch)
    try:
        import onnxscript  # noqa: F401  (torch.onnx needs it; say so before it does)
    except ModuleNotFoundError as exc:
        raise ExportError("ONNX export needs the onnx and onnxscript packages: "
                          "pip install 'attndsl[onnx]'") from exc
    import io
    try:
        with contextlib.redirect_stdout(io.StringIO()), _quiet_onnx_exporter():
            onnx_program = torch.onnx.export(program, dynamo=True)
    except Exception as exc:
        text = str(exc)
        ops = sorted(set(re.findall(r"op='(aten\.\w+)', overload='(\w+)'", text)))
        if ops:
            names = [f"{o}.{v}" for o, v in ops]
            gm = module.graph_module(tuple(resolution or module.resolution), training=False)
            where = "; ".join(f"{n} — from {_axis_of(gm, n)}" for n in names)
            raise ExportError(f"spec '{module.spec.name}' can't be exported to ONNX: ONNX has "
                              f"no lowering for {where}") from exc
        raise ExportError(f"ONNX export of spec '{module.spec.name}' failed: "
                          f"{type(exc).__name__}: {text.splitlines()[0]}") from exc
    path = Path(path)
    onnx_program.save(str(path))
    return path


__all__ = ["export", "export_onnx", "ExportError"]
