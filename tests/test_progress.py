"""What a person sees while training: the progress bar, and log lines around it."""

from __future__ import annotations

import logging
import sys

from runner.training.progress import EpochProgress, metric_text


def test_a_resumed_runs_bar_starts_at_its_checkpoint_and_ends_full():
    progress = EpochProgress(10, mode="bar", description="xor_deep/adam", done=4)
    assert (progress.bar.n, progress.bar.total) == (4, 10)
    for epoch in range(5, 11):
        progress(epoch, {"train_loss": 0.5})
    assert progress.bar.n == 10  # (a resume counted from 0 ended its bar at 60%)
    progress.close()


def test_log_lines_go_through_the_bar_while_it_is_up_and_the_console_comes_back():
    root = logging.getLogger()
    console = logging.StreamHandler(sys.stdout)
    root.addHandler(console)
    try:
        progress = EpochProgress(3, mode="bar")
        assert console not in root.handlers  # tqdm writes the lines above the bar
        logging.getLogger("runner").warning("training starts")
        progress.close()
        assert console in root.handlers
    finally:
        root.removeHandler(console)


def test_the_console_numbers_read_alike_in_epoch_lines_and_the_closing_line(caplog):
    assert metric_text("val_acc", 0.97) == "97.00%"
    assert metric_text("val_rmse", 2.94871) == "2.949"
    assert [metric_text("val_rmse", v) for v in (1015.2, 20431.4, 999.94, 999.96)] == [
        "1015",
        "20431",
        "999.9",
        "1000",
    ]
    assert metric_text("train_loss", 1.234e-5) == "1.234e-05"
    # Four significant digits each, so that a line's numbers read alike.
    assert [metric_text("val_loss", v) for v in (0.181, 0.1097, 0.05158)] == [
        "0.1810",
        "0.1097",
        "0.05158",
    ]
    progress = EpochProgress(2, mode="lines")
    with caplog.at_level(logging.INFO, logger="runner.epochs"):
        progress(1, {"train_loss": 0.181, "train_acc": 0.94, "val_acc": 0.5})
    progress.close()
    assert caplog.messages == ["epoch 1/2 val_acc=50.00% train_loss=0.1810 train_acc=94.00%"]
