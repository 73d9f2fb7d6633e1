"""The backbone as an nn.Module, built from compiled attndsl attention modules.

    image (B, C_in, S, S) ─ patch conv + LN ─▶ stage 0 ─ [conv 2×2 s2 + LN] ─▶ stage 1 … ─▶
    LN ─ mean over tokens ─ linear ─▶ logits (B, classes)

A block is pre-norm: x + attn(LN(x)), then x + MLP(LN(x)) (Linear, [3×3 depthwise conv,
LITv2], GELU, Linear). Activations are channels-last (B, H, W, C), the layout attndsl's
modules take, so no permute sits between blocks.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..codegen.module import (BACKBONE_FORMAT, CompiledAttention, load_module_blob,
                              read_module_file)
from ..codegen.module import compile as compile_attention
from ..errors import SpecError
from ..lang.bind import bind
from .spec import Backbone, BackboneLike, Stage, dump_backbone, load_backbone


class ChannelsLastConv(nn.Module):
    """Conv2d on a (B, H, W, C) tensor, for the patch embedding and the downsampling."""

    def __init__(self, c_in: int, c_out: int, kernel: int):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride=kernel)
        self.norm = nn.LayerNorm(c_out)

    def forward(self, x):
        return self.norm(self.conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1))


class DepthwiseConv(nn.Module):
    """3×3 depthwise conv on (B, H, W, C): PEG's position code and LITv2's FFN conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)

    def forward(self, x):
        return self.conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, dwconv: bool):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.dwconv = DepthwiseConv(hidden) if dwconv else None
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        x = self.fc1(x)
        if self.dwconv is not None:
            x = self.dwconv(x)
        return self.fc2(F.gelu(x))


