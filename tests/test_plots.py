"""The pictures: counts behind the confusion matrix, and every figure draws from its payload
with the labels a reader needs (checked through matplotlib's objects, not pixels)."""

from __future__ import annotations

import pickle
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from matplotlib.figure import Figure
from scipy import stats as scipy_stats
from sklearn.metrics import confusion_matrix as sklearn_confusion

from runner.sweep import report
from runner.tracking import plots
from runner.tracking.pictures import picture_data
from tests.configs import shipped

CAPTION = "run adam s1 · 3f2a1b9c0d · experiment xor"
DIGITS = ["0 - zero", "1 - one", "2 - two", "3 - three", "4 - four"]
DIGITS += ["5 - five", "6 - six", "7 - seven", "8 - eight", "9 - nine"]


def texts(fig: Figure) -> list[str]:
    """Every text drawn on the figure: titles, labels, legends, footer."""
    return [t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text"))]


def title(fig: Figure) -> str:
    """The figure's title, its wrapping undone."""
    return " ".join(fig.get_suptitle().split())


def legend_texts(fig: Figure) -> list[str]:
    """The entries of every legend on the figure's axes."""
    return [
        t.get_text()
        for ax in fig.axes
        for legend in ax.findobj(lambda a: type(a).__name__ == "Legend")
        for t in legend.get_texts()
    ]


def binary_payload() -> dict[str, Any]:
    """XOR-like: 2-D points, two classes, a decision grid and a validation confusion."""
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (80, 2))
    y = (x[:, 0] * x[:, 1] >= 0).astype(np.float32)
    gx, gy = np.meshgrid(np.linspace(-1.1, 1.1, 30), np.linspace(-1.1, 1.1, 30))
    history = [
        {"train_loss": 0.7 - 0.1 * i, "train_total_loss": 0.75 - 0.1 * i, "val_loss": 0.72,
         "train_acc": 0.6 + 0.1 * i, "val_acc": 0.55 + 0.1 * i}
        for i in range(3)
    ]  # fmt: skip
    return {
        "history": history, "primary": "acc", "task": "binary", "model": "xor_deep",
        "loss": "bce", "target": "", "standardized": False, "caption": CAPTION,
        "held_out": "val", "scores": {"val_acc": 0.95, "val_loss": 0.3},
        "regions": {
            "grid_x": gx, "grid_y": gy, "grid_pred": (gx * gy >= 0).astype(np.int64),
            "x_train": x[:40], "y_train": y[:40], "x_val": x[40:], "y_val": y[40:],
            "class_names": ["0", "1"], "feature_names": ["x0", "x1"],
        },
        "confusion": {
            "y_true": y[40:].astype(np.int64), "y_pred": 1 - y[40:].astype(np.int64),
            "class_names": ["0", "1"], "split": "val",
        },
    }  # fmt: skip


def multiclass_payload() -> dict[str, Any]:
    """MNIST-like: 10 classes with long names, a 2-epoch run."""
    rng = np.random.default_rng(1)
    y_true = rng.integers(0, 10, 500)
    y_pred = np.where(rng.random(500) < 0.9, y_true, rng.integers(0, 10, 500))
    history = [
        {"train_loss": 0.5, "train_total_loss": 0.5, "val_loss": 0.4, "train_acc": 0.85,
         "val_acc": 0.88},
        {"train_loss": 0.3, "train_total_loss": 0.3, "val_loss": 0.35, "train_acc": 0.9,
         "val_acc": 0.9},
    ]  # fmt: skip
    return {
        "history": history, "primary": "acc", "task": "multiclass", "model": "mnist_mlp",
        "loss": "cross_entropy", "caption": CAPTION, "scores": {"val_acc": 0.9},
        "confusion": {"y_true": y_true, "y_pred": y_pred, "class_names": DIGITS, "split": "val"},
    }  # fmt: skip


