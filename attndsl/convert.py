"""Checkpoint conversion between the papers' / timm's attention layouts and attndsl's
parameter names (docs/parameters.md), both ways, exactly.

A layout is a list of rules, one per foreign key: which attndsl parameter it becomes and the
reshape that gets there (and back). Fixed buffers of the foreign layout (Swin's
`relative_position_index`) are checked on the way in and regenerated on the way out, so a
round trip returns the original state dict -- except where the foreign layout holds more than
the function (each layout's notes say so): EfficientViT's Conv2d_BN pairs come back folded
(the same function), HaloNet's never-read table rows come back as zeros. attndsl → foreign →
attndsl is exact for every layout.

>>> m = attndsl.compile("swin_wmsa", dim=96, resolution=(56, 56), heads=3)
>>> m.load_state_dict(attndsl.convert(timm_block.attn.state_dict(), "timm.swin", m))
>>> attndsl.convert(m.state_dict(), "timm.swin", m, reverse=True)   # back to timm's keys
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from .errors import AttndslError
from .lang.component import per_axis


class ConversionError(AttndslError, ValueError):
    """A state dict does not match the layout it was said to be in (or the module)."""


def _same(t, m):
    return t


@dataclass(frozen=True)
class Rule:
    """foreign key ↔ attndsl key; `inward` maps the foreign tensor to the attndsl one,
    `outward` back (both get the target module for its geometry). With several attndsl
    keys (`ours` a tuple: one stacked foreign tensor, like ELSA's ghost head), `inward`
    returns a tuple and `outward` takes one; a rule applies when the module has them all.
    With several foreign keys (`foreign` a tuple: EfficientViT's Conv2d_BN folded into one
    conv, HaloNet's q and kv convs into one qkv), `inward` takes a tuple and `outward`
    returns one, in that order."""

    foreign: str | tuple[str, ...]
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

    @property
    def sources(self) -> tuple[str, ...]:
        return self.foreign if isinstance(self.foreign, tuple) else (self.foreign,)

    def take(self, sd):
        return tuple(sd[f] for f in self.sources) if isinstance(self.foreign, tuple) \
            else sd[self.foreign]

    def spread(self, value) -> dict:
        """`outward`'s result by foreign key."""
        return dict(zip(self.sources, value if isinstance(self.foreign, tuple) else (value,)))


@dataclass(frozen=True)
class Buffer:
    """A fixed buffer of the foreign layout: `make(module)` is its exact value (None: the
    module has no such buffer, e.g. a BatchNorm of a head it lacks). It may be absent from
    a checkpoint; when present it is checked (to `atol` for a float table the source
    computes in float32). persistent=False (timm's non-persistent buffers): not written on
    the way out, as the foreign module's own state dict lacks it. fixed=False (BatchNorm's
    num_batches_tracked): any value is accepted, `make` is what is written."""

    foreign: str
    make: Callable
    meaning: str
    persistent: bool = True
    fixed: bool = True
    atol: float = 0.0

    def matches(self, value, module) -> bool:
        want = self.make(module)
        value = value.to(want.device)
        if not self.fixed:
            return value.shape == want.shape
        if self.atol:
            return value.shape == want.shape and torch.allclose(
                value.double(), want.double(), rtol=0.0, atol=self.atol)
        return torch.equal(value, want)


def _buffers(layout, module) -> list[tuple[Buffer, torch.Tensor]]:
    """The layout's buffers this module has, with their values."""
    made = ((b, b.make(module)) for b in layout.buffers)
    return [(b, v) for b, v in made if v is not None]


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
    # foreign key prefixes of the same module that are not the attention's (CSWinBlock's
    # norm1., mlp.): dropped on the way in
    ignore: tuple[str, ...] = ()


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
        for key, value in r.spread(r.outward(r.gather(ours), module)).items():
            out[key] = tuple(value.shape)
    for b, value in _buffers(layout, module):
        out[b.foreign] = tuple(value.shape)
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
    sd = {k[len(prefix):]: v for k, v in state_dict.items()
          if k.startswith(prefix) and not k[len(prefix):].startswith(lay.ignore)}
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
    for b, _ in _buffers(lay, module):
        if b.foreign in sd and not b.matches(sd[b.foreign], module):
            raise ConversionError(f"'{prefix}{b.foreign}' differs from {b.meaning}; this "
                                  f"checkpoint does not follow layout '{lay.name}'")
    ours = module.state_dict()
    out = {}
    for r in _active_rules(lay, ours):
        if all(f in sd for f in r.sources):
            values = r.inward(r.take(sd), module)
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
        for key, value in r.spread(r.outward(r.gather(state_dict), module)).items():
            out[prefix + key] = value.contiguous()
    for b, value in _buffers(lay, module):
        if b.persistent:
            out[prefix + b.foreign] = value
    return out


# ====================================================================== helpers
def _renames(pairs: dict[str, str]) -> tuple[Rule, ...]:
    """Plain renames, weight and bias each: {"qkv": "attn.qkv", …}."""
    return tuple(Rule(f"{f}.{p}", f"{o}.{p}") for f, o in pairs.items()
                 for p in ("weight", "bias"))   # a bias the spec lacks is simply not expected


def _branch(module):
    return module.plan.branches[0]


# ====================================================================== timm
def swin_relative_position_index(window: int | tuple[int, int]) -> torch.Tensor:
    """timm / Swin: index[i, j] of the (2wh−1)(2ww−1) table for window tokens i, j, from the
    offset i − j (row-major over (dy + wh − 1, dx + ww − 1))."""
    wh, ww = per_axis(window)
    coords = torch.stack(torch.meshgrid(torch.arange(wh), torch.arange(ww), indexing="ij"))
    flat = coords.flatten(1)                                  # (2, wh·ww)
    rel = (flat[:, :, None] - flat[:, None, :]).permute(1, 2, 0)   # (wh·ww, wh·ww, 2): i − j
    rel[:, :, 0] += wh - 1
    rel[:, :, 1] += ww - 1
    rel[:, :, 0] *= 2 * ww - 1
    return rel.sum(-1)


def _window(module) -> tuple[int, int]:
    """The bound window (rows, columns): shrink_to_map shrinks it."""
    return _branch(module).geometry.window


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
    # timm ≥ 1.0 keeps the index non-persistent: checked when a checkpoint has it (older
    # timm, the official Swin), never written back (a strict load into timm would fail)
    buffers=(Buffer("relative_position_index",
                    lambda m: swin_relative_position_index(_window(m)),
                    "Swin's i − j index of its (2ws−1)² table", persistent=False),),
    check=_swin_check,
    notes="qkv rows [q; k; v], head g owning rows g·d…(g+1)·d of each (the same as attndsl); "
          "the bias table is (T, G) in timm and (G, T) here; the shift and its mask live in "
          "the block, not in WindowAttention: pick swin_swmsa for shifted blocks."))

