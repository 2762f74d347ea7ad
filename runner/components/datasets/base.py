"""The in-memory data contract between dataset loaders and the training loop."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

TASKS = ("binary", "multiclass", "regression")


@dataclass
class DataSplits:
    """Train/validation (optionally test) tensors plus what the loop must know about the task.

    Targets: float 0/1 for binary, int64 class ids for multiclass, float for regression.
    `target_mean`/`target_std` undo a standardized regression target so metrics are
    reported in the data's own units.
    """

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    task: str
    num_outputs: int
    x_test: torch.Tensor | None = None
    y_test: torch.Tensor | None = None
    feature_names: list[str] | None = None
    class_names: list[str] | None = None
    target_mean: float = 0.0
    target_std: float = 1.0
    encoder: Any = None  # raw rows -> features, fitted on the training rows (tables)
    raw_example: Any = None  # a few raw training rows (a DataFrame), for the logged model

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample, without the batch dimension."""
        return tuple(self.x_train.shape[1:])

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
