"""Linear attention (Katharopoulos et al., "Transformers are RNNs: Fast Autoregressive
Transformers with Linear Attention", ICML 2020), non-causal, multi-head -- an independent
float64 reference with explicit weights.

Math (x: (B, H, W, C) flattened to N = H*W tokens, h heads, d = C/h; w_qkv (3C, C) rows
[q; k; v], each block head-major; per head g):

    phi(t) = elu(t) + 1   ("elu_plus_one", the paper's choice)   or   relu(t)   ("relu")
    linear form:     S = sum_j phi(k_j) v_j^T   (d x d),   z = sum_j phi(k_j)   (d)
                     y_i = phi(q_i)^T S / (phi(q_i)^T z + eps)
    quadratic form:  w_ij = phi(q_i) . phi(k_j),   y_i = sum_j w_ij v_j / (sum_j w_ij + eps)
    out = concat_g y w_proj^T + b_proj

There is NO 1/sqrt(d) scale: the paper replaces exp(q.k / sqrt(d)) by the kernel
phi(q).phi(k) and applies no temperature.  eps sits in the denominator only (with relu a
query can have phi(q_i).z = 0, and then y_i = 0).  The two forms agree exactly in exact
arithmetic.
"""

import torch.nn.functional as F

__all__ = ["linear_attention", "linear_attention_quadratic", "feature", "make_weights"]

FEATURE_MAPS = ("elu_plus_one", "relu")


from . import linear as _linear, make_weights  # noqa: F401  (make_weights re-exported)


def feature(t, feature_map):
    if feature_map == "elu_plus_one":
        return F.elu(t) + 1
    if feature_map == "relu":
        return F.relu(t)
    raise ValueError(f"feature_map must be one of {FEATURE_MAPS}, got {feature_map!r}")


def _phi_qkv(x, heads, feature_map, w_qkv, b_qkv):
    B, H, W, C = x.shape
    t = _linear(x.reshape(B, H * W, C), w_qkv, b_qkv).reshape(B, H * W, 3, heads, C // heads)
    q, k, v = t.permute(2, 0, 3, 1, 4)                       # (B, h, N, d) each
    return feature(q, feature_map), feature(k, feature_map), v


def _out(y, x_shape, w_proj, b_proj):
    B, H, W, C = x_shape
    return _linear(y.transpose(1, 2).reshape(B, H, W, C), w_proj, b_proj)


def linear_attention(x, heads, feature_map, w_qkv, b_qkv, w_proj, b_proj, eps=1e-6):
    fq, fk, v = _phi_qkv(x, heads, feature_map, w_qkv, b_qkv)
    S = fk.transpose(-2, -1) @ v                             # (B, h, d, d)
    z = fk.sum(dim=-2)                                       # (B, h, d)
    num = fq @ S                                             # (B, h, N, d)
    den = (fq * z[:, :, None, :]).sum(-1, keepdim=True) + eps
    return _out(num / den, x.shape, w_proj, b_proj)


def linear_attention_quadratic(x, heads, feature_map, w_qkv, b_qkv, w_proj, b_proj, eps=1e-6):
    fq, fk, v = _phi_qkv(x, heads, feature_map, w_qkv, b_qkv)
    w = fq @ fk.transpose(-2, -1)                            # (B, h, N, N), all >= 0
    return _out((w @ v) / (w.sum(-1, keepdim=True) + eps), x.shape, w_proj, b_proj)
