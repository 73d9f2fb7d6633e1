"""What attndsl knows about one foreign attention class (timm's, a paper's), so that
`attndsl.patch(model)` can replace it by its exact attndsl equivalent with no spec.

A `ForeignKind` recognizes its class by name and attributes (`claims`), says where the
model calls it (`site`: the module's own forward, or Swin's block `_attn`, where shift and
windows happen), reads the exact spec of one module from the module, its parent block and
the call the probe forward captured (`equivalent`, raising `Unsupported` with the reason
when the language can't say it), and installs the compiled module in its place
(`install`). Nothing here imports timm: classes are recognized by name and attributes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn


class Unsupported(Exception):
    """The module can't be expressed exactly; the message says why."""


@dataclass
class Call:
    """The arguments and output of the first call at a module's site (the probe forward)."""

    args: tuple
    kwargs: dict
    output: Any

    @property
    def input(self):
        """The tensor the module was called on (its first argument, or x=)."""
        return self.args[0] if self.args else self.kwargs["x"]


@dataclass(frozen=True)
class Equivalent:
    """A foreign module as attndsl: the spec (as YAML data), the width and heads it is
    compiled at, the grid it is bound at, and the checkpoint layout its weights convert
    from (attndsl.convert)."""

    spec: dict
    dim: int
    heads: int
    resolution: tuple[int, int]
    layout: str | None
    notes: tuple[str, ...] = field(default=())
    prefix: str = ""       # where the layout's keys sit in the module's state dict


class ForeignKind:
    """Everything attndsl knows about one foreign attention class (subclass per module)."""

    name: ClassVar[str]           # e.g. "timm.swin"
    classes: ClassVar[tuple[str, ...]]
    doc: ClassVar[str]
    convention: ClassVar[str]     # how the model calls it (patch.CONVENTIONS)
    # the float64 relative error a verified swap may show when the foreign module holds a
    # constant in lower precision (None: patch's own, ~1e-9); its reason in `doc`
    tolerance: ClassVar[float | None] = None

    def claims(self, module: nn.Module, parent: nn.Module | None) -> bool:
        """This module is of this kind (class name, then the attributes that tell
        same-named classes apart)."""
        return type(module).__name__ in self.classes

    def site(self, module: nn.Module, parent: nn.Module | None, name: str) -> tuple[nn.Module, str]:
        """(object, method name) whose calls the replacement takes over."""
        return module, "forward"

    def equivalent(self, module: nn.Module, parent: nn.Module | None, call: Call,
                   model: nn.Module) -> Equivalent:
        raise NotImplementedError

    def replacement(self, compiled: nn.Module, module: nn.Module, model: nn.Module) -> nn.Module:
        """The module standing in at the site, called as the original was."""
        from .conventions import stand_in
        return stand_in(self.convention, compiled)

    def install(self, parent: nn.Module, name: str, replacement: nn.Module) -> None:
        setattr(parent, name, replacement)


FOREIGN: dict[str, ForeignKind] = {}


def register(cls: type[ForeignKind]) -> type[ForeignKind]:
    kind = cls()
    if kind.name in FOREIGN:
        raise RuntimeError(f"foreign kind '{kind.name}' is defined twice")
    FOREIGN[kind.name] = kind
    return cls


def recognize(module: nn.Module, parent: nn.Module | None) -> ForeignKind | None:
    for kind in FOREIGN.values():
        if kind.claims(module, parent):
            return kind
    return None


# ---------------------------------------------------------------- helpers for the kinds
def pair(value) -> tuple[int, int]:
    if isinstance(value, int):
        return value, value
    a, b = (int(v) for v in value)
    return a, b


def axes(value) -> int | list[int]:
    """A module's per-axis size as the language writes it: one integer when both axes agree
    (the canonical form), else [rows, columns]."""
    a, b = pair(value)
    return a if a == b else [a, b]


def qkv_widths(module: nn.Module) -> tuple[int, int]:
    """(dim, heads) of a module with a fused `qkv` (dim → 3·dim) and a `proj` (dim → dim),
    timm's usual attention; Unsupported when the attention or output width differs."""
    dim, heads = module.qkv.in_features, int(module.num_heads)
    if module.qkv.out_features != 3 * dim or module.proj.out_features != dim:
        raise Unsupported(f"its attention width ({module.qkv.out_features // 3}) or output "
                          f"width ({module.proj.out_features}) differs from its input width "
                          f"({dim})")
    return dim, heads


def qk_norm_of(module: nn.Module) -> dict | None:
    """projections.qk_norm for a module's q_norm / k_norm (timm's per-head LayerNorms;
    None when both are Identity or absent), Unsupported for any other pair."""
    norms = [getattr(module, a, nn.Identity()) for a in ("q_norm", "k_norm")]
    if all(isinstance(n, nn.Identity) for n in norms):
        return None
    if not all(isinstance(n, nn.LayerNorm) for n in norms):
        raise Unsupported(f"q/k norms {[type(n).__name__ for n in norms]}: only LayerNorm "
                          "(timm's qk_norm) is in the language")
    if norms[0].eps != norms[1].eps or not norms[0].elementwise_affine:
        raise Unsupported("q_norm and k_norm differ, or have no affine parameters")
    return {"kind": "layernorm", "eps": float(norms[0].eps)}


def equal_head_widths(heads: int, qk_head: int, v_head: int, dim: int) -> None:
    """Unsupported unless q/k and values have the same width per head and the heads fill
    the width (timm's HaloAttn / BottleneckAttn with qk_ratio 1 and dim_out = dim)."""
    if qk_head != v_head or heads * v_head != dim:
        raise Unsupported(f"q/k heads of {qk_head} and value heads of {v_head} channels at "
                          f"width {dim}: only equal widths (qk_ratio 1, dim_out = dim) are read")


def dropout_of(module: nn.Module, attribute: str = "attn_drop") -> float:
    drop = getattr(module, attribute, None)
    return float(getattr(drop, "p", 0.0) or 0.0)


def linear_bias(linear: nn.Linear) -> bool:
    return linear.bias is not None


def tensor_grid(x: torch.Tensor) -> tuple[int, int]:
    """(H, W) of a channels-last map (B, H, W, C)."""
    return int(x.shape[1]), int(x.shape[2])


def size_argument(call: Call, position: int = 1, keyword: str | None = None) -> tuple[int, int]:
    """The grid passed to a tokens-and-size module: f(x, (H, W)) or f(x, H, W)."""
    args = call.args[position:]
    if keyword and keyword in call.kwargs:
        return pair(call.kwargs[keyword])
    if len(args) == 1:
        return pair(args[0])
    if len(args) >= 2:
        return int(args[0]), int(args[1])
    raise Unsupported("its call passed no grid size")
