"""Datasets: the book's XOR recipe, d2l's house_tiny table, MNIST from IDX files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from runner.components.datasets import tabular, vision
from runner.components.datasets.xor import xor
from runner.errors import ConfigError

HOUSE_TINY = Path(__file__).resolve().parents[1] / "data" / "house_tiny.csv"


def test_xor_equals_the_books_recipe():
    np.random.seed(1)
    x = np.random.uniform(low=-1, high=1, size=(200, 2))
    y = np.ones(len(x))
    y[x[:, 0] * x[:, 1] < 0] = 0
    data = xor()
    assert torch.equal(data.x_train, torch.tensor(x[:100], dtype=torch.float32))
    assert torch.equal(data.y_train, torch.tensor(y[:100], dtype=torch.float32))
    assert torch.equal(data.x_val, torch.tensor(x[100:], dtype=torch.float32))
    assert torch.equal(data.y_val, torch.tensor(y[100:], dtype=torch.float32))
    assert data.task == "binary" and data.num_outputs == 1


def test_xor_size_and_split_are_configurable():
    data = xor(n_samples=50, n_train=30, seed=7)
    assert len(data.x_train) == 30 and len(data.x_val) == 20
    assert not torch.equal(data.x_train[:5], xor().x_train[:5])
    with pytest.raises(ConfigError, match="data.n_train"):
        xor(n_samples=10, n_train=10)


def test_house_tiny_features_equal_d2l_when_all_rows_are_used():
    # d2l ch. 2 keeps the numbers raw (numeric: none), the gaps filled with the mean.
    data = tabular.csv(
        str(HOUSE_TINY), target="Price", categorical=["RoofType"], numeric="none", val_size=0
    )
    expected = torch.tensor([[3, 0, 1], [2, 0, 1], [4, 1, 0], [3, 0, 1]], dtype=torch.float32)
    assert torch.equal(data.x_train, expected)
    assert data.feature_names == ["NumRooms", "RoofType_Slate", "RoofType_nan"]
    assert data.y_train.tolist() == [127500, 106000, 178100, 140000]
    assert len(data.x_val) == 0


def test_csv_standardized_target_keeps_metrics_in_data_units(tmp_path):
    data = tabular.csv(str(HOUSE_TINY), target="Price", val_size=1, standardize_target=True)
    assert abs(float(data.y_train.mean())) < 1e-5
    restored = data.y_train * data.target_std + data.target_mean
    assert torch.allclose(restored, torch.tensor([127500.0, 106000.0, 178100.0]))


def test_csv_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match="data.path: 'missing.csv' is not a file"):
        tabular.csv("missing.csv", target="Price")
    with pytest.raises(ConfigError, match="data.target: unknown column 'Prize'. Did you mean"):
        tabular.csv(str(HOUSE_TINY), target="Prize")
    with pytest.raises(ConfigError, match="data.val_size"):
        tabular.csv(str(HOUSE_TINY), target="Price", val_size=4)


def test_csv_classification_targets(tmp_path):
    csv = tmp_path / "c.csv"
    csv.write_text("x,label\n1,cat\n2,dog\n3,cat\n4,dog\n5,bird\n6,cat\n")
    data = tabular.csv(str(csv), target="label", task="multiclass", val_size=1)
    assert data.class_names == ["bird", "cat", "dog"]
    assert data.y_train.dtype == torch.int64 and data.num_outputs == 3
    with pytest.raises(ConfigError, match="'binary' needs 2 classes"):
        tabular.csv(str(csv), target="label", task="binary")


@pytest.mark.parametrize(
    "loader,folder", [(vision.mnist, "MNIST"), (vision.fashion_mnist, "FashionMNIST")]
)
def test_vision_datasets_read_idx_files(mnist_root, loader, folder):
    data = loader(root=str(mnist_root), download=False, val_size=20, seed=1)
    assert data.x_train.shape == (100, 1, 28, 28) and data.x_val.shape == (20, 1, 28, 28)
    assert data.x_test.shape == (40, 1, 28, 28) and data.y_test.dtype == torch.int64
    assert data.task == "multiclass" and data.num_outputs == 10
    assert abs(float(data.x_train.mean())) < 3  # normalized, not raw bytes
    again = loader(root=str(mnist_root), download=False, val_size=20, seed=1)
    assert torch.equal(data.y_val, again.y_val)  # the split is seeded


def test_mnist_missing_files_say_which_files_where(tmp_path):
    with pytest.raises(ConfigError) as err:
        vision.mnist(root=str(tmp_path), download=False)
    message = str(err.value)
    assert "train-images-idx3-ubyte" in message and "t10k-labels-idx1-ubyte" in message
    assert str(tmp_path / "MNIST" / "raw") in message
