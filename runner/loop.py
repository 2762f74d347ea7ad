"""The plain PyTorch training loop. It knows nothing of Hydra or MLflow: it takes torch
objects and in-memory data, and reports each epoch's metrics to a callback."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from runner import renamed_in
from runner.components.datasets.base import DataSplits
from runner.errors import RunError
from runner.training.early_stopping import Monitor
from runner.training.memory import available_host_memory
from runner.training.metrics import TaskMetrics, align

EpochCallback = Callable[[int, dict[str, float]], None]
EVAL_CHUNK = 8192  # validation batch size: large, since no gradients are kept


class NonFiniteLoss(RunError):
    """The training loss became nan or inf."""


@dataclass
class TrainingParts:
    """The parts training uses besides the data: model, loss, optimizer, scheduler, device
    and settings (passive: `fit` trains them)."""

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
    on_nan: str = "stop"  # stop: fail the run; skip: drop batches whose loss is not finite
    data_path: str = "auto"  # memory, loader, or auto (see choose_data_path)
    num_workers: int = 0  # DataLoader workers on the loader path
    monitor: Monitor | None = None  # the best epoch of a validation metric; early stopping


MEMORY_SHARE = 0.5  # auto keeps data on an accelerator only if it takes at most this share
HOST_MEMORY_SHARE = 0.25  # on the CPU: each epoch's shuffled copy must fit beside the data


def choose_data_path(setting: str, data: DataSplits, device: torch.device) -> str:
    """`memory` (tensors on the device, randperm slices) or `loader` (a DataLoader streaming
    batches from host memory). Auto picks memory unless the training data is too large for
    it: more than MEMORY_SHARE of an accelerator's free memory, or on the CPU more than
    HOST_MEMORY_SHARE of the RAM still available (the memory path gathers a shuffled copy of
    the whole training set each epoch; the loader path copies one batch at a time)."""
    if setting != "auto":
        return setting
    size = sum(t.numel() * t.element_size() for t in (data.x_train, data.y_train))
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return "memory" if size <= MEMORY_SHARE * free else "loader"
    available = available_host_memory()
    if device.type != "cpu" or available is None:
        return "memory"
    return "memory" if size <= HOST_MEMORY_SHARE * available else "loader"


def epoch_batches(
    x: torch.Tensor,
    y: torch.Tensor,
    order: torch.Tensor,
    batch_size: int,
    path: str,
    device: torch.device,
    num_workers: int = 0,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch's batches in `order`: the same batches, in the same order, on both paths."""
    if path == "memory":
        # One gather per epoch; each batch is then a view, not a per-step copy.
        x_epoch, y_epoch = x[order], y[order]
        for start in range(0, len(order), batch_size):
            yield x_epoch[start : start + batch_size], y_epoch[start : start + batch_size]
        return
    from torch.utils.data import BatchSampler, DataLoader, TensorDataset

    # Each batch is one indexing of the tensors by the batch's indices (no per-sample
    # __getitem__ and collate); the indices follow the epoch's permutation, as on the
    # memory path.
    loader = DataLoader(
        TensorDataset(x, y),
        sampler=BatchSampler(order.tolist(), batch_size, drop_last=False),
        batch_size=None,
        num_workers=num_workers,
        pin_memory=device.type == "cuda",
    )
    for xb, yb in loader:
        yield xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)


class L1Penalty:
    """strength * sum of |w| over `params`, added to the loss.

    Applied as its gradient, strength * sign(w), added to each .grad after backward: the
    same gradients autograd gives for the penalty term (bit for bit: float addition is
    commutative), without its forward and backward nodes, a large share of a small
    model's step. Its value (taken before each step, from the weights that step used)
    only feeds the logged train_total_loss.
    """

    def __init__(self, params: Sequence[nn.Parameter], strength: float) -> None:
        self.params = list(params)
        self.strength = strength
        # Views that share the parameters' storage (so they see every update) outside autograd.
        self._weights = [p.detach() for p in self.params]
        self._norms: list[torch.Tensor] = []

    def add_gradient(self) -> None:
        """grad += strength * sign(w) for every penalized parameter."""
        for p in self.params:
            if p.grad is None:  # not reached by the loss: the penalty's gradient alone
                p.grad = torch.zeros_like(p)
        grads = [p.grad for p in self.params]
        torch._foreach_add_(grads, torch._foreach_sign(self._weights), alpha=self.strength)

    def record(self) -> None:
        """Note this step's penalty value (kept as tensors: no sync per step)."""
        self._norms.extend(torch._foreach_norm(self._weights, 1))

    def take_values(self) -> torch.Tensor:
        """The recorded steps' penalty values since the last call, one per step."""
        norms = torch.stack(self._norms).view(-1, len(self.params))
        self._norms.clear()
        return self.strength * norms.sum(dim=1)


def clear_grads(optimizer: torch.optim.Optimizer, params: Sequence[torch.Tensor]) -> None:
    """optimizer.zero_grad(set_to_none=True), without its per-call profiling wrapper
    (costly for a small model's step) unless the optimizer defines its own."""
    if type(optimizer).zero_grad is not torch.optim.Optimizer.zero_grad:
        optimizer.zero_grad(set_to_none=True)
        return
    for p in params:
        p.grad = None


@torch.inference_mode()
def evaluate(
    model: nn.Module, loss_fn: nn.Module, metrics: TaskMetrics, x: torch.Tensor, y: torch.Tensor
) -> tuple[dict[str, float], torch.Tensor]:
    """Loss and task metrics over (x, y) in eval mode; also returns the raw outputs."""
    model.eval()
    if len(x) == 0:  # no validation rows (a table held out for test only)
        return {}, x.new_zeros((0,))
    outputs = torch.cat([model(x[i : i + EVAL_CHUNK]) for i in range(0, len(x), EVAL_CHUNK)])
    if len(y) == 0:
        return {}, outputs
    loss = loss_fn(align(outputs, y), y).item()
    return {"loss": loss, **metrics.compute(outputs, y)}, outputs


