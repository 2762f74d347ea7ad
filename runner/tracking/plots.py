"""Pictures for MLflow: learning curves, decision regions, confusion matrix, predicted vs
true, and a sweep's capacity, curves and seed-strip plots. Each title names the model and
its score, axes name the loss or metric in words, and a small grey footer names the run,
so that a downloaded PNG can be traced back to it."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only; never open a window

import logging  # noqa: E402
import textwrap  # noqa: E402
from collections.abc import Callable, Mapping, Sequence  # noqa: E402
from typing import Any  # noqa: E402

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402
from matplotlib.colors import ListedColormap  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import MaxNLocator, NullLocator, StrMethodFormatter  # noqa: E402

log = logging.getLogger("runner")
SPLIT_WORDS = {"train": "training", "val": "validation", "test": "test"}
METRIC_WORDS = {  # runner.training.metrics METRICS and the loop's own rows
    "acc": "accuracy",
    "rmse": "root-mean-square error",
    "mse": "mean squared error",
    "mae": "mean absolute error",
    "r2": "R² (coefficient of determination)",
    "log_rmse": "RMSE of log values",
    "loss": "loss",
    "total_loss": "loss + L1 penalty",
    "lr": "learning rate",
}
LOSS_WORDS = {  # runner.components.builtins LOSSES
    "bce": "binary cross-entropy",
    "bce_with_logits": "binary cross-entropy on logits",
    "cross_entropy": "cross-entropy",
    "nll": "negative log-likelihood",
    "mse": "mean squared error",
    "mse_onehot": "squared error to one-hot targets",
    "l1": "mean absolute error",
    "huber": "Huber loss",
    "smooth_l1": "smooth L1 loss",
}
IN_TARGET_UNITS = {"rmse", "mae", "mse"}  # in the target's units (mse: squared)
LOWER_IS_BETTER = ("loss", "rmse", "mse", "mae")
TWO_CLASS_COLORS = ("#3b6fb6", "#d1495b")  # blue, red: class 0, class 1
FOOTER_INCHES = 0.22  # height kept free at the bottom for the footer
GREY = "0.4"


def metric_name(key: str, loss: str = "", target: str = "", standardized: bool = False) -> str:
    """A metric key in words: `val_acc` -> "validation accuracy", `train_loss` with loss
    `bce` -> "training loss (binary cross-entropy)"."""
    split, _, base = key.partition("_")
    if split not in SPLIT_WORDS:
        split, base = "", key
    words = METRIC_WORDS.get(base, base.replace("_", " "))
    if base in ("loss", "total_loss") and loss:
        words += f" ({LOSS_WORDS.get(loss, loss)}"
        words += ", standardized target)" if standardized else ")"
    elif base in IN_TARGET_UNITS and target:
        words += f" of {target}"
    return f"{SPLIT_WORDS[split]} {words}" if split else words


def format_value(value: float) -> str:
    """A score for a title: 0.950, 12.35, 21,034."""
    if not np.isfinite(value):
        return str(value)
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.2f}"
    return f"{value:.3f}" if abs(value) >= 0.01 or value == 0 else f"{value:.2e}"


def headline(pictures: Mapping[str, Any]) -> str:
    """The figure title: the model and its primary metric on the held-out split, e.g.
    "xor_deep — validation accuracy 0.950"."""
    final = dict(pictures["history"][-1]) if pictures.get("history") else {}
    final |= pictures.get("scores", {})
    primary = pictures.get("primary", "")
    score = ""
    for split in ("val", "test", "train"):
        key = f"{split}_{primary}"
        if key in final:
            name = metric_name(key, target=pictures.get("target", ""))
            score = f"{name} {format_value(final[key])}"
            break
    return " — ".join(part for part in (pictures.get("model", ""), score) if part)


def _finish(fig: Figure, title: str, caption: str) -> Figure:
    """Title on top, the run's footer at the bottom, room kept for both by the layout."""
    if title:  # wrapped to the figure's width: a long model name must not be cut off
        fig.suptitle(textwrap.fill(title, int(fig.get_figwidth() * 12)), fontsize=11)
    if caption:
        fig.text(0.01, 0.01, caption, fontsize=7, color=GREY, ha="left", va="bottom")
        bottom = FOOTER_INCHES / fig.get_figheight()
        fig.get_layout_engine().set(rect=(0, bottom, 1, 1 - bottom))
    return fig


