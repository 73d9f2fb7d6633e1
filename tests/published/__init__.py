"""Independent float64 reference implementations of published attention mechanisms.

Each module here is plain PyTorch, written from the paper's math and the official / timm
source layout, and holds its parameters under the official checkpoint names and shapes, so
that attndsl's compiled modules and its checkpoint conversion can be checked numerically
against them with identical weights.  Inputs and outputs are channels-last (B, H, W, C)
maps; every module takes ``seed`` (to fill all parameters with realistic random values)
and ``dtype`` (float64 by default).  Nothing here imports attndsl or timm.
"""


import torch


def make_weights(dim, seed=0, dtype=torch.float64, qkv_bias=True):
    """Seeded dict(w_qkv, b_qkv, w_proj, b_proj) for the references with explicit weights:
    std fan_in^-1/2 for weights, 0.5 for biases (drawn in float64, then cast)."""
    g = torch.Generator().manual_seed(seed)

    def draw(shape, std):
        return (torch.randn(shape, generator=g, dtype=torch.float64) * std).to(dtype)

    return dict(w_qkv=draw((3 * dim, dim), dim ** -0.5),
                b_qkv=draw((3 * dim,), 0.5) if qkv_bias else None,
                w_proj=draw((dim, dim), dim ** -0.5),
                b_proj=draw((dim,), 0.5))


def linear(x, w, b):
    """x·wᵀ (+ b)."""
    y = x @ w.transpose(0, 1)
    return y if b is None else y + b


def on_map(token_module: type) -> type:
    """A subclass of a module written for (B, N, C) tokens (CaiT's, XCiT's and DaViT's
    attention, as timm calls them) that takes the (B, H, W, C) maps of this package, the
    tokens row-major; the same parameters and state dict."""
    class OnMap(token_module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            B, H, W, C = x.shape
            return super().forward(x.reshape(B, H * W, C)).reshape(B, H, W, C)
    OnMap.__name__ = OnMap.__qualname__ = f"{token_module.__name__}OnMap"
    return OnMap
