"""A general CSV dataset: one-hot categoricals (dummy_na), mean-imputed numerics (d2l ch. 2).

Every statistic (column means, dummy columns, target scale) is fitted on the training rows
only and then applied unchanged to the validation rows.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from runner.datasets.base import TASKS, DataSplits
from runner.errors import ConfigError, unknown_name
from runner.registry import DATASETS

if TYPE_CHECKING:  # pandas is imported only where a CSV is read: other runs skip it
    import pandas as pd


class TabularEncoder:
    """Fit-on-train feature encoding: get_dummies(dummy_na=True) plus mean imputation."""

    def __init__(self, categorical: list[str]) -> None:
        self.categorical = categorical
        self.columns: list[str] = []
        self.means: pd.Series | None = None

    def fit(self, frame: pd.DataFrame) -> TabularEncoder:
        """Learn the dummy columns and the numeric means from `frame`."""
        import pandas as pd

        encoded = pd.get_dummies(frame, columns=self.categorical, dummy_na=True)
        self.columns = list(encoded.columns)
        numeric = [c for c in frame.columns if c not in self.categorical]
        self.means = encoded[numeric].astype(float).mean()
        return self

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        """Encode `frame` with the fitted columns and means; unseen categories become zeros."""
        import pandas as pd

        encoded = pd.get_dummies(frame, columns=self.categorical, dummy_na=True)
        encoded = encoded.reindex(columns=self.columns, fill_value=0)
        encoded = encoded.fillna(self.means)
        return encoded.astype(np.float32).to_numpy()


def _split_sizes(n_rows: int, val_size: float) -> int:
    """Number of validation rows: a count, or a fraction of the rows when below 1."""
    n_val = int(round(val_size * n_rows)) if 0 < val_size < 1 else int(val_size)
    if not 0 <= n_val < n_rows:
        raise ConfigError(
            f"data.val_size: {val_size!r} leaves no training rows out of {n_rows}; allowed: a "
            f"count from 0 to {n_rows - 1} or a fraction below 1"
        )
    return n_val


@DATASETS.register("csv")
def csv(
    path: str,
    target: str,
    task: str = "regression",
    categorical: list | None = None,
    val_size: float = 0.0,
    shuffle: bool = False,
    seed: int = 1,
    standardize_target: bool = False,
) -> DataSplits:
    """Load a CSV; the last `val_size` rows (after an optional seeded shuffle) validate."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ConfigError(f"data.path: {path!r} is not a file (looked at {file.resolve()})")
    if task not in TASKS:
        raise ConfigError(unknown_name("data.task", "task", task, TASKS))
    import pandas as pd

    frame = pd.read_csv(file)
    if target not in frame.columns:
        raise ConfigError(unknown_name("data.target", "column", target, frame.columns))
    features = frame.drop(columns=[target])
    if categorical is None:
        categorical = list(features.select_dtypes(exclude="number").columns)
    missing = [c for c in categorical if c not in features.columns]
    if missing:
        raise ConfigError(unknown_name("data.categorical", "column", missing[0], features.columns))

    order = np.arange(len(frame))
    if shuffle:
        order = np.random.RandomState(seed).permutation(len(frame))
    n_val = _split_sizes(len(frame), val_size)
    train_rows, val_rows = order[: len(order) - n_val], order[len(order) - n_val :]

    encoder = TabularEncoder(categorical).fit(features.iloc[train_rows])
    x_train = torch.tensor(encoder.transform(features.iloc[train_rows]))
    x_val = torch.tensor(encoder.transform(features.iloc[val_rows]))
    y_train, y_val, class_names, mean, std = _targets(frame[target], train_rows, val_rows, task)
    if standardize_target and task == "regression":
        mean, std = float(y_train.mean()), float(y_train.std(unbiased=False)) or 1.0
        y_train, y_val = (y_train - mean) / std, (y_val - mean) / std
    return DataSplits(
        x_train=x_train,
        y_train=y_train,
        x_val=x_val,
        y_val=y_val,
        task=task,
        num_outputs=len(class_names) if task == "multiclass" else 1,
        feature_names=encoder.columns,
        class_names=class_names,
        target_mean=mean,
        target_std=std,
    )


def _targets(
    column: pd.Series, train_rows: np.ndarray, val_rows: np.ndarray, task: str
) -> tuple[torch.Tensor, torch.Tensor, list[str] | None, float, float]:
    """Encode the target column for the task; classes are the sorted training values."""
    if column.iloc[train_rows].isna().any():
        raise ConfigError(f"data.target: column {column.name!r} has missing values")
    if task == "regression":
        values = torch.tensor(column.to_numpy(dtype=np.float32))
        return values[train_rows], values[val_rows], None, 0.0, 1.0
    classes = sorted(column.iloc[train_rows].astype(str).unique())
    if task == "binary" and len(classes) != 2:
        raise ConfigError(
            f"data.task: 'binary' needs 2 classes in column {column.name!r}, found {classes}"
        )
    lookup = {c: i for i, c in enumerate(classes)}
    codes = column.astype(str).map(lookup)
    if codes.iloc[val_rows].isna().any():
        raise ConfigError("data.target: validation rows hold classes unseen in training rows")
    dtype = torch.float32 if task == "binary" else torch.int64
    values = torch.tensor(codes.to_numpy(dtype=np.int64), dtype=dtype)
    return values[train_rows], values[val_rows], classes, 0.0, 1.0
