"""Paper-style eager references and hand-picked baselines for every zoo family.

Every callable here takes the *attndsl module's own parameters* (names as in
docs/parameters.md) and computes the same function as the module:
x (B, H, W, C) channels-last → (B, H, W, C).  The suite checks each one numerically
against the module before it times it (a mismatch is an error of the suite).

Per family:
  reference     how the paper's public code computes it in eager PyTorch
                (timm / Swin / Twins / LITv2 / ELSA / BOAT code style, explicit
                q @ kᵀ, bias gather, softmax, @ v), with the module's weights;
  baselines     what a careful engineer would hand-pick on CPU: SDPA (bias as an additive
                float mask, window partition), SDPA with pooled keys, a depthwise
                conv2d, torch.compile of a gather form, FlexAttention (compiled, CPU:
                inference only), NATTEN when importable.
  flops         the FLOP count used for GFLOP/s (formula in FLOP_FORMULAS).

Baselines that need torch.compile are marked `compiled=True` (the suite's --no-compile
skips them).  Static masks / bias tensors of the *baselines* are gathered once when the
baseline is built (inference: the weights are fixed); the paper-style references gather
per call, as the papers' code does.

One module per family (benchmarks/baselines/<family>.py), the FLOP formulas in flops.py,
the shared context and helpers in base.py; this module is the registry.
"""
from __future__ import annotations

from .base import Baseline, Ctx, Family, Fn, Skip, both, rel_err
from .axial import axial_reference, axial_sdpa
from .boat import boat_attention
from .crossformer import crossformer_lda_reference, crossformer_sda_reference, crossformer_sdpa
from .cswin import cswin_reference, cswin_sdpa
from .dwconv import dwconv_channels_last, dwconv_reference
from .efficientvit import efficientvit_reference, efficientvit_sdpa
from .elsa import elsa_reference, elsa_split
from .flops import FLOP_FORMULAS, flops_of
from .gsa import gsa_reference, gsa_sdpa
from .halonet import halonet_reference, halonet_sdpa
from .hilo import hilo_reference, hilo_sdpa
from .linear_attention import linear_attention_matmul, linear_attention_reference
from .linformer import linformer_reference, linformer_sdpa
from .maxvit import maxvit_block_reference, maxvit_grid_reference, maxvit_sdpa
from .nat import (nat_dense_mask_sdpa, nat_flex, nat_gather, nat_natten, nat_reference,
                  nat_window_index)
from .pvt_v2 import pvt_v2_linear_reference, pvt_v2_linear_sdpa
from .shunted import shunted_reference, shunted_sdpa
from .sigmoid import sigmoid_baddbmm, sigmoid_explicit, sigmoid_reference
from .swin import swin_reference, window_flex, window_relu_bmm, window_sdpa
from .swin_v2 import swin_v2_reference, swin_v2_sdpa
from .twins_lsa import twins_lsa_reference
from .unified import unified_reference, unified_shift_loop
from .vit import vit_reference, vit_sdpa


def neighbourhood_baselines() -> list[Baseline]:
    """NAT / DiNAT's hand-picked baselines (each family gets its own list)."""
    return [Baseline("window_index_compiled", nat_window_index, compiled=True, wrap=True),
            Baseline("gather_compiled", nat_gather, compiled=True, wrap=True),
            Baseline("gather_matmul_compiled", lambda c: nat_gather(c, "matmul"),
                     compiled=True, wrap=True),
            Baseline("sdpa_dense_mask", nat_dense_mask_sdpa),
            Baseline("flex_compiled", nat_flex, compiled=True),
            Baseline("natten", nat_natten)]


