"""What a person sees while training: a live bar on a terminal, plain epoch lines otherwise."""

from __future__ import annotations

import logging
import sys
from typing import Any

EPOCH_LOGGER = "runner.epochs"
log = logging.getLogger(EPOCH_LOGGER)
SHOWN = ("train_loss", "val_loss", "val_acc", "train_acc", "val_rmse", "val_r2")


def _format(metrics: dict[str, float]) -> dict[str, str]:
    return {k: f"{metrics[k]:.4f}" for k in SHOWN if k in metrics}


class _HideFromConsole(logging.Filter):
    """Keeps epoch lines out of the terminal (the bar shows them) but in the job's log file."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name != EPOCH_LOGGER


class EpochProgress:
    """Epoch callback: tqdm bar when stderr is a terminal (mode auto/bar), log lines always."""

    def __init__(self, epochs: int, mode: str = "auto", description: str = "train") -> None:
        self.epochs = epochs
        use_bar = mode == "bar" or (mode == "auto" and sys.stderr.isatty())
        self.bar: Any = None
        self._filter = _HideFromConsole()
        self._console: list[logging.Handler] = []
        if use_bar:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=epochs, desc=description, unit="epoch", dynamic_ncols=True)
        if use_bar or mode == "none":
            self._console = [
                h
                for h in logging.getLogger().handlers
                if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
            ]
            for handler in self._console:
                handler.addFilter(self._filter)

    def __call__(self, epoch: int, metrics: dict[str, float]) -> None:
        shown = _format(metrics)
        text = " ".join(f"{k}={v}" for k, v in shown.items())
        log.info("epoch %d/%d %s", epoch, self.epochs, text)
        if self.bar is not None:
            self.bar.set_postfix(shown, refresh=False)
            self.bar.update(1)

    def close(self) -> None:
        """Close the bar and give the console its epoch lines back."""
        if self.bar is not None:
            self.bar.close()
        for handler in self._console:
            handler.removeFilter(self._filter)
