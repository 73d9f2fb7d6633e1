"""Shunted self-attention (sr_ratio 8) against tests/published/shunted.py (the official SSA
layout): one q for all heads whose first half goes to the coarse path (sr1, rate 8) and
second half to the fine one (sr2, rate 4); attndsl's branches hold the halves."""
import torch

from published.shunted import ShuntedAttention

GEOMETRY = (48, (16, 16))      # pooled grids 2×2 and 4×4
PADDED = (19, 17)              # the strided convs floor, as the official code does


def reference(m, x):
    P = dict(m.named_parameters())
    published = ShuntedAttention(m.dim, m.plan.heads, 8, dtype=x.dtype)
    params = {"q.weight": torch.cat([P["coarse.q.weight"], P["fine.q.weight"]]),
              "q.bias": torch.cat([P["coarse.q.bias"], P["fine.q.bias"]]),
              "proj.weight": P["merge.proj.weight"], "proj.bias": P["merge.proj.bias"]}
    for i, branch in ((1, "coarse"), (2, "fine")):
        params.update({
            f"sr{i}.weight": P[f"{branch}.pool.conv.weight"],
            f"sr{i}.bias": P[f"{branch}.pool.conv.bias"],
            f"norm{i}.weight": P[f"{branch}.pool.norm.weight"],
            f"norm{i}.bias": P[f"{branch}.pool.norm.bias"],
            f"kv{i}.weight": P[f"{branch}.kv.weight"], f"kv{i}.bias": P[f"{branch}.kv.bias"],
            f"local_conv{i}.weight": P[f"{branch}.value_conv.weight"],
            f"local_conv{i}.bias": P[f"{branch}.value_conv.bias"]})
    return torch.func.functional_call(published, params, (x,))