def regression_payload() -> dict[str, Any]:
    """house_tiny-like: a price target, three training rows and one validation row."""
    history = [
        {"train_loss": 2.0 / (i + 1), "val_loss": 1.5 / (i + 1), "train_rmse": 30000.0 / (i + 1),
         "val_rmse": 25000.0 / (i + 1)}
        for i in range(5)
    ]  # fmt: skip
    return {
        "history": history, "primary": "rmse", "task": "regression", "model": "house_linear",
        "loss": "mse", "target": "Price", "standardized": True, "caption": CAPTION,
        "scores": {"val_rmse": 5000.0},
        "regression": {
            "y_true": np.array([140000.0]), "y_pred": np.array([135000.0]),
            "train_true": np.array([127500.0, 106000.0, 178100.0]),
            "train_pred": np.array([127000.0, 108000.0, 177000.0]), "split": "val",
        },
    }  # fmt: skip


@pytest.fixture
def drawn(request: pytest.FixtureRequest) -> dict[str, Figure]:
    """The figures of the payload named by the test's parameter, closed afterwards."""
    figures = plots.draw(request.param())
    yield figures
    for figure in figures.values():
        plots.close(figure)


def test_confusion_counts_match_sklearn() -> None:
    rng = np.random.default_rng(0)
    y_true, y_pred = rng.integers(0, 4, 500), rng.integers(0, 4, 500)
    expected = sklearn_confusion(y_true, y_pred, labels=[0, 1, 2, 3])
    np.testing.assert_array_equal(plots.confusion_counts(y_true, y_pred, 4), expected)


def test_confusion_counts_keep_classes_never_seen() -> None:
    counts = plots.confusion_counts(np.array([0, 0]), np.array([0, 1]), 3)
    assert counts.shape == (3, 3)
    assert counts.tolist() == [[1, 1, 0], [0, 0, 0], [0, 0, 0]]


def test_metric_names_in_words() -> None:
    assert plots.metric_name("val_acc") == "validation accuracy"
    assert plots.metric_name("train_loss", loss="bce") == "training loss (binary cross-entropy)"
    assert plots.metric_name("test_rmse", target="Price") == "test root-mean-square error of Price"
    assert "standardized target" in plots.metric_name("val_loss", "mse", standardized=True)
    assert plots.metric_name("val_new_thing") == "validation new thing"  # unknown: still words


def test_draw_a_bare_payload() -> None:
    """The minimal payload (no names, no caption) still draws every picture."""
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
    assert "validation accuracy 0.400" in title(figures["plots/learning_curves.png"])
    for figure in figures.values():
        plots.close(figure)


@pytest.mark.parametrize("drawn", [binary_payload], indirect=True)
def test_binary_pictures(drawn: dict[str, Figure]) -> None:
    assert set(drawn) == {
        "plots/learning_curves.png",
        "plots/decision_regions.png",
        "plots/confusion_matrix.png",
    }
    for figure in drawn.values():
        assert title(figure) == "xor_deep — validation accuracy 0.950"
        assert CAPTION in [t.get_text() for t in figure.texts]  # the footer names the run
    regions = drawn["plots/decision_regions.png"]
    ax = regions.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("x0", "x1")
    entries = legend_texts(regions)
    assert {"class 0", "class 1", "decision boundary"} <= set(entries)
    assert {"training (n=40)", "validation (n=40)"} <= set(entries)
    assert "train" not in entries and "val" not in entries  # colour is not the split
    # The legends sit beside the axes, not over the points.
    regions.canvas.draw()
    box = ax.get_window_extent()
    for legend in ax.findobj(lambda a: type(a).__name__ == "Legend"):
        assert legend.get_window_extent().x0 >= box.x1
    curves = drawn["plots/learning_curves.png"]
    loss_ax, acc_ax = curves.axes
    assert loss_ax.get_ylabel() == "loss (binary cross-entropy)"
    assert acc_ax.get_ylabel() == "accuracy"
    assert "training + L1 penalty" in legend_texts(curves)


