"""patch(model) with no spec: each attention module of a class attndsl recognizes is
replaced by its exact equivalent, read from the module, its block and a probe forward,
verified before anything changes. Models written here with timm's class names, attributes
and call conventions (timm can't be installed in CI: tests/test_patch_timm.py runs the real
models where it can)."""
import copy

import pytest
import torch
import torch.nn.functional as F
import yaml
from torch import nn

import attndsl
from attndsl.patch import PatchError, patch, spec_of
from patch_models import image, patch_exactly
from tiny_swin import TinySwin


class Attention(nn.Module):
    """timm's VisionTransformer Attention: its attribute names, its forward signature."""

    def __init__(self, dim, heads, gated=False):
        super().__init__()
        self.num_heads, self.head_dim, self.attn_dim = heads, dim // heads, dim
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm, self.k_norm, self.norm = nn.Identity(), nn.Identity(), nn.Identity()
        self.attn_drop, self.proj_drop = nn.Dropout(0.0), nn.Dropout(0.0)
        self.gate = nn.Linear(dim, dim) if gated else None
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, attn_mask=None, is_causal=False):
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        w = (q * self.head_dim ** -0.5) @ k.transpose(-2, -1)
        y = (w.softmax(-1) @ v).transpose(1, 2).reshape(B, N, C)
        if self.gate is not None:
            y = y * torch.sigmoid(self.gate(x))
        return self.proj(y)


class TinyViT(nn.Module):
    """A class token, a 4×4 grid of patches, two blocks (the second one's attention gated
    when `gated_second`)."""

    num_prefix_tokens = 1

    def __init__(self, dim=32, heads=4, gated_second=False):
        super().__init__()
        self.embed = nn.Conv2d(3, dim, 4, 4)
        self.cls_token = nn.Parameter(torch.randn(1, 1, dim))
        self.blocks = nn.ModuleList()
        for i in range(2):
            block = nn.Module()
            block.norm1 = nn.LayerNorm(dim)
            block.attn = Attention(dim, heads, gated=gated_second and i == 1)
            self.blocks.append(block)
        self.head = nn.Linear(dim, 10)

    def forward(self, img):
        x = self.embed(img).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], 1)
        for block in self.blocks:
            x = x + block.attn(block.norm1(x))
        return self.head(x[:, 0])


def _image(size=16):
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0),
                       dtype=torch.float64)


def test_a_swin_model_is_swapped_exactly_with_no_spec():
    torch.manual_seed(0)
    model = TinySwin().double()
    img = _image(56)
    with torch.no_grad():
        before = model(img)
    report = patch(model, example=img, backend="eager")
    assert [(r.path, r.status, r.weights) for r in report] == [
        ("blocks.0.attn", "swapped", "converted from timm.swin"),
        ("blocks.1.attn", "swapped", "converted from timm.swin")]
    assert all(r.error <= 1e-12 and r.resolution == (14, 14) for r in report)
    assert isinstance(model.blocks[1].attn, attndsl.CompiledAttention)
    application = model.blocks[1].attn.spec.branches[0].application
    assert (application.size, application.shift) == (7, 3)      # read from the block
    with torch.no_grad():
        assert (model(img) - before).abs().max() <= 1e-12 * before.abs().max()


def test_class_tokens_are_attended_like_the_grid():
    torch.manual_seed(1)
    model = TinyViT().double()
    img = _image()
    with torch.no_grad():
        before = model(img)
    report = patch(model, example=img, backend="eager")
    assert [r.status for r in report] == ["swapped", "swapped"]
    assert report[0].convention == "bnc" and report[0].resolution == (4, 4)
    with torch.no_grad():
        assert (model(img) - before).abs().max() <= 1e-12 * before.abs().max()


class MHSA(nn.Module):
    """timm's ConViT MHSA (its last blocks): ViT's attention without q/k norm slots."""

    def __init__(self, dim, num_heads, qkv_bias=False):
        super().__init__()
        self.num_heads, self.scale = num_heads, (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads) \
            .permute(2, 0, 3, 1, 4).unbind(0)
        y = ((q @ k.transpose(-2, -1)) * self.scale).softmax(-1) @ v
        return self.proj(y.transpose(1, 2).reshape(B, N, C))


