"""Ctrl-C and SIGTERM across a sweep's processes.

The launching process blocks both signals once the sweep starts (`watch_sweep`), so that
the processes launchers start (joblib's workers, submitit's controllers and their tasks)
inherit them blocked: no launcher's own process is cut down mid-way (submitit's controller
would SIGKILL its tasks a second after Ctrl-C; an idle loky worker would break the pool).
A job unblocks them when it starts (`job_signals`). A thread of the launching process
receives them meanwhile: it says once what happens, and leaves a mark in the sweep folder
(`sweep_interrupted`) for jobs in other processes or on other nodes, which stop after their
epoch when they see it. A second signal reaches the jobs as their own second (they stop at
once); a third makes the launching process stop waiting for them.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runner.training import signals

if TYPE_CHECKING:
    from runner.config.launch import Launch

log = logging.getLogger("runner.sweep")

MARKER = "interrupted"  # in a sweep folder: the sweep was interrupted (holds the signal)
MARKER_CHECK_SECONDS = 1.0  # a job looks for the mark at most this often


class _Sweep:
    marker: Path | None = None  # the sweep's mark (launching process only)
    launching_pid: int | None = None  # the process that launched the sweep
    watcher: threading.Thread | None = None  # receives the signals the sweep blocks
    mask: Any = None  # the signal mask before the sweep blocked them
    unwatching = False
    seen: dict[str, tuple[float, int | None]] = {}  # sweep folder: (when looked, what found)


_W = _Sweep()


def sweep_marker(sweep_dir: str | os.PathLike) -> Path:
    """The file that says a sweep was interrupted (it holds the signal's number)."""
    return Path(sweep_dir) / MARKER


def sweep_interrupted(sweep_dir: str | os.PathLike | None) -> int | None:
    """The signal that interrupted this sweep, seen here or by its launching process (the
    mark is looked for at most once a second: a shared folder may be slow)."""
    if signals.interrupted() is not None:
        return signals.interrupted()
    if sweep_dir is None:
        return None
    key, now = str(sweep_dir), time.monotonic()
    when, found = _W.seen.get(key, (float("-inf"), None))
    if found is None and now - when >= MARKER_CHECK_SECONDS:
        try:
            text = sweep_marker(sweep_dir).read_text().strip()
            found = int(text) if text.isdigit() else signal.SIGINT
        except OSError:
            found = None
        _W.seen[key] = (now, found)
    return found


def _leave_marker(signum: int) -> None:
    """Mark the sweep folder (made if Hydra has not made it yet)."""
    if _W.marker is None or _W.marker.exists():
        return
    try:
        _W.marker.parent.mkdir(parents=True, exist_ok=True)
        _W.marker.write_text(str(signum))
    except OSError as err:
        signals.say("could not mark the sweep interrupted in %s: %s", _W.marker, err)


def _announce(signum: int, requests: int) -> None:
    name = signals.signal_name(signum)
    if requests == 1:
        signals.say(
            "%s: no new job starts; running jobs stop after their epoch and end KILLED "
            "(again: they stop at once)", name,
        )  # fmt: skip
    elif requests == 2:
        signals.say("%s again: jobs stop at once (a third time: stop waiting for them)", name)


def in_launching_process() -> bool:
    """Whether this is the process that launched the sweep (the basic launcher's jobs run
    here: an interrupt stops its loop; elsewhere a job just returns)."""
    return _W.launching_pid == os.getpid()


def watch_sweep(sweep_dir: str | os.PathLike) -> None:
    """In the launching process, for the rest of the sweep: block SIGINT/SIGTERM in this
    thread and receive them in a thread of their own (see the module's docstring)."""
    _W.launching_pid = os.getpid()
    _W.marker = sweep_marker(sweep_dir)
    _W.marker.unlink(missing_ok=True)  # a mark of an earlier launch into the same folder
    requests = [0]

    def on_defer(signum: int) -> None:  # a signal the main thread takes between jobs
        requests[0] += 1
        _leave_marker(signum)
        _announce(signum, requests[0])

    signals.on_defer(on_defer)
    signals.install("defer")
    if not (signals.main_thread() and hasattr(signal, "pthread_sigmask")):
        return
    _W.mask = signal.pthread_sigmask(signal.SIG_BLOCK, signals.SIGNALS)
    _W.watcher = threading.Thread(target=_watch, args=(on_defer,), name="runner-signals")
    _W.watcher.daemon = True
    _W.watcher.start()


def _watch(on_defer: Any) -> None:
    requests = 0
    while True:
        signum = signal.sigwait(signals.SIGNALS)
        if _W.unwatching:
            return
        if not signals.received(signum):
            continue
        requests += 1
        if requests < 3:
            on_defer(signum)
        else:  # the launching process stops waiting for its jobs
            signals.force_interrupt(signum)


def unwatch_sweep() -> None:
    """The sweep is over: signals reach this thread again, in "interrupt" mode."""
    watcher, _W.watcher = _W.watcher, None
    if watcher is not None and watcher.is_alive():
        _W.unwatching = True
        signal.pthread_kill(watcher.ident, signal.SIGINT)  # (it takes that one, and stops)
        watcher.join(timeout=5)
        _W.unwatching = False
    if _W.mask is not None and signals.main_thread():
        signal.pthread_sigmask(signal.SIG_SETMASK, _W.mask)
        _W.mask = None
    _W.launching_pid, _W.marker = None, None
    signals.on_defer(None)
    signals.install("interrupt")


@contextmanager
def job_signals() -> Iterator[None]:
    """Around a job in a sweep: signals reach this thread (a launcher's process may have
    inherited them blocked) and, between jobs, are noted ("defer")."""
    if not signals.main_thread():
        yield
        return
    signals.install("defer")
    unblock = hasattr(signal, "pthread_sigmask")
    before = signal.pthread_sigmask(signal.SIG_UNBLOCK, signals.SIGNALS) if unblock else None
    try:
        yield
    finally:
        if before is not None and in_launching_process():
            signal.pthread_sigmask(signal.SIG_SETMASK, before)  # back to the watching thread


def child_signals(mode_name: str | None) -> None:
    """In a forked worker of the launching process (which inherited the signals blocked):
    receive them in `mode_name`, or ignore them (None: its work must finish); this process
    launches nothing."""
    _W.launching_pid, _W.marker, _W.watcher = None, None, None
    signals.on_defer(None)
    if mode_name is None:
        signals.ignore()
        return
    signals.install(mode_name)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, signals.SIGNALS)


def interrupted(launch: Launch) -> int | None:
    """The signal that interrupted this job's sweep, if it was (here or elsewhere)."""
    return sweep_interrupted(launch.sweep_dir)


def job_not_started(launch: Launch) -> None:
    """A job of an interrupted sweep does not start: in the launching process that stops
    the launcher's loop; elsewhere the job just returns."""
    signum = interrupted(launch) or signal.SIGINT
    if in_launching_process():
        raise signals.Interrupted(signum)
    log.info("job %s not started: the sweep was interrupted", launch.job_num)


def job_interrupted(launch: Launch, err: signals.Interrupted) -> None:
    """A job stopped by a signal has ended its run KILLED: in the launching process the
    sweep stops here; a job elsewhere says so and returns (the launching process ends the
    sweep once every job has returned)."""
    if in_launching_process():
        raise err
    after = f" after epoch {err.epoch}" if err.epoch else ""
    ended = f": run {err.run_id} ended {err.run_status or 'KILLED'}" if err.run_id else ""
    log.warning("job %s interrupted%s%s", launch.job_num, after, ended)