def batch_weights(n: int, batch_size: int, device: torch.device) -> torch.Tensor:
    """Each batch's share of an epoch's n rows, in batch order (the last may be smaller):
    an epoch's train loss is its batches' losses weighted so."""
    sizes = [min(batch_size, n - start) for start in range(0, n, batch_size)]
    return torch.tensor(sizes, dtype=torch.float32, device=device) / n


def non_finite_loss(epoch: int, loss: float, batch_losses: torch.Tensor) -> NonFiniteLoss:
    """The error for an epoch whose train loss is not finite, naming its first batch whose
    loss was not (batch_losses: the epoch's per-batch losses, in order)."""
    values = batch_losses.tolist()
    batch = next(i for i, v in enumerate(values) if not math.isfinite(v)) + 1
    return NonFiniteLoss(f"loss became {loss} at epoch {epoch}, batch {batch}")


def epoch_row(
    train_loss: float,
    train_metrics: dict[str, float],
    val_metrics: dict[str, float],
    penalty: float | None = None,
    lr: float | None = None,
) -> dict[str, float]:
    """An epoch's logged metrics: train_loss, train_total_loss (loss + L1 penalty, only
    with a penalty), train_* and val_* metrics, and lr (only with a schedule)."""
    row = {"train_loss": train_loss}
    if penalty is not None:  # without L1 the total is the loss itself
        row["train_total_loss"] = train_loss + penalty
    row |= {f"train_{k}": v for k, v in train_metrics.items()}
    row |= {f"val_{k}": v for k, v in val_metrics.items()}
    if lr is not None:  # a constant rate is a param, not a curve
        row["lr"] = lr
    return row


def fit(
    parts: TrainingParts,
    data: DataSplits,
    generator: torch.Generator,
    on_epoch: EpochCallback | None = None,
    start_epoch: int = 1,
    history: list[dict[str, float]] | None = None,
) -> list[dict[str, float]]:
    """Train for parts.epochs epochs, or until parts.monitor stops it early; returns each
    epoch's metrics (also sent to on_epoch).

    On the memory path, batches are cut from tensors held on the device with a seeded
    randperm: no per-sample indexing or collation. The loader path streams the same batches
    from host memory. Train metrics come from the epoch's own batches, as in the book.
    """
    t = parts
    model = t.model.to(t.device)  # a no-op when setup already placed it
    path = choose_data_path(t.data_path, data, t.device)
    host = torch.device("cpu") if path == "loader" else t.device
    x_train, y_train = data.x_train.to(host), data.y_train.to(host)
    x_val, y_val = data.x_val.to(t.device), data.y_val.to(t.device)
    n = len(x_train)
    history = list(history or [])
    weights = batch_weights(n, t.batch_size, t.device)
    params = [p for group in t.optimizer.param_groups for p in group["params"]]
    penalty = L1Penalty(t.l1_params, t.l1_strength) if t.l1_strength and t.l1_params else None
    if t.monitor is not None and t.monitor.stopped:  # (resumed after it stopped early)
        return history
    for epoch in range(start_epoch, t.epochs + 1):
        model.train()
        order = torch.randperm(n, generator=generator).to(host)
        losses, outputs, targets = [], [], []
        skipped = 0
        batches = epoch_batches(
            x_train, y_train, order, t.batch_size, path, t.device, t.num_workers
        )
        for xb, yb in batches:
            out = model(xb)
            loss = t.loss_fn(align(out, yb), yb)
            if t.on_nan == "skip" and not torch.isfinite(loss):  # a sync per step, only here
                skipped += 1
                continue
            clear_grads(t.optimizer, params)
            loss.backward()
            if penalty is not None:
                penalty.add_gradient()
                penalty.record()
            if t.grad_clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip)
            t.optimizer.step()
            # Kept as tensors: no device sync per step; summed once per epoch.
            losses.append(loss.detach())
            outputs.append(out.detach())
            targets.append(yb)
        if not losses:
            raise NonFiniteLoss(f"every batch of epoch {epoch} had a non-finite loss")
        if skipped:  # weights must follow the batches that were kept
            kept = torch.stack([o.new_tensor(float(len(o))) for o in outputs])
            weights_epoch = kept / kept.sum()
        else:
            weights_epoch = weights
        batch_losses = torch.stack(losses)
        # Summed in float64: logged values carry no float32 rounding noise.
        train_loss = float(batch_losses.double() @ weights_epoch.double())
        if not math.isfinite(train_loss):
            raise non_finite_loss(epoch, train_loss, batch_losses)
        penalty_mean = None
        if penalty is not None:
            penalty_mean = float(penalty.take_values().double() @ weights_epoch.double())
        train_metrics = t.metrics.compute(torch.cat(outputs), torch.cat(targets))
        val, _ = evaluate(model, t.loss_fn, t.metrics, x_val, y_val)
        lr = t.optimizer.param_groups[0]["lr"] if t.scheduler is not None else None
        row = epoch_row(train_loss, train_metrics, val, penalty_mean, lr)
        if t.scheduler is not None:
            t.scheduler.step()
        if t.on_nan == "skip":
            row["skipped_batches"] = float(skipped)
        history.append(row)
        if t.monitor is not None:  # before on_epoch: it keeps the best epoch's weights
            t.monitor.update(epoch, row)
        if on_epoch is not None:
            on_epoch(epoch, row)
        if t.monitor is not None and t.monitor.stopped:
            break
    return history


__getattr__ = renamed_in(__name__)  # names this module had before (runner.RENAMED)