def _gcvit_check(module):
    b = _branch(module)
    if b.spec.application.kind != "window" or b.spec.application.shift:
        return (f"GCViT's local attention is unshifted window attention; the spec's "
                f"application is '{b.spec.application.kind}'"
                + (" with a shift" if b.spec.application.kind == "window" else ""))
    return _swin_check(module)


register(Layout(
    "timm.gcvit", ("swin_wmsa",), "timm GCViT WindowAttentionGlobal (use_global=False)",
    "timm/models/gcvit.py (WindowAttentionGlobal), timm/layers/pos_embed_rel.py (RelPosBias)",
    _renames({"qkv": "attn.qkv", "proj": "attn.proj"}) + (
        Rule("rel_pos.relative_position_bias_table", "attn.rel_pos.bias",
             inward=lambda t, m: t.t(), outward=lambda t, m: t.t(), how="transposed"),),
    buffers=(Buffer("rel_pos.relative_position_index",
                    lambda m: swin_relative_position_index(_window(m)).flatten(),
                    "the i − j index of the window's (2ws−1)² table, flattened",
                    persistent=False),),
    check=_gcvit_check,
    notes="GCViT's local blocks (use_global=False): Swin's window attention without a shift, "
          "its RelPosBias under rel_pos.; the global-query blocks (use_global=True: q from "
          "the stage's global query generator) are not in the language"))

def _eva_check(module):
    b = _branch(module)
    if b.spec.application.kind != "global":
        return f"EvaAttention is global attention; the spec's application is " \
               f"'{b.spec.application.kind}' (zoo spec eva02_rope)"
    if b.spec.projections.layout != "qkv" or b.spec.projections.bias not in ("no_key", False):
        return ("timm's EvaAttention has a fused qkv without bias, with q_bias and v_bias "
                "beside it: the spec needs projections: {layout: qkv, bias: no_key} (or "
                "bias: false when the module has none)")
    return None


register(Layout(
    "timm.eva", ("eva02_rope",), "timm EVA / EVA-02 EvaAttention (fused qkv)",
    "timm/models/eva.py (EvaAttention)",
    tuple(Rule(k, f"attn.{k}") for k in ("qkv.weight", "q_bias", "v_bias"))
    + _renames({"proj": "attn.proj", "q_norm": "attn.q_norm", "k_norm": "attn.k_norm"}),
    check=_eva_check,
    notes="qkv has no bias: q_bias and v_bias are separate parameters (timm's k_bias is a "
          "zero buffer outside the state dict), qkv rows [q; k; v] as in attndsl; the rotary "
          "embedding is the model's (`rope`, passed to every block), computed by attndsl "
          "from the spec's projections.rope: no tensor to convert"))

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
    notes="the linear=True variant (adaptive pool + 1×1 conv + GELU) is layout "
          "timm.pvt_v2_linear"))


def _pvt_linear_check(module):
    b = _branch(module)
    if b.spec.application.kind != "adaptive_pooled":
        return (f"timm's linear=True Attention reads keys from AdaptiveAvgPool2d(7); the "
                f"spec's application is '{b.spec.application.kind}' (zoo spec pvt_v2_linear)")
    if tuple(b.geometry.pooled_grid) != (7, 7):
        return f"timm pools to 7×7; the spec pools to {tuple(b.geometry.pooled_grid)}"
    return None


register(Layout(
    "timm.pvt_v2_linear", ("pvt_v2_linear",), "timm PVT-v2 Attention (linear=True)",
    "timm/models/pvt_v2.py (Attention, linear_attn=True)", _renames(_GSA),
    check=_pvt_linear_check,
    notes="the names of timm.pvt_v2, but sr is the 1×1 conv after AdaptiveAvgPool2d(7) and "
          "norm the LayerNorm before the GELU (pvt_v2_b2_li); kv rows [k; v]"))


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


register(Layout(
    "timm.cait", ("cait_talking_heads",), "timm CaiT TalkingHeadAttn",
    "timm/models/cait.py (TalkingHeadAttn)",
    _renames({"qkv": "attn.qkv", "proj": "attn.proj", "proj_l": "attn.talking_heads.pre",
              "proj_w": "attn.talking_heads.post"}),
    notes="proj_l / proj_w are Linear(heads, heads) over the head axis of the weights "
          "(before / after the softmax): the talking_heads normalization's pre / post maps; "
          "qkv rows [q; k; v], each head-major, as in attndsl"))


def _class_tokens_check(module):
    if _branch(module).spec.application.kind != "class_tokens":
        return ("timm's ClassAttn is class attention (q from the class token, k and v from "
                "every token): the spec needs application: {kind: class_tokens} (zoo spec "
                "cait_class_attention)")
    return None


def _kv_in(parts, m):
    return torch.cat(parts)         # k rows, then v rows: the kv linear's [k; v]


def _kv_out(t, m):
    return tuple(t.chunk(2))


