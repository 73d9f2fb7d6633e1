"""Swap compiled attndsl modules into existing models.

`patch(model)` replaces every attention module attndsl recognizes (timm's ViT, Swin,
Swin-V2, Twins, PVT-v2 …: attndsl/foreign/, one module per class) by its exact attndsl
equivalent: the spec and sizes are read from the module, its block and the call a probe
forward captures (the grid, class tokens), the weights are converted, and each swap is
verified on that call in float64 before anything is committed. A module the language
can't express exactly is left as it is, with the reason in the report.

`patch(model, SPEC)` replaces them (or the modules `match` picks) by SPEC compiled at each
module's own width, heads and grid; weights carry over when the module's checkpoint layout
fits SPEC, else SPEC's fresh initialization is used, with a warning.

All or nothing: with `strict=True` (the default) a call that can't swap every module it
targets raises PatchError naming each one and why, and the model is unchanged; with
`strict=False` the modules that can be swapped are, and the report says which were left.

The conventions a replaced module keeps (attndsl/foreign/conventions.py):

| convention   | the replaced module is called as                    |
|--------------|-----------------------------------------------------|
| `bhwc`       | f(x) with x (B, H, W, C)                            |
| `bchw`       | f(x) with x (B, C, H, W)                            |
| `bnc_size`   | f(x, (H, W)) or f(x, H, W) with x (B, H·W, C)        |
| `bnc`        | f(x) with x (B, P + H·W, C): P class / register tokens before the grid |
| `swin_block` | the parent block's `_attn(x)` with x (B, H, W, C): shift, window partition and mask are the spec's business |

No timm import is needed; timm's classes are recognized by name and attributes.
"""
from __future__ import annotations

import copy
import fnmatch
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from .codegen.module import CompiledAttention, compile as compile_spec
from .convert import ConversionError, convert
from .errors import AttndslError
from .foreign import FOREIGN, Call, Equivalent, ForeignKind, Unsupported, recognize
from .foreign.conventions import CONVENTIONS, ConventionError, stand_in

EXACT = 1e-9      # float64 relative error of a verified swap (the compiled modules: ~1e-15)
# the grid a spec is bound at when neither a probe forward nor resolution= tells it (modules
# called with their grid, f(x, (H, W)), run at any grid the spec allows)
DEFAULT_RESOLUTION = (14, 14)


class PatchError(AttndslError, ValueError):
    """patch() could not find, size, adapt or verify a module."""


@dataclass(frozen=True)
class Patched:
    """What patch() did to one submodule."""

    path: str
    replaced: str          # class name of the original module
    convention: str
    dim: int
    heads: int
    weights: str           # "converted from <layout>" or "fresh: <why>"
    status: str = "swapped"   # "swapped", or "left" (the module is unchanged; see reason)
    reason: str = ""
    spec: str = ""         # the spec's name
    error: float | None = None   # float64 relative error of the swap on the probe's call
    resolution: tuple[int, int] | None = None

    @property
    def swapped(self) -> bool:
        return self.status == "swapped"


@dataclass
class _Target:
    path: str
    module: nn.Module
    parent: nn.Module | None
    name: str
    kind: ForeignKind | None
    call: Call | None = None


# ---------------------------------------------------------------- finding the modules
def _matcher(match) -> Callable[[str, nn.Module], bool]:
    if callable(match):
        return match
    patterns = [match] if isinstance(match, str) else list(match)

    def by_name_or_path(path, mod):
        return any(type(mod).__name__ == p or fnmatch.fnmatchcase(path, p) for p in patterns)
    return by_name_or_path


def _targets(model: nn.Module, match) -> list[_Target]:
    test = _matcher(match) if match is not None else None
    found = []
    for path, mod in model.named_modules():
        if not path:
            continue
        parent_path, _, name = path.rpartition(".")
        parent = model.get_submodule(parent_path) if parent_path else model
        kind = recognize(mod, parent)
        if (test(path, mod) if test is not None else kind is not None):
            found.append(_Target(path, mod, parent, name, kind))
    # a match inside a match (an attention inside a matched block) would be replaced twice
    return [t for t in found if not any(t.path.startswith(o.path + ".") for o in found)]


