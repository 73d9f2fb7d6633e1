"""A small Swin-like model with timm's class names, structure and call conventions
(WindowAttention called on windows with the shift mask from its block's `_attn`), used by
swap_elsa.py and by tests/test_patch.py. Not timm: timm needs torchvision, which has no
CPU build on these machines."""
import torch
from torch import nn


def swin_index(ws: int) -> torch.Tensor:
    """Swin's relative_position_index: (yi − yj + ws − 1)·(2ws − 1) + (xi − xj + ws − 1)."""
    idx = torch.empty(ws * ws, ws * ws, dtype=torch.long)
    for i in range(ws * ws):
        for j in range(ws * ws):
            (yi, xi), (yj, xj) = divmod(i, ws), divmod(j, ws)
            idx[i, j] = (yi - yj + ws - 1) * (2 * ws - 1) + (xi - xj + ws - 1)
    return idx


class WindowAttention(nn.Module):
    """timm's WindowAttention: called on windows (B·nW, ws², C) with the shift mask."""

    def __init__(self, dim, num_heads, ws):
        super().__init__()
        self.num_heads, self.ws = num_heads, ws
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.relative_position_bias_table = nn.Parameter(torch.randn((2 * ws - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", swin_index(ws))

    def forward(self, x, mask=None):
        B_, N, C = x.shape
        G, d = self.num_heads, C // self.num_heads
        q, k, v = self.qkv(x).reshape(B_, N, 3, G, d).permute(2, 0, 3, 1, 4)
        attn = (q * d ** -0.5) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        attn = attn + bias.view(N, N, G).permute(2, 0, 1)
        if mask is not None:
            nw = mask.shape[0]
            attn = (attn.view(-1, nw, G, N, N) + mask.unsqueeze(1)).view(-1, G, N, N)
        y = (attn.softmax(-1) @ v).transpose(1, 2).reshape(B_, N, C)
        return self.proj(y)


class SwinBlock(nn.Module):
    """timm SwinTransformerBlock's attention path: roll, partition, attn, reverse, roll."""

    def __init__(self, dim, heads, res, ws, shift):
        super().__init__()
        self.res, self.ws, self.shift = res, ws, shift
        # timm's names for the block's geometry (attndsl.patch reads them)
        self.input_resolution, self.window_size, self.shift_size = res, (ws, ws), (shift, shift)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, heads, ws)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        if shift:
            H, W = res
            img = torch.zeros(1, H, W, 1)
            cnt = 0
            for hs in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
                for wsl in (slice(0, -ws), slice(-ws, -shift), slice(-shift, None)):
                    img[:, hs, wsl, :] = cnt
                    cnt += 1
            win = self._partition(img).squeeze(-1)
            mask = win.unsqueeze(1) - win.unsqueeze(2)
            self.register_buffer("attn_mask", mask.masked_fill(mask != 0, -100.0))
        else:
            self.attn_mask = None

    def _partition(self, x):
        B, H, W, C = x.shape
        ws = self.ws
        x = x.view(B, H // ws, ws, W // ws, ws, C).permute(0, 1, 3, 2, 4, 5)
        return x.reshape(-1, ws * ws, C)

    def _attn(self, x):
        B, H, W, C = x.shape
        ws, s = self.ws, self.shift
        if s:
            x = torch.roll(x, (-s, -s), (1, 2))
        y = self.attn(self._partition(x), mask=self.attn_mask)
        y = y.view(B, H // ws, W // ws, ws, ws, C).permute(0, 1, 3, 2, 4, 5).reshape(B, H, W, C)
        return torch.roll(y, (s, s), (1, 2)) if s else y

    def forward(self, x):
        x = x + self._attn(self.norm1(x))
        return x + self.mlp(x)


class TinySwin(nn.Module):
    """Patch embedding (4×4), `depth` blocks alternating W-MSA / SW-MSA, a linear head."""

    def __init__(self, dim=48, heads=3, res=(14, 14), ws=7, depth=2):
        super().__init__()
        self.embed = nn.Conv2d(3, dim, 4, 4)
        self.blocks = nn.Sequential(*[SwinBlock(dim, heads, res, ws, (i % 2) * (ws // 2))
                                      for i in range(depth)])
        self.head = nn.Linear(dim, 10)

    def forward(self, img):
        x = self.embed(img).permute(0, 2, 3, 1)
        return self.head(self.blocks(x).mean((1, 2)))
