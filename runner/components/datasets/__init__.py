"""Datasets: each registered loader returns in-memory train/validation (and test) tensors."""

from runner.components.datasets import tabular, vision, xor  # noqa: F401  (registers the loaders)
from runner.components.datasets.base import DataSplits

__all__ = ["DataSplits"]