register(Layout(
    "timm.cait_class", ("cait_class_attention",), "timm CaiT / XCiT ClassAttn",
    "timm/models/cait.py (ClassAttn; xcit.py imports it)",
    _renames({"q": "attn.q", "proj": "attn.proj"})
    + (Rule(("k.weight", "v.weight"), "attn.kv.weight", _kv_in, _kv_out,
            how="k and v stacked into kv, rows [k; v]"),
       Rule(("k.bias", "v.bias"), "attn.kv.bias", _kv_in, _kv_out,
            how="k and v stacked into kv, rows [k; v]")),
    check=_class_tokens_check,
    notes="separate q, k, v linears in timm: q reads the class token, k and v every token "
          "(attndsl's layout q_kv)"))


register(Layout(
    "timm.volo_class", ("cait_class_attention",), "timm VOLO ClassAttention",
    "timm/models/volo.py (ClassAttention)",
    _renames({"q": "attn.q", "kv": "attn.kv", "proj": "attn.proj"}),
    check=_class_tokens_check,
    notes="q reads the class token, kv (rows [k; v], each head-major) every token: "
          "attndsl's layout q_kv as it is"))


def _botnet_check(module):
    b = _branch(module)
    terms = getattr(b.spec.parameterization, "term_kinds", ())
    if b.spec.application.kind != "global" or "query_rel_pos_hw" not in terms:
        return ("timm's BottleneckAttn is global attention with height / width relative "
                "logits: the spec needs application: {kind: global} and the "
                "query_rel_pos_hw term (zoo spec botnet_mhsa)")
    if b.spec.parameterization.rel_pos_orientation != "j_minus_i":
        return "timm reads its tables at key − query: the spec must say j_minus_i"
    return None


def _conv1x1_in(t, m):
    return t.flatten(1)                 # (out, in, 1, 1) → (out, in)


def _conv1x1_out(t, m):
    return t[:, :, None, None]


register(Layout(
    "timm.botnet", ("botnet_mhsa",), "timm BottleneckAttn (stride 1)",
    "timm/layers/bottleneck_attn.py (BottleneckAttn, PosEmbedRel)",
    (Rule("qkv.weight", "attn.qkv.weight", _conv1x1_in, _conv1x1_out,
          how="the 1×1 conv as a linear: rows [q; k; v], each head-major"),
     Rule("qkv.bias", "attn.qkv.bias", how="same tensor"),
     Rule("pos_embed.height_rel", "attn.rel_pos.height", how="same tensor: (2H−1, d) rows "
          "at key − query + H − 1"),
     Rule("pos_embed.width_rel", "attn.rel_pos.width", how="same tensor: (2W−1, d)")),
    check=_botnet_check,
    notes="channels-first 1×1 conv qkv, no output projection; the tables are sized by the "
          "grid the module was built for (feat_size)"))


def _per_head_sizes(m) -> tuple[int, int, int]:
    bp = _branch(m)
    return bp.heads, bp.qk_head_dim, bp.value_head_dim


def _per_head_in(t, m):
    """timm's per-head row groups [q_g | k_g | v_g] → attndsl's [q; k; v], each head-major."""
    G, kd, vd = _per_head_sizes(m)
    groups = t.unflatten(0, (G, 2 * kd + vd))
    q, k, v = groups.split([kd, kd, vd], dim=1)
    return torch.cat([q.flatten(0, 1), k.flatten(0, 1), v.flatten(0, 1)])


def _per_head_out(t, m):
    G, kd, vd = _per_head_sizes(m)
    q, k, v = t.split([G * kd, G * kd, G * vd])
    return torch.cat([q.unflatten(0, (G, kd)), k.unflatten(0, (G, kd)),
                      v.unflatten(0, (G, vd))], dim=1).flatten(0, 1)


def _abs_offset_index(m) -> torch.Tensor:
    """EfficientFormer's / LeViT's attention_bias_idxs: |Δy|·W + |Δx| of every token pair."""
    H, W = _branch(m).grid
    ys, xs = torch.arange(H).repeat_interleave(W), torch.arange(W).repeat(H)
    return (ys[:, None] - ys[None, :]).abs() * W + (xs[:, None] - xs[None, :]).abs()


def _efficientformer_check(module):
    b = _branch(module)
    par = b.spec.parameterization
    if b.spec.application.kind != "global" or "rel_pos_bias" not in par.term_kinds \
            or par.rel_pos_orientation != "abs":
        return ("timm's EfficientFormer Attention is global attention with a bias per "
                "|offset|: the spec needs application global, the rel_pos_bias term and "
                "rel_pos_orientation abs (zoo spec efficientformer_attention)")
    return None


register(Layout(
    "timm.efficientformer", ("efficientformer_attention",), "timm EfficientFormer Attention",
    "timm/models/efficientformer.py (Attention)",
    (Rule("qkv.weight", "attn.qkv.weight", _per_head_in, _per_head_out,
          how="rows grouped per head [q_g | k_g | v_g] ↔ [q; k; v]"),
     Rule("qkv.bias", "attn.qkv.bias", _per_head_in, _per_head_out,
          how="the same order as the weight's rows"),
     Rule("attention_biases", "attn.rel_pos.bias", how="same tensor: (G, H·W) by |Δy|·W + |Δx|"))
    + _renames({"proj": "attn.proj"}),
    buffers=(Buffer("attention_bias_idxs", _abs_offset_index,
                    "|Δy|·W + |Δx| of every token pair"),),
    check=_efficientformer_check,
    notes="the value width (attn_ratio · key_dim per head) is the spec's v_width, the key "
          "width its qk_width; proj maps the value width back to the model's"))


def _gpsa_check(module):
    b = _branch(module)
    if b.spec.normalization.kind != "gated_positional" or b.spec.application.kind != "global" \
            or b.spec.projections.layout != "qkv":
        return ("timm's GPSA is global attention with the gated_positional normalization and "
                "a qkv projection (zoo spec convit_gpsa)")
    return None