# ---------------------------------------------------------------- the probe forward
def example_input(model: nn.Module, example=None):
    """The probe's input: `example`, or a seeded random batch of one at the input size the
    model declares (timm's pretrained_cfg / default_cfg `input_size`)."""
    if example is not None:
        return example
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    size = cfg.get("input_size") if isinstance(cfg, dict) else None
    if not size:
        return None
    ref = next(iter(model.parameters()), None)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, *size, generator=gen, dtype=torch.float64)
    return x.to(dtype=ref.dtype if ref is not None else torch.float32,
                device=ref.device if ref is not None else None)


def _probe(model: nn.Module, targets: list[_Target], example) -> None:
    """Run the model once on `example` and keep each target's first call at its site."""
    wrapped = []
    for t in targets:
        owner, attribute = t.kind.site(t.module, t.parent, t.name) if t.kind else (t.module, "forward")
        had_own = attribute in owner.__dict__
        original = getattr(owner, attribute)

        def recording(*args, _t=t, _original=original, **kwargs):
            out = _original(*args, **kwargs)
            if _t.call is None:
                _t.call = Call(args, kwargs, out)
            return out
        setattr(owner, attribute, recording)
        wrapped.append((owner, attribute, had_own, original))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(*example) if isinstance(example, tuple) else model(example)
    except Exception as exc:
        raise PatchError(f"the probe forward (the model on example of shape "
                         f"{_shape(example)}) failed: {type(exc).__name__}: {exc}; pass "
                         "example= an input the model takes") from exc
    finally:
        for owner, attribute, had_own, original in wrapped:
            if had_own:
                setattr(owner, attribute, original)
            else:
                delattr(owner, attribute)
        model.train(was_training)


def _shape(example) -> str:
    if isinstance(example, torch.Tensor):
        return str(tuple(example.shape))
    if isinstance(example, tuple):
        return ", ".join(_shape(e) for e in example)
    return type(example).__name__


# ---------------------------------------------------------------- verification
def _double(value):
    if isinstance(value, torch.Tensor) and value.is_floating_point():
        return value.detach().double()
    if isinstance(value, (tuple, list)):
        return type(value)(_double(v) for v in value)
    if isinstance(value, dict):
        return {k: _double(v) for k, v in value.items()}
    return value


def _relative_error(original: nn.Module, attribute: str, replacement: nn.Module,
                    call: Call) -> float:
    """Both in float64 on the probe's call: max |new − old| / max |old|."""
    # not chained: a module's own train() may return None (timm's EfficientFormer)
    old_owner, new = copy.deepcopy(original), copy.deepcopy(replacement)
    for module in (old_owner, new):
        module.double()
        module.eval()
    args, kwargs = _double(call.args), _double(call.kwargs)
    with torch.no_grad():
        want = getattr(old_owner, attribute)(*args, **kwargs)
        got = new(*args, **kwargs)
    if not isinstance(want, torch.Tensor) or not isinstance(got, torch.Tensor) \
            or got.shape != want.shape:
        raise Unsupported(f"the swap returns {_shape(got)} where the module returns "
                          f"{_shape(want)}")
    return float((got - want).abs().max() / want.abs().max().clamp_min(1e-300))


# ---------------------------------------------------------------- building one swap
@dataclass
class _Swap:
    target: _Target
    report: Patched
    replacement: nn.Module | None = None
    equivalent: Equivalent | None = None


def _left(t: _Target, reason: str, convention: str = "", dim=0, heads=0) -> _Swap:
    return _Swap(t, Patched(t.path, type(t.module).__name__, convention, dim, heads,
                            weights="unchanged", status="left", reason=reason))


