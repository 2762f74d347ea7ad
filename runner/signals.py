"""SIGINT and SIGTERM during a job: finish the epoch, checkpoint, end the run KILLED; during
a stacked group's training: stop at once, as Ctrl-C does."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger("runner")


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived: the run stopped after a checkpointed epoch."""

    def __init__(self, signum: int, epoch: int) -> None:
        super().__init__(f"stopped by signal {signum} after epoch {epoch}")
        self.signum = signum


class StopRequest:
    """The first SIGINT/SIGTERM asks to stop after the current epoch; a second stops now."""

    signum: int | None = None


STOP = StopRequest()  # read by the job after each epoch


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within a job: SIGINT/SIGTERM set STOP; the handlers before are restored after."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may install handlers (a threaded launcher's job)
        return

    def request(signum: int, frame: Any) -> None:
        if STOP.signum is not None:
            raise KeyboardInterrupt  # asked twice: stop at once
        STOP.signum = signum
        log.warning("signal %d: stopping after this epoch (send it again to stop now)", signum)

    previous = {sig: signal.signal(sig, request) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        STOP.signum = None
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived where it interrupts as Ctrl-C does (`sigterm_interrupts`)."""

    signum = signal.SIGTERM


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Within the block, SIGTERM raises Terminated, as SIGINT raises KeyboardInterrupt (its
    default would end the process at once, leaving its runs RUNNING)."""
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may install handlers
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise Terminated(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
