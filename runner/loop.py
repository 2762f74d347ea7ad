"""The plain PyTorch training loop. It knows nothing of Hydra or MLflow: it takes torch
objects and in-memory data, and reports each epoch's metrics to a callback."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from runner.datasets.base import DataSplits
from runner.metrics import TaskMetrics, align

EpochCallback = Callable[[int, dict[str, float]], None]
EVAL_CHUNK = 8192  # validation batch size: large, since no gradients are kept


class NonFiniteLoss(RuntimeError):
    """The training loss became nan or inf."""


@dataclass
class Trainer:
    """Everything the loop needs besides the data."""

    model: nn.Module
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    metrics: TaskMetrics
    device: torch.device
    epochs: int
    batch_size: int
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None
    l1_params: Sequence[nn.Parameter] = field(default_factory=list)
    l1_strength: float = 0.0
    grad_clip: float | None = None


def l1_penalty(params: Sequence[nn.Parameter], strength: float) -> torch.Tensor | None:
    """strength * sum of |w| over `params` (None when there is nothing to penalize)."""
    if strength == 0 or not params:
        return None
    return strength * sum(p.abs().sum() for p in params)


@torch.inference_mode()
def evaluate(
    model: nn.Module, loss_fn: nn.Module, metrics: TaskMetrics, x: torch.Tensor, y: torch.Tensor
) -> tuple[dict[str, float], torch.Tensor]:
    """Loss and task metrics over (x, y) in eval mode; also returns the raw outputs."""
    model.eval()
    outputs = torch.cat([model(x[i : i + EVAL_CHUNK]) for i in range(0, len(x), EVAL_CHUNK)])
    if len(y) == 0:
        return {}, outputs
    loss = loss_fn(align(outputs, y), y).item()
    return {"loss": loss, **metrics.compute(outputs, y)}, outputs


def fit(
    trainer: Trainer,
    data: DataSplits,
    generator: torch.Generator,
    on_epoch: EpochCallback | None = None,
) -> list[dict[str, float]]:
    """Train for trainer.epochs epochs; returns each epoch's metrics (also sent to on_epoch).

    Batches are cut from tensors held on the device with a seeded randperm: no per-sample
    indexing or collation. Train metrics come from the epoch's own batches, as in the book.
    """
    t = trainer
    model = t.model.to(t.device)  # a no-op when setup already placed it
    x_train, y_train = data.x_train.to(t.device), data.y_train.to(t.device)
    x_val, y_val = data.x_val.to(t.device), data.y_val.to(t.device)
    n = len(x_train)
    history = []
    sizes = [min(t.batch_size, n - start) for start in range(0, n, t.batch_size)]
    weights = torch.tensor(sizes, dtype=torch.float32, device=t.device) / n
    for epoch in range(1, t.epochs + 1):
        model.train()
        order = torch.randperm(n, generator=generator).to(t.device)
        # One gather per epoch; each batch is then a view, not a per-step copy.
        x_epoch, y_epoch = x_train[order], y_train[order]
        losses, penalties, outputs = [], [], []
        for start in range(0, n, t.batch_size):
            xb, yb = x_epoch[start : start + t.batch_size], y_epoch[start : start + t.batch_size]
            out = model(xb)
            loss = t.loss_fn(align(out, yb), yb)
            penalty = l1_penalty(t.l1_params, t.l1_strength)
            total = loss if penalty is None else loss + penalty
            t.optimizer.zero_grad(set_to_none=True)
            total.backward()
            if t.grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
            t.optimizer.step()
            # Kept as tensors: no device sync per step; summed once per epoch.
            losses.append(loss.detach())
            if penalty is not None:
                penalties.append(penalty.detach())
            outputs.append(out.detach())
        train_loss = float(torch.stack(losses) @ weights)
        if not math.isfinite(train_loss):
            batch = next(i for i, v in enumerate(losses) if not torch.isfinite(v)) + 1
            raise NonFiniteLoss(f"loss became {train_loss} at epoch {epoch}, batch {batch}")
        penalty_mean = float(torch.stack(penalties) @ weights) if penalties else 0.0
        row = {"train_loss": train_loss, "train_total_loss": train_loss + penalty_mean}
        train_metrics = t.metrics.compute(torch.cat(outputs), y_epoch)
        row |= {f"train_{k}": v for k, v in train_metrics.items()}
        val, _ = evaluate(model, t.loss_fn, t.metrics, x_val, y_val)
        row |= {f"val_{k}": v for k, v in val.items()}
        row["lr"] = t.optimizer.param_groups[0]["lr"]
        if t.scheduler is not None:
            t.scheduler.step()
        history.append(row)
        if on_epoch is not None:
            on_epoch(epoch, row)
    return history