def _new_figure(width: float, height: float, **kw: Any) -> tuple[Figure, Any]:
    """A figure whose layout makes room for legends, colour bars and titles."""
    return plt.subplots(figsize=(width, height), layout="constrained", **kw)


def _log_if_wide(ax: Axes, values: Sequence[float]) -> bool:
    """Log y when positive values span a factor over 30 (losses that fall fast): the
    tail, where runs differ, stays readable."""
    finite = np.asarray([v for v in values if np.isfinite(v)])
    if len(finite) and finite.min() > 0 and finite.max() / finite.min() > 30:
        ax.set_yscale("log")
        return True
    return False


def _thousands(axis: Any, values: Sequence[float]) -> None:
    """Large numbers (prices, counts) with thousands separators: 120,000 not 120000."""
    finite = [abs(v) for v in values if np.isfinite(v)]
    if finite and max(finite) >= 10_000:
        axis.set_major_formatter(StrMethodFormatter("{x:,.0f}"))


def learning_curves(
    history: list[dict[str, float]],
    primary: str,
    *,
    loss: str = "",
    target: str = "",
    standardized: bool = False,
    scores: Mapping[str, float] | None = None,
    kept_epoch: int | None = None,
    title: str = "",
    caption: str = "",
) -> Figure:
    """Loss and the task's primary metric per epoch, training against validation (and the
    test score after training, when the run validated on nothing); `kept_epoch`: the epoch
    whose weights the run kept (trainer.keep=best), marked, its test score drawn there."""
    epochs = np.arange(1, len(history) + 1)
    scored_at = kept_epoch or len(history)
    scores = scores or {}
    marker = "o" if len(history) <= 20 else None  # a few epochs: show each one
    fig, axes = _new_figure(10, 4.2, ncols=2)
    for ax, metric in zip(axes, ("loss", primary), strict=True):
        seen: list[float] = []
        series = [("train", "-", "training"), ("val", "--", "validation")]
        if metric == "loss" and any(
            row.get("train_total_loss", 0) != row.get("train_loss", 0) for row in history
        ):
            series.append(("train_total", ":", "training + L1 penalty"))
        for split, style, label in series:
            values = [row.get(f"{split}_{metric}", np.nan) for row in history]
            if not np.all(np.isnan(values)):
                ax.plot(epochs, values, style, marker=marker, markersize=3, label=label)
                seen += values
        test = scores.get(f"test_{metric}")
        if test is not None and len(history):
            ax.plot([scored_at], [test], "k*", markersize=9, label="test, after training")
            seen.append(test)
        if kept_epoch:
            ax.axvline(kept_epoch, color="0.45", linestyle=":", label=f"kept: epoch {kept_epoch}")
        log = _log_if_wide(ax, seen)
        if not log:
            _thousands(ax.yaxis, seen)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # epochs are whole numbers
        ax.set_xlabel("epoch")
        name = metric_name(metric, loss=loss, target=target, standardized=standardized)
        ax.set_ylabel(textwrap.fill(name, 36))  # a long loss name on two lines, not clipped
        scale = ", log scale" if log else ""
        short = name.split(" (")[0]
        ax.set_title(f"{short[0].upper()}{short[1:]} per epoch{scale}", fontsize=10)
        if ax.lines:
            ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    return _finish(fig, title, caption)


