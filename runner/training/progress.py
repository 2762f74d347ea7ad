"""What a person sees while training: a live bar on a terminal; elsewhere a line every
tenth of the run (every epoch still goes to the job's log file)."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import Any

EPOCH_LOGGER = "runner.epochs"
log = logging.getLogger(EPOCH_LOGGER)
# Validation first, as the closing line has them (a narrow terminal cuts the bar's right end).
SHOWN = ("val_loss", "val_acc", "val_rmse", "val_r2", "train_loss", "train_acc")
# tqdm's own layout less the rate (epochs/s: the times beside it say as much), for the metrics.
BAR_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}{postfix}]"
# Starts a line on a terminal where a bar (or an echoed ^C) may be: back to its start, erased.
ERASE_LINE = "\r\x1b[K"


def metric_text(key: str, value: float) -> str:
    """A metric for the console: accuracy as a percentage, the rest to 4 significant digits,
    trailing zeros kept (`0.1810` beside `0.1097`, not `0.181`), whole from 1000 on (a price's
    error reads `20431`, not `2.043e+04` or `1015.`)."""
    if key.endswith("_acc"):
        return f"{100 * value:.2f}%"
    text = f"{value:#.4g}"
    if abs(value) >= 1 and ("e" in text or text.endswith(".")):
        return f"{value:.0f}"
    return text


def _format(metrics: dict[str, float]) -> dict[str, str]:
    # As the closing line shows them: an epoch line's 0.9400 read beside its 94.00%.
    return {k: metric_text(k, metrics[k]) for k in SHOWN if k in metrics}


LINES_PER_RUN = 10  # console epoch lines without a terminal, besides the first and last


class _HideFromConsole(logging.Filter):
    """Keeps epoch lines out of the terminal (the bar shows them, or they are thinned) but
    in the job's log file."""

    def __init__(self, everything: bool) -> None:
        super().__init__()
        self.everything = everything

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name != EPOCH_LOGGER:
            return True
        return not self.everything and getattr(record, "on_console", True)


def _bar_width() -> int:
    """The terminal's width less 3: a bar as wide as the line leaves the cursor past its end,
    and the `^C` a Ctrl-C echoes then wraps to a line of its own, leaving a stale bar."""
    try:
        return max(20, os.get_terminal_size(sys.stderr.fileno()).columns - 3)
    except (OSError, ValueError):
        return 77


class EpochProgress:
    """Epoch callback: tqdm bar when stderr is a terminal (mode auto/bar), log lines always."""

    def __init__(
        self, epochs: int, mode: str = "auto", description: str = "train", done: int = 0
    ) -> None:
        self.epochs = epochs  # `done`: epochs a resumed run trained before (the bar starts there)
        use_bar = mode == "bar" or (mode == "auto" and sys.stderr.isatty())
        self.bar: Any = None
        self._filter = _HideFromConsole(everything=use_bar or mode == "none")
        self._console: list[logging.Handler] = []
        self._redirect = contextlib.ExitStack()
        self.every = 1 if mode == "lines" else max(1, round(epochs / LINES_PER_RUN))
        if use_bar:
            from tqdm.auto import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm

            self.bar = tqdm(
                total=epochs, initial=done, desc=description, unit="epoch", ncols=_bar_width(),
                bar_format=BAR_FORMAT,
            )  # fmt: skip
            # A line logged while the bar is on screen is printed above it, not onto its line.
            self._redirect.enter_context(logging_redirect_tqdm(tqdm_class=tqdm))
        if use_bar or mode in ("none", "auto"):
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
        on_console = epoch % self.every == 0 or epoch in (1, self.epochs)
        log.info("epoch %d/%d %s", epoch, self.epochs, text, extra={"on_console": on_console})
        if self.bar is not None:
            self.bar.set_postfix(shown, refresh=False)
            self.bar.update(1)

    def close(self) -> None:
        """Close the bar and give the console its epoch lines back."""
        if self.bar is not None:
            self.bar.close()
        for handler in self._console:
            handler.removeFilter(self._filter)
        self._redirect.close()  # the console's own handlers back
