"""Datasets: each registered loader returns in-memory train/validation (and test) tensors."""

from runner.datasets import tabular, vision, xor  # noqa: F401  (registers the loaders)
from runner.datasets.base import DataSplits

__all__ = ["DataSplits"]
