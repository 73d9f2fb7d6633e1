"""Sigmoid attention (Ramapuram et al., "Theory, Analysis, and Best Practices for Sigmoid
Self-Attention", 2024) -- an independent float64 reference with explicit weights.

Math (x: (B, H, W, C), h heads, d = C/h head dim; w_qkv (3C, C) rows [q; k; v], each
block head-major; per head g, over the n keys a query sees):

    y_i = sum_j sigmoid(q_i . k_j * d^-1/2 + b) v_j,      b = -log(n) by default
    out = concat_g y w_proj^T + b_proj

Rows are NOT normalised (that is the point of the paper); b = -log n keeps the row sum
of the weights O(1) at initialisation.  ``bias`` overrides b with a given float.
sigmoid_window_attention: non-overlapping window x window groups (row-major windows,
row-major tokens inside), attention inside each, n = window^2 keys; H and W must be
multiples of window (no padding is defined for this mechanism here, so we raise).
"""

import math

import torch

__all__ = ["sigmoid_attention", "sigmoid_window_attention", "sigmoid_weights", "make_weights"]


from . import linear as _linear, make_weights  # noqa: F401  (make_weights re-exported)


def sigmoid_weights(q, k, bias=None):
    """q, k (..., n, d) -> (..., n_q, n) weights sigmoid(q.k d^-1/2 + b), b = -log n default."""
    n, d = k.shape[-2], k.shape[-1]
    b = -math.log(n) if bias is None else float(bias)
    return torch.sigmoid(q @ k.transpose(-2, -1) * d ** -0.5 + b)


def _attend(tokens, heads, w_qkv, b_qkv, bias):
    """tokens (G, n, C) -> (G, n, C) before proj; attention within each of the G groups."""
    G, n, C = tokens.shape
    q, k, v = _linear(tokens, w_qkv, b_qkv).reshape(G, n, 3, heads, C // heads).permute(2, 0, 3, 1, 4)
    return (sigmoid_weights(q, k, bias) @ v).transpose(1, 2).reshape(G, n, C)


def sigmoid_attention(x, heads, w_qkv, b_qkv, w_proj, b_proj, bias=None):
    B, H, W, C = x.shape
    y = _attend(x.reshape(B, H * W, C), heads, w_qkv, b_qkv, bias)
    return _linear(y.reshape(B, H, W, C), w_proj, b_proj)


def sigmoid_window_attention(x, heads, window, w_qkv, b_qkv, w_proj, b_proj, bias=None):
    B, H, W, C = x.shape
    if H % window or W % window:
        raise ValueError(f"{H}x{W} is not a multiple of window {window}")
    nh, nw = H // window, W // window
    win = x.reshape(B, nh, window, nw, window, C).transpose(2, 3).reshape(-1, window * window, C)
    y = _attend(win, heads, w_qkv, b_qkv, bias)
    y = y.reshape(B, nh, nw, window, window, C).transpose(2, 3).reshape(B, H, W, C)
    return _linear(y, w_proj, b_proj)