@pytest.mark.parametrize("drawn", [multiclass_payload], indirect=True)
def test_multiclass_pictures(drawn: dict[str, Figure]) -> None:
    curves = drawn["plots/learning_curves.png"]
    curves.canvas.draw()
    for ax in curves.axes:  # a 2-epoch run: ticks at 1 and 2, not 1.2, 1.4, ...
        shown = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert shown == [1.0, 2.0]
    assert curves.axes[0].get_ylabel() == "loss (cross-entropy)"
    assert "training + L1 penalty" not in legend_texts(curves)  # no penalty: no third line
    confusion = drawn["plots/confusion_matrix.png"]
    matrix = confusion.axes[0]
    assert [t.get_text() for t in matrix.get_xticklabels()] == DIGITS
    assert [t.get_text() for t in matrix.get_yticklabels()] == DIGITS
    assert all(t.get_rotation() == 45 for t in matrix.get_xticklabels())
    assert len(matrix.texts) == 100  # a count in every cell
    assert len(confusion.axes) == 2  # the matrix and its colour bar
    assert confusion.axes[1].get_ylabel() == "validation samples"
    assert (matrix.get_xlabel(), matrix.get_ylabel()) == ("predicted class", "true class")
    # Sized for the class count: no two x labels overlap once drawn.
    confusion.canvas.draw()
    boxes = [t.get_window_extent() for t in matrix.get_xticklabels()]
    assert all(a.x1 <= b.x1 and a.x0 < b.x0 for a, b in zip(boxes, boxes[1:], strict=False))
    assert title(confusion) == "mnist_mlp — validation accuracy 0.900"
    assert CAPTION in [t.get_text() for t in confusion.texts]


@pytest.mark.parametrize("drawn", [regression_payload], indirect=True)
def test_regression_pictures(drawn: dict[str, Figure]) -> None:
    assert set(drawn) == {"plots/learning_curves.png", "plots/predicted_vs_true.png"}
    scatter = drawn["plots/predicted_vs_true.png"]
    ax = scatter.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("true Price", "predicted Price")
    entries = legend_texts(scatter)
    assert entries == ["training (n=3)", "validation (n=1)", "y = x (perfect prediction)"]
    assert len(ax.collections) == 2  # training and validation points apart
    (line,) = ax.lines
    np.testing.assert_array_equal(line.get_xdata(), line.get_ydata())  # the y = x line
    scatter.canvas.draw()
    assert all("," in t.get_text() for t in ax.get_xticklabels() if t.get_text())  # 120,000
    assert title(scatter) == "house_linear — validation root-mean-square error of Price 5,000"
    curves = drawn["plots/learning_curves.png"]
    ylabels = [ax.get_ylabel().replace("\n", " ") for ax in curves.axes]
    assert ylabels == [
        "loss (mean squared error, standardized target)",
        "root-mean-square error of Price",
    ]
    assert CAPTION in [t.get_text() for t in curves.texts]


def test_test_split_when_nothing_validates() -> None:
    """A table that validates on nothing: test points and the final test score."""
    pictures = regression_payload()
    pictures["history"] = [{k: v for k, v in r.items() if k.startswith("train")} for r in
                           pictures["history"]]  # fmt: skip
    pictures["scores"] = {"test_rmse": 4000.0, "test_loss": 0.1}
    pictures["regression"]["split"] = "test"
    figures = plots.draw(pictures)
    assert "test root-mean-square error of Price 4,000" in title(
        figures["plots/learning_curves.png"]
    )
    assert "test (n=1)" in legend_texts(figures["plots/predicted_vs_true.png"])
    assert "test, after training" in legend_texts(figures["plots/learning_curves.png"])
    for figure in figures.values():
        plots.close(figure)