FAMILIES: dict[str, Family] = {f.name: f for f in [
    Family("vit_mhsa", "vit_mhsa", "global", vit_reference,
           [Baseline("sdpa", vit_sdpa)]),
    Family("swin_wmsa", "swin_wmsa", "window", lambda c: swin_reference(c),
           [Baseline("sdpa_bias_mask", lambda c: window_sdpa(c, True)),
            Baseline("flex_compiled", lambda c: window_flex(c, True), compiled=True)]),
    Family("swin_swmsa", "swin_swmsa", "window", lambda c: swin_reference(c),
           [Baseline("sdpa_bias_mask", lambda c: window_sdpa(c, True)),
            Baseline("flex_compiled", lambda c: window_flex(c, True), compiled=True)]),
    Family("nat", "nat", "neighbourhood", nat_reference,
           neighbourhood_baselines()),
    Family("dinat", "dinat", "neighbourhood", nat_reference,
           neighbourhood_baselines()),
    Family("twins_gsa", "twins_gsa", "pooled", gsa_reference,
           [Baseline("sdpa_pooled", gsa_sdpa)]),
    Family("twins_lsa", "twins_lsa", "window", twins_lsa_reference,
           [Baseline("sdpa", lambda c: window_sdpa(c, False)),
            Baseline("flex_compiled", lambda c: window_flex(c, False), compiled=True)]),
    Family("hilo", "hilo", "hilo", hilo_reference,
           [Baseline("sdpa", hilo_sdpa),
            Baseline("sdpa_compiled", hilo_sdpa, compiled=True, wrap=True)]),
    Family("elsa", "elsa", "elsa", elsa_reference,
           [Baseline("dwconv_static+unfold", lambda c: elsa_split(c, loop=False)),
            Baseline("dwconv_static+shift_loop_compiled", lambda c: elsa_split(c, loop=True),
                     compiled=True, wrap=True)]),
    Family("boat_fsla", "boat_fsla", "clusters", lambda c: boat_attention(c, sdpa=False),
           [Baseline("clusters_sdpa", lambda c: boat_attention(c, sdpa=True))],
           check_dtype="float64",
           note="checked in float64 at the timed shape (float32 near-ties in the cluster sort "
                "flip whole sub-trees, ZOO.md §3); the timed dtype's agreement is recorded"),
    Family("dwconv", "dwconv", "dwconv", dwconv_reference,
           [Baseline("conv2d_channels_last", dwconv_channels_last)], heads="channels"),
    Family("unified_lsa_rp_sliding_softmax", "unified_lsa_rp_sliding_softmax", "unified",
           unified_reference,
           [Baseline("shift_loop_compiled", unified_shift_loop, compiled=True, wrap=True)]),
    Family("dynconv_relu", "dynconv_relu", "window_relu",
           lambda c: swin_reference(c, norm="relu_mean"),
           [Baseline("bmm_static_bias", window_relu_bmm),
            Baseline("bmm_static_bias_compiled", window_relu_bmm, compiled=True, wrap=True)]),
    Family("linformer", "linformer", "linformer", linformer_reference,
           [Baseline("sdpa", linformer_sdpa)]),
    Family("swin_v2_wmsa", "swin_v2_wmsa", "window", swin_v2_reference,
           both("sdpa_cosine_bias_mask", swin_v2_sdpa)),
    Family("swin_v2_swmsa", "swin_v2_swmsa", "window", swin_v2_reference,
           both("sdpa_cosine_bias_mask", swin_v2_sdpa)),
    Family("cswin", "cswin", "stripes", cswin_reference,
           both("sdpa_stripes", cswin_sdpa),
           heads="spec", note="the spec's 4 heads (2 per stripe direction) at both stages"),
    Family("maxvit_block", "maxvit_block", "window", maxvit_block_reference,
           both("sdpa_bias_mask", lambda c: maxvit_sdpa(c, "block"))),
    Family("maxvit_grid", "maxvit_grid", "grid", maxvit_grid_reference,
           both("sdpa_bias_mask", lambda c: maxvit_sdpa(c, "grid"))),
    Family("axial_parallel", "axial_parallel", "axial", axial_reference,
           both("sdpa_axes", axial_sdpa),
           heads="spec", note="the spec's 4 heads (2 along rows, 2 along columns) at both stages"),
    Family("axial_sequential", "axial_sequential", "axial", axial_reference,
           both("sdpa_axes", axial_sdpa)),
    Family("pvt_v2_linear", "pvt_v2_linear", "adaptive_pooled", pvt_v2_linear_reference,
           both("sdpa_pooled", pvt_v2_linear_sdpa)),
    Family("linear_attention_elu", "linear_attention_elu", "linear", linear_attention_reference,
           both("matmul_ones_column", linear_attention_matmul)),
    Family("linear_attention_relu", "linear_attention_relu", "linear", linear_attention_reference,
           both("matmul_ones_column", linear_attention_matmul)),
    Family("halonet", "halonet", "halo", halonet_reference,
           both("sdpa_rel_mask", halonet_sdpa)),
    Family("shunted", "shunted", "shunted", shunted_reference,
           both("sdpa_pooled", shunted_sdpa),
           heads="spec", note="the spec's 4 heads (2 per key path) at both stages"),
    Family("crossformer_sda", "crossformer_sda", "window", crossformer_sda_reference,
           both("sdpa_bias_mask", lambda c: crossformer_sdpa(c, "block"))),
    Family("crossformer_lda", "crossformer_lda", "grid", crossformer_lda_reference,
           both("sdpa_bias_mask", lambda c: crossformer_sdpa(c, "grid"))),
    Family("sigmoid_attention", "sigmoid_attention", "global", sigmoid_reference,
           [Baseline("baddbmm_sigmoid_chunked", sigmoid_baddbmm),
            Baseline("explicit_compiled", sigmoid_explicit, compiled=True, wrap=True)]),
    Family("dinat_13", "dinat_13", "neighbourhood", nat_reference,
           neighbourhood_baselines(),
           quick_resolution=(28, 28),
           note="13×13 dilation 2: each dilated sub-grid needs ≥ 13 rows (28×28 at the smallest)"),
    Family("efficientvit", "efficientvit", "efficientvit", efficientvit_reference,
           [Baseline("sdpa_bias_mask", efficientvit_sdpa),
            Baseline("sdpa_bias_mask_compiled", efficientvit_sdpa, compiled=True, wrap=True)],
           heads="spec", note="the spec's 3 one-head branches at both stages (d = C/3)"),
]}


def flops_for(family: str, m, B: int) -> float:
    """FLOPs of one forward of `family`'s module `m` at batch B (flops.py)."""
    return flops_of(FAMILIES[family].kind, m, B)


def family_names() -> list[str]:
    return list(FAMILIES)


def build_reference(family: str, m) -> Fn:
    return FAMILIES[family].reference(Ctx(m))


def build_baseline(family: str, name: str, m) -> Fn:
    for bl in FAMILIES[family].baselines:
        if bl.name == name:
            return bl.make(Ctx(m))
    raise KeyError(f"{family}: no baseline {name!r}")


__all__ = ["FAMILIES", "FLOP_FORMULAS", "Baseline", "Family", "Ctx", "Skip", "flops_for",
           "build_reference", "build_baseline", "family_names", "rel_err"]
