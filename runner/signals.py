"""Ctrl-C and SIGTERM in every process of a run or a sweep.

A terminal's Ctrl-C is SIGINT to every process of its foreground group; `timeout`, Slurm
and `kill -- -PGID` send SIGTERM the same way. So each process that can hold a run decides
here what a signal means to it (one handler, in one of three modes):

- "interrupt" (`install`, the entry point's first act): stop at once, as KeyboardInterrupt
  (`Interrupted`); nothing is under way that must finish first.
- "epoch" (`stop_on_signals`, while a job trains): the first signal asks to stop after the
  epoch (the job reads `STOP`), the next stops at once.
- "defer" (a sweep's processes between jobs): the signal is noted (`interrupted`); no new
  job starts, and the sweep's end reports it.

`shielded()` marks a few lines that a signal must not cut in two (a message to the MLflow
companion, a run's start or end): a signal that arrives inside acts when the section ends.

The launching process of a sweep blocks both signals while its jobs run (`watch_sweep`), so
that the processes a launcher starts (joblib's workers, submitit's controllers) inherit them
blocked: a job unblocks them when it starts (`job_signals`), and no launcher's own process
is cut down mid-way. A thread of the launching process receives them meanwhile and leaves a
marker in the sweep folder for jobs in other processes or on other nodes.
"""

from __future__ import annotations

import _thread
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

