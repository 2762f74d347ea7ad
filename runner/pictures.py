"""What the plots need, as plain arrays. Computed where the model is (the training
process); drawn where the tracker lives (`runner.plots`, maybe in the companion)."""

from __future__ import annotations

from typing import Any

import torch

from runner.datasets import DataSplits
from runner.loop import Trainer, evaluate

GRID_POINTS = 200  # per axis of a 2-D decision-region plot


@torch.inference_mode()
def picture_data(
    trainer: Trainer, data: DataSplits, history: list[dict[str, float]]
) -> dict[str, Any]:
    """The payload of `runner.plots.draw`: history, and per task decision regions (2-D
    inputs), a confusion matrix or predicted-vs-true values on the validation set."""
    t = trainer
    pictures: dict[str, Any] = {"history": history, "primary": t.metrics.primary}
    if data.input_shape == (2,) and data.task != "regression":
        pictures["regions"] = _decision_regions(t, data)
    if len(data.y_val):
        _, outputs = evaluate(t.model, t.loss_fn, t.metrics, data.x_val.to(t.device), data.y_val)
        pred = t.metrics.predict(outputs.cpu())
        if data.task == "regression":
            true = data.y_val * data.target_std + data.target_mean
            pictures["regression"] = {"y_true": true.numpy(), "y_pred": pred.numpy()}
        else:
            pictures["confusion"] = {
                "y_true": data.y_val.long().numpy(),
                "y_pred": pred.numpy(),
                "class_names": data.class_names,
            }
    return pictures


def _decision_regions(t: Trainer, data: DataSplits) -> dict[str, Any]:
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
    }  # fmt: skip