def _qk_v_in(parts, m):
    return torch.cat(parts)             # qk rows [q; k], then v's: attndsl's [q; k; v]


def _qk_v_out(t, m):
    qk_rows = 2 * _branch(m).qk_dim
    return t[:qk_rows], t[qk_rows:]


register(Layout(
    "timm.convit_gpsa", ("convit_gpsa",), "timm ConViT GPSA",
    "timm/models/convit.py (GPSA)",
    (Rule(("qk.weight", "v.weight"), "attn.qkv.weight", _qk_v_in, _qk_v_out,
          how="qk's rows [q; k], then v's: [q; k; v]"),
     Rule(("qk.bias", "v.bias"), "attn.qkv.bias", _qk_v_in, _qk_v_out,
          how="the same order as the weight's rows"),
     Rule("pos_proj.weight", "attn.gated.position.weight", how="same tensor: (G, 3) over "
          "(Δx, Δy, Δx² + Δy²)"),
     Rule("pos_proj.bias", "attn.gated.position.bias"),
     Rule("gating_param", "attn.gated.gate", how="same tensor: λ, the gate is σ(λ)"))
    + _renames({"proj": "attn.proj"}),
    check=_gpsa_check,
    notes="timm's rel_indices (the offsets' features) is a non-persistent buffer it "
          "recomputes; attndsl builds the same features per grid"))


def _xcit_check(module):
    b = _branch(module)
    sim = b.spec.parameterization.similarity
    if b.spec.application.kind != "channels" or getattr(sim, "kind", None) != "cosine" \
            or sim.scale_parameter != "linear":
        return ("timm's XCA is channel attention with l2-normalized q and k times a "
                "per-head temperature: the spec needs application: {kind: channels} and "
                "similarity: {kind: cosine, scale_parameter: linear} (zoo spec xcit_xca)")
    return None


register(Layout(
    "timm.xcit", ("xcit_xca",), "timm XCiT XCA (cross-covariance attention)",
    "timm/models/xcit.py (XCA)",
    _renames({"qkv": "attn.qkv", "proj": "attn.proj"})
    + (Rule("temperature", "attn.logit_scale", how="(G, 1, 1), the scale itself"),),
    check=_xcit_check,
    notes="temperature multiplies the cosine logits as it is (scale_parameter: linear; "
          "Swin-V2's logit_scale is its log); qkv rows [q; k; v], each head-major"))


def _thirds(order: tuple[int, int, int]):
    """t's three row blocks (a fused qkv) in `order`: the rule's inward and outward maps."""
    return lambda t, m: torch.cat([t.chunk(3)[i] for i in order])


# DaViT's rows [q; k; v] → attndsl's [q; k; v] = DaViT's [k; v; q], and back
_davit_rows_in, _davit_rows_out = _thirds((1, 2, 0)), _thirds((2, 0, 1))


def _davit_channel_check(module):
    b = _branch(module)
    if b.spec.application.kind != "channels" or b.spec.parameterization.similarity != "dot":
        return ("DaViT's ChannelAttention is channel attention with dot logits: the spec needs "
                "application: {kind: channels} and the default similarity (dot)")
    return None


register(Layout(
    "timm.davit_channel", ("davit_channel",), "timm DaViT ChannelAttention",
    "timm/models/davit.py (ChannelAttention)",
    (Rule("qkv.weight", "attn.qkv.weight", _davit_rows_in, _davit_rows_out,
          how="rows [q; k; v] ↔ [k; v; q]: DaViT weighs q's channels by softmax((s·k)ᵀv)"),
     Rule("qkv.bias", "attn.qkv.bias", _davit_rows_in, _davit_rows_out,
          how="rows [q; k; v] ↔ [k; v; q]"))
    + _renames({"proj": "attn.proj"}),
    check=_davit_channel_check,
    notes="softmax((s·k)ᵀ v) applied to q is the channels application with DaViT's k as "
          "the queries, v as the keys and q as the values; s = d^-1/2 (dot similarity)"))


# ---------------------------------------------------------------------- Swin-V2
def swin_v2_coords_table(window: int | tuple[int, int],
                         pretrained_window: int | tuple[int, int] = 0) -> torch.Tensor:
    """timm / Swin-V2's relative_coords_table (1, 2wh−1, 2ww−1, 2) as timm computes it (in
    float32): (dy, dx) / (n − 1) · 8 per axis, then sign·log2(|c| + 1) / 3, n = the
    pretrained window when given, else the window."""
    (wh, ww), (ph, pw) = per_axis(window), per_axis(pretrained_window)
    table = torch.stack(torch.meshgrid(torch.arange(-(wh - 1), wh, dtype=torch.float32),
                                       torch.arange(-(ww - 1), ww, dtype=torch.float32),
                                       indexing="ij")).permute(1, 2, 0)[None]
    divisors = [(p if p > 0 else w) - 1 for w, p in ((wh, ph), (ww, pw))]
    table = torch.stack([table[..., a] / d if d > 0 else table[..., a] * 0
                         for a, d in enumerate(divisors)], -1) * 8
    return torch.sign(table) * torch.log2(table.abs() + 1.0) / math.log2(8)


def _cpb(module):
    for term in _branch(module).spec.parameterization.terms:
        if term.kind == "cpb":
            return term
    return None


def _swin_v2_check(module):
    par = _branch(module).spec.parameterization
    cpb = _cpb(module)
    if cpb is None:
        return "the spec has no continuous position bias term (cpb)"
    if par.rel_pos_orientation != "i_minus_j":
        return ("timm's index is i − j; the spec must say "
                "parameterization.rel_pos_orientation: i_minus_j")
    if cpb.scale != 16:
        return f"timm's bias is 16·sigmoid(cpb_mlp(…)); the spec's cpb.scale is {cpb.scale}"
    sim = par.similarity
    if getattr(sim, "kind", None) != "cosine" or sim.max_scale != 100 \
            or sim.scale_parameter != "log":
        return ("timm's WindowAttention is scaled cosine attention with logit_scale clamped "
                "at ln 100; the spec needs similarity: {kind: cosine, max_scale: 100}")
    return None


