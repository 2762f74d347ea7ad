"""The MLflow companion, server side: `python -m runner.tracking.companion_server`.

Reads the calls a `CompanionTracker` pickles onto its stdin and runs each, in order, on an
`MlflowTracker`. It imports mlflow, matplotlib and the model logger at once (while the
training process imports torch and loads data), then pays the first-use costs of the run's
end while training runs. For a model whose kernels use every core, it is told to run
SCHED_IDLE (only on CPU time training leaves idle); a small model leaves a core free, and
the companion keeps its normal priority there, so a busy machine cannot starve it while
the finished job waits for its end.

It ends a run only when told to, with the status it is told (the training process decides),
or KILLED when the training process is gone (its stdin closes). It runs in a session of its
own and ignores SIGINT and SIGTERM: a terminal's Ctrl-C, `timeout` or a Slurm time limit is
for the training process, which then tells it how the run ended.
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import signal
import sys
import threading
from typing import Any

from runner.tracking import quiet_third_party_logs, store_location
from runner.tracking.companion import WARM_PARTS
from runner.training.fast_exit import fast_exit
from runner.training.progress import ERASE_LINE

# Before anything slow: a signal that reaches this process anyway (a Slurm step's SIGTERM to
# every process) must not cut the run's record short.
for _sig in (signal.SIGINT, signal.SIGTERM):
    signal.signal(_sig, signal.SIG_IGN)

log = logging.getLogger("runner.tracking")
# The MlflowTracker methods a client may call, besides "open" (make the tracker) and the
# UNPICKLED ones (a model pickled by torch, then logged by the method named).
FORWARDED = {
    "start", "end_stale_runs", "log_params", "log_dataset", "log_metrics", "logged_steps",
    "set_tags", "model_outdated", "log_text", "log_dir", "log_artifact", "log_pictures", "flush",
}  # fmt: skip
UNPICKLED = {"log_model_bytes": "log_model", "log_predictor_bytes": "log_predictor"}
END_OF_RUN = {"log_pictures", *UNPICKLED}  # calls that use what _warm_end_of_run prepares


def serve() -> None:
    """The companion's loop: run each call on an MlflowTracker, in order."""
    from runner.tracking.mlflow_tracker import MlflowTracker
    from runner.tracking.store import StoreError, store_failure

    inbox, outbox = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # stray prints must not corrupt the reply stream
    tracker: MlflowTracker | None = None
    uri = ""  # the store's, once told
    started = ended = failed = False

    def send(kind: str, value: Any) -> None:
        try:
            pickle.dump((kind, value), outbox)
            outbox.flush()
        except (BrokenPipeError, ValueError):
            pass  # the training process is gone; the EOF that follows ends the run KILLED

    # Import everything now, while the training process is still importing and loading
    # data: imports during training would steal CPU from its threads.
    # Only what the run will use: a run without plots or a model never imports matplotlib
    # or torch here (about 3 s of CPU).
    told = os.environ.get("RUNNER_COMPANION_WARM", ",".join(WARM_PARTS))
    parts = {part for part in told.split(",") if part in WARM_PARTS}
    _prewarm(parts)
    send("warm", None)
    # What the run's end would otherwise pay for, done while the run trains.
    warming = threading.Thread(
        target=_warm_end_of_run, args=(parts,), name="warm-end-of-run", daemon=True
    )
    warming.start()
    while True:
        try:
            method, args, reply = pickle.load(inbox)
        except (EOFError, OSError, pickle.UnpicklingError):
            # The training process is gone (or cut a call short) without ending the run.
            if started and not ended:
                tracker.end("KILLED")
                log.warning(
                    "MLflow run %s ended KILLED: its training process stopped without ending "
                    "it; resume=%s continues it from its last checkpoint",
                    tracker.run_id, tracker.run_id,
                )  # fmt: skip
            return
        if method in END_OF_RUN:
            warming.join()  # the two must not do the same work side by side
        result = None
        try:
            if method == "open":
                uri = store_location(args[0])[0]
                tracker = MlflowTracker(*args)
            elif method == "yield_cpu":
                yield_cpu_to_training()
            elif method == "sync":
                pass  # every call before it has run: the training process decides the end
            elif method == "end":
                ended = True
                if started:  # (no run to end if the store never took it)
                    result = tracker.end(*args)
            elif failed:
                pass  # after an error only the run's end still matters
            elif method in UNPICKLED:
                _log_unpickled(getattr(tracker, UNPICKLED[method]), *args)
            elif method in FORWARDED:
                result = getattr(tracker, method)(*args)
            else:
                raise ValueError(f"unknown call {method!r}")
            if method == "start" and not failed:
                started = True
                send("run_id", (result, tracker.experiment_id))
        except Exception as err:
            failed = True
            # The store's own failure (busy past the wait, damaged) in one line: the error
            # the user sees names it, not what a later call tripped over.
            err = store_failure(uri, err) or err
            if isinstance(err, StoreError) and tracker is not None:
                tracker.store_failed = True  # its end tries just the status, once
            log.error("MLflow call %s failed: %s", method, err)
            send("error", (type(err).__name__, str(err)))
        if reply is not None:  # the caller's token: a reply never answers another call
            send("reply", (reply, result))
        if ended:
            return