def _class_colors(n_classes: int) -> list[Any]:
    """Blue and red for two classes; tab10/tab20 for more."""
    if n_classes <= 2:
        return list(TWO_CLASS_COLORS)
    cmap = plt.get_cmap("tab10" if n_classes <= 10 else "tab20")
    return [cmap(i % cmap.N) for i in range(n_classes)]


def _class_label(name: str) -> str:
    """A class as the legend shows it: `class 0` for bare numbers, else the name."""
    return f"class {name}" if name.isdigit() else name


def decision_regions(
    grid_x: np.ndarray,
    grid_y: np.ndarray,
    grid_pred: np.ndarray,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    *,
    class_names: list[str] | None = None,
    feature_names: list[str] | None = None,
    title: str = "",
    caption: str = "",
) -> Figure:
    """For 2-D inputs: the predicted class shaded over the plane, its boundary, and the
    points; colour is the class, marker the split (legends beside the plot)."""
    labels = np.concatenate([y_train, y_val, np.ravel(grid_pred)]).astype(np.int64)
    n_classes = max(len(class_names or []), int(labels.max(initial=0)) + 1, 2)
    names = class_names or [str(i) for i in range(n_classes)]
    colors = _class_colors(n_classes)
    fig, ax = _new_figure(7.2, 5.2)
    levels = np.arange(n_classes + 1) - 0.5
    ax.contourf(grid_x, grid_y, grid_pred, levels=levels, cmap=ListedColormap(colors), alpha=0.2)
    ax.contour(grid_x, grid_y, grid_pred, levels=levels[1:-1], colors="k", linewidths=0.8)
    for x, y, marker, size in ((x_train, y_train, "o", 28), (x_val, y_val, "^", 36)):
        y = y.astype(np.int64)
        for c in range(n_classes):
            mine = x[y == c]
            ax.scatter(
                mine[:, 0], mine[:, 1], marker=marker, s=size, color=colors[c],
                edgecolors="k", linewidths=0.5,
            )  # fmt: skip
    features = feature_names or ["feature 0", "feature 1"]
    ax.set_xlabel(features[0])
    ax.set_ylabel(features[1])
    ax.set_title("Predicted class over the input plane", fontsize=10)
    class_handles = [
        Line2D([], [], marker="s", linestyle="", markersize=9, markerfacecolor=colors[c],
               markeredgecolor="k", label=_class_label(names[c]))
        for c in range(n_classes)
    ]  # fmt: skip
    class_handles.append(Line2D([], [], color="k", linewidth=0.8, label="decision boundary"))
    split_handles = [
        Line2D([], [], marker=m, linestyle="", markersize=7, markerfacecolor="0.75",
               markeredgecolor="k", label=f"{name} (n={len(x)})")
        for m, name, x in (("o", "training", x_train), ("^", "validation", x_val))
    ]  # fmt: skip
    # Outside the axes: a legend inside would hide points.
    classes = ax.legend(
        handles=class_handles, title="colour: class", loc="upper left",
        bbox_to_anchor=(1.02, 1.0), fontsize=8, title_fontsize=8,
    )  # fmt: skip
    ax.add_artist(classes)
    ax.legend(
        handles=split_handles, title="marker: split", loc="lower left",
        bbox_to_anchor=(1.02, 0.0), fontsize=8, title_fontsize=8,
    )  # fmt: skip
    return _finish(fig, title, caption)


