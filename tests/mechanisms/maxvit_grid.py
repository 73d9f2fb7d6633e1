"""MaxViT grid attention against tests/published/maxvit.py (timm's PartitionAttentionCl,
mode "grid"). The published module is built with head_first=False: its qkv rows are then
[q; k; v], each head-major, which is attndsl's qkv layout, so the weights go over as they
are (timm's own head_first=True layout would interleave [q_g | k_g | v_g] per head). Its
bias table ((2P−1)², heads), indexed query minus key over the in-group (a, b), is the
transpose of attndsl's (heads, (2P−1)²) table with rel_pos_orientation i_minus_j.
functional_call: gradients reach the compiled module's leaves."""
import torch

from published.maxvit import MaxVitPartitionAttention

MODE = "grid"


def reference(m, x, mode=None):
    P, b = dict(m.named_parameters()), m.plan.branches[0]
    size = getattr(b.geometry, "group", None) or b.geometry.window    # (rows, columns)
    published = MaxVitPartitionAttention(m.dim, m.plan.heads, size, mode or MODE,
                                         dtype=x.dtype, head_first=False)
    params = {"qkv.weight": P["attn.qkv.weight"], "qkv.bias": P["attn.qkv.bias"],
              "rel_pos.relative_position_bias_table": P["attn.rel_pos.bias"].t(),
              "proj.weight": P["attn.proj.weight"], "proj.bias": P["attn.proj.bias"]}
    return torch.func.functional_call(published, params, (x,))
