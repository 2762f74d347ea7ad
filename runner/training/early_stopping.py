"""The monitored validation metric: which epoch was best, and when to stop early.

As Keras' EarlyStopping and Lightning's: an epoch improves on the best when its value beats
it by more than `min_delta` (lower for losses and errors, higher for accuracy and R²); after
`patience` epochs in a row without an improvement, training stops (patience None: never).
A tie (the same value, as an accuracy on few validation rows often is) counts as an
improvement when the epoch's validation loss is lower: the earliest of several epochs at
100% is rarely the one to keep.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

LOWER_IS_BETTER = ("loss", "mse", "rmse", "mae", "log_rmse")


def lower_is_better(metric: str) -> bool:
    """Whether a smaller value of `metric` is better (losses and errors)."""
    return metric.endswith(LOWER_IS_BETTER)


@dataclass
class Monitor:
    """The best epoch so far of one validation metric, and whether to stop."""

    metric: str  # a key of the loop's epoch rows, e.g. val_acc
    patience: int | None = None
    min_delta: float = 0.0
    best: float | None = None
    best_epoch: int | None = None
    bad_epochs: int = 0  # epochs since the last improvement
    stopped_epoch: int | None = None  # the epoch training stopped after
    keep_best: bool = False  # the run ends with the best epoch's weights (trainer.keep)
    best_loss: float | None = None  # the best epoch's validation loss (breaks a tie)

    def update(self, epoch: int, row: dict[str, float]) -> bool:
        """Note an epoch's metrics; returns whether it is the new best."""
        value = row.get(self.metric)
        if value is None:  # not computed this epoch (R² of equal targets): nothing to judge
            return False
        if math.isnan(value):
            improved = False
        elif self.best is None:
            improved = True
        elif lower_is_better(self.metric):
            improved = value < self.best - self.min_delta
        else:
            improved = value > self.best + self.min_delta
        loss = row.get("val_loss")
        if not improved and value == self.best and loss is not None and self.best_loss is not None:
            improved = loss < self.best_loss  # a tie: the lower validation loss
        if improved:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
            self.best_loss = loss
        else:
            self.bad_epochs += 1
            if self.patience is not None and self.bad_epochs >= self.patience:
                self.stopped_epoch = epoch
        return improved

    @property
    def stopped(self) -> bool:
        """Whether training should stop (it has, once the epoch is over)."""
        return self.stopped_epoch is not None

    def state(self) -> dict[str, Any]:
        """Plain values for a checkpoint (resume keeps the patience count)."""
        return asdict(self)

    def restore(self, state: dict[str, Any]) -> None:
        """Take back a checkpoint's counts (the metric and settings stay the config's)."""
        for key in ("best", "best_epoch", "bad_epochs", "stopped_epoch", "best_loss"):
            setattr(self, key, state.get(key))
        self.bad_epochs = self.bad_epochs or 0
