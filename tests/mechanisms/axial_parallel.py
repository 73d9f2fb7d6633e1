"""Parallel axial attention against tests/published/axial.py: the published form has one
qkv projection whose first half of heads attends along rows and the rest along columns;
attndsl's two branches hold those heads' q, k, v rows as their own qkv ([q; k; v] each),
so the published w_qkv is reassembled (differentiably) as
[q_rows; q_cols; k_rows; k_cols; v_rows; v_cols], and merge.proj is its w_proj."""
import torch

from published.axial import axial_parallel


def reference(m, x):
    P = dict(m.named_parameters())

    def joined(name):
        r, c = P[f"rows.qkv.{name}"].chunk(3), P[f"columns.qkv.{name}"].chunk(3)
        return torch.cat([r[0], c[0], r[1], c[1], r[2], c[2]])

    return axial_parallel(x, m.plan.heads, joined("weight"), joined("bias"),
                          P["merge.proj.weight"], P["merge.proj.bias"],
                          row_heads=m.plan.branches[0].heads)
