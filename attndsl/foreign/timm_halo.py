"""timm.halo — timm's `HaloAttn` (HaloNet, byoanet's halonet* / *_halonext* blocks):
queries in block×block blocks attend to the (block + 2·halo)² window around them on the
zero-padded k/v maps, with separable height / width relative logits; channels-first, no
output projection. Stride 2 (strided query blocks, or average-pooled outputs) is refused:
the halo application has no query stride yet."""
from __future__ import annotations

from torch import nn

from .base import Equivalent, ForeignKind, Unsupported, register


@register
class TimmHaloAttn(ForeignKind):
    name = "timm.halo"
    classes = ("HaloAttn",)
    convention = "bchw"
    doc = ("timm HaloAttn, stride 1: blocked local attention over haloed windows with "
           "height / width relative logits (channels-first)")

    def equivalent(self, module, parent, call, model) -> Equivalent:
        stride = int(getattr(module, "block_stride", 1))
        if stride != 1 or not isinstance(getattr(module, "pool", nn.Identity()), nn.Identity):
            raise Unsupported(
                "stride 2 (its queries are every other pixel of each block, the output half "
                "the size): the language's halo application has no query stride yet — the "
                "smallest change is a `stride` on halo giving block/stride queries per block")
        heads = int(module.num_heads)
        dk, dv = int(module.dim_head_qk), int(module.dim_head_v)
        dim = module.q.in_channels
        if dk != dv or heads * dv != dim:
            raise Unsupported(f"q/k heads of {dk} and value heads of {dv} channels at width "
                              f"{dim}: only equal widths (qk_ratio 1, dim_out = dim) are read")
        bias = module.q.bias is not None
        x = call.args[0] if call.args else call.kwargs["x"]
        spec = {"name": "timm_halo_attention", "heads": heads,
                "projections": {"layout": "qkv", "bias": bias, "out": False},
                "parameterization": {"kind": "additive",
                                     "terms": ["query_key",
                                               {"kind": "query_rel_pos_hw",
                                                "scaled": bool(module.scale_pos_embed)}],
                                     "rel_pos_orientation": "j_minus_i"},
                "normalization": {"kind": "softmax"},
                "application": {"kind": "halo", "block": int(module.block_size),
                                "halo": int(module.halo_size)}}
        return Equivalent(spec, dim, heads, (int(x.shape[2]), int(x.shape[3])), "timm.halo")
