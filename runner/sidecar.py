"""MLflow logging in a companion process, off the training process's critical path.

The training process never imports mlflow: `RemoteTracker` forwards every Tracker call
(pickled, over the companion's stdin) to `python -m runner.sidecar`, which owns a real
`Tracker`. On two or more cores the companion imports mlflow, opens the store, starts the
run, writes params, artifacts and metrics, draws the plots and logs the model while the
training process trains. Errors come back (polled each epoch and at the end) as the same
exceptions; if the training process dies, the companion sees its stdin close and ends the
run KILLED with every metric it was sent.
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import select
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

log = logging.getLogger("runner.tracking")


class RemoteError(RuntimeError):
    """A tracking call failed in the companion process."""


def use_companion() -> bool:
    """MLflow in a companion process when the machine has a core to spare for it
    (RUNNER_SIDECAR=0 keeps it in-process). Only single runs ask: sweeps log in-process."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (cores or 1) > 1 and os.environ.get("RUNNER_SIDECAR", "1") != "0"


def spawn_companion() -> subprocess.Popen:
    """Start the companion early: it imports mlflow while this process imports torch."""
    # The companion logs where this process does: the console and Hydra's job log.
    console = os.dup(sys.stdout.fileno())
    files = [h.baseFilename for h in logging.getLogger().handlers if hasattr(h, "baseFilename")]
    env = {**os.environ, "RUNNER_SIDECAR_CONSOLE": str(console)}
    env["RUNNER_SIDECAR_LOG"] = files[0] if files else ""
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "runner.sidecar"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            pass_fds=(console,),
        )
    finally:
        os.close(console)


class RemoteTracker:
    """The Tracker interface, served by a companion process."""

    def __init__(self, spec: Any, companion: subprocess.Popen | None = None) -> None:
        self._proc = companion or spawn_companion()
        self.run_id: str | None = None
        self._warm = False
        self.uri = spec.uri or os.environ.get("MLFLOW_TRACKING_URI") or spec.store_dir
        self._call("__init__", spec)

    def _call(self, method: str, *args: Any, **kwargs: Any) -> None:
        pickle.dump((method, args, kwargs), self._proc.stdin)
        self._proc.stdin.flush()

    def _read(self, block: bool) -> tuple[str, Any] | None:
        """One message from the companion, or None if none is waiting (non-blocking)."""
        if not block and not select.select([self._proc.stdout], [], [], 0)[0]:
            return None
        try:
            return pickle.load(self._proc.stdout)
        except EOFError:
            raise RemoteError(
                f"the MLflow process exited (status {self._proc.wait()}); see its log above"
            ) from None

    def wait_run_id(self) -> str | None:
        """Block until the companion has started the run (for a checkpoint that needs it)."""
        while self.run_id is None and self._proc.poll() is None:
            message = self._read(block=True)
            self._handle(message)
        return self.run_id

    def wait_warm(self) -> None:
        """Block until the companion has done its imports: contended, they would slow the
        training threads (OpenMP waits for its slowest thread) more than they cost."""
        while not self._warm and self._proc.poll() is None:
            self._handle(self._read(block=True))

    def _handle(self, message: tuple[str, Any]) -> Any:
        kind, value = message
        if kind == "warm":
            self._warm = True
        elif kind == "run_id":
            self.run_id = value
        elif kind == "error":
            name, text = value
            from runner.errors import ArtifactStoreError

            raise (ArtifactStoreError if name == "ArtifactStoreError" else RemoteError)(text)
        return value

    def poll(self) -> None:
        """Take in what the companion has said so far; raise the first error it reported."""
        while (message := self._read(block=False)) is not None:
            self._handle(message)

    def _ask(self, method: str, *args: Any) -> Any:
        """Call and wait for the result (only where the answer is needed before going on)."""
        self._call(method, *args, reply=True)
        while True:
            kind, value = message = self._read(block=True)
            if kind == "reply":
                return value
            self._handle(message)

    def __getattr__(self, method: str) -> Any:
        if method.startswith("_"):
            raise AttributeError(method)
        return lambda *args, **kwargs: self._call(method, *args, **kwargs)

    def logged_steps(self, key: str) -> set[int]:
        """The steps at which the run already holds metric `key` (waits for the answer)."""
        return self._ask("logged_steps", key)

    def log_model(self, model: Any, input_example: Any) -> None:
        """Send the trained model (pickled by torch) to be logged with its input example."""
        import torch

        buffer = io.BytesIO()
        torch.save(model, buffer)
        self._call("log_model_bytes", buffer.getvalue(), input_example)

    @contextmanager
    def run(
        self,
        run_name: str,
        tags: dict[str, str],
        parent_run_id: str | None = None,
        run_id: str | None = None,
    ) -> Iterator[RemoteTracker]:
        """Like Tracker.run; the run id arrives once the companion has started the run."""
        from runner.errors import always_ended

        self._call("start", run_name, tags, parent_run_id, run_id)
        with always_ended(self._finish):
            yield self

    def _finish(self, status: str, error: str | None, trace: str | None) -> None:
        """End the run, wait for the companion, and raise any error it reported."""
        pending: BaseException | None = None
        try:
            self.poll()
        except Exception as err:  # reported after the run is ended, not instead of ending it
            pending = err
        try:
            self._ask("end", status, error, trace)
        finally:
            self._proc.stdin.close()
            self._proc.wait()
        if pending is not None and error is None:
            raise pending


