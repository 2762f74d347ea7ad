"""The pictures: counts behind the confusion matrix, and every figure draws from its payload."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import confusion_matrix as sklearn_confusion

from runner import plots


def test_confusion_counts_match_sklearn() -> None:
    rng = np.random.default_rng(0)
    y_true, y_pred = rng.integers(0, 4, 500), rng.integers(0, 4, 500)
    expected = sklearn_confusion(y_true, y_pred, labels=[0, 1, 2, 3])
    np.testing.assert_array_equal(plots.confusion_counts(y_true, y_pred, 4), expected)


def test_confusion_counts_keep_classes_never_seen() -> None:
    counts = plots.confusion_counts(np.array([0, 0]), np.array([0, 1]), 3)
    assert counts.shape == (3, 3)
    assert counts.tolist() == [[1, 1, 0], [0, 0, 0], [0, 0, 0]]


def test_draw_every_picture() -> None:
    grid = np.meshgrid(np.linspace(-1, 1, 20), np.linspace(-1, 1, 20))
    points, labels = np.zeros((4, 2)), np.array([0, 1, 1, 0])
    history = [{"train_loss": 1.0, "val_loss": 1.2, "train_acc": 0.5, "val_acc": 0.4}] * 3
    pictures = {
        "history": history,
        "primary": "acc",
        "regions": {
            "grid_x": grid[0],
            "grid_y": grid[1],
            "grid_pred": grid[0] > 0,
            "x_train": points,
            "y_train": labels,
            "x_val": points,
            "y_val": labels,
        },  # fmt: skip
        "confusion": {"y_true": labels, "y_pred": 1 - labels, "class_names": ["no", "yes"]},
        "regression": {"y_true": np.arange(4.0), "y_pred": np.arange(4.0) + 0.1},
    }
    figures = plots.draw(pictures)
    assert set(figures) == {
        "plots/learning_curves.png",
        "plots/decision_regions.png",
        "plots/confusion_matrix.png",
        "plots/predicted_vs_true.png",
    }
    confusion = figures["plots/confusion_matrix.png"].axes[0]
    assert [t.get_text() for t in confusion.texts] == ["0", "2", "2", "0"]
    assert [t.get_text() for t in confusion.get_xticklabels()] == ["no", "yes"]
    for figure in figures.values():
        plots.close(figure)
