"""Pictures for MLflow: learning curves, decision regions, confusion matrix, predicted vs true."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only; never open a window

from typing import Any  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def learning_curves(history: list[dict[str, float]], primary: str) -> Figure:
    """Loss and the task's primary metric per epoch, train against validation."""
    epochs = np.arange(1, len(history) + 1)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("loss", primary), strict=True):
        for split, style in (("train", "-"), ("val", "--")):
            key = f"{split}_{metric}"
            values = [row.get(key, np.nan) for row in history]
            if not np.all(np.isnan(values)):
                ax.plot(epochs, values, style, label=split)
        ax.set_xlabel("epoch")
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} per epoch")
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def decision_regions(
    grid_x: np.ndarray,
    grid_y: np.ndarray,
    grid_pred: np.ndarray,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
) -> Figure:
    """For 2-D inputs: the predicted class over the plane, with train and validation points."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.contourf(grid_x, grid_y, grid_pred, alpha=0.3, cmap="coolwarm")
    top = max(1, int(max(y_train.max(initial=0), y_val.max(initial=0))))
    for x, y, marker, label in ((x_train, y_train, "o", "train"), (x_val, y_val, "^", "val")):
        ax.scatter(
            x[:, 0], x[:, 1], c=y, marker=marker, cmap="coolwarm",
            edgecolors="k", s=30, label=label, vmin=0, vmax=top,
        )  # fmt: skip
    ax.set_xlabel("$x_0$")
    ax.set_ylabel("$x_1$")
    ax.set_title("decision regions")
    ax.legend(loc="upper right")
    fig.tight_layout()
    return fig


def confusion_counts(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """counts[i, j]: validation samples of true class i predicted as class j."""
    flat = y_true.astype(np.int64) * n_classes + y_pred.astype(np.int64)
    return np.bincount(flat, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def confusion_matrix(
    y_true: np.ndarray, y_pred: np.ndarray, class_names: list[str] | None
) -> Figure:
    """Validation confusion matrix with counts in each cell."""
    # Drawn here rather than with sklearn's display: importing sklearn and scipy takes
    # longer than the whole plot (BENCHMARKS.md).
    n_classes = len(class_names) if class_names else int(max(y_true.max(), y_pred.max())) + 1
    counts = confusion_counts(y_true, y_pred, n_classes)
    names = class_names or [str(i) for i in range(n_classes)]
    fig, ax = plt.subplots(figsize=(1.5 + 0.6 * n_classes, 1.2 + 0.6 * n_classes))
    ax.imshow(counts, cmap="viridis", interpolation="nearest")
    threshold = counts.max() / 2
    for (i, j), count in np.ndenumerate(counts):
        color = "black" if count > threshold else "white"  # readable on both ends of viridis
        ax.text(j, i, str(count), ha="center", va="center", color=color)
    ticks = np.arange(n_classes)
    ax.set_xticks(ticks, names)
    ax.set_yticks(ticks, names)
    ax.set_xlabel("predicted label")
    ax.set_ylabel("true label")
    ax.set_title("validation confusion matrix")
    fig.tight_layout()
    return fig


def predicted_vs_true(y_true: np.ndarray, y_pred: np.ndarray) -> Figure:
    """Regression: each validation point's prediction against its target, with y = x."""
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.scatter(y_true, y_pred, s=20, alpha=0.7)
    lo = float(min(y_true.min(), y_pred.min()))
    hi = float(max(y_true.max(), y_pred.max()))
    ax.plot([lo, hi], [lo, hi], "k--", linewidth=1, label="y = x")
    ax.set_xlabel("true")
    ax.set_ylabel("predicted")
    ax.set_title("validation: predicted vs true")
    ax.legend()
    fig.tight_layout()
    return fig


def close(fig: Figure) -> None:
    """Free a figure's memory once it is logged."""
    plt.close(fig)


def draw(pictures: dict[str, Any]) -> dict[str, Figure]:
    """Figures for a `pictures` payload (runner.pictures.picture_data), by artifact path."""
    figures = {
        "plots/learning_curves.png": learning_curves(pictures["history"], pictures["primary"])
    }
    if "regions" in pictures:
        figures["plots/decision_regions.png"] = decision_regions(**pictures["regions"])
    if "confusion" in pictures:
        figures["plots/confusion_matrix.png"] = confusion_matrix(**pictures["confusion"])
    if "regression" in pictures:
        figures["plots/predicted_vs_true.png"] = predicted_vs_true(**pictures["regression"])
    return figures
