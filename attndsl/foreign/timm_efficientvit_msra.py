"""timm.efficientvit_msra — timm's EfficientViT (MSRA) `LocalWindowAttention` holding a
`CascadedGroupAttention`: head i reads its channel split plus head i−1's output, projects
its own q, k, v (Conv2d + BatchNorm, folded), convolves q with a depthwise conv inside the
window, adds a bias indexed by |Δy|·R + |Δx|; ReLU on the concatenated heads, then the
output projection. Windows of the map zero-padded to multiples of R (one unpadded window
when the map is R×R). Channels-first; BatchNorms folded as in eval mode."""
from __future__ import annotations

from .base import Equivalent, ForeignKind, Unsupported, register


@register
class TimmEfficientVitLocalWindowAttention(ForeignKind):
    name = "timm.efficientvit_msra"
    classes = ("LocalWindowAttention",)
    convention = "bchw"
    doc = ("timm EfficientViT (MSRA) LocalWindowAttention: cascaded group attention in "
           "windows, q depthwise convs, |Δ|-indexed biases (BatchNorms folded: eval mode)")

    def claims(self, module, parent):
        attn = getattr(module, "attn", None)
        return (type(module).__name__ == "LocalWindowAttention"
                and type(attn).__name__ == "CascadedGroupAttention")

    def equivalent(self, module, parent, call, model) -> Equivalent:
        attn = module.attn
        heads = len(attn.qkvs)
        dim = int(module.dim)
        if dim % heads:
            raise Unsupported(f"width {dim} is not a multiple of its {heads} heads")
        split, kd, vd = dim // heads, int(attn.key_dim), int(attn.val_dim)
        if vd != split:
            raise Unsupported(f"value width {vd} per head differs from the {split} channels each "
                              "head reads: the cascade adds one head's output to the next "
                              "head's input")
        if dim % kd:
            raise Unsupported(f"key width {kd} doesn't divide the width {dim}")
        window = int(attn.resolution)
        x = call.input
        grid = (int(x.shape[2]), int(x.shape[3]))
        if grid[0] < window or grid[1] < window:
            raise Unsupported(f"a {grid[0]}×{grid[1]} map under its {window}×{window} window")
        branches = []
        for i, dws in enumerate(attn.dws):
            size = int(dws.conv.kernel_size[0])
            projections = {"layout": "qkv", "out": False,
                           "q_conv": {"size": size, "scope": "block"}}
            if kd != split:     # qk_width is a fraction of the module's width
                projections["qk_width"] = {"kind": "ratio", "num": 1, "den": dim // kd}
            branches.append({
                "name": f"h{i}", "heads": 1, "projections": projections,
                "parameterization": {"kind": "additive", "terms": ["query_key", "rel_pos_bias"],
                                     "rel_pos_orientation": "abs"},
                "normalization": {"kind": "softmax"},
                "application": {"kind": "window", "size": window}})
        spec = {"name": "timm_efficientvit_msra_attention", "heads": heads,
                "pad_to_multiple": window, "branches": branches,
                "merge": {"kind": "cascade", "activation": "relu", "out": True}}
        if module.training:
            raise Unsupported("in training mode its BatchNorms use batch statistics; the "
                              "swap folds them as in eval mode (call model.eval() first)")
        return Equivalent(spec, dim, heads, grid, "timm.efficientvit_msra",
                          ("BatchNorms folded (eval mode)",), prefix="attn.")