class Block(nn.Module):
    def __init__(self, stage: Stage, attention, drop_path: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(stage.dim) if attention is not None else None
        self.attn = attention
        self.norm2 = nn.LayerNorm(stage.dim)
        self.mlp = Mlp(stage.dim, max(1, round(stage.dim * stage.mlp_ratio)), stage.ffn_dwconv)
        self.drop_path = drop_path

    def _drop(self, x):
        # stochastic depth per sample (training only)
        if not self.training or self.drop_path == 0.0:
            return x
        keep = torch.rand(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype) >= self.drop_path
        return x * keep / (1.0 - self.drop_path)

    def forward(self, x):
        if self.attn is not None:
            x = x + self._drop(self.attn(self.norm1(x)))
        return x + self._drop(self.mlp(self.norm2(x)))


class Peg(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.conv = DepthwiseConv(dim)

    def forward(self, x):
        return x + self.conv(x)


class BackboneNet(nn.Module):
    """A built backbone. `spec` is the `Backbone` it came from; `image_size` the input size it
    was built for (attention modules are bound to their stage's grid at that size)."""

    def __init__(self, spec: Backbone, *, image_size: int | None = None, backend: str = "auto",
                 dtype=None, device=None):
        super().__init__()
        self.spec = spec
        self.image_size = image_size or spec.image_size
        self.meta: dict | None = None     # a trained model's record (see save)
        grids = bind_stages(spec, self.image_size)
        stages = spec.stages
        self.embed = ChannelsLastConv(spec.in_channels, stages[0].dim, spec.patch)
        self.downsample = nn.ModuleList()
        self.stages = nn.ModuleList()
        total_blocks = sum(s.depth for s in stages)
        seen = 0
        for i, (stage, grid) in enumerate(zip(stages, grids)):
            self.downsample.append(
                ChannelsLastConv(stages[i - 1].dim, stage.dim, stage.stride) if i else nn.Identity())
            blocks = []
            for b in range(stage.depth):
                attn_spec = stage.block_attention(b)
                attn = None if attn_spec is None else compile_attention(
                    attn_spec, dim=stage.dim, resolution=grid, heads=stage.heads,
                    backend=backend, dtype=dtype, device=device)
                rate = spec.drop_path * seen / max(1, total_blocks - 1)
                blocks.append(Block(stage, attn, rate))
                seen += 1
                if b == 0 and stage.peg:
                    blocks.append(Peg(stage.dim))
            self.stages.append(nn.Sequential(*blocks))
        self.norm = nn.LayerNorm(stages[-1].dim)
        self.head = nn.Linear(stages[-1].dim, spec.classes)
        self.apply(_init)
        if dtype is not None or device is not None:
            self.to(device=device, dtype=dtype)

    def save(self, path, *, meta: dict | None = None) -> None:
        """Backbone YAML + input size + state dict; `attndsl.load(path)` rebuilds it.
        `meta`: what the model is (the search's accuracy, task, training settings), kept
        as JSON text. Written to a temporary file and renamed: a reader never sees half."""
        import json
        import os

        from ..codegen.module import check_output_path
        path = check_output_path(path, "model file")
        backend = next((m.backend for m in self.modules() if hasattr(m, "plan")), "auto")
        blob = {"format": BACKBONE_FORMAT, "backbone": dump_backbone(self.spec),
                "image_size": self.image_size, "backend": backend,
                "state_dict": self.state_dict()}
        if meta is not None:
            blob["meta"] = json.dumps(meta, default=str)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        torch.save(blob, tmp)
        tmp.replace(path)

    def forward_features(self, images: torch.Tensor) -> torch.Tensor:
        x = self.embed(images.permute(0, 2, 3, 1))
        for down, stage in zip(self.downsample, self.stages):
            x = stage(down(x))
        return self.norm(x).mean(dim=(1, 2))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(images))


def bind_stages(backbone: Backbone, image_size: int | None = None) -> list[tuple[int, int]]:
    """Bind every stage's attention at its grid (the spec's bind-time rules: window sizes
    against the grid, head splits, …) without building anything; a SpecError names the
    stage. Returns the grids."""
    size = image_size or backbone.image_size
    try:
        grids = backbone.grids(size)
    except ValueError as exc:
        raise SpecError(str(exc), path="image_size") from None
    for i, (stage, grid) in enumerate(zip(backbone.stages, grids)):
        for j, spec in enumerate(stage.attention):
            if spec == "none":
                continue
            where = f"stages[{i}].attention" + (f"[{j}]" if len(stage.attention) > 1 else "")
            try:
                plan = bind(spec, stage.dim, grid, stage.heads)
                if plan.query_stride > 1:
                    raise SpecError(f"a stride of {plan.query_stride} makes the attention's "
                                    "output smaller than its input, and a block adds it to "
                                    "its input (the residual): downsample between stages "
                                    "instead (the stage's patch merging)",
                                    path=f"{plan.branches[0].path}application.stride")
                if plan.branches[0].kind.prefix_queries:
                    raise SpecError("class attention's output is the class tokens' alone, and "
                                    "a backbone stage runs its attention on the patch grid "
                                    "(it has no class token): use class attention through "
                                    "forward_tokens in a model of your own",
                                    path=f"{plan.branches[0].path}application")
            except SpecError as exc:
                inner = f".{exc.path}" if exc.path else ""
                raise SpecError(f"{exc.detail} (stage {i}: {grid[0]}×{grid[1]} tokens at "
                                f"image size {size}, dim {stage.dim}, {stage.heads} heads)",
                                path=where + inner) from None
    return grids


def _init(module: nn.Module) -> None:
    # ViT/Swin's initialisation: truncated normal linears, unit LayerNorms
    if isinstance(module, nn.Linear) and type(module) is nn.Linear:
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def build_model(backbone: BackboneLike, *, image_size: int | None = None, backend: str = "auto",
                dtype=None, device=None) -> BackboneNet:
    """Build a backbone (a YAML path, YAML text, a dict or a `Backbone`) as an nn.Module.

    >>> net = build_model("examples/backbone_tiny.yaml")             # doctest: +SKIP
    >>> net(torch.randn(8, 1, 32, 32)).shape                          # doctest: +SKIP
    torch.Size([8, 2])
    """
    return BackboneNet(load_backbone(backbone), image_size=image_size, backend=backend,
                       dtype=dtype, device=device)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_flops(backbone: Backbone, *, image_size: int | None = None,
                net: BackboneNet | None = None) -> int:
    """FLOPs of one image's forward (multiply-adds count 2), by torch's FlopCounterMode on
    the eager graph (the compiled forms compute the same contractions); `net`: an eager
    build of `backbone` to count on, if the caller has one."""
    from torch.utils.flop_counter import FlopCounterMode
    net = (net or BackboneNet(backbone, image_size=image_size, backend="eager")).eval()
    size = net.image_size
    p = next(net.parameters())
    x = torch.zeros(1, backbone.in_channels, size, size, dtype=p.dtype, device=p.device)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        net(x)
    return int(counter.get_total_flops())


def read_meta(path) -> dict:
    """The record a trained model file keeps (BackboneNet.save's meta), without building
    the model; {} when it has none."""
    import json

    return json.loads(read_module_file(path, "cpu").get("meta") or "{}")


def load(path, *, backend: str | None = None, map_location=None) -> BackboneNet | CompiledAttention:
    """Load any module file attndsl writes: a whole backbone (`BackboneNet.save`, a search's
    pareto/NN_….pt, `attndsl compile BACKBONE --out`) or one attention module
    (`CompiledAttention.save`, `attndsl compile SPEC --out`)."""
    blob = read_module_file(path, map_location)
    if blob.get("format") == BACKBONE_FORMAT:
        return load_model_blob(blob, path, backend=backend)
    return load_module_blob(blob, path, backend=backend)


def load_model_blob(blob: dict, path, *, backend: str | None = None) -> BackboneNet:
    from ..errors import AttndslError
    try:
        spec = load_backbone(blob["backbone"])
        net = BackboneNet(spec, image_size=blob.get("image_size"),
                          backend=backend or blob.get("backend", "auto"))
        net.load_state_dict(blob["state_dict"])
    except (KeyError, RuntimeError, AttndslError) as exc:
        raise AttndslError(f"{path}: the stored backbone is invalid: {exc}") from None
    if "meta" in blob:
        import json
        net.meta = json.loads(blob["meta"])
        net.eval()          # a trained model (a search's front): ready to evaluate
    return net
