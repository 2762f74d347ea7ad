"""Ctrl-C and SIGTERM in a process that can hold a run.

A terminal's Ctrl-C is SIGINT to every process of its foreground group; `timeout`, Slurm
and `kill -- -PGID` send SIGTERM the same way. One handler decides what a signal means
here, in one of three modes:

- "interrupt" (`install`, the entry point's first act): stop at once, as KeyboardInterrupt
  (`Interrupted`); nothing is under way that must finish first.
- "epoch" (`stop_on_signals`, while a job trains): the first signal asks to stop after the
  epoch (the job reads `STOP`), the next stops at once.
- "defer" (a sweep's processes between jobs): the signal is noted (`interrupted`) and
  handed to the sweep (runner.training.sweep_signals); no new job starts.

`shielded()` marks a few lines that a signal must not cut in two (a message to the MLflow
companion, a run's start or end): a signal that arrives inside acts when the section ends,
or is only noted (`noted`) where the process is already stopping. A signal that lands inside
OmegaConf (`FRAGILE_CODE`: Hydra composing the config) acts once the process is out of it.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from runner.errors import ending

log = logging.getLogger("runner")
SIGNALS = (signal.SIGINT, signal.SIGTERM)
NAMES = {signal.SIGINT: "Ctrl-C (SIGINT)", signal.SIGTERM: "SIGTERM"}
# A SIGTERM this soon after another is the same request: a launcher or srun forwarding the
# group's signal to its tasks, not a person asking twice.
ECHO_SECONDS = 1.0
LOST_DELAY = 0.002  # seconds after a dropped interrupt before it is raised again
# Code that an exception must not cut into: OmegaConf's context managers restore flags in
# `finally` blocks that fail on a node left half made, so a KeyboardInterrupt raised inside
# became an unrelated ConfigKeyError (Ctrl-C while Hydra composed the config, exit 1).
FRAGILE_CODE = ("/omegaconf/",)
HOLD_DELAY = 0.01  # seconds between looks for the way out of fragile code


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped the work; what it stopped, for the closing line."""

    def __init__(self, signum: int, epoch: int | None = None, at_once: bool = False) -> None:
        super().__init__(signal_name(signum))
        self.signum = signum
        self.epoch = epoch  # the last finished epoch (None: before training)
        self.at_once = at_once  # stopped within an epoch, not after it
        self.writing_end = False  # stopped while the run's end was written
        self.checkpoint_epoch: int | None = None  # the epoch of its last checkpoint
        self.run_id: str | None = None  # the run it ended, once known
        self.run_status: str | None = None  # the status the store confirmed for that run
        self.handed_off: str | None = None  # the status the MLflow process writes alone
        self.command: str | None = None  # the command that continues the run


def interruption(err: KeyboardInterrupt) -> Interrupted:
    """`err` as an Interrupted (a bare KeyboardInterrupt: the first signal's, else Ctrl-C)."""
    if isinstance(err, Interrupted):
        return err
    found = Interrupted(interrupted() or signal.SIGINT)
    found.__cause__ = err
    return found


class StopRequest:
    """The signal that asked a training job to stop after its epoch (None: none yet)."""

    signum: int | None = None


STOP = StopRequest()  # read by the job after each epoch


class _State:
    mode = "interrupt"
    first: int | None = None  # the first SIGINT/SIGTERM this process received
    requests = 0  # signals acted on in the current mode
    depth = 0  # shielded sections entered
    pending: int | None = None  # a signal that arrived inside a shielded section
    noted = 0  # signals that arrived inside shielded sections
    last: tuple[int, float] = (0, 0.0)  # the last signal and when (for echoes)
    forced = False  # the next handler call raises whatever the mode (runner.training.sweep_signals)
    lost: Interrupted | None = None  # raised where Python drops exceptions: raised again
    held: int | None = None  # a signal that landed in fragile code: acted on once out of it
    python_unraisablehook: Callable[[Any], None] = staticmethod(sys.unraisablehook)
    on_defer: Callable[[int], None] | None = None  # a "defer" signal goes to the sweep too
    last_run: tuple[str, str] | None = None  # the last run this process ended, and how


_S = _State()


def signal_name(signum: int) -> str:
    """How a person names the signal: Ctrl-C (SIGINT), SIGTERM."""
    try:
        return NAMES.get(signum) or signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def main_thread() -> bool:
    """Whether this is the main thread (the only one that handles signals)."""
    return threading.current_thread() is threading.main_thread()


def install(mode: str = "interrupt") -> None:
    """Handle SIGINT and SIGTERM here from now on, in `mode` (main thread only)."""
    if not main_thread():
        return
    _S.mode, _S.requests = mode, 0
    for sig in SIGNALS:
        if signal.getsignal(sig) is not _on_signal:
            signal.signal(sig, _on_signal)
    if sys.unraisablehook is not _raise_again:
        _S.python_unraisablehook, sys.unraisablehook = sys.unraisablehook, _raise_again


def _raise_again(unraisable: Any) -> None:
    """A signal's exception that landed in a garbage collector's callback or a `__del__`
    (where Python prints "Exception ignored" and drops it) is raised again in the main
    thread, silently; any other such exception is printed as Python does."""
    err = unraisable.exc_value
    if not isinstance(err, Interrupted):
        _S.python_unraisablehook(unraisable)
        return
    # Raised from here it would be dropped again: an alarm raises it once this returns.
    _S.lost = err
    _alarm(LOST_DELAY)


def _alarm(seconds: float) -> None:
    signal.signal(signal.SIGALRM, _on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)


