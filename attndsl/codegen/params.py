"""Parameters of a bound spec, as a tree of small modules with stable names.

The names are part of the public surface (docs/parameters.md) because checkpoint
conversion maps onto them; change them only with a conversion shim.

    <branch>.qkv / .q / .kv / .qk / .qv / .v    input projections (nn.Linear)
    <branch>.proj                                output projection (nn.Linear)
    <branch>.q_norm / .k_norm  (d_qk,)           per-head LayerNorm of q and k (qk_norm)
    <branch>.rel_pos.bias   (G, T)               r^b
    <branch>.rel_pos.key    (G, T, d_qk)         r^k (query_rel_pos)
    <branch>.rel_pos.query  (G, T, d_qk)         r^q (key_rel_pos)
    <branch>.key_bank       (G, T, d_qk)         static key bank
    <branch>.hadamard.dw / .pw                   ELSA's grouped K×K conv and 1×1 conv
    <branch>.ghost.mul / .add  (Cb, K, K)        ELSA ghost head M and S
    <branch>.pool.conv / .norm                   strided conv + LayerNorm (PVT/Twins)
    <branch>.select.keys / .values (k, N)        Linformer E and F
    <branch>.value_conv                          depthwise conv on v (BOAT)
    <branch>.out_bias       (Cb,)                bias after the aggregation (PEG)
    <branch>.talking_heads.pre / .post           talking heads' G×G maps (nn.Linear)
    positional.<i>                               PEG depthwise conv
    merge.proj                                   shared output projection
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..applications.base import table_parameter
from ..lang import models as m
from ..lang.bind import BranchPlan, Plan
from ..normalizations import normalization_of
from ..terms import term_of

PROJECTION_WIDTHS = {
    # layout -> [(name, which of q/k/v it makes)]
    "qkv": [("qkv", "qkv")], "q_kv": [("q", "q"), ("kv", "kv")], "qk": [("qk", "qk")],
    "qv": [("qv", "qv")], "q": [("q", "q")], "v": [("v", "v")], "none": [],
}


_table = table_parameter


def _linear(n_in: int, n_out: int, bias: bool) -> nn.Linear:
    layer = nn.Linear(n_in, n_out, bias=bias)
    nn.init.trunc_normal_(layer.weight, std=0.02)
    if bias:
        nn.init.zeros_(layer.bias)
    return layer


LEGACY_ORDER = {"rel_pos.bias": 0, "rel_pos.key": 1, "rel_pos.query": 2, "key_bank": 3}


def set_dotted(root: nn.Module, name: str, value) -> None:
    """root.a.b = value, making plain nn.Module containers on the way."""
    *parents, leaf = name.split(".")
    for part in parents:
        if not hasattr(root, part):
            setattr(root, part, nn.Module())
        root = getattr(root, part)
    setattr(root, leaf, value)


def branch_parameters(plan: Plan, bp: BranchPlan) -> nn.Module:
    """The parameters of one branch, as an nn.Module whose attributes are the names above."""
    b, C = bp.spec, bp.reads        # the model's channels, or the slice a cascade reads
    mod = nn.Module()
    widths = {"q": bp.qk_dim, "k": bp.qk_dim, "v": bp.value_width}
    no_key = b.projections.bias == "no_key"      # Swin-V2: q_bias and v_bias, no k bias
    for name, makes in PROJECTION_WIDTHS[b.projections.layout]:
        setattr(mod, name, _linear(C, sum(widths[c] for c in makes),
                                   bool(b.projections.bias) and not no_key))
    if no_key:
        mod.q_bias = nn.Parameter(torch.zeros(bp.qk_dim))
        mod.v_bias = nn.Parameter(torch.zeros(bp.value_width))
    if b.projections.out:
        mod.proj = _linear(bp.value_width, bp.width, b.projections.out_bias)
    if b.projections.q_conv is not None:
        s = b.projections.q_conv.size
        mod.q_conv = nn.Conv2d(bp.qk_dim, bp.qk_dim, s, padding=s // 2, groups=bp.qk_dim)
    if b.projections.qk_norm is not None:
        mod.q_norm = nn.LayerNorm(bp.qk_head_dim, eps=b.projections.qk_norm.eps)
        mod.k_norm = nn.LayerNorm(bp.qk_head_dim, eps=b.projections.qk_norm.eps)
    par, G = b.parameterization, bp.heads
    if isinstance(par, m.Additive) and par.similarity != "dot":
        # the learned per-head logit scale τ (timm's shape), starting at log(init) (Swin-V2)
        # or at init (XCiT's temperature)
        sim = par.similarity
        start = math.log(sim.init) if sim.scale_parameter == "log" else sim.init
        mod.logit_scale = nn.Parameter(torch.full((G, 1, 1), start))
    if isinstance(par, m.Additive):
        # each term's own parameters ("rel_pos.bias", "key_bank", …), in the order of
        # LEGACY_ORDER first so that state dicts keep the order they always had
        made = {}
        for t in par.terms:
            made.update(term_of(t).parameters(t, bp))
        for name in sorted(made, key=lambda n: LEGACY_ORDER.get(n, len(LEGACY_ORDER))):
            set_dotted(mod, name, made[name])
    else:
        k = bp.window
        had = nn.Module()
        had.dw = nn.Conv2d(bp.qk_dim, bp.qk_dim, par.dw_kernel or k,
                           padding=(par.dw_kernel or k) // 2,
                           groups=bp.qk_dim // par.group_width)
        had.pw = nn.Conv2d(bp.qk_dim, G * k * k, 1)
        mod.hadamard = had
    if b.kernel.expand is not None:
        k, ghost = bp.window, nn.Module()
        if b.kernel.expand.lam != 0:
            ghost.mul = nn.Parameter(torch.ones(bp.width, k, k))
        if b.kernel.expand.gamma != 0:
            ghost.add = _table(bp.width, k, k)
        mod.ghost = ghost
    for name, module in bp.kind.parameters(b.application, bp, C).items():
        setattr(mod, name, module)      # the application kind's own (pool, select, …)
    for name, module in normalization_of(b.normalization).parameters(b.normalization,
                                                                    bp).items():
        set_dotted(mod, name, module)   # the normalization's own (talking heads' maps)
    vc = b.extras.value_conv
    if vc is not None:
        mod.value_conv = nn.Conv2d(bp.width, bp.width, vc.size, padding=vc.size // 2,
                                   groups=bp.width, bias=vc.bias)
    if b.extras.output_bias:
        mod.out_bias = nn.Parameter(torch.zeros(bp.width))
    return mod


def spec_parameters(plan: Plan) -> dict[str, nn.Module]:
    """Top-level parameter modules of a bound spec, by attribute name."""
    mods: dict[str, nn.Module] = {}
    if plan.spec.positional:
        pos = nn.ModuleList(nn.Conv2d(plan.dim, plan.dim, pe.size, padding=pe.size // 2,
                                      groups=plan.dim) for pe in plan.spec.positional)
        mods["positional"] = pos
    for bp in plan.branches:
        mods[bp.name] = branch_parameters(plan, bp)
    if plan.spec.merge.out:
        merge = nn.Module()
        merged = plan.dim if plan.spec.merge.kind == "sequence" \
            else sum(bp.output_width for bp in plan.branches)
        merge.proj = _linear(merged, plan.dim, plan.spec.merge.out_bias)
        mods["merge"] = merge
    return mods


def zoo_parameter_tables(dim: int = 96, resolution=(56, 56)) -> str:
    """docs/parameters.md's "Every zoo spec" section: each zoo spec's parameter names and
    shapes at dim 96, 56×56 (a test keeps the document in sync)."""
    from ..lang.bind import bind
    from ..lang.io import load_spec
    from ..zoo import zoo_names
    parts = [f"## Every zoo spec (dim {dim}, {resolution[0]}×{resolution[1]})"]
    for name in zoo_names():
        with torch.device("meta"):
            mods = spec_parameters(bind(load_spec(name), dim, resolution))
        rows = [f"| `{mod_name}.{key}` | {tuple(value.shape)} |"
                for mod_name, mod in mods.items() for key, value in mod.state_dict().items()]
        parts.append(f"### {name}\n\n| parameter | shape |\n|---|---|\n" + "\n".join(rows))
    return "\n\n".join(parts) + "\n"


if __name__ == "__main__":      # regenerate docs/parameters.md's zoo section
    from pathlib import Path
    doc_path = Path(__file__).resolve().parents[2] / "docs" / "parameters.md"
    doc = doc_path.read_text()
    doc_path.write_text(doc[:doc.index("## Every zoo spec")] + zoo_parameter_tables())
