"""What a normalization is made of (the Norm over j ∈ S(i) of the paradigm).

Each kind lives in one module of this package with its spec component (`kind` names it),
its bind-time check, its lowering and its docs line. Like the terms, nothing here imports
the rest of attndsl beyond the spec component and the errors.

The logits a normalization receives are in the blocked layout of codegen/rules.py:
(B, G, nb, Lq, Lk) for a standard kernel, (B, G, nb, Lq, Lk, d) for a depthwise one; it
normalizes over the keys, KEY_AXIS. A static filter's table arrives as (1, G, 1, 1, K²).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

KEY_AXIS = 4      # Lk in the blocked layout


@dataclass(frozen=True)
class NormWhere:
    """What a normalization's bind-time check may read."""

    normalization: Any   # the spec component
    branch: Any          # lang.models.Branch
    path: str            # spec path of the normalization, e.g. "branches[1].normalization"
    kind: Any            # the application's ApplicationKind
    geometry: Any        # the application's Geometry


class NormalizationKind:
    """Everything attndsl knows about one normalization (subclass per module)."""

    model: ClassVar[type]
    doc: ClassVar[str]

    @property
    def name(self) -> str:
        return self.model.model_fields["kind"].default

    def check(self, where: NormWhere) -> None:
        """Cross-field rules that need the branch or its geometry (raise SpecError)."""

    def parameters(self, norm, bp) -> dict:
        """The kind's own learned parameters, {dotted name under the branch: module}
        (docs/parameters.md lists the names); most kinds have none."""
        return {}

    def lower(self, ctx, norm, w):
        """The normalized weights over KEY_AXIS. `ctx.key_count` is |S(i)| (keys per
        query), `ctx.bp.window` the K of a K×K neighbourhood."""
        raise NotImplementedError


NORMALIZATIONS: dict[str, NormalizationKind] = {}


def register(cls: type[NormalizationKind]) -> type[NormalizationKind]:
    kind = cls()
    if kind.name in NORMALIZATIONS:
        raise RuntimeError(f"normalization '{kind.name}' is defined twice")
    NORMALIZATIONS[kind.name] = kind
    return cls


def normalization_of(component) -> NormalizationKind:
    return NORMALIZATIONS[component.kind]
