"""How a replaced module is called: the stand-ins that keep a model's call convention.

| convention   | the replaced module is called as                                    |
|--------------|---------------------------------------------------------------------|
| `bhwc`       | f(x) with x (B, H, W, C): the compiled module itself                 |
| `bchw`       | f(x) with x (B, C, H, W): channels-first maps (timm's byoanet, convs) |
| `bnc_size`   | f(x, (H, W)) or f(x, H, W) with x (B, H·W, C)                        |
| `bnc`        | f(x) with x (B, P + H·W, C): P class / register tokens, then a grid   |
| `swin_block` | the parent block's `_attn(x)` with x (B, H, W, C): shift, window      |
|              | partition and mask are the spec's business                           |
"""
from __future__ import annotations

import math
import types

from torch import nn

from ..errors import AttndslError

CONVENTIONS = ("bhwc", "bchw", "bnc_size", "bnc", "swin_block")


class ConventionError(AttndslError, ValueError):
    """A patched module was called in a way its convention doesn't take."""


class TokensAndSize(nn.Module):
    """(B, N, C) with the grid given as (H, W) or H, W → the compiled module."""

    def __init__(self, attn: nn.Module):
        super().__init__()
        self.attn = attn

    def forward(self, x, *size, **named):
        if not size and named:       # f(x, size=(H, W)) / f(x, feat_size=…)
            size = tuple(named.values())
        if len(size) == 1:
            H, W = size[0]
        elif len(size) == 2:
            H, W = size
        else:
            raise ConventionError(f"patched '{self.attn.spec.name}' expects f(x, (H, W)) or "
                                  f"f(x, H, W), got {len(size)} extra arguments")
        return self.attn.forward_tokens(x, (int(H), int(W)))


def token_grid(n: int) -> tuple[int, int]:
    """The grid n tokens run at: a square when n is one, else one row (for specs that read
    no positions; Tokens refuses the others)."""
    side = math.isqrt(max(n, 0))
    return (side, side) if side * side == n else (1, n)


class Tokens(nn.Module):
    """(B, P + H·W, C): `prefix` class / register tokens, then a square grid (ViT, DeiT)
    → the compiled module. A grid that isn't square (a rectangular image) is taken as one
    row when the spec doesn't read positions (global attention): the same function."""

    def __init__(self, attn: nn.Module, prefix: int = 0):
        super().__init__()
        self.attn = attn
        self.prefix = prefix

    def forward(self, x, attn_mask=None, is_causal: bool = False):
        # timm ≥ 1.0 passes both to every Attention (None / False for a ViT classifier)
        if attn_mask is not None or is_causal:
            raise ConventionError(
                f"patched '{self.attn.spec.name}' got "
                f"{'an attention mask' if attn_mask is not None else 'is_causal=True'}; "
                "attndsl specs define their own masking")
        n = x.shape[1] - self.prefix
        grid = token_grid(n)
        if grid[0] == grid[1]:
            return self.attn.forward_tokens(x, grid, prefix=self.prefix)
        from ..codegen.module import prefix_token_refusal
        why = prefix_token_refusal(self.attn.plan)
        if why:
            raise ConventionError(
                f"patched '{self.attn.spec.name}' got {x.shape[1]} tokens: after "
                f"{self.prefix} prefix token(s), {n} is not a square grid, and the spec reads "
                f"grid positions ({why}); give the model a square grid, or patch(model, "
                "example=…) so that its prefix tokens are counted")
        return self.attn.forward_tokens(x, (1, n), prefix=self.prefix)

    def extra_repr(self) -> str:
        return f"prefix={self.prefix}"


class ChannelsFirst(nn.Module):
    """(B, C, H, W) → the compiled module, which is channels-last."""

    def __init__(self, attn: nn.Module):
        super().__init__()
        self.attn = attn

    def forward(self, x):
        return self.attn(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def _swin_block_attn(block, x):
    """Replaces timm SwinTransformerBlock._attn: the spec does shift and windows itself."""
    return block.attn(x)


def install_swin_block(block: nn.Module, attn: nn.Module) -> None:
    if not callable(getattr(block, "_attn", None)):
        raise ConventionError(f"{type(block).__name__} has no _attn(x) to replace; the "
                              "swin_block convention needs timm's SwinTransformerBlock structure")
    block.attn = attn
    block._attn = types.MethodType(_swin_block_attn, block)


def stand_in(convention: str, attn: nn.Module, **options) -> nn.Module:
    """The module standing in for a replaced one called in `convention`."""
    if convention == "bnc_size":
        return TokensAndSize(attn)
    if convention == "bnc":
        return Tokens(attn, **options)
    if convention == "bchw":
        return ChannelsFirst(attn)
    return attn       # bhwc, swin_block: the compiled module is called as is
