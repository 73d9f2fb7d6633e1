"""Classification tasks for a search, with nothing downloaded at run time.

- `pathfinder`: generated (numpy, seeded), Long Range Arena's Pathfinder: two marked
  endpoints, connected by one curvy path or not, among distractor paths. Path length and
  resolution set the difficulty; paths longer than a local window defeat local attention,
  so the task separates local from global mechanisms.
- `digits`: scikit-learn's bundled 1,797 handwritten 8×8 digits (10 classes).
- `folder`: an image folder, one subfolder per class (PNG/JPEG/…, read with Pillow).
- `npz`: a NumPy `.npz` with `x`, `y` (split here) or `x_train`, `y_train`, `x_val`, `y_val`.
- `cifar`: a CIFAR-10/100 "python version" directory (data_batch_* / train pickles).
- `python`: a user's `module:function` returning (x, y) or (x_train, y_train, x_val, y_val).

Every task yields float32 images (N, C, S, S), standardised with the training set's
per-channel mean and std, and int64 labels. A task without its own validation set is split
with a fixed seed; validation images are never trained on.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import pickle
import zipfile
from pathlib import Path
from typing import Annotated, Literal, Union

import numpy as np
import torch
from pydantic import Field, TypeAdapter

from ..errors import SpecError
from ..model.train import Dataset
from ..lang import models as m

Int, Float = m.Int, m.Float


class Pathfinder(m.Component):
    kind: Literal["pathfinder"] = "pathfinder"
    resolution: Int = Field(default=32, ge=12, le=512)
    path_length: Int = Field(default=6, ge=1, le=64)       # segments per target path
    distractors: Int = Field(default=2, ge=0, le=32)       # unmarked paths
    train: Int = Field(default=4000, ge=10, le=1_000_000)
    val: Int = Field(default=1000, ge=10, le=1_000_000)
    seed: Int = Field(default=0, ge=0)


class SameDifferent(m.Component):
    """Long-range: two glyphs far apart (at least `min_distance` pixels between their
    centres); the label says whether they are the same glyph. Every glyph has the same
    number of lit pixels, so nothing short of comparing the two shapes tells the label —
    a token must see both, which a window smaller than their distance cannot. Hard to learn
    from scratch: the glyphs are a few tokens among hundreds, and until attention finds them
    every design sees the same uninformative marginals (global attention stayed at chance on
    a 2-core CPU at 32×32 and 56×56); texture_pair is the long-range task learnt in minutes."""
    kind: Literal["same_different"] = "same_different"
    resolution: Int = Field(default=32, ge=12, le=512)
    glyph: Int = Field(default=5, ge=3, le=16)            # glyph side, pixels
    glyphs: Int = Field(default=8, ge=2, le=256)          # the bank the pairs are drawn from
    min_distance: Int | None = Field(default=None, ge=1)  # default: half the resolution
    noise: Float = Field(default=0.05, ge=0, lt=0.5)      # share of background pixels lit
    train: Int = Field(default=4000, ge=10, le=1_000_000)
    val: Int = Field(default=1000, ge=10, le=1_000_000)
    seed: Int = Field(default=0, ge=0)


class Textures(m.Component):
    """Local: which of `classes` textures (stripes at four orientations, checks, dots,
    blobs, crosses, …) fills the image, at a random period, phase and contrast, under
    noise. Any 4×4-pixel neighbourhood tells the class: attention beyond it adds nothing."""
    kind: Literal["textures"] = "textures"
    resolution: Int = Field(default=32, ge=8, le=512)
    classes: Int = Field(default=6, ge=2, le=8)
    noise: Float = Field(default=0.3, ge=0, le=2)         # Gaussian, relative to contrast
    train: Int = Field(default=3000, ge=10, le=1_000_000)
    val: Int = Field(default=1000, ge=10, le=1_000_000)
    seed: Int = Field(default=0, ge=0)


class TexturePair(m.Component):
    """Long-range: two textured strips `strip` pixels wide at the left and right edges, the
    rest of the image empty; the label says whether they are the same texture class (the
    textures task's classes, each strip with its own period, phase, contrast and noise).
    Each strip alone is uninformative, so only a token that sees both can tell: the gap
    (resolution − 2·strip, 40 px by default) is wider than a 7×7 window or neighbourhood
    reaches at 4-pixel tokens. Unlike same_different, a global design learns it on a CPU
    in minutes: the strips are a third of the image, not a few tokens."""
    kind: Literal["texture_pair"] = "texture_pair"
    resolution: Int = Field(default=56, ge=8, le=512)
    strip: Int = Field(default=8, ge=2, le=256)          # strip width, pixels
    classes: Int = Field(default=8, ge=2, le=8)
    noise: Float = Field(default=0.5, ge=0, le=2)        # Gaussian, relative to contrast
    train: Int = Field(default=6000, ge=10, le=1_000_000)
    val: Int = Field(default=1000, ge=10, le=1_000_000)
    seed: Int = Field(default=0, ge=0)


class Digits(m.Component):
    kind: Literal["digits"] = "digits"
    resolution: Int = Field(default=8, ge=8, le=256)   # upsampled (bilinear) from 8×8
    val_fraction: Float = Field(default=0.2, gt=0, lt=1)
    seed: Int = Field(default=0, ge=0)


class _FileTask(m.Component):
    path: str = Field(min_length=1)
    resolution: Int | None = Field(default=None, ge=1, le=4096)   # resize to S×S
    val_fraction: Float = Field(default=0.2, gt=0, lt=1)
    max_train: Int | None = Field(default=None, ge=1)
    seed: Int = Field(default=0, ge=0)


class Folder(_FileTask):
    kind: Literal["folder"] = "folder"
    channels: Literal[1, 3] = 3


class Npz(_FileTask):
    kind: Literal["npz"] = "npz"


class Cifar(_FileTask):
    kind: Literal["cifar"] = "cifar"


class PythonTask(m.Component):
    kind: Literal["python"] = "python"
    entry: str = Field(pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")   # module:function
    val_fraction: Float = Field(default=0.2, gt=0, lt=1)
    seed: Int = Field(default=0, ge=0)


Task = Annotated[Union[Pathfinder, SameDifferent, TexturePair, Textures, Digits, Folder, Npz,
                       Cifar, PythonTask], Field(discriminator="kind")]
TaskAdapter = TypeAdapter(Task)
TASK_KINDS = ("pathfinder", "same_different", "texture_pair", "textures", "digits", "folder",
              "npz", "cifar", "python")


class TaskError(SpecError):
    """The task's data cannot be loaded (a missing folder, a malformed file)."""


# ---------------------------------------------------------------- loading
# kinds whose data depend on their settings only (generated, or bundled with a library):
# cached as the final tensors, so that a trial loads them in milliseconds
CACHED_KINDS = ("pathfinder", "same_different", "texture_pair", "textures", "digits")


def load_task(task, cache_dir: Path | None = None) -> Dataset:
    """The task's tensors. Generated and bundled tasks are cached (by their settings) in
    `cache_dir`, bit for bit as loading them afresh gives."""
    if cache_dir is None or task.kind not in CACHED_KINDS:
        return LOADERS[task.kind](task)
    key = hashlib.sha256(task.model_dump_json().encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"{task.kind}-{key}.npz"
    if path.exists():
        try:
            with np.load(path) as f:
                return Dataset(*(torch.from_numpy(f[k]) for k in
                                 ("train_x", "train_y", "val_x", "val_y")),
                               int(f["classes"]), task.kind)
        except (OSError, ValueError, KeyError):
            pass             # a damaged cache file: made again below
    data = LOADERS[task.kind](task)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{np.random.randint(1 << 30)}.tmp.npz")
    np.savez(tmp, train_x=data.train_x.numpy(), train_y=data.train_y.numpy(),
             val_x=data.val_x.numpy(), val_y=data.val_y.numpy(), classes=data.classes)
    tmp.replace(path)   # atomic: a concurrent worker reads a whole file or none
    return data


def _pathfinder(task: Pathfinder) -> Dataset:
    a = _pathfinder_arrays(task)
    return _dataset(a["x_train"], a["y_train"], a["x_val"], a["y_val"], 2, "pathfinder")


def _digits(task: Digits) -> Dataset:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise TaskError("the digits task needs scikit-learn (it ships the 1,797 digits): "
                        "pip install scikit-learn", path="task.kind") from None
    digits = load_digits()
    x = digits.images.astype(np.float32)[:, None] / 16.0
    y = digits.target.astype(np.int64)
    x_train, y_train, x_val, y_val = _split(x, y, task.val_fraction, task.seed)
    data = _dataset(x_train, y_train, x_val, y_val, 10, "digits")
    if task.resolution != 8:
        data = _resized(data, task.resolution)
    return data


def _folder(task: Folder) -> Dataset:
    root = _existing(task.path, "directory")
    try:
        from PIL import Image
    except ImportError:
        raise TaskError("the folder task reads images with Pillow: pip install pillow",
                        path="task.kind") from None
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if len(classes) < 2:
        raise TaskError(f"{root} has {len(classes)} class subfolders; an image folder has one "
                        "subfolder per class (at least 2)", path="task.path")
    images, labels, size = [], [], task.resolution
    for label, name in enumerate(classes):
        files = sorted(p for p in (root / name).iterdir() if p.is_file())
        for file in files:
            try:
                with Image.open(file) as img:
                    img = img.convert("L" if task.channels == 1 else "RGB")
                    size = size or img.size[0]
                    img = img.resize((size, size), Image.BILINEAR)
                    arr = np.asarray(img, dtype=np.float32) / 255.0
            except OSError as exc:
                raise TaskError(f"cannot read image {file}: {exc}", path="task.path") from None
            images.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
            labels.append(label)
    if not images:
        raise TaskError(f"no images under {root}", path="task.path")
    x, y = np.stack(images), np.asarray(labels, dtype=np.int64)
    return _finish(task, x, y, len(classes))


def _npz(task: Npz) -> Dataset:
    path = _existing(task.path, "file")
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:   # a cut or foreign file
        raise TaskError(f"cannot read {path} as a .npz: {exc}", path="task.path") from None
    if {"x_train", "y_train", "x_val", "y_val"} <= arrays.keys():
        parts = [arrays[k] for k in ("x_train", "y_train", "x_val", "y_val")]
        x_train, x_val = _images(parts[0], path), _images(parts[2], path)
        y_train, y_val = _labels(parts[1], len(x_train), path), _labels(parts[3], len(x_val), path)
        classes = int(max(y_train.max(), y_val.max())) + 1
        return _resize_all(_limit(task, _dataset(x_train, y_train, x_val, y_val, classes, "npz")),
                           task.resolution)
    if {"x", "y"} <= arrays.keys():
        x = _images(arrays["x"], path)
        y = _labels(arrays["y"], len(x), path)
        return _finish(task, x, y, int(y.max()) + 1)
    raise TaskError(f"{path} has arrays {sorted(arrays)}; a task .npz has 'x' and 'y' (split "
                    "here) or 'x_train', 'y_train', 'x_val', 'y_val'", path="task.path")


def _cifar(task: Cifar) -> Dataset:
    root = _existing(task.path, "directory")
    names = sorted(p.name for p in root.glob("data_batch_*")) or (
        ["train"] if (root / "train").exists() else [])
    if not names:
        raise TaskError(f"{root} has neither data_batch_* (CIFAR-10) nor train (CIFAR-100); "
                        "give the extracted 'python version' directory", path="task.path")
    xs, ys = [], []
    for name in names:
        try:
            with open(root / name, "rb") as f:
                batch = pickle.load(f, encoding="bytes")
            data = np.asarray(batch[b"data"], dtype=np.uint8)
            labels = batch.get(b"labels", batch.get(b"fine_labels"))
        except (OSError, pickle.UnpicklingError, KeyError, TypeError, EOFError) as exc:
            raise TaskError(f"cannot read CIFAR batch {root / name}: {exc!r}",
                            path="task.path") from None
        if labels is None or data.ndim != 2 or data.shape[1] != 3072:
            raise TaskError(f"{root / name} is not a CIFAR batch (data {data.shape}, expected "
                            "(N, 3072) with labels)", path="task.path")
        xs.append(data.reshape(-1, 3, 32, 32).astype(np.float32) / 255.0)
        ys.append(np.asarray(labels, dtype=np.int64))
    x, y = np.concatenate(xs), np.concatenate(ys)
    return _finish(task, x, y, 100 if names == ["train"] else 10)


def _python(task: PythonTask) -> Dataset:
    module_name, fn_name = task.entry.split(":")
    try:
        fn = getattr(importlib.import_module(module_name), fn_name)
    except (ImportError, AttributeError) as exc:
        raise TaskError(f"task entry {task.entry!r}: {exc}", path="task.entry") from None
    out = fn()
    arrays = [np.asarray(a.numpy() if isinstance(a, torch.Tensor) else a) for a in out]
    if len(arrays) == 4:
        x_train, x_val = _images(arrays[0], task.entry), _images(arrays[2], task.entry)
        y_train = _labels(arrays[1], len(x_train), task.entry)
        y_val = _labels(arrays[3], len(x_val), task.entry)
        classes = int(max(y_train.max(), y_val.max())) + 1
        return _dataset(x_train, y_train, x_val, y_val, classes, task.entry)
    if len(arrays) == 2:
        x = _images(arrays[0], task.entry)
        y = _labels(arrays[1], len(x), task.entry)
        x_train, y_train, x_val, y_val = _split(x, y, task.val_fraction, task.seed)
        return _dataset(x_train, y_train, x_val, y_val, int(y.max()) + 1, task.entry)
    raise TaskError(f"task entry {task.entry!r} returned {len(arrays)} items; return (x, y) "
                    "or (x_train, y_train, x_val, y_val)", path="task.entry")


def _generated(task, make_images, classes: int, rng=None) -> Dataset:
    """A generated task's split: training images, then validation images, from one seeded
    stream (`make_images(rng, n)` → (images, labels))."""
    rng = rng if rng is not None else np.random.default_rng(task.seed)
    x_train, y_train = make_images(rng, task.train)
    x_val, y_val = make_images(rng, task.val)
    return _dataset(x_train, y_train, x_val, y_val, classes, task.kind)


def _same_different(task: SameDifferent) -> Dataset:
    rng = np.random.default_rng(task.seed)
    bank = _glyph_bank(rng, task.glyphs, task.glyph)    # drawn first, from the images' stream
    return _generated(task, lambda r, n: _same_different_images(r, task, bank, n), 2, rng)


def _texture_pair(task: TexturePair) -> Dataset:
    return _generated(task, lambda rng, n: _texture_pair_images(rng, task, n), 2)


def _textures(task: Textures) -> Dataset:
    return _generated(task, lambda rng, n: _texture_images(rng, task, n), task.classes)

LOADERS = {"pathfinder": _pathfinder, "same_different": _same_different,
           "texture_pair": _texture_pair, "textures": _textures, "digits": _digits,
           "folder": _folder, "npz": _npz, "cifar": _cifar, "python": _python}


# ---------------------------------------------------------------- helpers
def _existing(path: str, what: str) -> Path:
    p = Path(path).expanduser()
    ok = p.is_dir() if what == "directory" else p.is_file()
    if not ok:
        state = "not found" if not p.exists() else f"not a {what}"
        raise TaskError(f"task path {p}: {state}", path="task.path")
    return p


def _images(x: np.ndarray, where) -> np.ndarray:
    """(N, H, W), (N, H, W, C) or (N, C, H, W) → float32 (N, C, H, W) in [0, 1] for uint8."""
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4:
        if not (x.shape[1] in (1, 3) and x.shape[-1] not in (1, 3)):
            x = x.transpose(0, 3, 1, 2)   # channels-last (NumPy's usual layout)
    else:
        raise TaskError(f"{where}: images must be (N, H, W), (N, H, W, C) or (N, C, H, W); got "
                        f"shape {x.shape}", path="task.path")
    if x.shape[-1] != x.shape[-2]:
        raise TaskError(f"{where}: images must be square (H = W), got {x.shape[-2]}×"
                        f"{x.shape[-1]}; set task.resolution to resize", path="task.path")
    scale = 255.0 if x.dtype == np.uint8 else 1.0
    return x.astype(np.float32) / scale


def _labels(y: np.ndarray, n: int, where) -> np.ndarray:
    y = np.asarray(y).reshape(-1)
    if len(y) != n or not np.issubdtype(y.dtype, np.integer) or (len(y) and y.min() < 0):
        raise TaskError(f"{where}: labels must be {n} non-negative integers (one per image), "
                        f"got {len(y)} of dtype {y.dtype}", path="task.path")
    return y.astype(np.int64)


def _split(x, y, fraction: float, seed: int):
    order = np.random.default_rng(seed).permutation(len(x))
    n_val = max(1, int(round(len(x) * fraction)))
    val, train = order[:n_val], order[n_val:]
    if len(train) == 0:
        raise TaskError(f"{len(x)} examples leave nothing to train on after a "
                        f"{fraction:.0%} validation split", path="task")
    return x[train], y[train], x[val], y[val]


def _finish(task, x, y, classes: int) -> Dataset:
    x_train, y_train, x_val, y_val = _split(x, y, task.val_fraction, task.seed)
    data = _dataset(x_train, y_train, x_val, y_val, max(classes, 2), task.kind)
    return _resize_all(_limit(task, data), task.resolution)   # resize only what is kept


def _limit(task, data: Dataset) -> Dataset:
    if getattr(task, "max_train", None) and len(data.train_x) > task.max_train:
        data.train_x, data.train_y = data.train_x[:task.max_train], data.train_y[:task.max_train]
    return data


def _resize_all(data: Dataset, resolution) -> Dataset:
    return data if not resolution or resolution == data.image_size else _resized(data, resolution)


def _resized(data: Dataset, size: int) -> Dataset:
    def up(x):
        return torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear",
                                               align_corners=False)
    data.train_x, data.val_x = up(data.train_x), up(data.val_x)
    return data


def _dataset(x_train, y_train, x_val, y_val, classes: int, name: str) -> Dataset:
    x_train = torch.as_tensor(np.ascontiguousarray(x_train), dtype=torch.float32)
    x_val = torch.as_tensor(np.ascontiguousarray(x_val), dtype=torch.float32)
    # standardise with the training set's statistics only (validation never leaks in)
    mean = x_train.mean(dim=(0, 2, 3), keepdim=True)
    std = x_train.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    return Dataset((x_train - mean) / std, torch.as_tensor(y_train, dtype=torch.int64),
                   (x_val - mean) / std, torch.as_tensor(y_val, dtype=torch.int64),
                   int(classes), name)


def task_shape(task) -> tuple[int | None, int | None, int | None]:
    """(image size, channels, classes) known without loading the data (None: unknown)."""
    if task.kind == "pathfinder":
        return task.resolution, 1, 2
    if task.kind == "digits":
        return task.resolution, 1, 10
    if task.kind in ("same_different", "texture_pair"):
        return task.resolution, 1, 2
    if task.kind == "textures":
        return task.resolution, 1, task.classes
    if task.kind == "cifar":
        return task.resolution or 32, 3, None
    if task.kind == "folder":
        return task.resolution, task.channels, None
    return getattr(task, "resolution", None), None, None


# ---------------------------------------------------------------- Pathfinder
def _pathfinder_arrays(task: Pathfinder) -> dict:
    rng = np.random.default_rng(task.seed)
    x_train, y_train = _pathfinder_images(rng, task, task.train)
    x_val, y_val = _pathfinder_images(rng, task, task.val)
    return {"x_train": x_train, "y_train": y_train, "x_val": x_val, "y_val": y_val}


def _pathfinder_images(rng, task: Pathfinder, n: int):
    size = task.resolution
    images = np.zeros((n, 1, size, size), dtype=np.float32)
    labels = np.zeros(n, dtype=np.int64)
    for i in range(n):
        positive = i % 2 == 0          # balanced classes, shuffled below
        images[i, 0] = _pathfinder_image(rng, size, task.path_length, task.distractors, positive)
        labels[i] = int(positive)
    order = rng.permutation(n)
    return images[order], labels[order]


def _pathfinder_image(rng, size: int, segments: int, distractors: int, positive: bool):
    """Two target paths (one marked at both ends when positive; one end of each when
    negative) and unmarked distractors, each a chain of short segments with bounded turns,
    kept apart from the others by a one-pixel gap."""
    segment = max(2.0, size / 10)
    for _attempt in range(50):
        canvas = np.zeros((size, size), dtype=np.float32)
        taken = np.zeros((size, size), dtype=bool)
        paths = []
        ok = True
        for p in range(2 + distractors):
            length = segments if p < 2 else max(1, segments // 2)
            path = _random_path(rng, size, length, segment, taken)
            if path is None:
                ok = False
                break
            paths.append(path)
            for (r, c) in path:
                canvas[r, c] = 1.0
            taken |= _dilate(path, size)
        if not ok:
            continue
        a, b = paths[0], paths[1]
        ends = [a[0], a[-1]] if positive else [a[rng.integers(2) * -1], b[rng.integers(2) * -1]]
        for r, c in ends:
            canvas[max(0, r - 1):r + 2, max(0, c - 1):c + 2] = 1.0   # 3×3 endpoint marker
        return canvas
    raise RuntimeError(f"pathfinder: cannot place {2 + distractors} paths of {segments} "
                       f"segments at {size}×{size}; lower path_length or distractors")


def _random_path(rng, size, segments, segment, taken):
    margin = 2
    for _attempt in range(30):
        pos = rng.uniform(margin, size - 1 - margin, size=2)
        angle = rng.uniform(0, 2 * np.pi)
        pixels = [tuple(np.round(pos).astype(int))]
        good = True
        for _ in range(segments):
            angle += rng.uniform(-np.pi / 4, np.pi / 4)      # bounded turn per segment
            step = np.array([np.sin(angle), np.cos(angle)])
            end = pos + segment * step
            if not (margin <= end[0] <= size - 1 - margin and margin <= end[1] <= size - 1 - margin):
                angle += np.pi / 2                             # turn away from the border
                step = np.array([np.sin(angle), np.cos(angle)])
                end = pos + segment * step
                if not (margin <= end[0] <= size - 1 - margin and margin <= end[1] <= size - 1 - margin):
                    good = False
                    break
            for t in np.linspace(0, 1, int(segment * 2) + 1)[1:]:
                r, c = np.round(pos + t * (end - pos)).astype(int)
                if (r, c) != pixels[-1]:
                    pixels.append((r, c))
            pos = end
        if not good:
            continue
        if any(taken[r, c] for r, c in pixels):
            continue
        if len(set(pixels)) < len(pixels):      # a path crossing itself looks like a loop
            continue
        return pixels
    return None


def _dilate(path, size):
    mask = np.zeros((size, size), dtype=bool)
    for r, c in path:
        mask[max(0, r - 2):r + 3, max(0, c - 2):c + 3] = True
    return mask


# ---------------------------------------------------------------- same / different
def _glyph_bank(rng, count: int, side: int) -> np.ndarray:
    """`count` distinct binary glyphs of side × side with the same number of lit pixels
    (about 40%), each touching all four borders of its box (no glyph is a shifted copy of
    another inside the box)."""
    lit = max(2, round(0.4 * side * side))
    bank: list[np.ndarray] = []
    seen: set[bytes] = set()
    for _attempt in range(100_000):
        glyph = np.zeros(side * side, dtype=np.float32)
        glyph[rng.choice(side * side, size=lit, replace=False)] = 1.0
        glyph = glyph.reshape(side, side)
        if not (glyph[0].any() and glyph[-1].any() and glyph[:, 0].any() and glyph[:, -1].any()):
            continue
        key = glyph.tobytes()
        if key in seen:
            continue
        seen.add(key)
        bank.append(glyph)
        if len(bank) == count:
            return np.stack(bank)
    raise TaskError(f"same_different: cannot draw {count} distinct {side}×{side} glyphs; "
                    "lower glyphs or raise glyph", path="task.glyphs")


def _same_different_images(rng, task: SameDifferent, bank: np.ndarray, n: int):
    size, side = task.resolution, task.glyph
    distance = task.min_distance if task.min_distance is not None else size // 2
    spots = np.stack(np.mgrid[0:size - side + 1, 0:size - side + 1], -1).reshape(-1, 2)
    if distance < side * 2 ** 0.5 or distance > (size - side) * 2 ** 0.5:
        raise TaskError(f"same_different: min_distance {distance} must keep two {side}-pixel "
                        f"glyphs apart (≥ {int(np.ceil(side * 2 ** 0.5))}) and fit a "
                        f"{size}×{size} image (≤ {int((size - side) * 2 ** 0.5)})",
                        path="task.min_distance")
    images = (rng.random((n, 1, size, size)) < task.noise).astype(np.float32)
    labels = np.zeros(n, dtype=np.int64)
    for i in range(n):
        same = i % 2 == 0                 # balanced classes, shuffled below
        a = rng.integers(len(bank))
        b = a if same else (a + rng.integers(1, len(bank))) % len(bank)
        while True:              # a first spot, then one far enough from it
            r1, c1 = spots[rng.integers(len(spots))]
            far = np.flatnonzero(((spots - (r1, c1)) ** 2).sum(1) >= distance ** 2)
            if len(far):
                r2, c2 = spots[rng.choice(far)]
                break
        for (r, c), g in (((r1, c1), a), ((r2, c2), b)):
            # the glyph's box is cleared first: noise never changes a glyph's shape
            images[i, 0, r:r + side, c:c + side] = bank[g]
        labels[i] = int(same)
    order = rng.permutation(n)
    return images[order], labels[order]


# ---------------------------------------------------------------- textures
def _texture_images(rng, task: Textures, n: int):
    images = np.zeros((n, 1, task.resolution, task.resolution), dtype=np.float32)
    grid = _pixel_grid(task.resolution)
    labels = np.arange(n) % task.classes
    for i, label in enumerate(labels):
        images[i, 0] = _texture(rng, int(label), grid, task.noise)
    order = rng.permutation(n)
    return images[order], labels[order].astype(np.int64)


def _pixel_grid(size: int) -> np.ndarray:
    return np.mgrid[0:size, 0:size].astype(np.float32)      # (rows, cols), made once per task


def _texture(rng, label: int, grid: np.ndarray, noise: float) -> np.ndarray:
    """One texture of class `label` over `grid`, at a random period, phase and contrast."""
    rows, cols = grid
    period = rng.uniform(3.0, 5.0)
    phase = rng.uniform(0, 2 * np.pi, size=2)
    contrast = rng.uniform(0.5, 1.0)
    u = 2 * np.pi * rows / period + phase[0]
    v = 2 * np.pi * cols / period + phase[1]
    pattern = {
        0: np.sin(u),                                  # horizontal stripes
        1: np.sin(v),                                  # vertical stripes
        2: np.sin((u + v) / 2 ** 0.5),                 # diagonal stripes
        3: np.sin((u - v) / 2 ** 0.5),                 # anti-diagonal stripes
        4: np.sign(np.sin(u)) * np.sign(np.sin(v)),    # checks
        5: (np.cos(u) + np.cos(v)) / 2,                # dots (a lattice of blobs)
        6: np.maximum(np.sin(u), np.sin(v)),           # crosses
        7: np.sin(u) * np.sin(v) ** 2,                 # broken stripes
    }[label]
    return contrast * pattern + noise * contrast * rng.standard_normal(
        rows.shape).astype(np.float32)


def _texture_pair_images(rng, task: TexturePair, n: int):
    size, strip = task.resolution, task.strip
    if size - 2 * strip < 1:
        raise TaskError(f"texture_pair: two {strip}-pixel strips leave no gap in a "
                        f"{size}×{size} image; strip must be at most {(size - 1) // 2}",
                        path="task.strip")
    images = np.zeros((n, 1, size, size), dtype=np.float32)
    labels = np.zeros(n, dtype=np.int64)
    grid = _pixel_grid(size)
    for i in range(n):
        same = i % 2 == 0                 # balanced classes, shuffled below
        a = int(rng.integers(task.classes))
        b = a if same else int((a + rng.integers(1, task.classes)) % task.classes)
        # each strip its own texture draw: same class, not the same pixels
        images[i, 0, :, :strip] = _texture(rng, a, grid, task.noise)[:, :strip]
        images[i, 0, :, size - strip:] = _texture(rng, b, grid, task.noise)[:, size - strip:]
        labels[i] = int(same)
    order = rng.permutation(n)
    return images[order], labels[order]


def task_fingerprint(task) -> str:
    return json.dumps(task.model_dump(), sort_keys=True)


def describe_task(task) -> str:
    if task.kind == "pathfinder":
        return (f"pathfinder {task.resolution}×{task.resolution}, {task.path_length} segments, "
                f"{task.distractors} distractors, {task.train} train / {task.val} val")
    if task.kind == "digits":
        return f"digits (scikit-learn, 1,797 images) at {task.resolution}×{task.resolution}"
    if task.kind == "same_different":
        distance = task.min_distance if task.min_distance is not None else task.resolution // 2
        return (f"same_different {task.resolution}×{task.resolution}: two of {task.glyphs} "
                f"{task.glyph}×{task.glyph} glyphs ≥ {distance} px apart, {task.train} train / "
                f"{task.val} val")
    if task.kind == "texture_pair":
        return (f"texture_pair {task.resolution}×{task.resolution}: {task.strip}-px strips of "
                f"{task.classes} texture classes {task.resolution - 2 * task.strip} px apart, "
                f"same or not, noise {task.noise:g}, {task.train} train / {task.val} val")
    if task.kind == "textures":
        return (f"textures {task.resolution}×{task.resolution}: {task.classes} classes, noise "
                f"{task.noise:g}, {task.train} train / {task.val} val")
    return f"{task.kind} {getattr(task, 'path', getattr(task, 'entry', ''))}"



# ---------------------------------------------------------------- the check before a search
def check_task(task, cache_dir, *, classes: int | None, image_size: int | None,
               in_channels: int | None) -> dict:
    """Load the task once and check it against the backbone it will train (TaskError
    otherwise): a search whose data cannot be loaded, or whose labels the model cannot
    output, would otherwise build and measure every trial before failing it."""
    data = load_task(task, cache_dir)
    where = describe_task(task)
    labels = torch.cat([data.train_y, data.val_y])
    top = int(labels.max()) if len(labels) else -1
    if classes is not None and top >= classes:
        raise TaskError(f"{where}: labels go up to {top}, but the backbone has classes: "
                        f"{classes} (outputs 0…{classes - 1}); set backbone.classes to at "
                        f"least {top + 1}", path="backbone.classes")
    if in_channels is not None and data.channels != in_channels:
        raise TaskError(f"{where}: images have {data.channels} channel(s), but the backbone "
                        f"has in_channels: {in_channels}", path="backbone.in_channels")
    if image_size is not None and data.image_size != image_size:
        raise TaskError(f"{where}: images are {data.image_size}×{data.image_size}, but the "
                        f"backbone has image_size: {image_size}; set task.resolution: "
                        f"{image_size} to resize them, or backbone.image_size: "
                        f"{data.image_size}", path="backbone.image_size")
    if len(data.val_y) == 0 or len(data.train_y) == 0:
        raise TaskError(f"{where}: {len(data.train_y)} training and {len(data.val_y)} "
                        "validation examples; a search needs both", path="task")
    return {"train": len(data.train_y), "val": len(data.val_y), "classes": top + 1,
            "image_size": data.image_size, "channels": data.channels}


def main(argv=None) -> int:
    """`python -c "from attndsl.nas.tasks import main; main()" JOB.json OUT.json`:
    check_task in a process of its own, as a trial would load the task (a user's
    `module:function` runs there, not in the search); OUT.json gets {"ok": {...}} or
    {"error": message, "path": field}."""
    import sys
    argv = sys.argv[1:] if argv is None else argv
    job = json.loads(Path(argv[0]).read_text())
    try:
        result = {"ok": check_task(TaskAdapter.validate_python(job["task"]), job["task_cache"],
                                   classes=job.get("classes"), image_size=job.get("image_size"),
                                   in_channels=job.get("in_channels"))}
    except SpecError as exc:
        result = {"error": exc.detail, "path": exc.path}
    except Exception as exc:   # noqa: BLE001 — a user's loader failing is the task's error
        result = {"error": f"loading the task failed: {type(exc).__name__}: {exc}"[:2000],
                  "path": "task"}
    Path(argv[1]).write_text(json.dumps(result))
    return 0
