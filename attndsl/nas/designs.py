"""Using a search's designs: evaluate a trained model on a space's task, and train a design
(a front's pareto YAML, or any backbone) on it — the same split, preprocessing, training
loop and evaluation as the search's trials, so a front model reproduces the accuracy the
search reported for it.

    attndsl.evaluate("run/pareto/01_t7_nat-window2-vit_mhsa.pt", "examples/search_digits.yaml")
    attndsl evaluate run/pareto/01_….pt --space examples/search_digits.yaml
    attndsl train run/pareto/01_….yaml --space examples/search_digits.yaml --epochs 30 --out m.pt
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import torch

from ..errors import AttndslError, SpecError
from ..model.net import BackboneNet, read_meta
from ..model.spec import load_backbone
from ..model.train import Training, evaluate as accuracy_on, train as train_loop, \
    training_backend
from .measure import default_device
from .space import SearchSpace, is_space_data, load_space
from .tasks import TaskAdapter, describe_task, load_task


def task_of(space_or_task):
    """The task of a search space (a SearchSpace, or a space file's path) or a task given
    directly (a Task, a mapping such as {kind: digits, resolution: 16}, or its YAML text)."""
    if isinstance(space_or_task, SearchSpace):
        return space_or_task.file.task
    if isinstance(space_or_task, (str, os.PathLike)) and _is_file(space_or_task):
        space_or_task = load_space(space_or_task)
        return space_or_task.file.task
    if isinstance(space_or_task, str):
        import yaml
        try:
            data = yaml.safe_load(space_or_task)
        except yaml.YAMLError as exc:
            raise SpecError(f"the task is neither a space file nor task YAML: {exc}",
                            path="task") from None
        if not isinstance(data, dict):
            raise SpecError(f"no such space file, and not a task mapping: {space_or_task!r}; "
                            "give a space file or a task such as '{kind: digits, "
                            "resolution: 16}'", path="task")
        space_or_task = data
    if isinstance(space_or_task, dict):
        if is_space_data(space_or_task):
            return load_space(space_or_task).file.task
        from pydantic import ValidationError
        try:
            return TaskAdapter.validate_python(space_or_task)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise SpecError(f"invalid task: {first['msg']} (at {where or 'task'}); "
                            f"got {space_or_task!r}", path="task") from None
    if hasattr(space_or_task, "kind"):
        return space_or_task
    raise SpecError(f"expected a search space or a task, got {type(space_or_task).__name__}",
                    path="task")


def _is_file(path) -> bool:
    try:
        return Path(path).is_file()
    except (OSError, ValueError):     # inline YAML text too long or odd for a path
        return False


def _model(model_or_path) -> BackboneNet:
    if isinstance(model_or_path, torch.nn.Module):
        return model_or_path
    from ..model.net import load
    model = load(model_or_path)
    if not isinstance(model, BackboneNet):
        raise AttndslError(f"{model_or_path} holds one attention module, not a model: "
                           "evaluate a backbone (a search's pareto/NN_….pt, or "
                           "`attndsl train … --out`)")
    return model


def evaluate(model_or_path, space_or_task, *, device=None) -> float:
    """Top-1 accuracy of a model (a BackboneNet, or a file from a search's pareto/ or from
    `attndsl train`) on the task's validation split: the split, preprocessing and batching
    the search evaluated with. On the same machine and thread count it reproduces the
    search's figure for that design exactly."""
    model = _model(model_or_path)
    task = task_of(space_or_task)
    data = load_task(task)
    _check_fits(model, data, task)
    device = torch.device(device or next(model.parameters()).device)
    return accuracy_on(model.to(device), data.val_x, data.val_y, device=device)


def _check_fits(model: BackboneNet, data, task) -> None:
    spec = model.spec
    wanted = (data.image_size, data.channels, data.classes)
    have = (model.image_size, spec.in_channels, spec.classes)
    if wanted != have:
        raise AttndslError(
            f"model '{spec.name}' takes {have[1]}×{have[0]}×{have[0]} images into "
            f"{have[2]} classes; the task ({describe_task(task)}) has {wanted[1]}×{wanted[0]}"
            f"×{wanted[0]} images and {wanted[2]} classes")


def training_settings(space: SearchSpace, backbone_path=None, *, epochs: int | None = None,
                      lr: float | None = None) -> tuple[Training, str]:
    """The space's training settings (searched values at their defaults), replaced by the
    values a front design was trained with when its weights file (beside the pareto YAML)
    records them, then by explicit epochs / lr. Returns the settings and where they came
    from, in words."""
    config = space.fixed().training
    source = "the space's training settings (searched values at their defaults)"
    if backbone_path is not None:
        weights = Path(backbone_path).with_suffix(".pt")
        if weights.is_file():
            meta = read_meta(weights)
            if meta.get("training"):
                config = Training.model_validate(meta["training"])
                source = f"the settings the search trained it with ({weights.name})"
    updates = {k: v for k, v in (("epochs", epochs), ("lr", lr)) if v is not None}
    if updates:
        config = Training.model_validate({**config.model_dump(), **updates})
        source += " with " + ", ".join(f"{k}={v}" for k, v in updates.items())
    return config, source


def train_design(backbone, space_or_path, *, epochs: int | None = None,
                 lr: float | None = None, init=None, out=None, device=None,
                 on_epoch: Callable[[int, float, float], None] | None = None,
                 on_step: Callable[[int, int], None] | None = None) -> tuple[BackboneNet, float]:
    """Train a design (a backbone YAML path — a search's pareto file — text, dict or
    Backbone) on the space's task with its training settings; `init`: start from a model
    file's weights (a front model, to train it longer). Saves to `out` (a model file for
    `attndsl.load` / `attndsl evaluate`) and returns (model, final validation accuracy)."""
    space = space_or_path if isinstance(space_or_path, SearchSpace) else load_space(space_or_path)
    path = backbone if isinstance(backbone, (str, os.PathLike)) and _is_file(backbone) else None
    spec = load_backbone(backbone)
    config, _ = training_settings(space, path, epochs=epochs, lr=lr)
    task = space.file.task
    data = load_task(task)
    device = default_device(device)
    torch.manual_seed(config.seed)
    model = BackboneNet(spec, image_size=data.image_size,
                        backend=training_backend(config, device), device=device)
    _check_fits(model, data, task)
    if init is not None:
        start = _model(init)
        try:
            model.load_state_dict(start.state_dict())
        except RuntimeError as exc:
            raise AttndslError(f"{init}: its weights do not fit '{spec.name}' "
                               f"({str(exc).splitlines()[0]})") from None

    def epoch_done(epoch: int, accuracy: float, loss: float) -> bool:
        if on_epoch is not None:
            on_epoch(epoch, accuracy, loss)
        return True

    accuracy = train_loop(model, data, config, device=device, on_epoch=epoch_done,
                          on_step=on_step)
    model.eval()
    if out is not None:
        model.save(out, meta={"accuracy": accuracy, "epochs": config.epochs,
                              "task": task.model_dump(), "training": config.model_dump()})
    return model, accuracy
