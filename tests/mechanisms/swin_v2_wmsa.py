"""Swin-V2 window attention against tests/published/swin_v2.py (timm's WindowAttention
layout): attndsl's parameters carry timm's names under the branch, so the reference runs
with them as they are (functional_call: gradients reach the compiled module's leaves)."""
import torch

from published.swin_v2 import SwinV2WindowAttention

SHIFT = 0


def reference(m, x, shift=None):
    b = m.plan.branches[0]
    cpb = b.spec.parameterization.term("cpb")
    published = SwinV2WindowAttention(
        m.dim, m.plan.heads, b.window, shift=SHIFT if shift is None else shift,
        pretrained_window=cpb.pretrained_window, cpb_hidden=cpb.hidden, dtype=x.dtype)
    params = {name.removeprefix("attn."): p for name, p in m.named_parameters()}
    return torch.func.functional_call(published, params, (x,))