_SWIN_V2 = ("qkv.weight", "q_bias", "v_bias", "logit_scale", "cpb_mlp.0.weight",
            "cpb_mlp.0.bias", "cpb_mlp.2.weight", "proj.weight", "proj.bias")

register(Layout(
    "timm.swin_v2", ("swin_v2_wmsa", "swin_v2_swmsa"),
    "timm SwinTransformerV2 WindowAttention",
    "timm/models/swin_transformer_v2.py (WindowAttention)",
    tuple(Rule(k, f"attn.{k}") for k in _SWIN_V2),
    buffers=(Buffer("relative_coords_table",
                    lambda m: swin_v2_coords_table(_window(m), _cpb(m).pretrained_window),
                    "Swin-V2's log-spaced coordinates of the (2ws−1)² offsets (compared to "
                    "1e-6: computed in float32)", persistent=False, atol=1e-6),
             Buffer("relative_position_index",
                    lambda m: swin_relative_position_index(_window(m)),
                    "Swin's i − j index of its (2ws−1)² table", persistent=False)),
    check=_swin_v2_check,
    notes="qkv has no bias: q_bias and v_bias are separate parameters (timm's k_bias is a "
          "zero buffer no checkpoint holds); qkv rows [q; k; v] as in attndsl; logit_scale "
          "(G, 1, 1) is ln of the cosine-logit scale, clamped at ln 100 in both. "
          "relative_coords_table and relative_position_index are non-persistent in timm "
          "(its checkpoint filter drops them from the Microsoft checkpoints, which hold "
          "them): checked when present, not written. The cpb term's pretrained_window must "
          "be the checkpoint's pretrained_window_size (12 for the *_192to256/384 "
          "fine-tunes; the table check catches a mismatch when the table is there). Shifted "
          "blocks: swin_v2_swmsa (the shift and its mask live in the block)."))


# ---------------------------------------------------------------------- MaxViT
def _partition(module) -> tuple[int, int]:
    """(rows, columns) of a block (window) or grid partition."""
    geo = _branch(module).geometry
    return geo.group if hasattr(geo, "group") else geo.window


def _head_first_in(t, m):
    """timm's head_first rows [q_g | k_g | v_g] per head → [q; k; v], each head-major."""
    return t.unflatten(0, (_branch(m).heads, 3, -1)).transpose(0, 1).flatten(0, 2)


def _head_first_out(t, m):
    return t.unflatten(0, (3, _branch(m).heads, -1)).transpose(0, 1).flatten(0, 2)


def _maxvit_check(module):
    b = _branch(module)
    kind = b.spec.application.kind
    if kind not in ("window", "grid"):
        return (f"MaxViT attends inside P×P blocks or grids; the spec's application is "
                f"'{kind}' (zoo specs maxvit_block, maxvit_grid)")
    if kind == "window" and b.spec.application.shift:
        return "MaxViT's block attention has no shift"
    if b.spec.parameterization.rel_pos_orientation != "i_minus_j":
        return ("timm's RelPosBias is indexed by i − j; the spec must say "
                "parameterization.rel_pos_orientation: i_minus_j")
    return None


register(Layout(
    "timm.maxvit", ("maxvit_block", "maxvit_grid"),
    "timm MaxxVit AttentionCl (head_first=True, rel_pos 'bias')",
    "timm/models/maxxvit.py (AttentionCl of PartitionAttentionCl), "
    "timm/layers/pos_embed_rel.py (RelPosBias)",
    (Rule("qkv.weight", "attn.qkv.weight", _head_first_in, _head_first_out,
          how="rows q_g, k_g, v_g per head (head_first) ↔ [q; k; v]"),
     Rule("qkv.bias", "attn.qkv.bias", _head_first_in, _head_first_out,
          how="the same order as the weight's rows"),
     Rule("rel_pos.relative_position_bias_table", "attn.rel_pos.bias",
          inward=lambda t, m: t.t(), outward=lambda t, m: t.t(), how="transposed"))
    + _renames({"proj": "attn.proj"}),
    buffers=(Buffer("rel_pos.relative_position_index",
                    lambda m: swin_relative_position_index(_partition(m)).flatten(),
                    "the i − j index of the (2P−1)² table over the in-partition "
                    "coordinates, flattened", persistent=False),),
    check=_maxvit_check,
    notes="the attn of PartitionAttentionCl (prefix e.g. 'stages.0.blocks.0.attn_block.attn.' "
          "for maxvit_block, '…attn_grid.attn.' for maxvit_grid); timm's own *_rw_* weights "
          "(head_first=True, rel_pos_type 'bias'). Heads = dim / 32 in timm: compile with "
          "heads= to match. Not this layout: the TF-ported maxvit_*_tf_* weights "
          "(head_first=False and the RelPosBiasTf table) and the *_rmlp_* models (RelPosMlp)."))


# ---------------------------------------------------------------------- HaloNet
def _halo_dims(m):
    b = _branch(m)
    return b.heads, b.qk_head_dim, b.head_dim


def _halo_qkv_in(t, m):
    """(q (G·dk, …), kv (G·(dk+dv), …) interleaved [k_g | v_g] per head) → qkv [q; k; v]."""
    G, dk, dv = _halo_dims(m)
    q, kv = (x.flatten(1) if x.dim() == 4 else x for x in t)     # 1×1 conv → linear
    kv = kv.unflatten(0, (G, dk + dv))
    return torch.cat([q, kv[:, :dk].flatten(0, 1), kv[:, dk:].flatten(0, 1)])


