"""CrossFormer short-distance attention against tests/published/crossformer.py (the
official Attention + DynamicPosBias layout): attndsl keeps the official names of the bias
MLP under `dpb` (pos_proj, pos1, pos2, pos3)."""
import torch

from published.crossformer import CrossFormerAttention

KIND = "sda"


def reference(m, x, kind=None):
    group = m.plan.branches[0].spec.application.size    # window or grid: G
    published = CrossFormerAttention(m.dim, m.plan.heads, group, kind or KIND, dtype=x.dtype)
    params = {name.removeprefix("attn.").replace("dpb.", "pos."): p
              for name, p in m.named_parameters()}
    return torch.func.functional_call(published, params, (x,))
