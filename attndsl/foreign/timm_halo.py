"""timm.halo — timm's `HaloAttn` (HaloNet, byoanet's halonet* / *_halonext* blocks):
queries in block×block blocks attend to the (block + 2·halo)² window around them on the
zero-padded k/v maps, with separable height / width relative logits; channels-first, no
output projection. Stride 2 (halonet26t's third stage) strides the queries (application
stride: the q conv's stride, block/stride queries per block, output half the size); the
use_avg_pool variant (stride-1 attention, then a 2×2 average pool) is refused."""
from __future__ import annotations

from torch import nn

from .base import Equivalent, ForeignKind, Unsupported, equal_head_widths, register


@register
class TimmHaloAttn(ForeignKind):
    name = "timm.halo"
    classes = ("HaloAttn",)
    convention = "bchw"
    doc = ("timm HaloAttn, stride 1 or 2: blocked local attention over haloed windows with "
           "height / width relative logits (channels-first)")

    def equivalent(self, module, parent, call, model) -> Equivalent:
        stride = int(getattr(module, "block_stride", 1))
        if not isinstance(getattr(module, "pool", nn.Identity()), nn.Identity):
            raise Unsupported(
                "use_avg_pool (stride-1 attention, then a 2×2 average pool of the output): "
                "the language has no pooling after attention")
        heads = int(module.num_heads)
        dk, dv = int(module.dim_head_qk), int(module.dim_head_v)
        dim = module.q.in_channels
        equal_head_widths(heads, dk, dv, dim)
        bias = module.q.bias is not None
        x = call.input
        spec = {"name": "timm_halo_attention", "heads": heads,
                "projections": {"layout": "qkv", "bias": bias, "out": False},
                "parameterization": {"kind": "additive",
                                     "terms": ["query_key",
                                               {"kind": "query_rel_pos_hw",
                                                "scaled": bool(module.scale_pos_embed)}],
                                     "rel_pos_orientation": "j_minus_i"},
                "normalization": {"kind": "softmax"},
                "application": {"kind": "halo", "block": int(module.block_size),
                                "halo": int(module.halo_size), "stride": stride}}
        return Equivalent(spec, dim, heads, (int(x.shape[2]), int(x.shape[3])), "timm.halo")