def serve() -> None:
    """The companion's loop: run each forwarded call on a real Tracker, in order."""
    from runner.tracking import Tracker

    inbox, outbox = sys.stdin.buffer, sys.stdout.buffer
    sys.stdout = sys.stderr  # stray prints must not corrupt the reply stream
    tracker: Tracker | None = None
    started, ended, failed = False, False, False
    failure = ""

    def send(kind: str, value: Any) -> None:
        try:
            pickle.dump((kind, value), outbox)
            outbox.flush()
        except BrokenPipeError:
            pass  # the training process is gone; the EOF that follows ends the run KILLED

    # Import everything now, while the training process is still importing and loading
    # data: imports during training would steal CPU from its threads.
    _prewarm()
    send("warm", None)
    # What the run's end would otherwise pay for, done while the run trains.
    warming = threading.Thread(target=_warm_end_of_run, name="warm-end-of-run", daemon=True)
    warming.start()
    while True:
        try:
            method, args, kwargs = pickle.load(inbox)
        except EOFError:  # the training process is gone without ending the run
            if started and not ended:
                tracker.end("KILLED")
            return
        reply = kwargs.pop("reply", False)
        if method in END_OF_RUN:
            warming.join()  # the two must not do the same work side by side
        try:
            if method == "__init__":
                tracker = Tracker(*args)
                result = None
            elif failed and method != "end":
                result = None  # after an error only the run's end still matters
            elif failed and args and args[0] == "FINISHED":
                result = tracker.end("FAILED", failure, failure)  # the run did not succeed
            elif method == "log_model_bytes":
                result = _log_model_bytes(tracker, *args)
            else:
                result = getattr(tracker, method)(*args, **kwargs)
            if method == "start":
                started = True
                send("run_id", result)
                log.info("MLflow run %s in store %s", result, tracker.uri)
            if method == "end":
                ended = True
        except Exception as err:
            failed, failure = True, f"{type(err).__name__}: {err}"
            log.error("MLflow call %s failed: %s", method, err)
            send("error", (type(err).__name__, str(err)))
            if method == "end":
                return
        if reply:
            send("reply", result)
        if ended:
            return


def _prewarm() -> None:
    """Import what the run needs, plots and model logging included."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401
    import mlflow.pytorch  # noqa: F401 (imports torch too)

    from runner import plots  # noqa: F401


END_OF_RUN = {"log_pictures", "log_model_bytes"}  # calls that use what _warm_end_of_run prepares


def _warm_end_of_run() -> None:
    """Pay in advance for the first-use costs of the plots and the model: mlflow's scan of
    every installed distribution (its requirement check, 0.5-1.5 s), mlflow.pyfunc's import,
    and matplotlib's first render (fonts, Agg)."""
    try:
        import matplotlib.pyplot as plt
        import mlflow.pyfunc  # noqa: F401
        from mlflow.utils import requirements_utils

        requirements_utils._init_packages_to_modules_map()  # cached for the process
        fig, ax = plt.subplots()
        ax.plot([0, 1], [0, 1], label="warm")
        ax.legend()
        fig.tight_layout()
        fig.savefig(io.BytesIO(), format="png")
        plt.close(fig)
    except Exception:  # only a head start: the real calls do the same work if this fails
        log.debug("warming up for the end of the run failed", exc_info=True)


def _log_model_bytes(tracker: Any, data: bytes, input_example: Any) -> None:
    import torch

    model = torch.load(io.BytesIO(data), weights_only=False)  # our own process's model
    tracker.log_model(model, input_example)


def yield_cpu_to_training() -> None:
    """Run on the CPU time training leaves idle. Linux's SCHED_IDLE does exactly that: a
    model training on every core (MNIST, 2 threads) kept 34,100 samples/s against 28,400
    with the companion at nice 10 (median of 4, side by side); where it is missing, nice."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        os.nice(10)


def _configure_logging() -> None:
    """Log like Hydra's job: to the launching process's console and to its job log."""
    fmt = logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    handlers: list[logging.Handler] = []
    console = os.environ.get("RUNNER_SIDECAR_CONSOLE")
    if console:
        handlers.append(logging.StreamHandler(os.fdopen(int(console), "w", buffering=1)))
    if os.environ.get("RUNNER_SIDECAR_LOG"):
        handlers.append(logging.FileHandler(os.environ["RUNNER_SIDECAR_LOG"]))
    for handler in handlers:
        handler.setFormatter(fmt)
        logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)


if __name__ == "__main__":
    yield_cpu_to_training()
    _configure_logging()
    serve()
    # Everything is written; skip the slow teardown of an interpreter holding torch+mlflow.
    logging.shutdown()
    sys.stderr.flush()
    os._exit(0)
