"""Small models shaped like timm's, for patch() tests without timm: patch tokens through
blocks of (norm1, attn), and the check that a patch keeps a model's output exactly."""
import torch
from torch import nn

from attndsl.patch import patch


class TokenNet(nn.Module):
    """4×4 patches as tokens, two blocks x + attn(norm1(x)) with `make_attn(dim, heads)`
    (called on (B, N, C), no class token: CaiT's and XCiT's self-attention layers), a mean
    and a linear head."""

    def __init__(self, make_attn, dim=32, heads=4, depth=2):
        super().__init__()
        self.embed = nn.Conv2d(3, dim, 4, 4)
        self.blocks = nn.ModuleList()
        for _ in range(depth):
            block = nn.Module()
            block.norm1 = nn.LayerNorm(dim)
            block.attn = make_attn(dim, heads)
            self.blocks.append(block)
        self.head = nn.Linear(dim, 10)

    def forward(self, img):
        x = self.embed(img).flatten(2).transpose(1, 2)
        for block in self.blocks:
            x = x + block.attn(block.norm1(x))
        return self.head(x.mean(1))


def image(height, width):
    return torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(0),
                       dtype=torch.float64)


def patch_exactly(model, img, strict: bool = True):
    """patch(model) with no spec; the model's output after it equals the output before
    (float64, relative 1e-12). Returns the report."""
    with torch.no_grad():
        before = model(img)
    report = patch(model, example=img, backend="eager", strict=strict)
    with torch.no_grad():
        assert (model(img) - before).abs().max() <= 1e-12 * before.abs().max()
    return report
