"""CSWin against tests/published/cswin.py (the official CSWinBlock layout): the official
block has one qkv for all channels whose first half of q, k, v goes to the vertical
stripes (idx 0) and second half to the horizontal ones; attndsl's two branches hold those
halves as their own qkv, so the official weight is reassembled from them (differentiably)."""
import torch

from published.cswin import CSWinAttention


def reference(m, x):
    P = dict(m.named_parameters())
    split = m.plan.branches[0].spec.application.width

    def halves(name):
        v, h = P[f"vertical.qkv.{name}"].chunk(3), P[f"horizontal.qkv.{name}"].chunk(3)
        return torch.cat([v[0], h[0], v[1], h[1], v[2], h[2]])

    published = CSWinAttention(m.dim, m.plan.heads, split, m.resolution[0], dtype=x.dtype)
    params = {"qkv.weight": halves("weight"), "qkv.bias": halves("bias"),
              "proj.weight": P["merge.proj.weight"], "proj.bias": P["merge.proj.bias"]}
    for i, branch in enumerate(("vertical", "horizontal")):
        params[f"attns.{i}.get_v.weight"] = P[f"{branch}.value_conv.weight"]
        params[f"attns.{i}.get_v.bias"] = P[f"{branch}.value_conv.bias"]
    return torch.func.functional_call(published, params, (x,))
