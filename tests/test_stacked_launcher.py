"""The stacked launcher's console view of a group's training."""

from __future__ import annotations

import logging

from hydra_plugins.runner_stacked.stacked_launcher import StackProgress


def test_group_progress_shows_whole_epochs_at_a_tenth_of_the_run(caplog):
    progress = StackProgress(size=3, epochs=20, metric="val_acc")
    with caplog.at_level(logging.INFO, logger="runner.sweep"):
        for epoch in range(1, 21):
            members = (0, 1, 2) if epoch < 5 else (0, 2)  # member 1 fails in epoch 5
            for k in members:
                progress(k, epoch, {"val_acc": 0.5 + 0.01 * epoch + 0.1 * k})
            if epoch == 1:  # shown once the last member's row is in, not an epoch later
                assert "epoch 1/20" in caplog.text
        progress.close()
    lines = [r.getMessage() for r in caplog.records]
    shown = [int(line.split("epoch ")[1].split("/")[0]) for line in lines]
    assert shown == [1, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20]
    assert lines[0] == (
        "stacked 3: epoch 1/20, 3 members training, val_acc mean 61.00% (min 51.00%, max 71.00%)"
    )
    assert lines[-1].startswith("stacked 3: epoch 20/20, 2 members training, val_acc mean 8")