log = logging.getLogger("runner")
SIGNALS = (signal.SIGINT, signal.SIGTERM)
NAMES = {signal.SIGINT: "Ctrl-C (SIGINT)", signal.SIGTERM: "SIGTERM"}
MARKER = "interrupted"  # in a sweep folder: the sweep was interrupted (holds the signal)
# A SIGTERM this soon after another is the same request: a launcher or srun forwarding the
# group's signal to its tasks, not a person asking twice.
ECHO_SECONDS = 1.0


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped the work; `epoch` is the last finished epoch, if any."""

    def __init__(self, signum: int, epoch: int | None = None, at_once: bool = False) -> None:
        super().__init__(signal_name(signum))
        self.signum, self.epoch, self.at_once = signum, epoch, at_once
        self.run_id: str | None = None  # the run it ended, once known
        self.run_status: str | None = None  # the status the store confirmed for that run
        self.command: str | None = None  # the command that continues the run


class StopRequest:
    """The signal that asked a training job to stop after its epoch (None: none yet)."""

    signum: int | None = None


STOP = StopRequest()  # read by the job after each epoch


class _State:
    mode = "interrupt"
    first: int | None = None  # the first SIGINT/SIGTERM this process received
    requests = 0  # signals received in the current mode
    depth = 0  # shielded sections entered
    pending: int | None = None  # a signal that arrived inside a shielded section
    last: tuple[int, float] = (0, 0.0)  # the last signal and when (for echoes)
    marker: Path | None = None  # the sweep's marker file (launching process only)
    launching_pid: int | None = None  # the process that launched the sweep
    watcher: threading.Thread | None = None  # receives the signals the sweep blocks
    mask: Any = None  # the signal mask before the sweep blocked them
    unwatching = False


_S = _State()


def signal_name(signum: int) -> str:
    """How a person names the signal: Ctrl-C (SIGINT), SIGTERM."""
    try:
        return NAMES.get(signum) or signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def install(mode: str = "interrupt") -> None:
    """Handle SIGINT and SIGTERM here from now on, in `mode` (main thread only)."""
    if not _main_thread():
        return
    _S.mode, _S.requests = mode, 0
    for sig in SIGNALS:
        if signal.getsignal(sig) is not _on_signal:
            signal.signal(sig, _on_signal)


def ignore() -> None:
    """From now on SIGINT and SIGTERM do nothing (the process is already on its way out)."""
    if _main_thread():
        for sig in SIGNALS:
            signal.signal(sig, signal.SIG_IGN)


def _on_signal(signum: int, frame: Any) -> None:
    now = time.monotonic()
    echo = signum == signal.SIGTERM and _S.last[0] == signum and now - _S.last[1] < ECHO_SECONDS
    _S.last = (signum, now)
    if echo:
        return
    if _S.first is None:
        _S.first = signum
    if _S.depth:
        _S.pending = signum
        return
    _act(signum)


def _act(signum: int) -> None:
    _S.requests += 1
    name = signal_name(signum)
    if _S.mode == "epoch":
        if _S.requests == 1:
            STOP.signum = signum
            log.warning("%s: stopping after this epoch (again: stop at once)", name)
            return
        log.warning("%s again: stopping at once", name)
        raise Interrupted(signum, at_once=True)
    if _S.mode == "defer":
        _leave_marker(signum)
        if _S.requests == 1:
            log.warning(
                "%s: no new job starts; running jobs stop after their epoch and end KILLED "
                "(again: they stop at once)", name,
            )  # fmt: skip
        return
    raise Interrupted(signum)


@contextmanager
def shielded(deliver: bool = True) -> Iterator[None]:
    """A signal inside the block acts when it ends (not at all if `deliver` is False: the
    process is already stopping and only notes it)."""
    if not _main_thread():
        yield
        return
    _S.depth += 1
    try:
        yield
    finally:
        _S.depth -= 1
        if _S.depth == 0 and _S.pending is not None:
            signum, _S.pending = _S.pending, None
            if deliver:
                _act(signum)


@contextmanager
def mode(name: str) -> Iterator[None]:
    """Within the block, signals act in mode `name`; the mode before is restored after."""
    if not _main_thread():
        yield
        return
    before, requests = _S.mode, _S.requests
    install(name)
    try:
        yield
    finally:
        _S.mode, _S.requests = before, requests


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """While a job trains: the first SIGINT/SIGTERM sets STOP, the next stops at once."""
    STOP.signum = None
    with mode("epoch"):
        try:
            yield
        finally:
            STOP.signum = None


def interrupted() -> int | None:
    """The first SIGINT/SIGTERM this process received (None: none so far)."""
    return _S.first


# Sweeps


def sweep_marker(sweep_dir: str | os.PathLike) -> Path:
    """The file that says a sweep was interrupted (it holds the signal's number)."""
    return Path(sweep_dir) / MARKER


def sweep_interrupted(sweep_dir: str | os.PathLike | None) -> int | None:
    """The signal that interrupted this sweep, seen here or by its launching process."""
    if _S.first is not None:
        return _S.first
    if sweep_dir is None:
        return None
    try:
        text = sweep_marker(sweep_dir).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else signal.SIGINT


def _leave_marker(signum: int) -> None:
    if _S.marker is not None and not _S.marker.exists():
        try:
            _S.marker.write_text(str(signum))
        except OSError:
            log.exception("could not mark the sweep interrupted in %s", _S.marker)


def in_launching_process() -> bool:
    """Whether this is the process that launched the sweep (the basic launcher's jobs run
    here: an interrupt stops its loop; elsewhere a job just returns)."""
    return _S.launching_pid == os.getpid()


def watch_sweep(sweep_dir: str | os.PathLike) -> None:
    """In the launching process, for the rest of the sweep: block SIGINT/SIGTERM in this
    thread (the processes launchers start inherit that) and receive them in a thread of their
    own, which notes them and marks the sweep folder; a third interrupts this process."""
    _S.launching_pid = os.getpid()
    _S.marker = sweep_marker(sweep_dir)
    _S.marker.unlink(missing_ok=True)  # a mark of an earlier launch into the same folder
    install("defer")
    if not (_main_thread() and hasattr(signal, "pthread_sigmask") and hasattr(signal, "sigwait")):
        return
    _S.mask = signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    _S.watcher = threading.Thread(target=_watch, name="runner-signals", daemon=True)
    _S.watcher.start()


def unwatch_sweep() -> None:
    """The sweep is over: signals reach this thread again, in "interrupt" mode."""
    watcher, _S.watcher = _S.watcher, None
    if watcher is not None and watcher.is_alive():
        _S.unwatching = True
        signal.pthread_kill(watcher.ident, signal.SIGINT)  # (it takes that one, and stops)
        watcher.join(timeout=5)
        _S.unwatching = False
    if _S.mask is not None and _main_thread():
        signal.pthread_sigmask(signal.SIG_SETMASK, _S.mask)
        _S.mask = None
    _S.launching_pid, _S.marker = None, None
    install("interrupt")


def _watch() -> None:
    while True:
        signum = signal.sigwait(SIGNALS)
        if _S.unwatching:
            return
        now = time.monotonic()
        if signum == signal.SIGTERM and _S.last[0] == signum and now - _S.last[1] < ECHO_SECONDS:
            continue
        _S.last = (signum, now)
        if _S.first is None:
            _S.first = signum
        _S.requests += 1
        _leave_marker(signum)
        name = signal_name(signum)
        if _S.requests == 1:
            log.warning(
                "%s: no new job starts; running jobs stop after their epoch and end KILLED "
                "(again: they stop at once)", name,
            )  # fmt: skip
        elif _S.requests == 2:
            log.warning("%s again: jobs stop at once (a third time: leave them)", name)
        else:  # the launching process gives up waiting for its jobs
            _S.mode = "interrupt"
            _thread.interrupt_main(signum)
            return


@contextmanager
def job_signals() -> Iterator[None]:
    """Around a job in a sweep: signals reach this thread (a launcher's process may have
    inherited them blocked) and, between jobs, are noted ("defer")."""
    if not _main_thread():
        yield
        return
    blocked = hasattr(signal, "pthread_sigmask")
    if _S.mode != "defer" or signal.getsignal(signal.SIGINT) is not _on_signal:
        install("defer")
    before = signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS) if blocked else None
    try:
        yield
    finally:
        if before is not None and in_launching_process():
            signal.pthread_sigmask(signal.SIG_SETMASK, before)  # back to the watching thread


def child_signals(mode_name: str | None = "interrupt") -> None:
    """In a forked worker of the launching process (which inherited the signals blocked):
    receive them in `mode_name`, or ignore them (None: its work must finish); this process
    launches nothing."""
    _S.launching_pid = None
    _S.marker = None
    if mode_name is None:
        ignore()
        return
    install(mode_name)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)