def test_the_kept_epoch_is_marked_and_its_test_score_drawn_there() -> None:
    """trainer.keep=best: a line at the kept epoch, the test score at it, not at the end."""
    pictures = regression_payload()
    pictures["scores"] = {"test_rmse": 4000.0, "test_loss": 0.1}
    pictures["kept_epoch"] = 2
    figure = plots.draw(pictures)["plots/learning_curves.png"]
    for ax in figure.axes[:2]:
        assert "kept: epoch 2" in [t.get_text() for t in ax.get_legend().get_texts()]
        (star,) = [line for line in ax.lines if line.get_marker() == "*"]
        assert list(star.get_xdata()) == [2]
    plots.close(figure)


def row(params: int, seed: int, value: float) -> report.Row:
    """A finished sweep job with `params` trainable parameters."""
    return report.Row(
        run_id=f"{params:06d}{seed}" + "0" * 25, overrides={"model.hidden": str(params),
        "seed": str(seed)}, params=params, metric="val_acc", final_val=value, best_val=value,
        best_epoch=10, final_train=min(1.0, value + 0.05), wall_seconds=1.0, status="FINISHED",
        repeat=(str(seed), None),
    )  # fmt: skip


def test_capacity_plot_ticks_at_the_parameter_counts() -> None:
    counts = [3, 37, 4417]
    rows = [row(p, s, 0.5 + 0.1 * i + 0.01 * s) for i, p in enumerate(counts) for s in (1, 2)]
    fig = report.capacity_plot(rows, report.label_rows(rows))
    ax = fig.axes[0]
    fig.canvas.draw()
    assert list(ax.get_xticks()) == counts
    assert [t.get_text() for t in ax.get_xticklabels()] == ["3", "37", "4,417"]
    assert not ax.xaxis.get_minorticklocs().size  # no 4x10^0 between the counts
    assert ax.get_ylabel() == "final validation accuracy"
    assert "final validation accuracy" in ax.get_title()
    footer = [t.get_text() for t in fig.texts]
    assert footer and footer[0].startswith("6 runs: 0000031")
    plots.close(fig)


def test_picture_data_names_and_points_for_a_table() -> None:
    """From a trained house_tiny job: names for titles, training and validation points,
    all plain picklable values for the companion process."""
    from runner.config.spec import validate
    from runner.job import setup
    from runner.loop import fit

    cfg = shipped("house_linear", "adam", data="house_tiny", epochs=2, batch_size=3)
    spec = validate(cfg)
    job = setup(cfg, spec)
    history = fit(job.parts, job.data, job.generator)
    pictures = picture_data(
        job.parts, job.data, history, model_name=spec.model.name,
        loss_name=spec.model.loss.type, target_name=spec.data.args.get("target", ""),
    )  # fmt: skip
    assert (pictures["model"], pictures["loss"], pictures["target"]) == (
        "house_linear",
        "mse",
        "Price",
    )
    assert pictures["standardized"] is True
    assert pictures["scores"]["val_rmse"] == pytest.approx(history[-1]["val_rmse"], rel=1e-5)
    points = pictures["regression"]
    assert (len(points["y_true"]), len(points["train_true"])) == (1, 3)
    assert sorted(points["train_true"].tolist()) == [106000.0, 127500.0, 178100.0]
    pickle.loads(pickle.dumps(pictures))
    figures = plots.draw(pictures | {"caption": CAPTION})
    assert figures["plots/predicted_vs_true.png"].axes[0].get_xlabel() == "true Price"
    for figure in figures.values():
        plots.close(figure)


def test_picture_data_finds_the_loss_without_being_told() -> None:
    from runner.config.spec import validate
    from runner.job import setup
    from runner.loop import fit

    cfg = shipped("xor_deep", "adam", epochs=1)
    job = setup(cfg, validate(cfg))
    pictures = picture_data(job.parts, job.data, fit(job.parts, job.data, job.generator))
    assert pictures["loss"] == "bce"
    assert pictures["regions"]["feature_names"] == ["x0", "x1"]
    assert pictures["confusion"]["split"] == "val"


