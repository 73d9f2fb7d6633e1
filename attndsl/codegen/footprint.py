"""How much memory a bound spec needs before its first batch, checked against the device.

A spec with valid but enormous sizes (a 10^9-key Linformer, global relative-position
tables at 160×160, a q/k width of 10^9) would otherwise end in an allocation traceback
deep inside torch, or in the kernel's OOM killer. The estimate counts the parameters
exactly (built on the meta device) and the dominant activations of one image in training:
the q/k/v maps, the attention weights of every query over its keys (three copies: logits,
normalized weights, their gradient; none where SDPA's fused kernel runs without a bias)
and the offset-index tables the rules build.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from ..errors import SpecError
from ..lang.bind import Plan
from .autoplan import choose
from .params import spec_parameters

COPIES_IN_TRAINING = 3    # logits, normalized weights, and their gradient


@dataclass(frozen=True)
class Need:
    path: str          # the spec field (or parameter) it comes from
    what: str
    bytes: int


def estimate(plan: Plan, dtype: torch.dtype = torch.float32, params=None) -> list[Need]:
    """What one image needs, largest first. `params`: the plan's parameter modules when the
    caller has built them already (on any device); else they are built on meta."""
    item = torch.empty((), dtype=dtype).element_size()
    if params is None:
        with torch.device("meta"):
            params = spec_parameters(plan)
    needs = [Need(f"parameter {mod_name}.{name}", f"{'×'.join(map(str, p.shape))} parameter",
                  p.numel() * item)
             for mod_name, mod in params.items() for name, p in mod.named_parameters()]
    for bp in plan.branches:
        app = bp.spec.application
        queries, keys = bp.geometry.queries, bp.geometry.keys_per_query
        per_channel = bp.head_dim if bp.depthwise else 1
        terms = set(getattr(bp.spec.parameterization, "term_kinds", ()))
        if choose(bp).engine == "sdpa" and not terms - {"query_key"} \
                and bp.geometry.blocks[0] == 1:
            # SDPA's fused kernel never holds the (queries × keys) weights (no bias to add;
            # one block of keys: blocked kinds still build their partitions)
            keys = 0
        needs.append(Need(
            f"{bp.path}application", f"{app.kind} attention weights, {bp.heads} heads × "
            f"{queries:,} queries × {keys:,} keys{f' × {per_channel} channels' if per_channel > 1 else ''} "
            f"(×{COPIES_IN_TRAINING} in training)",
            COPIES_IN_TRAINING * bp.heads * queries * keys * per_channel * item))
        taps = bp.spec.kernel.size ** 2
        qk_width = bp.spec.projections.qk_width
        widened = ""
        if qk_width is not None:       # name the field that sized q and k, and its value
            widened = (f"qk_width {{num: {qk_width.num}, den: {qk_width.den}}} makes q and k "
                       f"{bp.qk_dim:,} channels wide at width {bp.width}; ")
        needs.append(Need(f"{bp.path}projections" + (".qk_width" if widened else ""),
                          f"{widened}q, k, v and output maps of {queries:,} "
                          f"tokens ({bp.qk_dim} + {bp.qk_dim} + {bp.value_width} + "
                          f"{bp.value_width} channels"
                          f"{f', q and k × {taps} taps' if taps > 1 else ''}; "
                          f"×{COPIES_IN_TRAINING} in training)",
                          COPIES_IN_TRAINING * queries
                          * (2 * bp.qk_dim * taps + 2 * bp.value_width) * item))
        if app.kind == "global" and terms - {"query_key", "query_mean"}:
            n = queries
            needs.append(Need(f"{bp.path}parameterization.terms",
                              f"global relative-position index and bias, {n:,}×{n:,} "
                              f"offsets", n * n * (8 + bp.heads * item)))
    return sorted(needs, key=lambda need: need.bytes, reverse=True)


def device_memory(device: torch.device) -> int | None:
    """Total memory of the device (None when it can't be read)."""
    try:
        if device.type == "cuda":
            return torch.cuda.get_device_properties(device.index or 0).total_memory
        if device.type == "cpu":
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, RuntimeError, AttributeError):
        return None
    return None


def gib(n: int) -> str:
    return f"{n / 2 ** 30:,.1f} GiB" if n >= 2 ** 28 else f"{n / 2 ** 20:,.1f} MiB"


def check_footprint(plan: Plan, device=None, dtype: torch.dtype = torch.float32,
                    params=None) -> None:
    """Refuse a bound spec whose parameters and one training image don't fit the device,
    naming the largest needs and the estimate."""
    device = torch.device(device or "cpu")
    have = device_memory(device)
    if have is None:
        return
    needs = estimate(plan, dtype, params)
    total = sum(need.bytes for need in needs)
    if total <= have:
        return
    top = needs[0]
    largest = "; ".join(f"{n.path}: {n.what} = {gib(n.bytes)}" for n in needs[:3])
    from ..lang.io import locate     # the YAML line of the field, when it is known
    raise locate(plan.spec, SpecError(
        f"spec '{plan.spec.name}' at dim {plan.dim}, grid {plan.resolution[0]}x"
        f"{plan.resolution[1]} needs about {gib(total)} for its parameters and "
        f"one training image, more than the {gib(have)} of {device} ({largest}); "
        "use smaller sizes or a smaller grid", path=top.path.removeprefix("parameter ")))
