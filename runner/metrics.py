"""Task-aware metrics: accuracy for classification, MSE/RMSE/MAE/R2 for regression."""

from __future__ import annotations

import torch


def align(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Drop a trailing width-1 output dimension so (N, 1) outputs meet (N,) targets."""
    if output.dim() == target.dim() + 1 and output.shape[-1] == 1:
        return output.squeeze(-1)
    return output


def primary_metric(task: str) -> str:
    """The validation metric that says how good a run is: accuracy, or RMSE for regression."""
    return "val_rmse" if task == "regression" else "val_acc"


class TaskMetrics:
    """Turns model outputs into predictions and metrics, as the task and loss dictate."""

    def __init__(
        self, task: str, output_kind: str, target_mean: float = 0.0, target_std: float = 1.0
    ) -> None:
        self.task = task
        self.output_kind = output_kind
        self.target_mean = target_mean
        self.target_std = target_std

    @property
    def primary(self) -> str:
        """The metric that says how good a run is: accuracy, or RMSE for regression."""
        return "rmse" if self.task == "regression" else "acc"

    def predict(self, output: torch.Tensor) -> torch.Tensor:
        """Class ids for classification, values in the data's units for regression."""
        if self.task == "binary":
            threshold = 0.5 if self.output_kind == "probability" else 0.0
            return (output.reshape(-1) >= threshold).long()
        if self.task == "multiclass":
            return output.argmax(dim=-1)
        return output.reshape(-1) * self.target_std + self.target_mean

    def compute(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
        """Metrics of `output` against `target` (empty tensors give no metrics)."""
        if len(target) == 0:
            return {}
        pred = self.predict(output)
        if self.task != "regression":
            return {"acc": (pred == target.long()).float().mean().item()}
        true = target.reshape(-1) * self.target_std + self.target_mean
        err = pred - true
        mse = err.pow(2).mean().item()
        var = (true - true.mean()).pow(2).mean().item()
        metrics = {"mse": mse, "rmse": mse**0.5, "mae": err.abs().mean().item()}
        if var > 0:
            metrics["r2"] = 1.0 - mse / var
        return metrics
