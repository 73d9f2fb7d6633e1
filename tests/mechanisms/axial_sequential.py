"""Sequential axial attention (rows, then columns) against tests/published/axial.py."""
from published.axial import axial_sequential


def reference(m, x):
    P = dict(m.named_parameters())

    def weights(branch):
        return dict(w_qkv=P[f"{branch}.qkv.weight"], b_qkv=P[f"{branch}.qkv.bias"],
                    w_proj=P[f"{branch}.proj.weight"], b_proj=P[f"{branch}.proj.bias"])
    return axial_sequential(x, m.plan.heads, weights("rows"), weights("columns"))
