"""Training a backbone on a classification task: AdamW, a per-step cosine schedule with
linear warm-up, label smoothing. The schedule always spans `epochs`, so a run stopped at
epoch 3 of 9 has seen exactly what the first 3 epochs of the full run saw — which is what
makes rung accuracies of pruned and completed trials comparable."""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from pydantic import Field

from ..lang import models as m


class Training(m.Component):
    epochs: m.Int = Field(default=9, ge=1, le=10_000)
    batch_size: m.Int = Field(default=64, ge=1, le=65_536)
    lr: m.Float = Field(default=2e-3, gt=0, le=10)
    weight_decay: m.Float = Field(default=0.05, ge=0, le=10)
    label_smoothing: m.Float = Field(default=0.1, ge=0, lt=1)
    warmup_epochs: m.Float = Field(default=1.0, ge=0)
    # eager | inductor | auto: auto trains with the eager graph on a CPU (torch.compile's
    # start-up, ~15 s per process plus seconds per graph on 2 cores, costs more than a
    # short proxy run gains) and with inductor on a GPU. The math is identical either way.
    backend: Literal["auto", "eager", "inductor"] = "auto"
    seed: m.Int = Field(default=0, ge=0)


class NonFiniteLoss(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclass
class Dataset:
    """A classification task's tensors: images (N, C, S, S) float32, labels (N,) int64."""
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    classes: int
    name: str = ""

    @property
    def image_size(self) -> int:
        return int(self.train_x.shape[-1])

    @property
    def channels(self) -> int:
        return int(self.train_x.shape[1])


def training_backend(config: Training, device: torch.device) -> str:
    if config.backend != "auto":
        return config.backend
    return "inductor" if device.type == "cuda" else "eager"


@torch.no_grad()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256,
             device=None) -> float:
    """Top-1 accuracy on (x, y)."""
    was_training = model.training
    model.eval()
    correct = 0
    for start in range(0, len(x), batch_size):
        xb = x[start:start + batch_size].to(device)
        yb = y[start:start + batch_size].to(device)
        correct += int((model(xb).argmax(-1) == yb).sum())
    model.train(was_training)
    return correct / max(1, len(x))


def train(model: torch.nn.Module, data: Dataset, config: Training, *, device=None,
          on_epoch: Callable[[int, float, float], bool] | None = None,
          step_guard: Callable[[], contextlib.AbstractContextManager] | None = None,
          on_step: Callable[[int, int], None] | None = None,
          timings: dict | None = None) -> float:
    """Train for `config.epochs` epochs; after each, `on_epoch(epoch, val_accuracy,
    train_loss)` (1-based epoch) may return False to stop. Returns the last validation
    accuracy. Raises NonFiniteLoss when the loss is NaN/inf. `step_guard()` wraps each
    step (the search's host lock: no step runs while a neighbour measures throughput);
    `on_step(step, total)` follows each step (a progress bar). `timings`: seconds spent
    training and validating are added to its "train" and "eval" (a trial's breakdown)."""
    guard = step_guard or contextlib.nullcontext
    device = torch.device(device or "cpu")
    generator = torch.Generator().manual_seed(config.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(data.train_x) / config.batch_size)
    total = steps_per_epoch * config.epochs
    warmup = int(config.warmup_epochs * steps_per_epoch)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    accuracy = 0.0
    timings = timings if timings is not None else {}
    for epoch in range(1, config.epochs + 1):
        started = time.perf_counter()
        model.train()
        order = torch.randperm(len(data.train_x), generator=generator)
        running = 0.0
        for start in range(0, len(order), config.batch_size):
            idx = order[start:start + config.batch_size]
            xb, yb = data.train_x[idx].to(device), data.train_y[idx].to(device)
            with guard():
                loss = F.cross_entropy(model(xb), yb, label_smoothing=config.label_smoothing)
                if not torch.isfinite(loss):
                    raise NonFiniteLoss(f"training loss is {loss.item()} at epoch {epoch}")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            schedule.step()
            running += loss.item() * len(idx)
            if on_step is not None:
                on_step(schedule.last_epoch, total)
        validating = time.perf_counter()
        accuracy = evaluate(model, data.val_x, data.val_y, device=device)
        timings["train"] = timings.get("train", 0.0) + validating - started
        timings["eval"] = timings.get("eval", 0.0) + time.perf_counter() - validating
        if on_epoch is not None and on_epoch(epoch, accuracy, running / len(order)) is False:
            break
    return accuracy
