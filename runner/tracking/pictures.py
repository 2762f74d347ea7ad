"""What the plots need, as plain arrays. Computed where the model is (the training
process); drawn where the tracker lives (`runner.tracking.plots`, maybe in the companion)."""

from __future__ import annotations

from typing import Any

import torch

from runner.components.datasets import DataSplits
from runner.loop import TrainingParts, evaluate
from runner.registry import LOSSES

GRID_POINTS = 200  # per axis of a 2-D decision-region plot
MAX_TRAIN_POINTS = 2000  # training points shown on predicted-vs-true: enough to see a trend


@torch.inference_mode()
def picture_data(
    parts: TrainingParts,
    data: DataSplits,
    history: list[dict[str, float]],
    *,
    model_name: str = "",
    loss_name: str = "",
    target_name: str = "",
    kept_epoch: int | None = None,
) -> dict[str, Any]:
    """The payload of `runner.tracking.plots.draw`: history, names for titles and axes, the held-out
    split's scores, and per task decision regions (2-D inputs), a confusion matrix or
    predicted-vs-true values (validation rows, else test rows); all of the model's weights
    as they are now (`kept_epoch`: the epoch they are from, when not the last)."""
    t = parts
    pictures: dict[str, Any] = {
        "history": history,
        "primary": t.metrics.primary,
        "task": data.task,
        "model": model_name,
        "loss": loss_name or _loss_name(t.loss_fn),
        "target": target_name,
        "kept_epoch": kept_epoch if kept_epoch != len(history) else None,
        # the loss is computed on the standardized target; metrics are in the data's units
        "standardized": data.task == "regression"
        and (data.target_mean != 0.0 or data.target_std != 1.0),
    }
    if data.input_shape == (2,) and data.task != "regression":
        pictures["regions"] = _decision_regions(t, data)
    split, x, y = _held_out(data)
    if split:
        # both on the model's device: a loss cannot mix a GPU output with a CPU target
        scores, outputs = evaluate(t.model, t.loss_fn, t.metrics, x.to(t.device), y.to(t.device))
        pictures["held_out"] = split
        pictures["scores"] = {f"{split}_{k}": v for k, v in scores.items()}
        pred = t.metrics.predict(outputs.cpu())
        if data.task == "regression":
            pictures["regression"] = {
                "y_true": _in_units(y, data).numpy(),
                "y_pred": pred.numpy(),
                "split": split,
                **_train_predictions(t, data),
            }
        else:
            pictures["confusion"] = {
                "y_true": y.long().numpy(),
                "y_pred": pred.numpy(),
                "class_names": data.class_names,
                "split": split,
            }
    return pictures


def _loss_name(loss_fn: torch.nn.Module) -> str:
    """The registry name of the loss's class (bce, cross_entropy, ...), else the class name."""
    for entry in LOSSES:
        if entry.target is type(loss_fn):
            return entry.name
    return type(loss_fn).__name__


def _held_out(data: DataSplits) -> tuple[str, torch.Tensor, torch.Tensor]:
    """The split the pictures judge the model on: validation, else test (a table that
    validates on nothing), else none."""
    if len(data.y_val):
        return "val", data.x_val, data.y_val
    if data.x_test is not None and data.y_test is not None and len(data.y_test):
        return "test", data.x_test, data.y_test
    return "", data.x_val, data.y_val


def _in_units(y: torch.Tensor, data: DataSplits) -> torch.Tensor:
    """A regression target back in the data's own units."""
    return y.reshape(-1) * data.target_std + data.target_mean


def _train_predictions(t: TrainingParts, data: DataSplits) -> dict[str, Any]:
    """Training targets and predictions (evenly thinned to MAX_TRAIN_POINTS), in data units."""
    step = max(1, -(-len(data.y_train) // MAX_TRAIN_POINTS))
    x, y = data.x_train[::step], data.y_train[::step]
    _, outputs = evaluate(t.model, t.loss_fn, t.metrics, x.to(t.device), y.to(t.device))
    pred = t.metrics.predict(outputs.cpu())
    return {"train_true": _in_units(y, data).numpy(), "train_pred": pred.numpy()}


def _decision_regions(t: TrainingParts, data: DataSplits) -> dict[str, Any]:
    """The predicted class over a grid covering the points, with the points themselves."""
    points = torch.cat([data.x_train, data.x_val])
    lo, hi = points.min(0).values - 0.1, points.max(0).values + 0.1
    gx, gy = torch.meshgrid(
        torch.linspace(lo[0], hi[0], GRID_POINTS),
        torch.linspace(lo[1], hi[1], GRID_POINTS),
        indexing="xy",
    )
    grid = torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1).to(t.device)
    t.model.eval()
    pred = t.metrics.predict(t.model(grid).cpu()).reshape(gx.shape)
    return {
        "grid_x": gx.numpy(), "grid_y": gy.numpy(), "grid_pred": pred.numpy(),
        "x_train": data.x_train.numpy(), "y_train": data.y_train.numpy(),
        "x_val": data.x_val.numpy(), "y_val": data.y_val.numpy(),
        "class_names": data.class_names, "feature_names": data.feature_names,
    }  # fmt: skip
