"""`python -m runner ...` and the `runner` command: the Hydra entry point, with a fast exit."""

import atexit
import logging
import multiprocessing
import os
import sys

from runner.main import cli


def _exit_code(err: SystemExit) -> int:
    if err.code is None or isinstance(err.code, int):
        return err.code or 0
    print(err.code, file=sys.stderr)
    return 1


def entry() -> None:
    """Run the command line's run or sweep, then leave at once with its exit status."""
    try:
        cli()
        code = 0
    except SystemExit as err:
        code = _exit_code(err)
    except KeyboardInterrupt as err:  # the run is already ended KILLED, its checkpoint saved
        print(f"interrupted: {err}".rstrip(": "), file=sys.stderr)
        code = 128 + getattr(err, "signum", 2)
    # Tearing down an interpreter that loaded torch and mlflow is slow (seconds, more with a
    # launcher's worker pool); every result is already written, so end the idle workers,
    # run the exit handlers, flush, and leave at once.
    for worker in multiprocessing.active_children():
        worker.terminate()
    atexit._run_exitfuncs()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    entry()
