"""Swap compiled attndsl modules into existing models.

`patch(model, spec, match=...)` finds attention submodules (by class name, module path
pattern or predicate), compiles `spec` at each one's width and head count, carries its
weights over when its class has a known checkpoint layout that fits the spec (see
attndsl.convert), and replaces it with an adapter that keeps the model's call convention:

| convention   | the replaced module is called as                    | known classes |
|--------------|-----------------------------------------------------|---------------|
| `bhwc`       | f(x) with x (B, H, W, C)                            | yours |
| `bnc_size`   | f(x, (H, W)) or f(x, H, W) with x (B, H·W, C)        | timm Twins LocallyGroupedAttn / GlobalSubSampleAttn, PVT-v2 Attention, LITv2 HiLo |
| `bnc`        | f(x) with x (B, N, C), N = H·W of a square grid      | timm ViT Attention (models without class / register tokens) |
| `swin_block` | the parent block's `_attn(x)` with x (B, H, W, C): shift, window partition and mask are the spec's business | timm SwinTransformer WindowAttention |

No timm import is needed; timm's classes are recognized by name and attributes.
"""
from __future__ import annotations

import fnmatch
import math
import types
from dataclasses import dataclass
from typing import Callable

from torch import nn

from .codegen.module import CompiledAttention, compile as compile_spec
from .convert import ConversionError, convert
from .errors import AttndslError

# class name → (call convention, checkpoint layout); `_known` tells PVT-v2's Attention
# (q, kv, sr) from ViT's (qkv) by its attributes
KNOWN = {
    "WindowAttention": ("swin_block", "timm.swin"),
    "LocallyGroupedAttn": ("bnc_size", "timm.twins_lsa"),
    "GlobalSubSampleAttn": ("bnc_size", "timm.twins_gsa"),
    "HiLo": ("bnc_size", "litv2.hilo"),
    "Attention": ("bnc", "timm.vit"),
}
CONVENTIONS = ("bhwc", "bnc_size", "bnc", "swin_block")


class PatchError(AttndslError, ValueError):
    """patch() could not find, size or adapt a module."""


@dataclass(frozen=True)
class Patched:
    """What patch() did to one submodule."""

    path: str
    replaced: str          # class name of the original module
    convention: str
    dim: int
    heads: int
    weights: str           # "converted from <layout>" or "fresh: <why>"


class BNCAttention(nn.Module):
    """(B, N, C) with the grid given as (H, W) or H, W → the compiled module."""

    def __init__(self, attn: CompiledAttention):
        super().__init__()
        self.attn = attn

    def forward(self, x, *size):
        if len(size) == 1:
            H, W = size[0]
        elif len(size) == 2:
            H, W = size
        else:
            raise PatchError(f"patched '{self.attn.spec.name}' expects f(x, (H, W)) or "
                             f"f(x, H, W), got {len(size)} extra arguments")
        return self.attn.forward_tokens(x, (int(H), int(W)))


class SquareTokenAttention(nn.Module):
    """(B, N, C) on a square grid (ViT without prefix tokens) → the compiled module."""

    def __init__(self, attn: CompiledAttention):
        super().__init__()
        self.attn = attn

    def forward(self, x, attn_mask=None, is_causal: bool = False):
        # timm ≥ 1.0 passes both to every Attention (None / False for a ViT classifier)
        if attn_mask is not None or is_causal:
            raise PatchError(f"patched '{self.attn.spec.name}' got "
                             f"{'an attention mask' if attn_mask is not None else 'is_causal=True'}; "
                             "attndsl specs define their own masking")
        n = x.shape[1]
        side = math.isqrt(n)
        if side * side != n:
            raise PatchError(
                f"patched '{self.attn.spec.name}' got {n} tokens, not a square grid: models "
                "with class or register tokens can't run a spatial spec (build the model "
                "with class_token=False, global_pool='avg')")
        return self.attn.forward_tokens(x, (side, side))


def _swin_block_attn(block, x):
    """Replaces timm SwinTransformerBlock._attn: the spec does shift and windows itself."""
    return block.attn(x)