def _exact_swap(t: _Target, model: nn.Module, backend: str, tolerance: float) -> _Swap:
    """The module's own mechanism as attndsl, its weights converted, verified."""
    if t.kind is None:
        return _left(t, f"not a class attndsl knows (known: {_known_classes()}); name a spec "
                        "and a convention= to replace it")
    if t.call is None:
        return _left(t, "the probe forward never called it", t.kind.convention)
    eq = _equivalent(t, model)
    if not isinstance(eq, Equivalent):
        return _left(t, eq, t.kind.convention)
    try:
        attn = _compiled(eq.spec, eq.dim, eq.heads, eq.resolution, backend, t.module)
        attn.load_state_dict(convert(t.module.state_dict(), eq.layout, attn, prefix=eq.prefix))
    except (AttndslError, RuntimeError) as exc:
        return _left(t, f"{type(exc).__name__}: {exc}", t.kind.convention, eq.dim, eq.heads)
    replacement = t.kind.replacement(attn, t.module, model)
    owner, attribute = t.kind.site(t.module, t.parent, t.name)
    try:
        error = _relative_error(owner, attribute, replacement, t.call)
    except (Unsupported, AttndslError, RuntimeError) as exc:
        return _left(t, f"verification failed: {exc}", t.kind.convention, eq.dim, eq.heads)
    report = Patched(t.path, type(t.module).__name__, t.kind.convention, eq.dim, eq.heads,
                     f"converted from {eq.layout}", spec=eq.spec["name"], error=error,
                     resolution=eq.resolution)
    if not error <= max(tolerance, t.kind.tolerance or 0.0):
        return _Swap(t, _replace(report, status="left", weights="unchanged",
                                 reason=f"the swap's output differs by {error:.2e} (relative, "
                                        f"float64) on the probe's call"))
    return _Swap(t, report, replacement, eq)


def _equivalent(t: _Target, model: nn.Module) -> Equivalent | str:
    """The module's exact equivalent, or why there is none (a module that looks like a
    known class but lacks an attribute it reads is one the kind can't read)."""
    try:
        return t.kind.equivalent(t.module, t.parent, t.call, model)
    except Unsupported as exc:
        return str(exc)
    except (AttributeError, TypeError, KeyError, IndexError) as exc:
        return (f"it looks like {t.kind.name} but can't be read as one "
                f"({type(exc).__name__}: {exc})")


def _replace(report: Patched, **changes) -> Patched:
    from dataclasses import replace
    return replace(report, **changes)


def _compiled(spec, dim, heads, resolution, backend, like: nn.Module) -> CompiledAttention:
    attn = compile_spec(spec, dim=dim, heads=heads, resolution=resolution, backend=backend)
    ref = next(iter(like.parameters()), None)
    if ref is not None:
        attn = attn.to(device=ref.device, dtype=ref.dtype)
    return attn


def _spec_swap(t: _Target, spec, model, *, convention, layout, resolution, dim, heads,
               backend) -> _Swap:
    """`spec` in the module's place, at its width, heads and grid."""
    conv = (t.kind.convention if t.kind else SPEC_ONLY.get(type(t.module).__name__, (None,))[0]) \
        if convention == "auto" else convention
    if conv is None:
        return _left(t, f"'{t.path}' ({type(t.module).__name__}) is not a class attndsl "
                        f"knows; say how it is called: convention= one of {CONVENTIONS}")
    eq = _equivalent(t, model) if t.kind is not None and t.call is not None else None
    eq = eq if isinstance(eq, Equivalent) else None
    try:
        d, h = (dim or (eq.dim if eq else None), heads or (eq.heads if eq else None))
        if d is None or h is None:
            d, h = _size_of(t.module, d, h)
    except PatchError as exc:
        return _left(t, str(exc), conv)
    grid, where = resolution, "resolution="
    if grid is None:
        grid, where = (eq.resolution if eq else None) or _grid_of_call(t, conv), \
            "the grid the probe forward saw"
    if grid is None:
        grid, where = DEFAULT_RESOLUTION, (
            "patch's default, as no probe forward and no resolution= told the module's grid: "
            "pass example= an input of the model, or resolution=(H, W)")
    try:
        attn = _compiled(spec, d, h, grid, backend, t.module)
    except AttndslError as exc:
        return _left(t, f"the spec can't take this module's geometry (width {d}, {h} heads, "
                        f"{grid[0]}×{grid[1]} grid — {where}): {exc}", conv, d, h)
    weights = "fresh: the spec's initialization (layout=None)"
    use_layout = (t.kind.name if t.kind and t.kind.name in _layouts() else
                  _legacy_layout(t.module)) if layout == "auto" else layout
    if use_layout:
        try:
            attn.load_state_dict(convert(t.module.state_dict(), use_layout, attn))
            weights = f"converted from {use_layout}"
        except ConversionError as exc:
            if layout != "auto":
                return _left(t, str(exc), conv, d, h)
            weights = f"fresh: {exc}"
    elif layout == "auto":
        weights = f"fresh: no known checkpoint layout for {type(t.module).__name__}"
    if t.kind is not None and convention == "auto":
        replacement = t.kind.replacement(attn, t.module, model)
    else:
        replacement = stand_in(conv, attn)
    return _Swap(t, Patched(t.path, type(t.module).__name__, conv, d, h, weights,
                            spec=attn.spec.name, resolution=tuple(grid)), replacement)