def _halo_qkv_out(conv: bool):
    def out(t, m):
        G, dk, dv = _halo_dims(m)
        q, k, v = torch.split(t, [G * dk, G * dk, G * dv])
        kv = torch.cat([k.unflatten(0, (G, dk)), v.unflatten(0, (G, dv))], dim=1).flatten(0, 1)
        return (q[:, :, None, None], kv[:, :, None, None]) if conv else (q, kv)
    return out


def _halo_rows(m) -> int:
    return 2 * _branch(m).geometry.halo


def _halo_table_out(t, m):
    return torch.cat([t.new_zeros(_halo_rows(m), *t.shape[1:]), t])


def _halo_check(module):
    b = _branch(module)
    if b.spec.application.kind != "halo":
        return (f"timm's HaloAttn attends from blocks to their haloed windows; the spec's "
                f"application is '{b.spec.application.kind}' (zoo spec halonet)")
    if b.spec.parameterization.rel_pos_orientation != "j_minus_i":
        return ("timm reads its tables at key − query; the spec must say "
                "parameterization.rel_pos_orientation: j_minus_i")
    return None


_HALO_TABLE = ("timm's 2·win − 1 rows (win = block + 2·halo) less the first 2·halo, which "
               "timm never reads ↔ 2·(block + halo) − 1 rows; out: those rows as zeros")

register(Layout(
    "timm.halo", ("halonet",), "timm HaloAttn (stride 1)", "timm/layers/halo_attn.py (HaloAttn)",
    (Rule(("q.weight", "kv.weight"), "attn.qkv.weight", _halo_qkv_in, _halo_qkv_out(True),
          how="1×1 convs: q, and kv interleaved per head (k_g then v_g) ↔ qkv rows [q; k; v]"),
     Rule(("q.bias", "kv.bias"), "attn.qkv.bias", _halo_qkv_in, _halo_qkv_out(False),
          how="as the weights (qkv_bias=True)"),
     Rule("pos_embed.height_rel", "attn.rel_pos.height",
          lambda t, m: t[_halo_rows(m):], _halo_table_out, how=_HALO_TABLE),
     Rule("pos_embed.width_rel", "attn.rel_pos.width",
          lambda t, m: t[_halo_rows(m):], _halo_table_out, how=_HALO_TABLE)),
    check=_halo_check,
    notes="the self_attn of timm's byoanet halonet* / *_halonext* blocks, stride 1, no output "
          "projection (the block's next 1×1 conv is one); q·k is scaled by dk^-1/2 and the "
          "relative logits are not (scale_pos_embed=False ↔ the term's scaled: false; "
          "scaled: true for scale_pos_embed=True). A round trip is exact as a function, but "
          "the first 2·halo rows of each table, which timm never reads, come back as zeros."))


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


# ====================================================================== EfficientViT
_BN_EPS = 1e-5         # nn.BatchNorm2d's default, which the official Conv2d_BN keeps
_EV_HEADS = 16         # the layout's rules cover cascades of up to this many heads

def _conv_bn_keys(conv: str) -> tuple[str, ...]:
    """A Conv2d + BatchNorm pair's keys: the official code names the conv `c`, timm `conv`."""
    return (f"{conv}.weight", "bn.weight", "bn.bias", "bn.running_mean", "bn.running_var")


def _module_dtype(m):
    return next(iter(m.parameters())).dtype


def _fold_in(linear: bool):
    """Conv2d(bias=False) + eval-mode BatchNorm → one conv with a bias: W·s, β − μ·s with
    s = γ / √(σ² + ε); `linear`: a 1×1 conv becomes attndsl's Linear."""
    def fold(t, m):
        dtype = torch.promote_types(t[0].dtype, _module_dtype(m))
        w, gamma, beta, mean, var = (x.to(dtype) for x in t)
        s = gamma / torch.sqrt(var + _BN_EPS)
        w = w * s.reshape(-1, *([1] * (w.dim() - 1)))
        return (w.flatten(1) if linear else w), beta - mean * s
    return fold


def _fold_out(linear: bool):
    """The folded conv and an identity BatchNorm carrying its bias: s = γ / √(1 + ε) is
    exactly 1 when γ is computed as √(1 + ε) the same way, so folding it back is exact."""
    def unfold(t, m):
        w, b = t
        one = torch.ones_like(b)
        return ((w[:, :, None, None] if linear else w), torch.sqrt(one + _BN_EPS), b,
                torch.zeros_like(b), one)
    return unfold


def _conv_bn(foreign: str, ours: str, linear: bool, how: str, conv: str = "c") -> Rule:
    return Rule(tuple(f"{foreign}.{k}" for k in _conv_bn_keys(conv)),
                (f"{ours}.weight", f"{ours}.bias"), _fold_in(linear), _fold_out(linear), how=how)


def _ev_heads(m) -> int:
    return len(m.plan.branches)


def efficientvit_bias_index(resolution: int) -> torch.Tensor:
    """The official attention_bias_idxs (R², R²): offsets (|dy|, |dx|) numbered in first-seen
    order over (p1, p2) in product(range(R), range(R))², which is |dy|·R + |dx|."""
    r = torch.arange(resolution)
    ys, xs = r.repeat_interleave(resolution), r.repeat(resolution)
    return ((ys[:, None] - ys[None, :]).abs() * resolution
            + (xs[:, None] - xs[None, :]).abs())


def _ev_counter(head: int | None):
    return lambda m: torch.tensor(0) if head is None or head < _ev_heads(m) else None


