"""MNIST and Fashion-MNIST through torchvision, held in memory as normalized tensors."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
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
# Each data set's torchvision class and its pixels' mean and std (of [0, 1] values).
SETS = {"mnist": ("MNIST", 0.1307, 0.3081), "fashion_mnist": ("FashionMNIST", 0.2860, 0.3530)}


def pixel_scaling(dataset: str, scaling: str) -> tuple[float, float]:
    """The mean and std a run of `dataset` (a registered name) scaled its pixels with."""
    if scaling == "minus_one_one":
        return 0.5, 0.5
    return SETS[dataset][1], SETS[dataset][2]


def normalize(images: torch.Tensor, mean: float, std: float) -> torch.Tensor:
    """uint8 images [N, H, W] as the network takes them: [N, 1, H, W] floats, scaled."""
    return ((images.float() / 255.0 - mean) / std).unsqueeze(1)


IMAGE_SIZE = (28, 28)  # both sets' images, in pixels (height, width)


def read_images(path: Path, key: str = "--input") -> tuple[np.ndarray, list[str] | None]:
    """uint8 images [N, 28, 28] from an IDX file (MNIST's format, .gz too) or a folder of
    PNGs (grey, white on black as MNIST draws), with the PNGs' file names (None for IDX:
    its images are known by their index). A ConfigError names `key` and what is wrong."""
    if path.is_dir():
        return _read_pngs(path, key)
    if not path.is_file():
        raise ConfigError(f"{key}: {str(path)!r} is neither a file nor a folder")
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as file:
        raw = file.read()
    if len(raw) < 4 or raw[:3] != b"\0\0\x08":
        raise ConfigError(
            f"{key}: {str(path)!r} is not an IDX file of bytes (MNIST's image files); an "
            "image model reads those, or a folder of PNGs"
        )
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    if ndim != 3 or tuple(dims[1:]) != IMAGE_SIZE:
        raise ConfigError(
            f"{key}: {str(path)!r} holds an array of shape {list(dims)}, not 28x28 images "
            "(a labels file?)"
        )
    pixels = np.frombuffer(raw, np.uint8, offset=4 + 4 * ndim)
    if pixels.size != int(np.prod(dims)):
        raise ConfigError(f"{key}: {str(path)!r} is cut short: {pixels.size} of {dims} pixels")
    return pixels.reshape(dims), None


def _read_pngs(folder: Path, key: str) -> tuple[np.ndarray, list[str]]:
    from PIL import Image

    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".png")
    if not files:
        raise ConfigError(f"{key}: folder {str(folder)!r} holds no .png file")
    images = []
    for file in files:
        with Image.open(file) as image:
            pixels = np.asarray(image.convert("L"))
        if pixels.shape != IMAGE_SIZE:
            raise ConfigError(
                f"{key}: {file.name} is {pixels.shape[1]}x{pixels.shape[0]} pixels; the model "
                "reads 28x28 images (resize it first)"
            )
        images.append(pixels)
    return np.stack(images), [file.name for file in files]


def class_names(dataset: str) -> list[str]:
    """The class names a run of `dataset` learned (torchvision's, in class-code order)."""
    from torchvision import datasets

    return [str(c) for c in getattr(datasets, SETS[dataset][0]).classes]


def _load(
    name: str,
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

    cls_name = SETS[name][0]
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

    mean, std = pixel_scaling(name, scaling)
    x, y = normalize(train.data, mean, std), train.targets.long()
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = perm[:val_size], perm[val_size:]
    x_test, y_test = normalize(test.data, mean, std), test.targets.long()
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
    return _load("mnist", root, download, val_size, seed, scaling)


@DATASETS.register("fashion_mnist", task="multiclass")
def fashion_mnist(
    root: str = "data",
    download: bool = True,
    val_size: int = 5000,
    seed: int = 1,
    scaling: str = "standardize",
) -> DataSplits:
    """Fashion-MNIST clothing images, same layout and splits as MNIST."""
    return _load("fashion_mnist", root, download, val_size, seed, scaling)