def test_convit_mhsa_is_swapped_like_vit_attention():
    torch.manual_seed(2)
    model = TinyViT().double()
    for block in model.blocks:
        block.attn = MHSA(32, 4).double()
    img = _image()
    report = patch_exactly(model, img)
    assert [(r.status, r.weights) for r in report] == [("swapped", "converted from timm.vit")] * 2
    assert report[0].resolution == (4, 4)          # the class token counted as a prefix


class RelPosBias(nn.Module):
    """timm.layers RelPosBias: a ((2w−1)², heads) table, the flattened i − j index."""

    def __init__(self, window, heads):
        super().__init__()
        from layout_modules import swin_index
        self.relative_position_bias_table = nn.Parameter(0.5 * torch.randn((2 * window - 1) ** 2,
                                                                           heads))
        self.register_buffer("relative_position_index", swin_index(window).flatten(),
                             persistent=False)
        self.window_area = window * window

    def forward(self, attn):
        n = self.window_area
        bias = self.relative_position_bias_table[self.relative_position_index]
        return attn + bias.view(n, n, -1).permute(2, 0, 1).unsqueeze(0)


class WindowAttentionGlobal(nn.Module):
    """timm GCViT's attention: q from its input (local blocks) or the stage's global query."""

    def __init__(self, dim, num_heads, window, use_global):
        super().__init__()
        self.num_heads, self.head_dim, self.use_global = num_heads, dim // num_heads, use_global
        self.rel_pos = RelPosBias(window, num_heads)
        self.qkv = nn.Linear(dim, dim * (2 if use_global else 3))
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, q_global=None):
        B, N, C = x.shape
        h, d = self.num_heads, self.head_dim
        if self.use_global:
            k, v = self.qkv(x).reshape(B, N, 2, h, d).permute(2, 0, 3, 1, 4).unbind(0)
            q = q_global.repeat_interleave(B // q_global.shape[0], dim=0)
            q = q.reshape(B, N, h, d).permute(0, 2, 1, 3)
        else:
            q, k, v = self.qkv(x).reshape(B, N, 3, h, d).permute(2, 0, 3, 1, 4).unbind(0)
        attn = self.rel_pos((q * d ** -0.5) @ k.transpose(-2, -1)).softmax(-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(B, N, C))


class GcvitBlock(nn.Module):
    def __init__(self, dim, heads, window, use_global):
        super().__init__()
        self.window_size = (window, window)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttentionGlobal(dim, heads, window, use_global)

    def _window_attn(self, x, q_global=None):
        B, H, W, C = x.shape
        w = self.window_size[0]
        win = x.reshape(B, H // w, w, W // w, w, C).permute(0, 1, 3, 2, 4, 5).reshape(-1, w * w, C)
        y = self.attn(win, q_global).reshape(B, H // w, W // w, w, w, C)
        return y.permute(0, 1, 3, 2, 4, 5).reshape(B, H, W, C)

    def forward(self, x, q_global=None):
        return x + self._window_attn(self.norm1(x), q_global)


class TinyGcvit(nn.Module):
    """A local block, then a global-query block (its query: a pooled window of the map)."""

    def __init__(self, dim=32, heads=4, window=4):
        super().__init__()
        self.embed = nn.Conv2d(3, dim, 4, 4)
        self.blocks = nn.ModuleList([GcvitBlock(dim, heads, window, False),
                                     GcvitBlock(dim, heads, window, True)])
        self.window = window
        self.head = nn.Linear(dim, 10)

    def forward(self, img):
        x = self.embed(img).permute(0, 2, 3, 1)
        q_global = F.adaptive_avg_pool2d(x.permute(0, 3, 1, 2), self.window).permute(0, 2, 3, 1)
        for block in self.blocks:
            x = block(x, q_global)
        return self.head(x.mean((1, 2)))


def test_gcvit_local_blocks_are_swapped_and_global_query_blocks_left_with_the_reason():
    torch.manual_seed(7)
    model = TinyGcvit().double()
    img = _image(32)
    report = patch_exactly(model, img, strict=False)
    assert [(r.status, r.weights) for r in report] == [
        ("swapped", "converted from timm.gcvit"), ("left", "unchanged")]
    assert "global query" in report[1].reason
    application = model.blocks[0].attn.attn.spec.branches[0].application
    assert (application.kind, application.size, application.shift) == ("window", 4, 0)


class VoloAttention(nn.Module):
    """timm's VOLO Attention: plain MHSA called on a (B, H, W, C) map."""

    def __init__(self, dim, num_heads):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, H, W, C = x.shape
        q, k, v = self.qkv(x).reshape(B, H * W, 3, self.num_heads, C // self.num_heads) \
            .permute(2, 0, 3, 1, 4).unbind(0)
        y = ((q * (C // self.num_heads) ** -0.5) @ k.transpose(-2, -1)).softmax(-1) @ v
        return self.proj(y.transpose(1, 2).reshape(B, H, W, C))


VoloAttention.__name__ = "Attention"
VoloAttention.__module__ = "timm.models.volo"      # how patch tells it from ViT's


class TinyVolo(nn.Module):
    def __init__(self, dim=32, heads=4):
        super().__init__()
        self.embed = nn.Conv2d(3, dim, 4, 4)
        self.norm1 = nn.LayerNorm(dim)
        self.attn = VoloAttention(dim, heads)
        self.head = nn.Linear(dim, 10)

    def forward(self, img):
        x = self.embed(img).permute(0, 2, 3, 1)
        x = x + self.attn(self.norm1(x))
        return self.head(x.mean((1, 2)))


def test_volo_attention_on_a_channels_last_map_is_swapped():
    torch.manual_seed(11)
    model = TinyVolo().double()
    img = torch.randn(2, 3, 16, 24, generator=torch.Generator().manual_seed(0),
                      dtype=torch.float64)
    report = patch_exactly(model, img)
    assert [(r.status, r.convention, r.resolution) for r in report] == [
        ("swapped", "bhwc", (4, 6))]


class BottleneckAttn(nn.Module):
    """timm's BottleneckAttn (channels-first, PosEmbedRel), as timm computes it: the
    relative logits by the pad-and-reshape skew."""

    def __init__(self, dim, feat_size, num_heads=4, stride=1):
        super().__init__()
        self.num_heads, self.dim_head_qk = num_heads, dim // num_heads
        self.dim_head_v, self.scale_pos_embed = dim // num_heads, False
        self.qkv = nn.Conv2d(dim, 3 * dim, 1, bias=False)
        self.pos_embed = nn.Module()
        self.pos_embed.height, self.pos_embed.width = feat_size
        d = dim // num_heads
        self.pos_embed.height_rel = nn.Parameter(0.3 * torch.randn(2 * feat_size[0] - 1, d))
        self.pos_embed.width_rel = nn.Parameter(0.3 * torch.randn(2 * feat_size[1] - 1, d))
        self.pool = nn.AvgPool2d(2, 2) if stride == 2 else nn.Identity()

    @staticmethod
    def _rel_logits_1d(q, rel_k, permute_mask):
        B, H, W, dim = q.shape
        x = (q @ rel_k.transpose(-1, -2)).reshape(-1, W, 2 * W - 1)
        x_pad = F.pad(F.pad(x, [0, 1]).flatten(1), [0, W - 1]).reshape(-1, W + 1, 2 * W - 1)
        x = x_pad[:, :W, W - 1:].reshape(B, H, 1, W, W).expand(-1, -1, H, -1, -1)
        return x.permute(permute_mask)

    def forward(self, x):
        B, C, H, W = x.shape
        d = self.dim_head_qk
        q, k, v = torch.split(self.qkv(x), [C, C, C], dim=1)
        q = q.reshape(B * self.num_heads, d, -1).transpose(-1, -2)
        k = k.reshape(B * self.num_heads, d, -1)
        v = v.reshape(B * self.num_heads, d, -1).transpose(-1, -2)
        qm = q.reshape(-1, H, W, d)
        rel = self._rel_logits_1d(qm, self.pos_embed.width_rel, (0, 1, 3, 2, 4)) \
            + self._rel_logits_1d(qm.transpose(1, 2), self.pos_embed.height_rel, (0, 3, 1, 4, 2))
        attn = ((q @ k) * d ** -0.5 + rel.reshape(-1, H * W, H * W)).softmax(-1)
        return self.pool((attn @ v).transpose(-1, -2).reshape(B, C, H, W))


class TinyBotnet(nn.Module):
    def __init__(self, dim=32):
        super().__init__()
        self.embed = nn.Conv2d(3, dim, 4, 4)
        self.attn = BottleneckAttn(dim, (4, 6))
        self.down = BottleneckAttn(dim, (4, 6), stride=2)
        self.head = nn.Linear(dim, 10)

    def forward(self, img):
        x = self.embed(img)
        x = x + self.attn(x)
        return self.head(self.down(x).mean((2, 3)))


def test_botnet_attention_is_swapped_and_its_stride_2_left_with_the_reason():
    torch.manual_seed(12)
    model = TinyBotnet().double()
    img = torch.randn(2, 3, 16, 24, generator=torch.Generator().manual_seed(0),
                      dtype=torch.float64)
    report = patch_exactly(model, img, strict=False)
    assert [(r.status, r.weights) for r in report] == [
        ("swapped", "converted from timm.botnet"), ("left", "unchanged")]
    assert "average-pooled" in report[1].reason


class MaskUnitAttention(nn.Module):
    """timm's Hiera MaskUnitAttention, as timm computes it: mask unit w holds the unrolled
    tokens t with t mod num_windows = w; q_stride > 1 max-pools the queries."""

    def __init__(self, dim, dim_out, heads, q_stride, window_size, use_mask_unit_attn):
        super().__init__()
        self.dim, self.dim_out, self.heads, self.q_stride = dim, dim_out, heads, q_stride
        self.head_dim, self.window_size = dim_out // heads, window_size
        self.use_mask_unit_attn = use_mask_unit_attn
        self.qkv = nn.Linear(dim, 3 * dim_out)
        self.proj = nn.Linear(dim_out, dim_out)

    def forward(self, x):
        B, N, _ = x.shape
        nw = N // (self.q_stride * self.window_size) if self.use_mask_unit_attn else 1
        q, k, v = self.qkv(x).reshape(B, -1, nw, 3, self.heads, self.head_dim) \
            .permute(3, 0, 4, 2, 1, 5).unbind(0)
        if self.q_stride > 1:
            q = q.view(B, self.heads, nw, self.q_stride, -1, self.head_dim).amax(dim=3)
        y = ((q * self.head_dim ** -0.5) @ k.transpose(-1, -2)).softmax(-1) @ v
        return self.proj(y.transpose(1, 3).reshape(B, -1, self.dim_out))


class TinyHiera(nn.Module):
    """Unrolled tokens (any fixed order: a permutation of the grid), a mask-unit block, a
    global block, then a pooling block (q_stride 4, width doubled)."""

    def __init__(self, dim=32):
        super().__init__()
        self.embed = nn.Conv2d(3, dim, 4, 4)
        self.register_buffer("order", torch.randperm(24, generator=torch.Generator().manual_seed(1)))
        self.blocks = nn.ModuleList([MaskUnitAttention(dim, dim, 4, 1, 6, True),
                                     MaskUnitAttention(dim, dim, 4, 1, 24, False),
                                     MaskUnitAttention(dim, 2 * dim, 4, 4, 6, False)])
        self.head = nn.Linear(2 * dim, 10)

    def forward(self, img):
        x = self.embed(img).flatten(2).transpose(1, 2)[:, self.order]
        x = x + self.blocks[0](x)
        x = x + self.blocks[1](x)
        return self.head(self.blocks[2](x).mean(1))


def test_hiera_mask_units_are_grid_groups_of_the_token_row():
    torch.manual_seed(16)
    model = TinyHiera().double()
    report = patch_exactly(model, image(16, 24), strict=False)
    assert [(r.status, r.resolution) for r in report[:2]] == [("swapped", (1, 24))] * 2
    assert report[2].status == "left" and "max-pooled" in report[2].reason
    unit, whole = (model.blocks[i].attn.spec.branches[0].application for i in (0, 1))
    assert (unit.kind, unit.size, whole.kind) == ("grid", (1, 6), "global")


def test_all_or_nothing_and_the_reason_for_what_is_left():
    torch.manual_seed(2)
    model = TinyViT(gated_second=True).double()
    img = _image()
    pristine = copy.deepcopy(model.state_dict())
    with pytest.raises(PatchError, match=r"(?s)1 of 2 module\(s\) can.t be swapped, so none "
                                         r"was.*blocks\.1\.attn \(Attention\): .*gated"):
        patch(model, example=img, backend="eager")
    assert all(type(b.attn) is Attention for b in model.blocks)      # nothing changed
    assert model.state_dict().keys() == pristine.keys()
    report = patch_exactly(model, img, strict=False)
    assert [r.status for r in report] == ["swapped", "left"]
    assert "gated" in report[1].reason and report[1].weights == "unchanged"
    assert type(model.blocks[1].attn) is Attention


def test_a_swap_whose_output_differs_is_never_reported_converted():
    """The block says it doesn't shift, but its _attn does: the spec read from the
    attributes is wrong, and the probe's verification catches it."""
    torch.manual_seed(3)
    model = TinySwin().double()
    model.blocks[1].shift_size = (0, 0)          # a lie: _attn still rolls by 3
    report = patch(model, example=_image(56), backend="eager", strict=False)
    assert report[0].status == "swapped"
    assert report[1].status == "left" and "differs by" in report[1].reason
    assert type(model.blocks[1].attn).__name__ == "WindowAttention"


def test_spec_of_and_dump_to_give_specs_that_compile(tmp_path):
    model = TinySwin().double()
    specs = spec_of(model, example=_image(56))
    assert set(specs) == {"blocks.0.attn", "blocks.1.attn"}
    entry = specs["blocks.1.attn"]
    assert (entry["dim"], entry["heads"], entry["resolution"]) == (48, 3, [14, 14])
    assert entry["spec"]["application"]["shift"] == 3 and entry["layout"] == "timm.swin"
    patch(model, example=_image(56), backend="eager", dump_to=tmp_path)
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["blocks.0.attn.yaml", "blocks.1.attn.yaml"]
    text = (tmp_path / "blocks.1.attn.yaml").read_text()
    assert text.startswith("# blocks.1.attn (WindowAttention)") and "dim 48, 3 heads" in text
    spec = attndsl.load_spec(tmp_path / "blocks.1.attn.yaml")
    m = attndsl.compile(spec, dim=48, resolution=(14, 14), backend="eager")
    assert m(torch.randn(1, 14, 14, 48)).shape == (1, 14, 14, 48)
    assert yaml.safe_load(text)["application"]["size"] == 7


def test_no_example_and_no_declared_input_size_says_what_to_pass():
    with pytest.raises(PatchError, match="pass example="):
        patch(TinySwin())
    with pytest.raises(PatchError, match="probe forward .* failed.*pass example="):
        patch(TinySwin(), example=torch.randn(1, 3, 5))


def test_a_declared_input_size_is_the_default_probe():
    model = TinyViT().double()
    model.pretrained_cfg = {"input_size": (3, 16, 16)}
    report = patch(model, backend="eager")
    assert [r.status for r in report] == ["swapped", "swapped"]


def test_a_spec_in_place_of_a_recognized_module_takes_its_grid_from_the_probe():
    model = TinySwin()
    with pytest.warns(UserWarning, match="fresh weights"):
        report = patch(model, "nat", example=_image(56).float(), backend="eager")
    assert all(r.resolution == (14, 14) and r.weights.startswith("fresh") for r in report)
    assert model(_image(56).float()).shape == (2, 10)
    # geometry the spec can't take is refused before anything changes
    model = TinySwin()
    with pytest.raises(PatchError, match="can't take this module's geometry.*14×14 grid"):
        patch(model, {"name": "w5", "parameterization": {"kind": "additive",
                                                        "terms": ["query_key"]},
                      "normalization": {"kind": "softmax"},
                      "application": {"kind": "window", "size": 5}},
              example=_image(56).float(), backend="eager")
    assert all(type(b.attn).__name__ == "WindowAttention" for b in model.blocks)


def test_prefix_tokens_reference():
    """forward_tokens(prefix=1) of a global spec is plain attention over all tokens."""
    m = attndsl.compile("vit_mhsa", dim=12, heads=2, resolution=(3, 3), backend="eager").double()
    x = torch.randn(2, 10, 12, dtype=torch.float64, requires_grad=True)
    y = m.forward_tokens(x, (3, 3), prefix=1)
    q, k, v = m.attn.qkv(x).chunk(3, -1)
    heads = lambda t: t.reshape(2, 10, 2, 6).transpose(1, 2)
    want = m.attn.proj(F.scaled_dot_product_attention(heads(q), heads(k), heads(v))
                       .transpose(1, 2).reshape(2, 10, 12))
    assert (y - want).abs().max() <= 1e-12
    g1, = torch.autograd.grad(y.square().sum(), x)
    g2, = torch.autograd.grad(want.square().sum(), x)
    assert (g1 - g2).abs().max() <= 1e-10
    with pytest.raises(attndsl.ShapeError, match="window.*no rule for prefix tokens"):
        attndsl.compile("swin_wmsa", dim=12, heads=2, resolution=(7, 7)).forward_tokens(
            torch.randn(1, 50, 12), (7, 7), prefix=1)