def _matcher(match) -> Callable[[str, nn.Module], bool]:
    if callable(match):
        return match
    patterns = [match] if isinstance(match, str) else list(match)

    def by_name_or_path(path, mod):
        return any(type(mod).__name__ == p or fnmatch.fnmatchcase(path, p) for p in patterns)
    return by_name_or_path


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


def _known(mod: nn.Module) -> tuple[str | None, str | None]:
    conv, layout = KNOWN.get(type(mod).__name__, (None, None))
    # timm's PVT-v2 Attention is separate q and kv linears (ViT's: one qkv), its reduction
    # a strided conv `sr`, or AdaptiveAvgPool2d `pool` + 1×1 conv when linear
    if type(mod).__name__ == "Attention" and hasattr(mod, "kv") and hasattr(mod, "q"):
        linear = getattr(mod, "pool", None) is not None
        conv, layout = "bnc_size", "timm.pvt_v2_linear" if linear else "timm.pvt_v2"
    return conv, layout


def patch(model: nn.Module, spec, *, match, convention: str = "auto",
          layout: str | None = "auto", resolution=(14, 14), dim: int | None = None,
          heads: int | None = None, backend: str = "auto") -> list[Patched]:
    """Replace every submodule of `model` that `match`es (a class name, a module path
    pattern like "layers.*.attn", a list of those, or a predicate (path, module) → bool)
    by `spec` compiled at its width and heads. Returns what was done, per module.

    `resolution` is the grid the modules are bound at (they run at any grid the spec
    allows, see CompiledAttention). `layout="auto"` converts the old weights when the
    class has a known layout that fits the spec; None keeps the spec's fresh weights."""
    if convention != "auto" and convention not in CONVENTIONS:
        raise PatchError(f"unknown convention '{convention}'; valid: auto, "
                         f"{', '.join(CONVENTIONS)}")
    test = _matcher(match)
    targets = [(p, m) for p, m in model.named_modules() if p and test(p, m)]
    # a match inside a match (an attention inside a matched block) would be replaced twice
    targets = [(p, m) for p, m in targets
               if not any(p.startswith(q + ".") for q, _ in targets)]
    if not targets:
        classes = sorted({type(m).__name__ for _, m in model.named_modules()})
        raise PatchError(f"no submodule matches {match!r}; the model's classes: "
                         f"{', '.join(classes)}")
    report = []
    for path, mod in targets:
        known_conv, known_layout = _known(mod)
        conv = known_conv if convention == "auto" else convention
        if conv is None:
            raise PatchError(f"'{path}' ({type(mod).__name__}) is not a class attndsl knows; "
                             f"say how it is called: convention= one of {CONVENTIONS}")
        d, h = _size_of(mod, dim, heads)
        attn = compile_spec(spec, dim=d, heads=h, resolution=resolution, backend=backend)
        ref = next(iter(mod.parameters()), None)
        if ref is not None:
            attn = attn.to(device=ref.device, dtype=ref.dtype)
        weights = "fresh: the spec's initialization (layout=None)"
        use_layout = known_layout if layout == "auto" else layout
        if use_layout:
            try:
                attn.load_state_dict(convert(mod.state_dict(), use_layout, attn))
                weights = f"converted from {use_layout}"
            except ConversionError as exc:
                if layout != "auto":
                    raise
                weights = f"fresh: {exc}"
        elif layout == "auto":
            weights = f"fresh: no known checkpoint layout for {type(mod).__name__}"
        _install(model, path, mod, attn, conv)
        report.append(Patched(path, type(mod).__name__, conv, d, h, weights))
    return report


def _install(model, path, old, attn, conv):
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    if conv == "swin_block":
        if name != "attn" or not callable(getattr(parent, "_attn", None)):
            raise PatchError(f"'{path}' is called in Swin's window layout, but its parent "
                             f"({type(parent).__name__}) has no _attn(x) to replace; use a "
                             "block with timm's SwinTransformerBlock structure")
        setattr(parent, name, attn)
        parent._attn = types.MethodType(_swin_block_attn, parent)
        return
    wrapper = {"bhwc": lambda a: a, "bnc_size": BNCAttention,
               "bnc": SquareTokenAttention}[conv](attn)
    setattr(parent, name, wrapper)


__all__ = ["patch", "Patched", "PatchError", "CONVENTIONS", "KNOWN"]
