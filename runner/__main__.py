"""`python -m runner ...` and the `runner` command: the Hydra entry point, with a fast exit."""

# Nothing slow before `entry` installs the signal handler: Ctrl-C or SIGTERM while Python
# is still importing torch, Hydra or MLflow ends in one line, never a traceback.
import atexit
import os
import signal
import sys

from runner.training import signals, sweep_signals
from runner.training.fast_exit import fast_exit
from runner.training.progress import ERASE_LINE


def _exit_code(err: SystemExit) -> int:
    if err.code is None or isinstance(err.code, int):
        return err.code or 0
    print(err.code, file=sys.stderr)
    return 1


def interrupt_message(err: KeyboardInterrupt) -> str:
    """The one line an interrupted command ends with: what stopped, what the run became,
    and how to continue it ('' in a sweep, whose own line follows)."""
    stop = signals.interruption(err)
    what = f"interrupted by {signals.signal_name(stop.signum)}"
    if sweep_signals.in_launching_process():
        return ""  # the sweep's own line follows, naming its runs
    if stop.run_id is None:
        ended = signals.last_run()
        return f"{what} after run {ended[0]} ended {ended[1]}" if ended else (
            f"{what}; no run was recorded"
        )  # fmt: skip
    if stop.run_status == "FINISHED":
        return f"{what} after run {stop.run_id} ended FINISHED"
    epoch = stop.epoch or 0
    if stop.writing_end:
        what += " while the run's end (test split, plots, model) was written"
    elif stop.at_once:
        what += f" during epoch {epoch + 1}"
    elif epoch:
        what += f" after epoch {epoch}"
    logged = f"{epoch} epoch{'' if epoch == 1 else 's'} logged"
    if stop.run_status:
        line = f"{what}: run {stop.run_id} ended {stop.run_status} with {logged}"
    elif stop.handed_off:
        line = f"{what}: run {stop.run_id} is left to the MLflow process, which ends it "
        line += f"{stop.handed_off} with {logged}"
    else:
        line = f"{what}: run {stop.run_id} could not be ended"
    saved, command = stop.checkpoint_epoch, stop.command
    if not command:
        return line
    if not saved:
        return f"{line}; it has no checkpoint to continue from (the same command starts anew)"
    if saved < epoch:
        return f"{line}; continue it from its checkpoint of epoch {saved} with: {command}"
    return f"{line}; continue it with: {command}"


def entry() -> None:
    """Run the command line's run or sweep, then leave at once with its exit status."""
    try:
        signals.install()  # (first, and inside the try: a signal from here on is handled)
        from runner.main import cli

        cli()
        code = 0
    except SystemExit as err:
        code = _exit_code(err)
    except KeyboardInterrupt as err:  # any run it started has ended KILLED already
        signals.ignore()  # a further Ctrl-C must not cut the last line short
        message = interrupt_message(err)
        if message:
            # On a terminal the line starts over: the `^C` it echoed is where the cursor is.
            print((ERASE_LINE if sys.stderr.isatty() else "") + message, file=sys.stderr)
        code = 128 + signals.interruption(err).signum
    signals.ignore()
    # Tearing down an interpreter that loaded torch and mlflow is slow (seconds, more with a
    # launcher's worker pool); every result is already written, so end the idle workers,
    # run the exit handlers, flush, and leave at once.
    import multiprocessing

    for worker in multiprocessing.active_children():
        if worker.pid:
            os.kill(worker.pid, signal.SIGKILL)  # (idle: it may hold signals blocked)
    atexit._run_exitfuncs()
    fast_exit(code)


if __name__ == "__main__":
    entry()
