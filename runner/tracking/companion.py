"""The MLflow companion, client side: the Tracker interface of a job whose MLflow work
runs in a process of its own (server side: `companion_server.py`).

Each call is pickled onto the companion's stdin and run there, in order, on an
`MlflowTracker`; most return at once. What comes back on its stdout: "warm" (imports done),
"run_id", "error" (raised here at the next `check_errors`) and "reply" (for the calls that
wait for an answer). If this process dies, the companion sees its stdin close and ends the
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
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from runner.errors import ArtifactStoreError, RunError, always_ended
from runner.spec import TrackingSpec
from runner.tracking import store_location

log = logging.getLogger("runner.tracking")
SERVER_MODULE = "runner.tracking.companion_server"


class CompanionError(RunError):
    """A tracking call failed in the companion process (its message says which and why)."""


def use_companion() -> bool:
    """Whether a single run logs through the companion. RUNNER_COMPANION=1 or 0 decides;
    unset (or auto), it is used when the machine has a core to spare for it."""
    setting = os.environ.get("RUNNER_COMPANION", "auto")
    if setting in ("0", "1"):
        return setting == "1"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (cores or 1) > 1


def spawn_companion() -> subprocess.Popen:
    """Start the companion early: it imports mlflow while this process imports torch."""
    # The companion logs where this process does: the console and Hydra's job log.
    console = os.dup(sys.stdout.fileno())
    files = [h.baseFilename for h in logging.getLogger().handlers if hasattr(h, "baseFilename")]
    env = {**os.environ, "RUNNER_COMPANION_CONSOLE": str(console)}
    env["RUNNER_COMPANION_LOG"] = files[0] if files else ""
    try:
        return subprocess.Popen(
            [sys.executable, "-m", SERVER_MODULE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            pass_fds=(console,),
        )
    finally:
        os.close(console)


def release_companion(companion: subprocess.Popen) -> None:
    """Let an unused (config error, skipped job) or finished companion exit."""
    companion.stdin.close()
    companion.wait()


class CompanionTracker:
    """The Tracker interface, served by the companion process."""

    def __init__(self, spec: TrackingSpec, companion: subprocess.Popen) -> None:
        self._proc = companion
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        self._warm = False
        self.uri = store_location(spec)[0]
        self._send("open", spec)

    # The Tracker interface: each call runs the MlflowTracker method of the same name there.

    @contextmanager
    def run(
        self,
        run_name: str,
        tags: dict[str, str],
        parent_run_id: str | None = None,
        run_id: str | None = None,
        started_at: float | None = None,
    ) -> Iterator[CompanionTracker]:
        """Like MlflowTracker.run; the run id arrives once the companion has started it."""
        self._send("start", run_name, tags, parent_run_id, run_id, started_at)
        with always_ended(self._end):
            yield self

    def end_stale_runs(self, fingerprint: str, host: str) -> None:
        """End KILLED the runs of this config that a dead process left RUNNING."""
        self._send("end_stale_runs", fingerprint, host)

    def log_params(self, params: dict[str, str]) -> None:
        """Log the run's params."""
        self._send("log_params", params)

    def log_dataset(self, dataset: dict[str, str]) -> None:
        """Record the training data as the run's input."""
        self._send("log_dataset", dataset)

    def log_metrics(
        self, metrics: dict[str, float], step: int, timestamp_ms: int | None = None
    ) -> None:
        """Log one step's metrics, stamped now: the companion may write them much later."""
        self._send("log_metrics", metrics, step, timestamp_ms or int(time.time() * 1000))

    def logged_steps(self, key: str) -> set[int]:
        """The steps at which the run already holds metric `key` (waits for the answer)."""
        return self._ask("logged_steps", key)

    def set_tags(self, tags: dict[str, str]) -> None:
        """Set run tags."""
        self._send("set_tags", tags)

    def log_text(self, text: str, path: str) -> None:
        """Store `text` as an artifact file."""
        self._send("log_text", text, path)

    def log_dir(self, directory: str | Path, path: str) -> None:
        """Store a folder's files as artifacts under `path`."""
        self._send("log_dir", directory, path)

    def log_artifact(self, path: str | Path, directory: str) -> None:
        """Store one file as an artifact under `directory`."""
        self._send("log_artifact", path, directory)

    def log_pictures(self, pictures: dict[str, Any]) -> None:
        """Send the plots' data; the companion draws and stores them."""
        self._send("log_pictures", pictures)

    def log_model(self, model: Any, input_example: Any) -> None:
        """Send the trained model (pickled by torch) to be logged with its input example."""
        import torch

        buffer = io.BytesIO()
        torch.save(model, buffer)
        self._send("log_model_bytes", buffer.getvalue(), input_example)

    def log_predictor(self, predictor: Any, input_example: Any) -> None:
        """Send a table's predictor (pickled by torch) to be logged as a pyfunc model."""
        import torch

        buffer = io.BytesIO()
        torch.save(predictor, buffer)
        self._send("log_predictor_bytes", buffer.getvalue(), input_example)

    def flush(self) -> None:
        """Have the companion write every metric point sent so far."""
        self._send("flush")

    def check_errors(self) -> None:
        """Take in what the companion has said so far; raise the first error it reported."""
        while (message := self._read(block=False)) is not None:
            self._handle(message)

    def wait_imports(self) -> None:
        """Block until the companion has done its imports, and have it run on idle CPU time
        from then on: contended, it would slow training threads on every core (OpenMP
        waits for its slowest thread) more than it costs."""
        self._send("yield_cpu")
        while not self._warm and self._proc.poll() is None:
            self._handle(self._read(block=True))

    def wait_run_id(self) -> str | None:
        """Block until the companion has started the run (for a checkpoint that needs it)."""
        while self.run_id is None and self._proc.poll() is None:
            self._handle(self._read(block=True))
        return self.run_id

    # The wire.

    def _send(self, method: str, *args: Any, reply: bool = False) -> None:
        pickle.dump((method, args, reply), self._proc.stdin)
        self._proc.stdin.flush()

    def _ask(self, method: str, *args: Any) -> Any:
        """Call and wait for the result (only where the answer is needed before going on)."""
        self._send(method, *args, reply=True)
        while True:
            kind, value = message = self._read(block=True)
            if kind == "reply":
                return value
            self._handle(message)

    def _read(self, block: bool) -> tuple[str, Any] | None:
        """One message from the companion, or None if none is waiting (non-blocking)."""
        if not block and not select.select([self._proc.stdout], [], [], 0)[0]:
            return None
        try:
            return pickle.load(self._proc.stdout)
        except EOFError:
            raise CompanionError(
                f"the MLflow process exited (status {self._proc.wait()}); see its log above"
            ) from None

    def _handle(self, message: tuple[str, Any]) -> None:
        kind, value = message
        if kind == "warm":
            self._warm = True
        elif kind == "run_id":
            self.run_id, self.experiment_id = value
        elif kind == "error":
            name, text = value
            raise (ArtifactStoreError if name == "ArtifactStoreError" else CompanionError)(text)

    def _end(self, status: str, error: str | None, trace: str | None) -> None:
        """End the run, wait for the companion, and raise any error it reported."""
        pending: BaseException | None = None
        try:
            self.check_errors()
        except Exception as err:  # reported after the run is ended, not instead of ending it
            pending = err
        try:
            self._ask("end", status, error, trace)
        finally:
            release_companion(self._proc)
        if pending is not None and error is None:
            raise pending