def _grid_of_call(t: _Target, convention: str):
    if t.call is None or not t.call.args:
        return None
    x = t.call.args[0]
    if convention in ("bhwc", "swin_block") and isinstance(x, torch.Tensor) and x.dim() == 4:
        return int(x.shape[1]), int(x.shape[2])
    if convention == "bchw" and isinstance(x, torch.Tensor) and x.dim() == 4:
        return int(x.shape[2]), int(x.shape[3])
    if convention == "bnc_size" and len(t.call.args) >= 2:
        from .foreign.base import size_argument
        try:
            return size_argument(t.call)
        except Unsupported:
            return None
    return None


def _layouts():
    from .convert import layout_names
    return set(layout_names())


# classes patch() replaces with a spec but can't yet read a spec from: (convention, layout)
# (a class named Attention that isn't timm's ViT one, as the foreign kinds read it, is
# still called the ViT way in most models: f(x) on tokens)
SPEC_ONLY = {"HiLo": ("bnc_size", "litv2.hilo"), "Attention": ("bnc", "timm.vit")}


def _legacy_layout(module: nn.Module) -> str | None:
    return SPEC_ONLY.get(type(module).__name__, (None, None))[1]


def _size_of(mod: nn.Module, dim, heads) -> tuple[int, int]:
    if dim is None:
        for attr in ("qkv", "q", "h_qkv", "l_q"):
            lin = getattr(mod, attr, None)
            if isinstance(lin, nn.Linear):
                dim = lin.in_features
                break
        dim = dim or getattr(mod, "dim", None)
    if heads is None:
        heads = getattr(mod, "num_heads", None) or getattr(mod, "heads", None)
    if not isinstance(dim, int) or not isinstance(heads, int):
        raise PatchError(f"can't read the width and head count of {type(mod).__name__} "
                         f"(found dim={dim}, heads={heads}); pass dim= and heads=")
    return dim, heads


def _known_classes() -> str:
    return ", ".join(sorted({c for k in FOREIGN.values() for c in k.classes}))


# ---------------------------------------------------------------- the entry points
def patch(model: nn.Module, spec=None, *, match=None, example=None, strict: bool = True,
          convention: str = "auto", layout: str | None = "auto", resolution=None,
          dim: int | None = None, heads: int | None = None, backend: str = "auto",
          dump_to=None, tolerance: float = EXACT) -> list[Patched]:
    """Replace attention modules of `model` by compiled attndsl modules; returns what was
    done to each targeted module (see the module's docstring).

    spec        None: each module's own mechanism, exactly (verified); else a spec (zoo
                name, path, YAML, dict, Spec) put in every targeted module's place.
    match       which modules: a class name, a path pattern like "layers.*.attn", a list
                of those, or a predicate (path, module) → bool; default: every module of
                a class attndsl recognizes.
    example     the probe forward's input (default: a random image at the size timm's
                pretrained_cfg declares); it gives each module's grid and call.
    strict      all or nothing (default); False swaps what it can and reports the rest.
    convention  how an unrecognized matched module is called (bhwc, bchw, bnc_size, bnc,
                swin_block); recognized classes know theirs.
    layout      "auto" (convert the weights when the layout fits), a layout name, or None
                (the spec's fresh weights).
    resolution  the grid to compile at when no probe forward tells it (spec given only).
    dump_to     a folder: each swapped module's exact spec is written there as YAML
                (spec=None), a starting point for `attndsl search`."""
    if convention != "auto" and convention not in CONVENTIONS:
        raise PatchError(f"unknown convention '{convention}'; valid: auto, "
                         f"{', '.join(CONVENTIONS)}")
    if spec is None and dump_to is None and match is None and not list(model.modules()):
        raise PatchError("the model has no submodules")
    targets = _targets(model, match)
    if not targets:
        classes = sorted({type(m).__name__ for _, m in model.named_modules()})
        what = f"no submodule matches {match!r}" if match is not None else \
            f"no attention module of a class attndsl knows ({_known_classes()})"
        raise PatchError(f"{what}; the model's classes: {', '.join(classes)}")
    probe_input = example_input(model, example)
    if probe_input is not None:
        _probe(model, targets, probe_input)
    elif spec is None:
        raise PatchError("patch(model) reads each module's grid from a probe forward: pass "
                         "example= an input the model takes (the model declares no "
                         "pretrained_cfg input_size)")
    if spec is None:
        swaps = [_exact_swap(t, model, backend, tolerance) for t in targets]
    else:
        swaps = [_spec_swap(t, spec, model, convention=convention, layout=layout,
                            resolution=resolution, dim=dim, heads=heads, backend=backend)
                 for t in targets]
    left = [s.report for s in swaps if not s.report.swapped]
    if left and strict:
        lines = "\n".join(f"  {r.path} ({r.replaced}): {r.reason}" for r in left)
        raise PatchError(f"{len(left)} of {len(swaps)} module(s) can't be swapped, so none "
                         f"was (strict=True; strict=False swaps the others):\n{lines}")
    for s in swaps:
        if s.replacement is None:
            continue
        t = s.target
        if t.kind is not None and (spec is None or convention == "auto"):
            t.kind.install(t.parent, t.name, s.replacement)
        elif convention == "swin_block" or (t.kind and t.kind.convention == "swin_block"):
            from .foreign.conventions import install_swin_block
            install_swin_block(t.parent, s.replacement)
        else:
            setattr(t.parent, t.name, s.replacement)
    # fresh weights the caller didn't ask for (layout=None asks) are announced
    fresh = [s.report for s in swaps if s.report.swapped and s.report.weights.startswith("fresh")
             and layout is not None]
    if fresh:
        warnings.warn(f"patch: {len(fresh)} module(s) got the spec's fresh weights, not the "
                      f"model's: {', '.join(r.path for r in fresh[:4])}"
                      + (" …" if len(fresh) > 4 else "") + f" ({fresh[0].weights})",
                      stacklevel=2)
    if dump_to is not None:
        _dump(swaps, Path(dump_to))
    return [s.report for s in swaps]