def _on_alarm(signum: int, frame: Any) -> None:
    if _S.lost is not None:
        lost, _S.lost = _S.lost, None
        raise lost
    if _S.held is not None:
        if _in_fragile_code(frame):
            _alarm(HOLD_DELAY)
            return
        held, _S.held = _S.held, None
        _act(held)


def _in_fragile_code(frame: Any) -> bool:
    """Whether `frame` or a caller of it runs code in FRAGILE_CODE."""
    while frame is not None:
        if any(part in frame.f_code.co_filename for part in FRAGILE_CODE):
            return True
        frame = frame.f_back
    return False


def ignore() -> None:
    """From now on SIGINT and SIGTERM do nothing (the process is already on its way out)."""
    if main_thread():
        for sig in SIGNALS:
            signal.signal(sig, signal.SIG_IGN)


def received(signum: int) -> bool:
    """Take in a signal that arrived (here or in a sweep's watching thread): False for the
    echo of one just taken, else True, the first one kept (`interrupted`)."""
    now = time.monotonic()
    last, _S.last = _S.last, (signum, now)
    if signum == signal.SIGTERM and last[0] == signum and now - last[1] < ECHO_SECONDS:
        return False
    if _S.first is None:
        _S.first = signum
    return True


def _on_signal(signum: int, frame: Any) -> None:
    if _S.forced:  # a sweep's launching process gives up waiting for its jobs
        _S.forced = False
        raise Interrupted(signum)
    if not received(signum):
        return
    if _S.depth:
        _S.pending, _S.noted = signum, _S.noted + 1
        return
    if _S.held is not None:  # acted on already, once out of the fragile code
        return
    if _in_fragile_code(frame):
        _S.held = signum
        _alarm(HOLD_DELAY)
        return
    _act(signum)


def say(message: str, *args: Any) -> None:
    """Log a warning from a signal handler: from a thread of its own, since the handler may
    run inside a logging call (a stream written into again from the same thread fails)."""
    threading.Thread(target=log.warning, args=(message, *args), daemon=True).start()


def _act(signum: int) -> None:
    _S.requests += 1
    name = signal_name(signum)
    if _S.mode == "epoch":
        if _S.requests == 1:
            STOP.signum = signum
            say("%s: stopping after this epoch (again: stop at once)", name)
            return
        say("%s again: stopping at once", name)
        raise Interrupted(signum, at_once=True)
    if _S.mode == "defer":
        if _S.on_defer is not None:
            _S.on_defer(signum)
        return
    raise Interrupted(signum)


def warned(signum: int, what: str) -> None:
    """A warning that the process will soon be stopped (Slurm's signal before a time limit):
    a training job stops after its epoch, as on a first SIGTERM, but never at once for it
    (the limit's SIGTERM follows if the epoch runs on); anywhere else it is only noted, so
    no job starts and a run's end being written is written in full. `what` names it."""
    if _S.first is None:
        _S.first = signum
    if _S.mode == "epoch" and STOP.signum is None:
        _S.requests += 1  # a SIGTERM after it stops at once
        STOP.signum = signum
        say("%s: stopping after this epoch", what)


def force_interrupt(signum: int) -> None:
    """From another thread: interrupt the main thread now, whatever its mode or shield."""
    import _thread

    _S.forced = True
    _thread.interrupt_main(signum)


@contextmanager
def shielded(deliver: bool = True) -> Iterator[None]:
    """A signal inside the block acts when it ends (not at all if `deliver` is False: the
    process is already stopping and only notes it)."""
    if not main_thread():
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


def noted() -> int:
    """How many signals have arrived inside shielded sections so far."""
    return _S.noted


def set_mode(name: str) -> None:
    """Signals act in mode `name` from now on (until a `mode` block around this ends)."""
    if main_thread():
        install(name)


@contextmanager
def mode(name: str) -> Iterator[None]:
    """Within the block, signals act in mode `name`; the mode before is restored after."""
    if not main_thread():
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


def note_run(run_id: str | None, status: str | None) -> None:
    """Remember how the last run this process held ended (for a later closing line)."""
    if run_id and status:
        _S.last_run = (run_id, status)


def last_run() -> tuple[str, str] | None:
    """The last run this process ended, and its status (None: none)."""
    return _S.last_run


def on_defer(hook: Callable[[int], None] | None) -> None:
    """What a signal in "defer" mode does besides being noted (a sweep marks its folder)."""
    _S.on_defer = hook


@contextmanager
def always_ended(
    end: Callable[[str, str | None, str | None], None], start: Callable[[], None] | None = None
) -> Iterator[None]:
    """Call `start()`, then `end(status, error, traceback)` however the block exits: a run
    never stays RUNNING because of an error or an interrupt. Ctrl-C cannot fall between the
    start and the guard, nor cut the end short (it acts once the run has ended)."""
    outcome: tuple[str, str | None, str | None] = ("FINISHED", None, None)
    started = start is None
    try:
        if start is not None:
            with shielded():
                start()
                started = True
        yield
    except BaseException as err:
        outcome = ending(err)
        raise
    finally:
        if started:
            # A signal during the end of a stopped run is only noted; after a FINISHED end
            # it acts as usual (the run's record stays true either way).
            with shielded(deliver=outcome[0] == "FINISHED"):
                end(*outcome)


def one_line_on_ctrl_c(main: Callable[[], int], line: str) -> int:
    """A command's `main`, with a terminal's Ctrl-C ending it in `line` on stderr and exit
    status 130, never a traceback (what `main` leaves behind is its own to clean up)."""
    try:
        return main()
    except KeyboardInterrupt:
        ignore()  # a second Ctrl-C must not cut the line short
        print(line, file=sys.stderr)
        return 130