def _prewarm(parts: set[str]) -> None:
    """Import what the run needs: the plots' and the model's libraries where it has them."""
    if "plots" in parts:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot  # noqa: F401

        from runner.tracking import plots  # noqa: F401
    if "model" in parts:
        import mlflow.pytorch  # noqa: F401 (imports torch too)


def _warm_end_of_run(parts: set[str]) -> None:
    """Pay in advance for the first-use costs of the plots and the model: mlflow.pyfunc's
    import, and matplotlib's first render (fonts, Agg)."""
    try:
        if "model" in parts:
            import mlflow.pyfunc  # noqa: F401
        if "plots" not in parts:
            return
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots()
        ax.plot([0, 1], [0, 1], label="warm")
        ax.legend()
        fig.tight_layout()
        fig.savefig(io.BytesIO(), format="png")
        plt.close(fig)
    except Exception:  # only a head start: the real calls do the same work if this fails
        log.debug("warming up for the end of the run failed", exc_info=True)


def _log_unpickled(log_call: Any, data: bytes, input_example: Any) -> None:
    """Unpickle what the training process sent (its own model) and log it."""
    import torch

    log_call(torch.load(io.BytesIO(data), weights_only=False), input_example)


def yield_cpu_to_training() -> None:
    """Run on the CPU time training leaves idle: Linux's SCHED_IDLE does exactly that (nice
    10 still slowed a model training on every core; see BENCHMARKS.md); else nice 10."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        os.nice(10)


class _OverProgressBar(logging.Formatter):
    """On a terminal, a line starts by erasing the line the cursor is on: the training
    process's progress bar, which it draws again below (on an empty line: nothing)."""

    def format(self, record: logging.LogRecord) -> str:
        return ERASE_LINE + super().format(record)


def _configure_logging() -> None:
    """Log like Hydra's job: to the launching process's console and to its job log."""
    line = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"
    fmt = logging.Formatter(line)
    handlers: list[logging.Handler] = []
    quiet_third_party_logs()
    console = os.environ.get("RUNNER_COMPANION_CONSOLE")
    if console:
        stream = logging.StreamHandler(os.fdopen(int(console), "w", buffering=1))
        stream.setFormatter(_OverProgressBar(line) if stream.stream.isatty() else fmt)
        handlers.append(stream)
    if os.environ.get("RUNNER_COMPANION_LOG"):
        handlers.append(logging.FileHandler(os.environ["RUNNER_COMPANION_LOG"]))
        handlers[-1].setFormatter(fmt)
    for handler in handlers:
        logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)


if __name__ == "__main__":
    _configure_logging()
    try:
        serve()
    except BaseException:  # a bug: said in the log, never as a bare traceback on the console
        log.exception("the MLflow companion failed")
    # Everything is written; skip the slow teardown of an interpreter holding torch+mlflow.
    fast_exit(0)  # (serve() made stdout stderr: the replies' pipe is left as it is)