def test_a_test_score_is_never_ranked_or_labelled_as_a_validation_score() -> None:
    """An experiment whose runs differ in having validation rows: the table is headed by
    the validation metric, the other run's cells name their metric, and the best run is
    chosen among the validated ones only."""
    validated = report.Row(
        run_id="a" * 32, overrides={}, params=10, metric="val_rmse", final_val=3.19,
        best_val=3.1, best_epoch=5, final_train=2.0, wall_seconds=1.0, status="FINISHED",
    )  # fmt: skip
    tested = report.Row(
        run_id="b" * 32, overrides={}, params=10, metric="test_rmse", final_val=3.03,
        best_val=3.03, best_epoch=9, final_train=2.0, wall_seconds=1.0, status="FINISHED",
    )  # fmt: skip
    header, cells = report.table([tested, validated])
    assert header[2] == "final val_rmse" and cells[0][2] == "3.0300 (test_rmse)"
    assert cells[1][2] == "3.1900"
    runs = {row.run_id: SimpleNamespace(info=SimpleNamespace(run_id=row.run_id))
            for row in (validated, tested)}  # fmt: skip
    assert report.best_run([tested, validated], list(runs.values())).info.run_id == "a" * 32


def test_capacity_plot_draws_intervals_and_marks_the_best_and_its_ties() -> None:
    # 37 and 4417 parameters: close means, wide spread (tied); 3 parameters: far below.
    values = {3: [0.50, 0.52, 0.51], 37: [0.90, 0.80, 0.95], 4417: [0.92, 0.83, 0.94]}
    rows = [row(p, s + 1, v) for p, vs in values.items() for s, v in enumerate(vs)]
    varying = report.label_rows(rows)
    configs = {c.label: c for c in report.config_stats(rows)}
    assert configs["model.hidden=4417"].best and configs["model.hidden=37"].tied
    assert configs["model.hidden=3"].tied is False
    fig = report.capacity_plot(rows, varying)
    ax = fig.axes[0]
    marks = {line.get_label(): list(line.get_xdata()) for line in ax.lines}
    assert marks["best config"] == [4417] and marks["tied with the best (p >= 0.05)"] == [37]
    # The bars span the 95% interval of each mean (Student t), not the spread.
    low, high = configs["model.hidden=37"].interval
    bars = [c for c in ax.collections if c.get_segments()][0].get_segments()
    spans = sorted((seg[0][1], seg[1][1]) for seg in bars)
    assert any(a == pytest.approx(low) and b == pytest.approx(high) for a, b in spans)
    assert "95% CI" in ax.get_title()
    plots.close(fig)


def test_curves_draw_a_band_per_config_best_first_and_a_seed_only_sweep_a_strip() -> None:
    rows = []
    for params, level in ((3, 0.5), (37, 0.9)):
        for seed in (1, 2, 3):
            r = row(params, seed, level)
            r.history = [(epoch, level * epoch / 4 + seed / 100) for epoch in (1, 2, 3, 4)]
            rows.append(r)
    figures = report.report_figures(rows, report.label_rows(rows))
    assert set(figures) == {"capacity.png", "curves.png"}
    ax = figures["curves.png"].axes[0]
    assert [line.get_label() for line in ax.lines] == ["model.hidden=37", "model.hidden=3"]
    mean = [0.9 * e / 4 + 0.02 for e in (1, 2, 3, 4)]
    assert list(ax.lines[0].get_ydata()) == pytest.approx(mean)
    band = ax.collections[0].get_paths()[0].vertices[:, 1]
    half = scipy_stats.t.ppf(0.975, 2) * scipy_stats.sem([0.01, 0.02, 0.03])
    assert max(band) == pytest.approx(mean[-1] + half)
    one = [r for r in rows if r.params == 37]
    figures = report.report_figures(one, report.label_rows(one))
    assert set(figures) == {"seeds.png", "curves.png"}  # no one-point capacity plot
    strip = figures["seeds.png"].axes[0]
    assert list(strip.lines[0].get_ydata()) == [0.9, 0.9, 0.9]
    assert [t.get_text() for t in strip.get_xticklabels()] == ["1", "2", "3"]
    for figure in figures.values():
        plots.close(figure)
