"""attndsl — a compiler for vision attention.

    spec (YAML) ──load──▶ Spec ──bind──▶ Plan ──lower──▶ torch.fx graph ──passes──▶ backend

    backbone (YAML: stages of specs) ──▶ attndsl.build_model ──▶ nn.Module
    search space (YAML: a backbone with leaves) ──▶ attndsl.search ──▶ the Pareto front

>>> import attndsl, torch
>>> attn = attndsl.compile("swin_wmsa", dim=96, resolution=(14, 14))
>>> attn(torch.randn(2, 14, 14, 96)).shape
torch.Size([2, 14, 14, 96])
"""
from .codegen import BACKENDS, PIPELINE, CompiledAttention, compile, lower
from .convert import ConversionError, convert, layout_names
from .errors import AttndslError, LoweringError, ShapeError, SpecError
from .export import ExportError, export, export_onnx
from .patch import Patched, PatchError, patch, spec_of
from .lang import Plan, Spec, bind, dump_spec, load_spec
from .lang.io import map_zoo_names
from .zoo import zoo_names, zoo_path, zoo_paths
from .model import build_model, load, load_backbone
from .nas import report, search
from .nas.designs import evaluate, train_design

__version__ = "0.1.0"


def _alias_the_old_language_package() -> None:
    """The language package was `attndsl.spec` before it became `attndsl.lang`; modules
    pickled then (torch.save(model) of a model holding a Spec) name the old path. The old
    names resolve to the new modules, with no file of that name in the package."""
    import importlib
    import sys
    sys.modules.setdefault("attndsl.spec", importlib.import_module(".lang", __name__))
    for name in ("arguments", "bind", "component", "io", "models"):
        sys.modules.setdefault(f"attndsl.spec.{name}",
                               importlib.import_module(f".lang.{name}", __name__))


_alias_the_old_language_package()

__all__ = [
    "compile", "load", "load_spec", "dump_spec", "bind", "lower", "Spec", "Plan",
    "CompiledAttention", "BACKENDS", "PIPELINE", "zoo_names", "map_zoo_names", "zoo_path", "zoo_paths",
    "AttndslError", "SpecError", "LoweringError", "ShapeError", "ConversionError",
    "convert", "layout_names", "patch", "spec_of", "Patched", "PatchError", "export", "export_onnx", "ExportError",
    "search", "report", "evaluate", "train_design", "build_model", "load_backbone", "__version__",
]
