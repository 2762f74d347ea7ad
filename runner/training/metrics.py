"""Task-aware metrics: accuracy for classification; MSE/RMSE/MAE/R2 (and, when chosen,
d2l's log-RMSE) for regression."""

from __future__ import annotations

import torch

# What a data config may choose as its primary metric (`data.metric`), per task.
METRICS = {
    "binary": ("acc",),
    "multiclass": ("acc",),
    "regression": ("rmse", "mse", "mae", "r2", "log_rmse"),
}
DEFAULT_METRIC = {"binary": "acc", "multiclass": "acc", "regression": "rmse"}
# What `compute` gives for each task, besides the loss (log_rmse too when it is primary).
VALIDATION_METRICS = {
    "binary": ("acc",), "multiclass": ("acc",), "regression": ("mse", "rmse", "mae", "r2"),
}  # fmt: skip


def align(output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Drop a trailing width-1 output dimension so (N, 1) outputs meet (N,) targets."""
    if output.dim() == target.dim() + 1 and output.shape[-1] == 1:
        return output.squeeze(-1)
    return output


def primary_metric(task: str, metric: str | None = None) -> str:
    """The validation metric that says how good a run is: the data's choice, else accuracy,
    or RMSE for regression."""
    return f"val_{metric or DEFAULT_METRIC[task]}"


class TaskMetrics:
    """Turns model outputs into predictions and metrics, as the task and loss dictate."""

    def __init__(
        self,
        task: str,
        output_kind: str,
        target_mean: float = 0.0,
        target_std: float = 1.0,
        metric: str | None = None,
    ) -> None:
        self.task = task
        self.output_kind = output_kind
        self.target_mean = target_mean
        self.target_std = target_std
        self.primary = metric or DEFAULT_METRIC[task]  # the metric that says how good a run is

    def predict(self, output: torch.Tensor) -> torch.Tensor:
        """Class ids for classification, values in the data's units for regression."""
        return self.predict_each(output.unsqueeze(0)).reshape(-1)

    def probabilities(self, output: torch.Tensor) -> torch.Tensor:
        """Each class's probability for a classification's outputs: [rows, classes]."""
        if self.task == "binary":
            p = output.reshape(-1)
            p = p if self.output_kind == "probability" else torch.sigmoid(p)
            return torch.stack([1 - p, p], dim=1)
        if self.task == "multiclass":
            # softmax of log-probabilities gives the probabilities back, as of logits
            return output if self.output_kind == "probability" else output.softmax(dim=-1)
        raise ValueError("a regression has no class probabilities")

    def predict_each(self, outputs: torch.Tensor) -> torch.Tensor:
        """`predict` for each of K stacked models' outputs ([K, rows, ...]): [K, rows]."""
        k = len(outputs)
        if self.task == "binary":
            threshold = 0.5 if self.output_kind == "probability" else 0.0
            return (outputs.reshape(k, -1) >= threshold).long()
        if self.task == "multiclass":
            return outputs.argmax(dim=-1).reshape(k, -1)
        return outputs.reshape(k, -1) * self.target_std + self.target_mean

    def compute(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
        """Metrics of `output` against `target` (empty tensors give no metrics)."""
        if len(target) == 0:
            return {}
        pred = self.predict(output)
        if self.task != "regression":  # counted, then divided in float64: 0.97, not 0.9700000286
            return {"acc": (pred == target.long()).sum().item() / len(target)}
        true = (target.reshape(-1) * self.target_std + self.target_mean).double()
        pred = pred.double()
        err = pred - true
        mse = err.pow(2).mean().item()
        var = (true - true.mean()).pow(2).mean().item()
        metrics = {"mse": mse, "rmse": mse**0.5, "mae": err.abs().mean().item()}
        if var > 0:
            metrics["r2"] = 1.0 - mse / var
        if self.primary == "log_rmse":
            metrics["log_rmse"] = log_rmse(pred, true)
        return metrics

    def compute_each(
        self, outputs: torch.Tensor, target: torch.Tensor, shared: bool = False
    ) -> list[dict[str, float]]:
        """`compute` for each of K stacked models at once: `outputs` is [K, rows, ...],
        `target` [K, rows, ...] (each model its own) or, `shared`, [rows, ...]."""
        k = len(outputs)
        rows = len(target) if shared else (target.shape[1] if target.dim() > 1 else 0)
        if rows == 0:
            return [{} for _ in range(k)]
        targets = target.reshape(1 if shared else k, -1)
        pred = self.predict_each(outputs)
        if self.task != "regression":
            counts = (pred == targets.long()).sum(dim=1).tolist()
            return [{"acc": count / rows} for count in counts]
        true = (targets * self.target_std + self.target_mean).double()
        pred = pred.double()
        err = pred - true
        mse = err.pow(2).mean(dim=1).tolist()
        mae = err.abs().mean(dim=1).tolist()
        var = (true - true.mean(dim=1, keepdim=True)).pow(2).mean(dim=1).expand(k).tolist()
        logs = (
            _squared_log_errors(pred, true).mean(dim=1).sqrt().tolist()
            if self.primary == "log_rmse"
            else None
        )
        each = []
        for i in range(k):
            metrics = {"mse": mse[i], "rmse": mse[i] ** 0.5, "mae": mae[i]}
            if var[i] > 0:
                metrics["r2"] = 1.0 - mse[i] / var[i]
            if logs is not None:
                metrics["log_rmse"] = logs[i]
            each.append(metrics)
        return each


def log_rmse(pred: torch.Tensor, true: torch.Tensor) -> float:
    """d2l's log-RMSE (ch. 5.7): RMSE of the logs, predictions clamped to at least 1, so
    relative errors count alike for cheap and dear targets."""
    return torch.sqrt(_squared_log_errors(pred, true).mean()).item()


def _squared_log_errors(pred: torch.Tensor, true: torch.Tensor) -> torch.Tensor:
    """(log pred - log true)^2 per value, predictions clamped to at least 1."""
    return (pred.clamp(min=1.0).log() - true.clamp(min=1e-12).log()).pow(2)