def confusion_counts(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """counts[i, j]: validation samples of true class i predicted as class j."""
    flat = y_true.astype(np.int64) * n_classes + y_pred.astype(np.int64)
    return np.bincount(flat, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def confusion_matrix(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    class_names: list[str] | None,
    *,
    split: str = "val",
    target: str = "",
    title: str = "",
    caption: str = "",
) -> Figure:
    """Confusion matrix of the held-out split: counts in each cell, a colour bar, class
    names rotated on x so that long ones do not collide."""
    # Drawn here rather than with sklearn's display: importing sklearn and scipy takes
    # longer than the whole plot (BENCHMARKS.md).
    n_classes = len(class_names) if class_names else int(max(y_true.max(), y_pred.max())) + 1
    counts = confusion_counts(y_true, y_pred, n_classes)
    names = class_names or [str(i) for i in range(n_classes)]
    longest = max(len(n) for n in names)
    cell = 0.55 if n_classes <= 12 else max(0.25, 6.6 / n_classes)
    label_inches = 0.3 + 0.065 * longest  # room for a rotated or horizontal name
    side = max(n_classes * cell, 2.2)
    fig, ax = _new_figure(side + label_inches + 2.0, side + label_inches + 1.3)
    image = ax.imshow(counts, cmap="viridis", interpolation="nearest")
    if n_classes <= 30:  # beyond that the numbers are unreadable; the colours remain
        threshold = counts.max() / 2
        size = 9 if n_classes <= 12 else 7
        for (i, j), count in np.ndenumerate(counts):
            color = "black" if count > threshold else "white"  # readable on both ends of viridis
            ax.text(j, i, str(count), ha="center", va="center", color=color, fontsize=size)
    ticks = np.arange(n_classes)
    if longest > 2:  # rotated: long names side by side would run into each other
        ax.set_xticks(ticks, names, rotation=45, ha="right", rotation_mode="anchor")
    else:
        ax.set_xticks(ticks, names)
    ax.set_yticks(ticks, names)
    of = f" ({target})" if target else ""
    ax.set_xlabel(f"predicted class{of}")
    ax.set_ylabel(f"true class{of}")
    split_name = SPLIT_WORDS.get(split, split)
    ax.set_title(
        f"{split_name[0].upper()}{split_name[1:]} confusion matrix (n = {len(y_true):,})",
        fontsize=10,
    )
    fig.colorbar(image, ax=ax, shrink=0.85, label=f"{split_name} samples")
    return _finish(fig, title, caption)


def predicted_vs_true(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    *,
    train_true: np.ndarray | None = None,
    train_pred: np.ndarray | None = None,
    split: str = "val",
    target: str = "",
    title: str = "",
    caption: str = "",
) -> Figure:
    """Regression: each point's prediction against its target, training and held-out
    points apart, with the line of perfect prediction y = x. Points with a nan or infinite
    value are left out (the legend counts them); a ValueError if none is left."""
    y_true, y_pred, dropped = _finite_pairs(y_true, y_pred)
    if not len(y_true):
        raise ValueError(f"no {split} prediction is finite ({dropped} nan or infinite)")
    if train_true is not None and train_pred is not None:
        train_true, train_pred, _ = _finite_pairs(train_true, train_pred)
    fig, ax = _new_figure(5.6, 5.6)
    split_name = SPLIT_WORDS.get(split, split)
    shown = [y_true, y_pred]
    if train_true is not None and train_pred is not None and len(train_true):
        ax.scatter(
            train_true, train_pred, s=18, alpha=0.5, color="#3b6fb6", marker="o",
            label=f"training (n={len(train_true):,})",
        )  # fmt: skip
        shown += [np.ravel(train_true), np.ravel(train_pred)]
    ax.scatter(
        y_true, y_pred, s=42, color="#e08a1e", marker="^", edgecolors="k", linewidths=0.5,
        label=f"{split_name} (n={len(y_true):,})"
        + (f"; {dropped:,} not finite, not shown" if dropped else ""),
        zorder=3,
    )  # fmt: skip
    values = np.concatenate(shown)
    lo, hi = float(values.min()), float(values.max())
    pad = 0.05 * (hi - lo) or 0.05 * max(abs(hi), 1.0)  # one point: still a visible square
    lo, hi = lo - pad, hi + pad
    ax.plot([lo, hi], [lo, hi], "k--", linewidth=1, label="y = x (perfect prediction)")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal", adjustable="box")
    for axis in (ax.xaxis, ax.yaxis):
        axis.set_major_locator(MaxNLocator(nbins=4))  # few ticks: wide numbers do not collide
        _thousands(axis, [lo, hi])
    name = target or "target"
    ax.set_xlabel(f"true {name}")
    ax.set_ylabel(f"predicted {name}")
    ax.set_title(f"Predicted against true {name}", fontsize=10)
    ax.legend(fontsize=8, loc="best")
    ax.grid(alpha=0.3)
    return _finish(fig, title, caption)


def _finite_pairs(true: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """The (true, predicted) pairs where both are finite, and how many were not."""
    true, pred = np.ravel(true).astype(np.float64), np.ravel(pred).astype(np.float64)
    finite = np.isfinite(true) & np.isfinite(pred)
    return true[finite], pred[finite], int((~finite).sum())


Point = tuple[str, int]  # (series name, trainable parameters): one config on the plot


def capacity(
    val: Mapping[str, Mapping[int, Sequence[float]]],
    train: Mapping[str, Mapping[int, Sequence[float]]],
    metric: str,
    *,
    intervals: Mapping[Point, tuple[float, float]] | None = None,
    best: Point | None = None,
    tied: Sequence[Point] = (),
    caption: str = "",
) -> Figure:
    """A sweep's final metric against trainable parameters: validation (solid; error bars:
    the 95% interval of the mean over seeds, `intervals`) and training (dashed), one series
    per name; the best config starred, the configs tied with it ringed; ticks at the counts."""
    import statistics

    intervals = intervals or {}
    fig, ax = _new_figure(8, 4.6)
    for name in sorted(val):
        xs = sorted(val[name])
        means = [statistics.fmean(val[name][x]) for x in xs]
        bars = np.array(
            [
                [m - intervals[name, x][0], intervals[name, x][1] - m]
                if (name, x) in intervals else [0.0, 0.0]
                for m, x in zip(means, xs, strict=True)
            ]
        ).T  # fmt: skip
        label = f"{name} (validation)" if name else "validation"
        line = ax.errorbar(xs, means, yerr=bars, marker="o", capsize=3, label=label)
        txs = sorted(train.get(name, {}))
        if txs:
            ax.plot(
                txs, [statistics.fmean(train[name][x]) for x in txs], linestyle="--",
                marker=".", alpha=0.6, color=line.lines[0].get_color(),
                label=f"{name} (training)" if name else "training",
            )  # fmt: skip
    for points, style, label in (
        ([p for p in tied if p != best], {"marker": "o", "markersize": 13, "mfc": "none"},
         "tied with the best (p >= 0.05)"),
        ([best] if best else [], {"marker": "*", "markersize": 15, "mfc": "gold"}, "best config"),
    ):  # fmt: skip
        shown = [(n, x) for n, x in points if x in val.get(n, {})]
        if shown:
            ax.plot(
                [x for _, x in shown], [statistics.fmean(val[n][x]) for n, x in shown],
                linestyle="none", color="0.15", label=label, zorder=5, **style,
            )  # fmt: skip
    counts = sorted({x for series in (*val.values(), *train.values()) for x in series})
    ax.set_xscale("log")
    ax.xaxis.set_minor_locator(NullLocator())  # only the sizes that were trained
    if counts:
        ax.set_xticks(counts, [f"{c:,}" for c in counts])
        if len(counts) > 6:
            ax.tick_params(axis="x", labelrotation=45)
    name = metric_name(metric)
    ax.set_xlabel("trainable parameters (log scale)")
    ax.set_ylabel(f"final {name}")
    ax.set_title(f"Capacity: final {name} against model size (bars: 95% CI)", fontsize=11)
    ax.grid(alpha=0.3)
    if val:
        entries = len(ax.get_legend_handles_labels()[1])
        if entries > 4:  # many series: beside the plot, not over it
            ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
        else:
            ax.legend(fontsize=8, loc="best")
    return _finish(fig, "", caption)


Band = tuple[Sequence[int], Sequence[float], Sequence[float], Sequence[float]]  # x, mean, lo, hi


def curves(bands: Mapping[str, Band], metric: str, *, caption: str = "") -> Figure:
    """The validation metric per epoch, one line per config (its mean over seeds) with its
    95% band, in the order given (the best first)."""
    fig, ax = _new_figure(8, 4.6)
    seen: list[float] = []
    for name, (epochs, mean, low, high) in bands.items():
        (line,) = ax.plot(epochs, mean, label=name or "validation")
        ax.fill_between(epochs, low, high, color=line.get_color(), alpha=0.18, linewidth=0)
        seen += [*mean, *low, *high]
    if not _log_if_wide(ax, seen):
        _thousands(ax.yaxis, seen)
    name = metric_name(metric)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel(name)
    ax.set_title(f"{name[0].upper()}{name[1:]} per epoch: mean over seeds, 95% band", fontsize=11)
    ax.grid(alpha=0.3)
    if bands:
        outside = len(bands) > 4
        ax.legend(
            fontsize=8, **({"loc": "upper left", "bbox_to_anchor": (1.02, 1.0)} if outside else {})
        )
    return _finish(fig, "", caption)


def strip(
    values: Mapping[str, float],
    metric: str,
    *,
    interval: tuple[float, float] | None = None,
    title: str = "",
    caption: str = "",
) -> Figure:
    """One config's final metric for each seed (`values`: seed -> value), with the mean and
    the 95% interval of the mean across the strip."""
    import statistics

    fig, ax = _new_figure(8, 3.2)
    seeds = list(values)
    ax.plot(range(len(seeds)), [values[s] for s in seeds], "o", label="one seed's run")
    if values:
        mean = statistics.fmean(values.values())
        ax.axhline(mean, color="0.2", label=f"mean {format_value(mean)}")
    if interval:
        low, high = interval
        ax.axhspan(low, high, color="0.5", alpha=0.2, linewidth=0, label="95% CI of the mean")
    step = max(1, len(seeds) // 20)  # at most some 20 seed labels
    ax.set_xticks(range(0, len(seeds), step), [seeds[i] for i in range(0, len(seeds), step)])
    ax.set_xlabel("seed")
    ax.set_ylabel(f"final {metric_name(metric)}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    return _finish(fig, title, caption)


def close(fig: Figure) -> None:
    """Free a figure's memory once it is logged."""
    plt.close(fig)


def draw(pictures: dict[str, Any]) -> dict[str, Figure]:
    """Figures for a `pictures` payload (runner.tracking.pictures.picture_data), by artifact path.
    A figure that cannot be drawn (its data not finite) is left out with a warning: the
    pictures report on a run, they never fail it."""
    title, caption = headline(pictures), pictures.get("caption", "")
    target = pictures.get("target", "")
    names = {"title": title, "caption": caption}
    makers: dict[str, Callable[[], Figure]] = {
        "plots/learning_curves.png": lambda: learning_curves(
            pictures["history"],
            pictures["primary"],
            loss=pictures.get("loss", ""),
            target=target,
            standardized=pictures.get("standardized", False),
            scores=pictures.get("scores"),
            kept_epoch=pictures.get("kept_epoch"),
            **names,
        )  # fmt: skip
    }
    if "regions" in pictures:
        makers["plots/decision_regions.png"] = lambda: decision_regions(
            **pictures["regions"], **names
        )
    if "confusion" in pictures:
        makers["plots/confusion_matrix.png"] = lambda: confusion_matrix(
            **pictures["confusion"], target=target, **names
        )
    if "regression" in pictures:
        makers["plots/predicted_vs_true.png"] = lambda: predicted_vs_true(
            **pictures["regression"], target=target, **names
        )
    figures = {}
    for path, make in makers.items():
        before = set(plt.get_fignums())
        try:
            figures[path] = make()
        except Exception as err:  # a report, never a reason to fail the run
            for number in set(plt.get_fignums()) - before:
                plt.close(number)
            log.warning("plots: %s not drawn: %s", path, err)
    return figures
