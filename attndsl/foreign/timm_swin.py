"""timm.swin — timm's SwinTransformer `WindowAttention` (v1), replaced at its block's
`_attn(x)`: the block's cyclic shift, padding, window partition and region mask are the
spec's (window application with shift, pad_unmasked, roll_then_pad)."""
from __future__ import annotations

from .base import (Call, Equivalent, ForeignKind, Unsupported, dropout_of, linear_bias,
                   register, axes, tensor_grid)
from .conventions import install_swin_block


class SwinBlockKind(ForeignKind):
    """Shared by Swin v1 and v2: the site is the block's _attn, the geometry the block's."""

    classes = ("WindowAttention",)
    convention = "swin_block"

    def claims(self, module, parent):
        return (type(module).__name__ == "WindowAttention" and parent is not None
                and callable(getattr(parent, "_attn", None))
                and getattr(parent, "attn", None) is module)

    def site(self, module, parent, name):
        return parent, "_attn"

    def geometry(self, module, parent, call: Call) -> tuple[int | list, int | list,
                                                            tuple[int, int]]:
        """(window, shift, grid) of the block as timm computed them for its resolution:
        [rows, columns] each, already shrunk per axis where the map is no longer than the
        window (timm's _calc_window_shift), so the spec needs no shrink rule of its own.
        A dynamic_mask block computes the same mask per call: nothing changes for the spec."""
        x = call.input
        return axes(parent.window_size), axes(parent.shift_size), tensor_grid(x)

    def install(self, parent, name, replacement):
        install_swin_block(parent, replacement)


@register
class TimmSwinWindowAttention(SwinBlockKind):
    name = "timm.swin"
    doc = ("timm SwinTransformer WindowAttention (v1) at its block: windows, shift, "
           "region mask, relative position bias")

    def claims(self, module, parent):
        return super().claims(module, parent) and hasattr(module, "relative_position_bias_table")

    def equivalent(self, module, parent, call, model) -> Equivalent:
        window, shift, grid = self.geometry(module, parent, call)
        dim, heads = module.qkv.in_features, int(module.num_heads)
        if module.qkv.out_features != 3 * dim:
            raise Unsupported(f"its attention width ({module.qkv.out_features // 3}) differs "
                              f"from its input width ({dim}) (head_dim set apart)")
        spec = {"name": "timm_swin_window_attention", "heads": heads,
                "projections": {"layout": "qkv", "bias": linear_bias(module.qkv),
                                "out_bias": linear_bias(module.proj)},
                "parameterization": {"kind": "additive", "terms": ["query_key", "rel_pos_bias"],
                                     "rel_pos_orientation": "i_minus_j"},
                "normalization": {"kind": "softmax"},
                "application": {"kind": "window", "size": window, "shift": shift,
                                "padding": "pad_unmasked", "shift_order": "roll_then_pad"},
                "dropout": {"attention": dropout_of(module),
                            "projection": dropout_of(module, "proj_drop")}}
        return Equivalent(spec, dim, heads, grid, "timm.swin")