def spec_of(model: nn.Module, path: str | None = None, *, example=None) -> dict:
    """The exact attndsl equivalent of each attention module of `model` attndsl
    recognizes (or of the one at `path`): {path: {"spec": …, "dim": …, "heads": …,
    "resolution": …, "layout": …}}, read as patch() reads them (a probe forward on
    `example` gives the grid). A module the language can't express maps to
    {"unsupported": why}."""
    targets = _targets(model, path) if path is not None else _targets(model, None)
    targets = [t for t in targets if path is None or t.path == path]
    if not targets:
        raise PatchError(f"no attention module attndsl recognizes at {path!r}" if path else
                         f"no attention module of a class attndsl knows ({_known_classes()})")
    probe_input = example_input(model, example)
    if probe_input is None:
        raise PatchError("spec_of reads each module's grid from a probe forward: pass "
                         "example= an input the model takes")
    _probe(model, targets, probe_input)
    out = {}
    for t in targets:
        if t.kind is None:
            out[t.path] = {"unsupported": f"{type(t.module).__name__} is not a class attndsl knows"}
            continue
        if t.call is None:
            out[t.path] = {"unsupported": "the probe forward never called it"}
            continue
        eq = _equivalent(t, model)
        if not isinstance(eq, Equivalent):
            out[t.path] = {"unsupported": eq}
            continue
        out[t.path] = {"spec": eq.spec, "dim": eq.dim, "heads": eq.heads,
                       "resolution": list(eq.resolution), "layout": eq.layout}
    return out


def _dump(swaps: list[_Swap], folder: Path) -> None:
    import yaml
    folder.mkdir(parents=True, exist_ok=True)
    for s in swaps:
        if s.equivalent is None or not s.report.swapped:
            continue
        eq = s.equivalent
        head = (f"# {s.report.path} ({s.report.replaced}) of the patched model, exactly: "
                f"dim {eq.dim}, {eq.heads} heads, bound at {eq.resolution[0]}×"
                f"{eq.resolution[1]}; weights: attndsl.convert(…, '{eq.layout}')\n")
        (folder / f"{s.report.path}.yaml").write_text(
            head + yaml.safe_dump(eq.spec, sort_keys=False))


__all__ = ["patch", "spec_of", "Patched", "PatchError", "CONVENTIONS", "ConventionError"]