def _efficientvit_check(module):
    spec = module.spec
    if spec.merge.kind != "cascade" or spec.merge.activation != "relu":
        return ("CascadedGroupAttention feeds head i−1's output into head i and applies ReLU "
                "before proj: the spec needs merge: {kind: cascade, activation: relu}")
    if [b.spec.name for b in module.plan.branches] != [f"h{i}" for i in range(_ev_heads(module))]:
        return "the layout's heads are branches named h0, h1, … in cascade order"
    for b in module.plan.branches:
        if b.spec.application.kind != "window" or b.spec.application.shift:
            return "LocalWindowAttention attends in unshifted windows (application kind window)"
        if b.spec.parameterization.rel_pos_orientation != "abs":
            return ("attention_biases is indexed by |Δy|·R + |Δx|: the spec must say "
                    "parameterization.rel_pos_orientation: abs")
    w, (H, W) = _branch(module).window, module.resolution
    if H <= w and W <= w and (H, W) != (w, w):
        return (f"the official LocalWindowAttention runs a map no larger than its window "
                f"({H}×{W} ≤ {w}) as one unpadded {H}×{W} window with an (h, {H * W}) bias "
                f"table; compile a spec whose windows are {H}×{W} (application.size and "
                f"pad_to_multiple {H})")
    return None


def _efficientvit_rules(conv: str) -> tuple[Rule, ...]:
    """CascadedGroupAttention's parameters; `conv` names the conv of each Conv2d + BN pair."""
    return (tuple(r for i in range(_EV_HEADS) for r in (
        _conv_bn(f"qkvs.{i}", f"h{i}.qkv", True,
                 "Conv2d_BN folded (eval BatchNorm, ε 1e-5) ↔ linear + bias, rows [q; k; v]",
                 conv),
        _conv_bn(f"dws.{i}", f"h{i}.q_conv", False,
                 "Conv2d_BN folded ↔ depthwise conv + bias on q", conv)))
        + (_conv_bn("proj.1", "merge.proj", True,
                    "Conv2d_BN folded ↔ linear + bias (proj.0 is the ReLU)", conv),)
        + tuple(Rule("attention_biases", tuple(f"h{i}.rel_pos.bias" for i in range(n)),
                     inward=lambda t, m: tuple(t.split(1)), outward=lambda ts, m: torch.cat(ts),
                     how="row i ↔ head i's (1, R²) table")
                for n in range(_EV_HEADS, 0, -1)))


def _efficientvit_buffers(index_persistent: bool) -> tuple[Buffer, ...]:
    return ((Buffer("attention_bias_idxs", lambda m: efficientvit_bias_index(_branch(m).window),
                    "the official index abs(Δy)·R + abs(Δx) (R the window)",
                    persistent=index_persistent),)
            + tuple(Buffer(f"{part}.{i}.bn.num_batches_tracked", _ev_counter(i),
                           "BatchNorm's batch counter", fixed=False)
                    for i in range(_EV_HEADS) for part in ("qkvs", "dws"))
            + (Buffer("proj.1.bn.num_batches_tracked", _ev_counter(None),
                      "BatchNorm's batch counter", fixed=False),))


register(Layout(
    "msra.efficientvit", ("efficientvit",),
    "EfficientViT (MSRA, official) CascadedGroupAttention",
    "microsoft/Cream EfficientViT/classification/model/efficientvit.py "
    "(CascadedGroupAttention in LocalWindowAttention)",
    _efficientvit_rules("c"), buffers=_efficientvit_buffers(True),
    check=_efficientvit_check,
    notes="keys of CascadedGroupAttention: LocalWindowAttention's are under 'attn.', a "
          "model's under e.g. 'blocks1.0.mixer.m.attn.' (pass prefix=). Each Conv2d_BN is "
          "folded on the way in with the eval-mode formula (ε = 1e-5, nn.BatchNorm2d's "
          "default). On the way out each becomes the folded conv and an identity BatchNorm "
          "(running_mean 0, running_var 1, weight √(1 + ε), bias the folded bias, "
          "num_batches_tracked 0): the same eval-mode function, and attndsl → official → "
          "attndsl is exact, but official → attndsl → official does not give back the "
          "checkpoint's c / bn tensors (folding is not invertible), nor its BN statistics "
          "for training. A map no larger than the window is one unpadded window in the "
          "official code (stage 3, 4×4 at 224 px): compile the spec with that window. "
          "timm's efficientvit_msra names the pairs conv / bn: layout timm.efficientvit_msra."))

register(Layout(
    "timm.efficientvit_msra", ("efficientvit",),
    "timm efficientvit_msra CascadedGroupAttention",
    "timm/models/efficientvit_msra.py (CascadedGroupAttention in LocalWindowAttention)",
    _efficientvit_rules("conv"), buffers=_efficientvit_buffers(False),
    check=_efficientvit_check,
    notes="msra.efficientvit's rules with timm's names (each ConvNorm's conv is `conv`); "
          "timm keeps attention_bias_idxs non-persistent (checked when present, never "
          "written). The same folding of the Conv2d + BatchNorm pairs (eval mode)."))


# ====================================================================== CSWin
def _cswin_width(m) -> int:
    return m.plan.branches[0].width


def _cswin_in(t, m):
    """[q; k; v] over all channels → vertical [q; k; v] over the first half of each,
    horizontal over the second."""
    c = _cswin_width(m)
    q, k, v = t.chunk(3)
    return torch.cat([q[:c], k[:c], v[:c]]), torch.cat([q[c:], k[c:], v[c:]])


def _cswin_out(t, m):
    (vq, vk, vv), (hq, hk, hv) = (x.chunk(3) for x in t)
    return torch.cat([vq, hq, vk, hk, vv, hv])


def _cswin_check(module):
    bs = module.plan.branches
    apps = [(b.spec.application.kind, getattr(b.spec.application, "orientation", None))
            for b in bs]
    if apps != [("stripes", "vertical"), ("stripes", "horizontal")]:
        return ("the official block's attns.0 attends in vertical stripes (H_sp = R, W_sp = "
                "split) and attns.1 in horizontal ones: the spec needs those two stripes "
                "branches in that order (the last stage's single global branch has no zoo spec)")
    if bs[0].spec.application.width != bs[1].spec.application.width:
        return "the official block has one split_size for both branches"
    if bs[0].width != bs[1].width or any(b.qk_dim != b.width for b in bs):
        return ("the official qkv splits q, k and v at C/2: the branches need equal widths "
                "and q/k as wide as v")
    if any(b.spec.extras.value_conv.scope != "block" for b in bs):
        return "LePE convolves each stripe as its own image: value_conv scope must be 'block'"
    if module.spec.merge.kind != "concat":
        return "the official block concatenates the branches before proj (merge: concat)"
    return None


