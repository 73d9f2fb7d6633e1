"""Glue between compiled zoo modules and the independent references in reference.py.

For every zoo spec: the test-time geometry, and a function that calls the reference with
the compiled module's own parameter tensors (so gradients flow to the same leaves). This
file only *maps names*: all math lives in reference.py, which shares no code with attndsl.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

import reference as ref

DIM = 48
RES = (14, 14)
# specs whose geometry needs something other than 48 channels at 14×14
GEOMETRY = {
    "twins_gsa": (DIM, (16, 16)),   # sr 8 → a 2×2 pooled grid
    "pvt_sra": (DIM, (16, 16)),
}
# non-divisible maps, exercising each spec's padding policy
PADDED = {
    "swin_wmsa": (15, 13), "swin_swmsa": (15, 13), "twins_lsa": (15, 13),
    "twins_lsa_masked": (15, 13), "hilo": (15, 13), "dynconv_relu": (9, 11),
    "dynconv_layernorm": (9, 11), "twins_gsa": (19, 17),
}


def rows(t, *sizes):
    """Split a fused (out, …) weight or bias into consecutive row blocks."""
    return torch.split(t, list(sizes), dim=0)


def _unified(name):
    parts = name[len("unified_"):]
    for p in ("lsa_rp", "dwconv", "dynfilter", "lsa"):
        if parts.startswith(p + "_"):
            param, rest = p, parts[len(p) + 1:]
            break
    app, norm = rest.split("_", 1)
    terms = {"dwconv": ["rel_pos_bias"], "dynfilter": ["query_rel_pos"], "lsa": ["query_key"],
             "lsa_rp": ["query_key", "query_rel_pos", "key_rel_pos", "rel_pos_bias"]}[param]

    def call(m, x):
        P, C, G = dict(m.named_parameters()), m.dim, m.plan.heads
        w = {}
        if param in ("lsa", "lsa_rp"):
            w["w_q"], w["w_k"], w["w_v"] = rows(P["attn.qkv.weight"], C, C, C)
            w["b_q"], w["b_k"], w["b_v"] = rows(P["attn.qkv.bias"], C, C, C)
        elif param == "dynfilter":
            w["w_q"], w["w_v"] = rows(P["attn.qv.weight"], C, C)
            w["b_q"], w["b_v"] = rows(P["attn.qv.bias"], C, C)
        else:
            w["w_v"], w["b_v"] = P["attn.v.weight"], P["attn.v.bias"]
        return ref.unified_local(
            x, heads=G, kernel=7, application=app, terms=terms, normalization=norm,
            scale=(C // G) ** -0.5, gain=1.0, r_k=P.get("attn.rel_pos.key"),
            r_q=P.get("attn.rel_pos.query"), r_b=P.get("attn.rel_pos.bias"),
            w_out=P["attn.proj.weight"], b_out=P["attn.proj.bias"], **w)
    return call


def qkv(P, prefix="attn"):
    return dict(w_qkv=P[f"{prefix}.qkv.weight"], b_qkv=P[f"{prefix}.qkv.bias"],
                w_proj=P[f"{prefix}.proj.weight"], b_proj=P[f"{prefix}.proj.bias"])


def _swin(normalization="softmax", order="roll_then_pad"):
    def call(m, x):
        P, b = dict(m.named_parameters()), m.plan.branches[0]
        return ref.window_attention(
            x, heads=m.plan.heads, ws=b.window, shift=b.shift[0], scale=b.head_dim ** -0.5,
            table=P["attn.rel_pos.bias"].t(), order=order, normalization=normalization,
            **qkv(P))
    return call


def _elsa(kernel, lam, scale_default):
    def call(m, x):
        P, b = dict(m.named_parameters()), m.plan.branches[0]
        scale = b.head_dim ** -0.5 if scale_default else 1.0
        return ref.elsa(
            x, heads=m.plan.heads, kernel=kernel, group_width=8, scale=scale, lam=lam,
            gamma=1.0, qk_dim=b.qk_dim, w_dw=P["attn.hadamard.dw.weight"],
            b_dw=P["attn.hadamard.dw.bias"], w_pw=P["attn.hadamard.pw.weight"],
            b_pw=P["attn.hadamard.pw.bias"], ghost_mul=P.get("attn.ghost.mul"),
            ghost_add=P.get("attn.ghost.add"), **qkv(P))
    return call


def _gsa(m, x):
    P, C = dict(m.named_parameters()), m.dim
    return ref.gsa(x, heads=m.plan.heads, sr=8, scale=(C // m.plan.heads) ** -0.5,
                   w_q=P["attn.q.weight"], b_q=P["attn.q.bias"], w_kv=P["attn.kv.weight"],
                   b_kv=P["attn.kv.bias"], w_sr=P["attn.pool.conv.weight"],
                   b_sr=P["attn.pool.conv.bias"], ln_w=P["attn.pool.norm.weight"],
                   ln_b=P["attn.pool.norm.bias"], w_proj=P["attn.proj.weight"],
                   b_proj=P["attn.proj.bias"])


def _twins_lsa(masked):
    def call(m, x):
        P = dict(m.named_parameters())
        return ref.twins_lsa(x, heads=m.plan.heads, ws=7, scale=(m.dim // m.plan.heads) ** -0.5,
                             masked=masked, **qkv(P))
    return call


def _hilo(m, x):
    P = dict(m.named_parameters())
    return ref.hilo(x, heads=m.plan.heads, alpha=0.9, ws=2, scale=m.plan.head_dim ** -0.5,
                    h_qkv_w=P["hifi.qkv.weight"], h_qkv_b=P["hifi.qkv.bias"],
                    h_proj_w=P["hifi.proj.weight"], h_proj_b=P["hifi.proj.bias"],
                    l_q_w=P["lofi.q.weight"], l_q_b=P["lofi.q.bias"],
                    l_kv_w=P["lofi.kv.weight"], l_kv_b=P["lofi.kv.bias"],
                    l_proj_w=P["lofi.proj.weight"], l_proj_b=P["lofi.proj.bias"])


def _neighbourhood(dilation):
    def call(m, x):
        P, G = dict(m.named_parameters()), m.plan.heads
        return ref.neighborhood_attention(
            x, heads=G, kernel=7, dilation=dilation, scale=m.plan.head_dim ** -0.5,
            rpb=P["attn.rel_pos.bias"].reshape(G, 13, 13), **qkv(P))
    return call


def _boat(m, x):
    P = dict(m.named_parameters())
    return ref.boat_fsla(x, heads=m.plan.heads, cluster_size=49, overlap=20, iterations=2,
                         temperature=100.0, scale=m.plan.head_dim ** -0.5,
                         w_dw=P["attn.value_conv.weight"], b_dw=P["attn.value_conv.bias"],
                         **qkv(P))


def _dwconv(m, x):
    # a depthwise conv *is* the definition here: conv2d, not the unified reference
    P, C = dict(m.named_parameters()), m.dim
    w = P["attn.rel_pos.bias"].reshape(C, 1, 7, 7)
    y = F.conv2d(x.permute(0, 3, 1, 2), w, P["attn.out_bias"], padding=3, groups=C)
    return y.permute(0, 2, 3, 1)


def _dynamic_dwconv(m, x):
    P, C = dict(m.named_parameters()), m.dim
    return ref.unified_local(x, heads=C, kernel=7, application="sliding",
                             terms=["query_rel_pos"], normalization="identity", scale=1.0,
                             w_q=P["attn.q.weight"], b_q=P["attn.q.bias"],
                             r_k=P["attn.rel_pos.key"], out_bias=P["attn.out_bias"])


def _peg(m, x):
    P, C = dict(m.named_parameters()), m.dim
    return ref.peg(x, w=P["attn.rel_pos.bias"].reshape(C, 1, 3, 3), b=P["attn.out_bias"])


def _vit(m, x):
    P = dict(m.named_parameters())
    return ref.global_attention(x, heads=m.plan.heads, scale=m.plan.head_dim ** -0.5, **qkv(P))


def _linformer(m, x):
    P = dict(m.named_parameters())
    return ref.linformer(x, heads=m.plan.heads, k=64, scale=m.plan.head_dim ** -0.5,
                         e=P["attn.select.keys"], f=P["attn.select.values"], **qkv(P))


def _depthwise_sa(m, x):
    P = dict(m.named_parameters())
    return ref.depthwise_self_attention(
        x, heads=m.plan.heads, ws=7, w_qk=P["attn.qk.weight"], b_qk=P["attn.qk.bias"],
        p=P["attn.rel_pos.bias"], w_proj=P["attn.proj.weight"], b_proj=P["attn.proj.bias"])


def _kernel3(m, x):
    P = dict(m.named_parameters())
    return ref.kernel_size_attention(x, heads=m.plan.heads, ws=7, ksize=3,
                                     scale=m.plan.head_dim ** -0.5,
                                     table=P["attn.rel_pos.bias"], **qkv(P))


def _static_bank(m, x):
    P, C = dict(m.named_parameters()), m.dim
    w_q, w_v = rows(P["attn.qv.weight"], C, C)
    b_q, b_v = rows(P["attn.qv.bias"], C, C)
    return ref.unified_local(x, heads=m.plan.heads, kernel=7, application="window",
                             terms=["query_rel_pos"], normalization="softmax",
                             scale=m.plan.head_dim ** -0.5, w_q=w_q, b_q=b_q, w_v=w_v,
                             b_v=b_v, r_k=P["attn.key_bank"], w_out=P["attn.proj.weight"],
                             b_out=P["attn.proj.bias"])


REFERENCES = {
    "vit_mhsa": _vit, "swin_wmsa": _swin(), "swin_swmsa": _swin(),
    "dynconv_relu": _swin("relu_mean"), "dynconv_layernorm": _swin("layernorm"),
    "elsa": _elsa(7, 0, False), "elsa_standalone": _elsa(5, 1, True), "boat_fsla": _boat,
    "twins_lsa": _twins_lsa(False), "twins_lsa_masked": _twins_lsa(True),
    "twins_gsa": _gsa, "pvt_sra": _gsa, "twins_peg": _peg, "hilo": _hilo,
    "nat": _neighbourhood(1), "dinat": _neighbourhood(2), "linformer": _linformer,
    "dwconv": _dwconv, "dynamic_dwconv": _dynamic_dwconv,
    "dynconv_depthwise": _depthwise_sa, "dynconv_kernel3": _kernel3,
    "dynconv_static_bank": _static_bank,
}


# One module per mechanism in tests/mechanisms/<zoo name>.py (the layout of the kinds
# added since): `reference(m, x)` from the paper's math, reading the module's parameters,
# and optionally GEOMETRY = (dim, (H, W)) and PADDED = (H, W) (a grid the paper pads).
def _mechanism_modules() -> dict:
    import importlib
    import pkgutil
    from pathlib import Path
    folder = Path(__file__).resolve().parent / "mechanisms"
    found = {}
    for info in pkgutil.iter_modules([str(folder)]):
        if not info.name.startswith("_"):
            found[info.name] = importlib.import_module(f"mechanisms.{info.name}")
    return found


MECHANISMS = _mechanism_modules()
for _name, _module in MECHANISMS.items():
    if hasattr(_module, "GEOMETRY"):
        GEOMETRY[_name] = _module.GEOMETRY
    if hasattr(_module, "PADDED"):
        PADDED[_name] = _module.PADDED


def reference_for(name: str):
    if name.startswith("unified_"):
        return _unified(name)
    if name in MECHANISMS:
        return MECHANISMS[name].reference
    return REFERENCES[name]


# families whose gradients are compared too (the softmax ones)
def is_softmax(module) -> bool:
    return all(b.spec.normalization.kind == "softmax" for b in module.plan.branches)
