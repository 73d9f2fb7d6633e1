"""Checkpoint conversion between the papers' / timm's attention layouts and attndsl's
parameter names (docs/parameters.md), both ways, exactly.

A layout is a list of rules, one per foreign key: which attndsl parameter it becomes and the
reshape that gets there (and back). Fixed buffers of the foreign layout (Swin's
`relative_position_index`) are checked on the way in and regenerated on the way out, so a
round trip returns the original state dict.

>>> m = attndsl.compile("swin_wmsa", dim=96, resolution=(56, 56), heads=3)
>>> m.load_state_dict(attndsl.convert(timm_block.attn.state_dict(), "timm.swin", m))
>>> attndsl.convert(m.state_dict(), "timm.swin", m, reverse=True)   # back to timm's keys
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch

from .errors import AttndslError


class ConversionError(AttndslError, ValueError):
    """A state dict does not match the layout it was said to be in (or the module)."""


def _same(t, m):
    return t


@dataclass(frozen=True)
class Rule:
    """foreign key ↔ attndsl key; `inward` maps the foreign tensor to the attndsl one,
    `outward` back (both get the target module for its geometry). With several attndsl
    keys (`ours` a tuple: one stacked foreign tensor, like ELSA's ghost head), `inward`
    returns a tuple and `outward` takes one; a rule applies when the module has them all."""

    foreign: str
    ours: str | tuple[str, ...]
    inward: Callable = _same
    outward: Callable = _same
    how: str = "same tensor"

    @property
    def targets(self) -> tuple[str, ...]:
        return self.ours if isinstance(self.ours, tuple) else (self.ours,)

    def applies(self, keys) -> bool:
        return all(t in keys for t in self.targets)

    def gather(self, sd):
        return tuple(sd[t] for t in self.targets) if isinstance(self.ours, tuple) \
            else sd[self.ours]


@dataclass(frozen=True)
class Buffer:
    """A fixed buffer of the foreign layout: `make(module)` is its exact value."""

    foreign: str
    make: Callable
    meaning: str


@dataclass(frozen=True)
class Layout:
    name: str
    zoo: tuple[str, ...]           # zoo specs with this parameter structure
    module: str                    # the foreign class, for messages and docs
    source: str                    # where the layout is defined
    rules: tuple[Rule, ...]
    buffers: tuple[Buffer, ...] = ()
    check: Callable | None = None   # module → None or why the module can't take this layout
    notes: str = ""


LAYOUTS: dict[str, Layout] = {}


def register(layout: Layout) -> Layout:
    LAYOUTS[layout.name] = layout
    return layout


def layout_names() -> list[str]:
    return sorted(LAYOUTS)


def _layout(name: str) -> Layout:
    if name not in LAYOUTS:
        import difflib
        near = difflib.get_close_matches(name, LAYOUTS, n=1)
        hint = f" (did you mean '{near[0]}'?)" if near else ""
        raise ConversionError(f"unknown layout '{name}'{hint}; known layouts: "
                              f"{', '.join(layout_names())}")
    return LAYOUTS[name]


def _active_rules(layout: Layout, keys) -> list[Rule]:
    """The first rule per foreign key whose attndsl keys all exist (ELSA's ghost_head has
    one rule per parameter combination)."""
    chosen: dict[str, Rule] = {}
    for r in layout.rules:
        if r.foreign not in chosen and r.applies(keys):
            chosen[r.foreign] = r
    return list(chosen.values())


def _expected_foreign(layout: Layout, module) -> dict[str, tuple]:
    """The foreign keys and shapes this module's parameters convert to."""
    ours = module.state_dict()
    out = {}
    for r in _active_rules(layout, ours):
        out[r.foreign] = tuple(r.outward(r.gather(ours), module).shape)
    for b in layout.buffers:
        out[b.foreign] = tuple(b.make(module).shape)
    return out


def _fmt(keys: dict[str, tuple]) -> str:
    return ", ".join(f"{k} {tuple(v)}" for k, v in keys.items())


def convert(state_dict: dict, layout: str, module, *, reverse: bool = False,
            prefix: str = "") -> dict:
    """Convert `state_dict` from `layout` to `module`'s attndsl parameter names (or, with
    reverse=True, the module's state dict back to the layout's keys).

    `prefix` picks one attention module out of a whole-model checkpoint
    (e.g. "layers.0.blocks.1.attn."); keys outside it are ignored on the way in, and put
    back under it on the way out. Unknown, missing or mis-shaped keys raise a
    ConversionError listing what the layout expects for this module."""
    lay = _layout(layout)
    ours = set(module.state_dict())
    covered = {t for r in lay.rules for t in r.targets}
    problem = None
    if not ours <= covered:
        problem = (f"the layout has no source for {sorted(ours - covered)}; it fits zoo "
                   f"spec(s) {list(lay.zoo)} and specs with their parameter names")
    elif lay.check:
        problem = lay.check(module)
    if problem:
        raise ConversionError(f"layout '{lay.name}' ({lay.module}) does not fit spec "
                              f"'{module.spec.name}': {problem}")
    return _outward(state_dict, lay, module, prefix) if reverse \
        else _inward(state_dict, lay, module, prefix)


def _inward(state_dict, lay: Layout, module, prefix: str) -> dict:
    sd = {k[len(prefix):]: v for k, v in state_dict.items() if k.startswith(prefix)}
    expected = _expected_foreign(lay, module)
    where = f" under prefix '{prefix}'" if prefix else ""
    if not sd:
        raise ConversionError(f"no keys{where} in the state dict; layout '{lay.name}' "
                              f"({lay.module}) expects: {_fmt(expected)}")
    unknown = sorted(set(sd) - set(expected))
    # fixed buffers may be absent (non-persistent in newer timm); parameters may not
    missing = sorted(k for k in expected if k not in sd
                     and k not in {b.foreign for b in lay.buffers})
    if unknown or missing:
        parts = []
        if unknown:
            parts.append(f"unexpected keys {unknown}")
        if missing:
            parts.append(f"missing keys {missing}")
        extra = ""
        prefixes = sorted({k[:-len(e)] for k in sd for e in expected
                           if k.endswith("." + e)})
        if prefixes:
            shown = ", ".join(repr(prefix + p) for p in prefixes[:6])
            more = f" and {len(prefixes) - 6} more" if len(prefixes) > 6 else ""
            extra = f" (the layout's keys appear under prefix {shown}{more}: pass prefix=)"
        elif unknown and not missing:
            extra = (f" (does the checkpoint have parts spec '{module.spec.name}' lacks, "
                     "e.g. a bias or a norm? compile a spec with them)")
        raise ConversionError(f"state dict{where} does not match layout '{lay.name}' "
                              f"({lay.module}) for spec '{module.spec.name}': "
                              f"{'; '.join(parts)}{extra}. Expected: {_fmt(expected)}")
    for k, shape in expected.items():
        if k in sd and tuple(sd[k].shape) != shape:
            raise ConversionError(
                f"'{prefix}{k}' has shape {tuple(sd[k].shape)}, but spec "
                f"'{module.spec.name}' at dim={module.dim}, heads={module.plan.heads} "
                f"needs {shape} (layout '{lay.name}'). Expected: {_fmt(expected)}")
    for b in lay.buffers:
        if b.foreign in sd and not torch.equal(sd[b.foreign].to(b.make(module).device),
                                                b.make(module)):
            raise ConversionError(f"'{prefix}{b.foreign}' differs from {b.meaning}; this "
                                  f"checkpoint does not follow layout '{lay.name}'")
    ours = module.state_dict()
    out = {}
    for r in _active_rules(lay, ours):
        if r.foreign in sd:
            values = r.inward(sd[r.foreign], module)
            for key, value in zip(r.targets, values if isinstance(r.ours, tuple) else (values,)):
                out[key] = value.to(ours[key].dtype).contiguous()
    left = sorted(set(ours) - set(out))
    if left:
        raise ConversionError(f"layout '{lay.name}' gives no value for {left} of spec "
                              f"'{module.spec.name}'")
    return out


def _outward(state_dict, lay: Layout, module, prefix: str) -> dict:
    ours = module.state_dict()
    unknown = sorted(set(state_dict) - set(ours))
    missing = sorted(set(ours) - set(state_dict))
    if unknown or missing:
        raise ConversionError(f"not a state dict of spec '{module.spec.name}': unexpected "
                              f"{unknown}, missing {missing}")
    out = {}
    for r in _active_rules(lay, state_dict):
        out[prefix + r.foreign] = r.outward(r.gather(state_dict), module).contiguous()
    for b in lay.buffers:
        out[prefix + b.foreign] = b.make(module)
    return out


# ====================================================================== helpers
def _renames(pairs: dict[str, str]) -> tuple[Rule, ...]:
    """Plain renames, weight and bias each: {"qkv": "attn.qkv", …}."""
    return tuple(Rule(f"{f}.{p}", f"{o}.{p}") for f, o in pairs.items()
                 for p in ("weight", "bias"))   # a bias the spec lacks is simply not expected


def _branch(module):
    return module.plan.branches[0]


# ====================================================================== timm
def swin_relative_position_index(ws: int) -> torch.Tensor:
    """timm / Swin: index[i, j] of the (2ws−1)² table for window tokens i, j, from the
    offset i − j (row-major over (dy + ws − 1, dx + ws − 1))."""
    coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij"))
    flat = coords.flatten(1)                                  # (2, ws²)
    rel = (flat[:, :, None] - flat[:, None, :]).permute(1, 2, 0)   # (ws², ws², 2): i − j
    rel[:, :, 0] += ws - 1
    rel[:, :, 1] += ws - 1
    rel[:, :, 0] *= 2 * ws - 1
    return rel.sum(-1)


def _window(module) -> int:
    return _branch(module).window      # the bound window (shrink_to_map shrinks it)


def _swin_check(module):
    if "attn.rel_pos.bias" not in module.state_dict():
        return ("the spec has no relative position bias table (attn.rel_pos.bias); the "
                "layout fits zoo specs swin_wmsa, swin_swmsa")
    if _branch(module).spec.parameterization.rel_pos_orientation != "i_minus_j":
        return ("timm's table is indexed by i − j; the spec must say "
                "parameterization.rel_pos_orientation: i_minus_j")
    return None


register(Layout(
    "timm.swin", ("swin_wmsa", "swin_swmsa"), "timm SwinTransformer WindowAttention",
    "timm/models/swin_transformer.py (WindowAttention)",
    _renames({"qkv": "attn.qkv", "proj": "attn.proj"}) + (
        Rule("relative_position_bias_table", "attn.rel_pos.bias",
             inward=lambda t, m: t.t(), outward=lambda t, m: t.t(), how="transposed"),),
    buffers=(Buffer("relative_position_index",
                    lambda m: swin_relative_position_index(_window(m)),
                    "Swin's i − j index of its (2ws−1)² table"),),
    check=_swin_check,
    notes="qkv rows [q; k; v], head g owning rows g·d…(g+1)·d of each (the same as attndsl); "
          "the bias table is (T, G) in timm and (G, T) here; the shift and its mask live in "
          "the block, not in WindowAttention: pick swin_swmsa for shifted blocks."))

register(Layout(
    "timm.twins_lsa", ("twins_lsa", "twins_lsa_masked"), "timm Twins LocallyGroupedAttn",
    "timm/models/twins.py (LocallyGroupedAttn)",
    _renames({"qkv": "attn.qkv", "proj": "attn.proj"})))

_GSA = {"q": "attn.q", "kv": "attn.kv", "proj": "attn.proj", "sr": "attn.pool.conv",
        "norm": "attn.pool.norm"}
register(Layout(
    "timm.twins_gsa", ("twins_gsa",), "timm Twins GlobalSubSampleAttn",
    "timm/models/twins.py (GlobalSubSampleAttn)", _renames(_GSA),
    notes="kv rows [k; v]; sr is the strided r×r conv, norm the LayerNorm after it"))

register(Layout(
    "timm.pvt_v2", ("pvt_sra",), "timm PVT-v2 Attention (linear=False)",
    "timm/models/pvt_v2.py (Attention)", _renames(_GSA),
    notes="the linear=True variant (adaptive pool + 1×1 conv + GELU) has no zoo spec"))


def _peg_weight_in(t, m):
    return t.reshape(t.shape[0], -1)          # (C, 1, 3, 3) → (C, 9): the conv kernel order


def _peg_weight_out(t, m):
    k = int(round(t.shape[1] ** 0.5))
    return t.reshape(t.shape[0], 1, k, k)


register(Layout(
    "timm.twins_peg", ("twins_peg",), "timm Twins PosConv (PEG, stride 1)",
    "timm/models/twins.py (PosConv)",
    (Rule("proj.0.weight", "attn.rel_pos.bias", _peg_weight_in, _peg_weight_out,
          how="(C, 1, 3, 3) kernel ↔ (C, 9) offset table, row-major"),
     Rule("proj.0.bias", "attn.out_bias")),
    notes="y = conv3×3_dw(x) + bias + x; the depthwise kernel is the zero-padded offset "
          "table (offset (dy, dx) at (dy+1)·3 + (dx+1))"))

register(Layout(
    "timm.vit", ("vit_mhsa",), "timm VisionTransformer Attention",
    "timm/models/vision_transformer.py (Attention)",
    _renames({"qkv": "attn.qkv", "proj": "attn.proj", "q_norm": "attn.q_norm",
              "k_norm": "attn.k_norm"}),
    notes="q_norm / k_norm (qk_norm=True) map onto a spec with projections.qk_norm: "
          "{kind: layernorm} (eps 1e-6, as timm's VisionTransformer builds them)"))


# ====================================================================== LITv2
register(Layout(
    "litv2.hilo", ("hilo",), "LITv2 HiLo (official)", "ziplab/LITv2 classification/hilo.py",
    _renames({"h_qkv": "hifi.qkv", "h_proj": "hifi.proj", "l_q": "lofi.q",
              "l_kv": "lofi.kv", "l_proj": "lofi.proj"}),
    notes="Hi-Fi heads first in the output concat, then Lo-Fi; no shared projection"))


# ====================================================================== ELSA
def _conv1x1_in(t, m):
    return t.flatten(1)                       # Conv2d (out, in, 1, 1) → Linear (out, in)


def _conv1x1_out(t, m):
    return t[:, :, None, None]


register(Layout(
    "elsa", ("elsa", "elsa_standalone"), "ELSA (official): class ELSA",
    "damo-cv/ELSA cls/models/elsa/elsa.py",
    (Rule("pre_proj.weight", "attn.qkv.weight", _conv1x1_in, _conv1x1_out,
          how="1×1 conv weight (out, in, 1, 1) ↔ linear (out, in)"),
     Rule("pre_proj.bias", "attn.qkv.bias"),
     Rule("attn.0.weight", "attn.hadamard.dw.weight"),
     Rule("attn.0.bias", "attn.hadamard.dw.bias"),
     Rule("attn.2.weight", "attn.hadamard.pw.weight"),
     Rule("attn.2.bias", "attn.hadamard.pw.bias"),
     # ghost_head stacks [M; S] as (2, 1, C, K, K) when lam and gamma are both non-zero,
     # and holds the one in use as (1, C, K, K) otherwise
     Rule("ghost_head", ("attn.ghost.mul", "attn.ghost.add"),
          inward=lambda t, m: (t[0, 0], t[1, 0]),
          outward=lambda mul_add, m: torch.stack(mul_add)[:, None],
          how="(2, 1, C, K, K) = [M; S] when lam ≠ 0 and gamma ≠ 0"),
     Rule("ghost_head", "attn.ghost.add", lambda t, m: t[0], lambda t, m: t[None],
          how="(1, C, K, K) = S when lam = 0"),
     Rule("ghost_head", "attn.ghost.mul", lambda t, m: t[0], lambda t, m: t[None],
          how="(1, C, K, K) = M when gamma = 0"),
     Rule("post_proj.weight", "attn.proj.weight"),
     Rule("post_proj.bias", "attn.proj.bias")),
    notes="pre_proj is a 1×1 Conv2d (rows [q; k; v], C_qk = ⌈(C//3·2)/group_width⌉·"
          "group_width), attn = Sequential(grouped K×K conv, GELU, 1×1 conv to G·K²); the "
          "stages 0–2 modules of ELSA-Swin. Its last stage is a Swin-like WindowAttention "
          "with rows [v; q; k] and a j − i table: not this layout."))


# ====================================================================== BOAT
register(Layout(
    "boat", ("boat_fsla",), "BOAT ContentAttention (mahaoyuHKU/pytorch-boat)",
    "mahaoyuHKU/pytorch-boat Swin/models/boat_swin_transformer.py",
    _renames({"qkv": "attn.qkv", "proj": "attn.proj", "get_v": "attn.value_conv"}),
    notes="the only public code that ships BOAT checkpoints (its README calls it unofficial); "
          "get_v is the depthwise 3×3 conv on V. It sorts each split ascending where "
          "attndsl sorts descending: the same clusters in mirrored order, identical output "
          "except on exact ties. BOAT-CSwin builds it with qk_scale=qkv_bias, i.e. scale 1: "
          "compile a spec with parameterization.scale: 1.0 for those checkpoints."))


def layout_markdown() -> str:
    """docs/parameters.md's layout tables: every layout at its first zoo spec, dim 96."""
    from .codegen.module import compile as compile_spec
    out = []
    for name in layout_names():
        lay = LAYOUTS[name]
        m = compile_spec(lay.zoo[0], dim=96, resolution=(56, 56), backend="eager")
        ours = m.state_dict()
        out += [f"### layout `{name}`", "",
                f"{lay.module}; source: {lay.source}. Zoo specs: "
                + ", ".join(f"`{z}`" for z in lay.zoo)
                + f". Shapes for `{lay.zoo[0]}` at dim 96, {m.plan.heads} heads.", ""]
        if lay.notes:
            out += [lay.notes, ""]
        out += ["| foreign key | shape | attndsl key | conversion |", "|---|---|---|---|"]
        shapes = _expected_foreign(lay, m)
        for r in lay.rules:
            if r.applies(ours) and r in _active_rules(lay, ours):
                targets = ", ".join(f"`{t}`" for t in r.targets)
                out.append(f"| `{r.foreign}` | {shapes[r.foreign]} | {targets} | {r.how} |")
            elif r.foreign == "ghost_head":
                targets = ", ".join(f"`{t}`" for t in r.targets)
                out.append(f"| `{r.foreign}` | — | {targets} | {r.how} |")
        for b in lay.buffers:
            out.append(f"| `{b.foreign}` | {shapes[b.foreign]} | — | fixed buffer: "
                       f"{b.meaning}; checked on the way in, rebuilt on the way out |")
        out.append("")
    return "\n".join(out)


__all__ = ["convert", "ConversionError", "LAYOUTS", "layout_names", "layout_markdown", "Layout", "Rule",
           "Buffer", "swin_relative_position_index"]
