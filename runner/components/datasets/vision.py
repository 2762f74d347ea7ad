"""MNIST and Fashion-MNIST through torchvision, held in memory as normalized tensors."""

from __future__ import annotations

from pathlib import Path

import torch

from runner.components.datasets.base import DataSplits
from runner.errors import ConfigError, unknown_name
from runner.registry import DATASETS

RAW_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


SCALINGS = ("standardize", "minus_one_one")


def _load(
    cls_name: str,
    mean: float,
    std: float,
    root: str,
    download: bool,
    val_size: int,
    seed: int,
    scaling: str = "standardize",
) -> DataSplits:
    """Read torchvision's raw tensors once and normalize them once (no per-sample PIL).

    `scaling`: standardize with the data set's mean and std, or map pixels to [-1, 1] as
    the book's ch. 11 NumPy MLP does.
    """
    if scaling not in SCALINGS:
        raise ConfigError(unknown_name("data.scaling", "scaling", scaling, SCALINGS))
    from torchvision import datasets  # heavy import, only for the datasets that need it

    cls = getattr(datasets, cls_name)
    root_path = Path(root).expanduser().resolve()
    try:
        train = cls(str(root_path), train=True, download=download)
        test = cls(str(root_path), train=False, download=download)
    except (RuntimeError, OSError) as err:
        raw = root_path / cls_name / "raw"
        raise ConfigError(
            f"data.root: {root!r} has no {cls_name} data: expected the files "
            f"{', '.join(RAW_FILES)} (or their .gz archives) in {raw}. "
            + (
                f"Download failed ({' '.join(str(err).split())}). "
                if download
                else "data.download is false. "
            )
            + "Copy the files there, or point data.root at a folder that holds "
            f"{cls_name}/raw/."
        ) from err
    n = len(train.data)
    if not 0 <= val_size < n:
        raise ConfigError(f"data.val_size: {val_size!r} is out of range; allowed: 0 to {n - 1}")

    if scaling == "minus_one_one":
        mean, std = 0.5, 0.5

    def normalize(images: torch.Tensor) -> torch.Tensor:
        return ((images.float() / 255.0 - mean) / std).unsqueeze(1)  # (N, 1, H, W)

    x, y = normalize(train.data), train.targets.long()
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = perm[:val_size], perm[val_size:]
    x_test, y_test = normalize(test.data), test.targets.long()
    if val_size == 0:  # no held-out split asked for: validate on the test set
        x_val, y_val = x_test, y_test
    else:
        x_val, y_val = x[val_idx], y[val_idx]
    return DataSplits(
        x_train=x[train_idx],
        y_train=y[train_idx],
        x_val=x_val,
        y_val=y_val,
        x_test=x_test,
        y_test=y_test,
        task="multiclass",
        num_outputs=10,
        class_names=[str(c) for c in train.classes],
    )


@DATASETS.register("mnist", task="multiclass")
def mnist(
    root: str = "data",
    download: bool = True,
    val_size: int = 5000,
    seed: int = 1,
    scaling: str = "standardize",
) -> DataSplits:
    """MNIST digits; `val_size` training images held out for validation, test set kept apart."""
    return _load("MNIST", 0.1307, 0.3081, root, download, val_size, seed, scaling)


@DATASETS.register("fashion_mnist", task="multiclass")
def fashion_mnist(
    root: str = "data",
    download: bool = True,
    val_size: int = 5000,
    seed: int = 1,
    scaling: str = "standardize",
) -> DataSplits:
    """Fashion-MNIST clothing images, same layout and splits as MNIST."""
    return _load("FashionMNIST", 0.2860, 0.3530, root, download, val_size, seed, scaling)
