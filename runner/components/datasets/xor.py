"""The XOR toy problem exactly as the book builds it (Raschka et al., ch. 13)."""

from __future__ import annotations

import numpy as np
import torch

from runner.components.datasets.base import DataSplits
from runner.errors import ConfigError
from runner.registry import DATASETS


@DATASETS.register("xor", task="binary")
def xor(
    n_samples: int = 200, n_train: int = 100, seed: int = 1, low: float = -1.0, high: float = 1.0
) -> DataSplits:
    """Uniform points in [low, high)^2, label 1 where x0*x1 >= 0; first n_train for training."""
    if not 0 < n_train < n_samples:
        raise ConfigError(
            f"data.n_train: {n_train!r} is out of range; allowed: 1 to data.n_samples-1 "
            f"({n_samples - 1})"
        )
    # RandomState(seed) draws the same stream as the book's np.random.seed(seed) without
    # touching numpy's global generator.
    x = np.random.RandomState(seed).uniform(low=low, high=high, size=(n_samples, 2))
    y = np.ones(len(x))
    y[x[:, 0] * x[:, 1] < 0] = 0
    xt = torch.tensor(x, dtype=torch.float32)
    yt = torch.tensor(y, dtype=torch.float32)
    return DataSplits(
        x_train=xt[:n_train],
        y_train=yt[:n_train],
        x_val=xt[n_train:],
        y_val=yt[n_train:],
        task="binary",
        num_outputs=1,
        feature_names=["x0", "x1"],
        class_names=["0", "1"],
    )