register(Layout(
    "cswin", ("cswin",), "CSWin (official) CSWinBlock attention (qkv, attns, proj)",
    "microsoft/CSWin-Transformer models/cswin.py (CSWinBlock, LePEAttention)",
    (Rule("qkv.weight", ("vertical.qkv.weight", "horizontal.qkv.weight"), _cswin_in, _cswin_out,
          how="rows [q; k; v] over C; the first C/2 rows of each to the vertical branch "
              "(attns.0), the rest to the horizontal one"),
     Rule("qkv.bias", ("vertical.qkv.bias", "horizontal.qkv.bias"), _cswin_in, _cswin_out,
          how="as the weight"))
    + _renames({"proj": "merge.proj", "attns.0.get_v": "vertical.value_conv",
                "attns.1.get_v": "horizontal.value_conv"}),
    check=_cswin_check,
    ignore=("norm1.", "norm2.", "mlp."),
    notes="the attention part of CSWinBlock: with a block's prefix (e.g. 'stage1.0.') its "
          "norm1, norm2 and mlp keys are skipped. get_v is LePE's 3×3 depthwise conv, applied "
          "inside each stripe. The official scale is (C/h)^-1/2 (qk_scale=None in the released "
          "models). The last stage (and any stage whose resolution equals its split size) has "
          "one global branch, attns.0 over all channels: no zoo spec."))


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
                keys = ", ".join(f"`{f}`" for f in r.sources)
                shape = ", ".join(str(shapes[f]) for f in r.sources)
                out.append(f"| {keys} | {shape} | {targets} | {r.how} |")
            elif r.foreign == "ghost_head":
                targets = ", ".join(f"`{t}`" for t in r.targets)
                out.append(f"| `{r.foreign}` | — | {targets} | {r.how} |")
        for b, value in _buffers(lay, m):
            if not b.fixed:
                what = (f"buffer: {b.meaning}; any value accepted on the way in, "
                        f"{value.tolist()} written on the way out")
            elif not b.persistent:
                what = (f"non-persistent buffer: {b.meaning}; checked when a checkpoint has "
                        "it, not written on the way out")
            else:
                what = (f"fixed buffer: {b.meaning}; checked on the way in, rebuilt on the "
                        "way out")
            out.append(f"| `{b.foreign}` | {shapes[b.foreign]} | — | {what} |")
        out.append("")
    return "\n".join(out)


def _levit_qkv_in(t, m):
    """LinearNorm (Linear + eval BatchNorm1d) folded, then the per-head row groups
    [q_g | k_g | v_g] reordered to [q; k; v]."""
    w, b = _fold_in(False)(t, m)
    return _per_head_in(w, m), _per_head_in(b, m)


def _levit_qkv_out(t, m):
    w, b = t
    return _fold_out(False)((_per_head_out(w, m), _per_head_out(b, m)), m)


def _linear_bn_keys(prefix: str) -> tuple[str, ...]:
    return tuple(f"{prefix}.{k}" for k in ("linear.weight", "bn.weight", "bn.bias",
                                           "bn.running_mean", "bn.running_var"))


def _levit_check(module):
    spec = module.spec
    if spec.merge.activation != "hardswish" or not spec.merge.out \
            or spec.branches[0].projections.out:
        return ("LeViT applies Hardswish to the heads, then proj: the spec needs "
                "projections.out: false and merge: {activation: hardswish, out: true} (zoo "
                "spec levit_attention)")
    return _efficientformer_check(module)


register(Layout(
    "timm.levit", ("levit_attention",), "timm LeViT Attention (use_conv=False, eval mode)",
    "timm/models/levit.py (Attention, LinearNorm)",
    (Rule(_linear_bn_keys("qkv"), ("attn.qkv.weight", "attn.qkv.bias"), _levit_qkv_in,
          _levit_qkv_out, how="Linear + BatchNorm folded; rows grouped per head "
          "[q_g | k_g | v_g] ↔ [q; k; v]"),
     Rule(_linear_bn_keys("proj.ln"), ("merge.proj.weight", "merge.proj.bias"),
          _fold_in(False), _fold_out(False), how="Linear + BatchNorm folded"),
     Rule("attention_biases", "attn.rel_pos.bias", how="same tensor: (G, H·W) by |Δy|·W + |Δx|")),
    buffers=(Buffer("attention_bias_idxs", _abs_offset_index,
                    "|Δy|·W + |Δx| of every token pair", persistent=False),
             Buffer("qkv.bn.num_batches_tracked", lambda m: torch.tensor(0),
                    "BatchNorm's counter (any value is accepted)", fixed=False),
             Buffer("proj.ln.bn.num_batches_tracked", lambda m: torch.tensor(0),
                    "BatchNorm's counter (any value is accepted)", fixed=False)),
    check=_levit_check,
    notes="BatchNorms folded into the linears (eval mode), so a round trip keeps the "
          "function, not the BN statistics (the way out writes identity BatchNorms "
          "carrying the bias, num_batches_tracked 0); Hardswish is merge.activation, "
          "proj.ln the merge's projection; the value width (attn_ratio · key_dim per head) "
          "is the spec's v_width when it differs from the model's"))


__all__ = ["convert", "ConversionError", "LAYOUTS", "layout_names", "layout_markdown", "Layout", "Rule",
           "Buffer", "swin_relative_position_index", "swin_v2_coords_table",
           "efficientvit_bias_index"]
