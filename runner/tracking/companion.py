"""The MLflow companion, client side: the Tracker interface of a job whose MLflow work
runs in a process of its own (server side: `companion_server.py`).

Each call is pickled onto the companion's stdin and run there, in order, on an
`MlflowTracker`; most return at once. What comes back on its stdout: "warm" (imports done),
"run_id", "error" (raised here at the next `check_errors`) and "reply" (for the calls that
wait for an answer). Threads of this process do the writing and reading, so training never
waits on the pipes and Ctrl-C never cuts a message in two.

The training process alone decides how a run ends: before its end it waits until every
call sent has run there, so it knows of any failure, and the companion writes the status
it is told and answers with what the store took. The companion lives in a session of its
own and ignores SIGINT and SIGTERM, so a terminal's Ctrl-C (sent to the whole foreground
group) reaches only the training process; if that process dies, the companion sees its
stdin close and ends the run KILLED with every metric it was sent.
"""

from __future__ import annotations

import io
import logging
import os
import pickle
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from runner.config.spec import TrackingSpec
from runner.errors import ArtifactStoreError, RunError, StoreError
from runner.tracking import store_location
from runner.training import signals
from runner.training.signals import always_ended, shielded

log = logging.getLogger("runner.tracking")
SERVER_MODULE = "runner.tracking.companion_server"
WARM_PARTS = ("plots", "model")  # what the companion may prepare while the run trains
# The companion's errors raised here as their own kind (what the job does next depends on it).
KNOWN_ERRORS: dict[str, type[RunError]] = {
    "ArtifactStoreError": ArtifactStoreError, "StoreError": StoreError,
}  # fmt: skip
ABANDON_WAIT_SECONDS = 30.0  # for a companion that must still end a started run


class CompanionError(RunError):
    """A tracking call failed in the companion process (its message says which and why)."""


class CompanionLeft(CompanionError):
    """Asked twice to stop while waiting for the companion: it finishes on its own."""


def use_companion() -> bool:
    """Whether a single run logs through the companion. RUNNER_COMPANION=1 or 0 decides;
    unset (or auto), it is used when the machine has a core to spare for it."""
    setting = os.environ.get("RUNNER_COMPANION", "auto")
    if setting in ("0", "1"):
        return setting == "1"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (cores or 1) > 1


class Companion:
    """The companion process and its two pipes. Calls go down its stdin from a writer
    thread (this process never waits on a companion still importing, and Ctrl-C never cuts
    a call in two); messages come back through a reader thread."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc = proc
        self.run_requested = False  # a "start" was sent: only an "end" (or EOF) ends it
        self._inbox: queue.Queue = queue.Queue()
        self._outbox: queue.Queue = queue.Queue()
        self._broken = False  # its stdin closed under us: it has exited
        self._gone = threading.Event()  # its stdout closed: nothing more will come
        self.left = False  # this process stopped waiting for it (it finishes alone)
        self._warned = False
        threading.Thread(target=self._read_all, name="companion-reader", daemon=True).start()
        self._writer = threading.Thread(target=self._write_all, name="companion-writer")
        self._writer.daemon = True
        self._writer.start()

    def _read_all(self) -> None:
        try:
            while True:
                self._inbox.put(pickle.load(self.proc.stdout))
        except (EOFError, OSError, pickle.UnpicklingError):
            self._gone.set()  # every later read answers "exit", however often it is asked

    def _write_all(self) -> None:
        try:
            while (data := self._outbox.get()) is not None:
                self.proc.stdin.write(data)
                self.proc.stdin.flush()
            self.proc.stdin.close()  # every call is written: the companion may end
        except (OSError, ValueError):
            self._broken = True

    def send(self, method: str, args: tuple, reply: int | None) -> None:
        """Queue one call for the companion (in order; it never blocks); `reply`: the token
        its answer comes back with, or None for no answer."""
        if self._broken:
            raise CompanionError(self.exited())
        data = pickle.dumps((method, args, reply))
        with shielded():
            self._outbox.put(data)
            if method == "start":
                self.run_requested = True

    def read(self, block: bool, noted: int | None = None) -> tuple[str, Any] | None:
        """The next message (None if none is waiting and `block` is False). `noted`: the
        count of signals noted when a shielded wait began (see `_patience`)."""
        while True:
            try:
                return self._inbox.get(timeout=0.5) if block else self._inbox.get_nowait()
            except queue.Empty:
                if self._gone.is_set() and self._inbox.empty():
                    return ("exit", None)
                if not block:
                    return None
                self._patience(noted)

    def _patience(self, noted: int | None) -> None:
        """In a wait that signals cannot cut (a run's end): a first Ctrl-C says what is
        waited for, a second leaves the companion to finish alone (its own session keeps
        it going; it ends the run as told, or KILLED)."""
        if noted is None:
            return
        asked = signals.noted() - noted
        if asked >= 2:
            self.left = True
            raise CompanionLeft(f"left the MLflow process (pid {self.proc.pid}) to finish alone")
        if asked == 1 and not self._warned:
            self._warned = True
            log.warning(
                "the MLflow process (pid %d) is still writing to the store; Ctrl-C again "
                "leaves it to finish alone", self.proc.pid,
            )  # fmt: skip

    def _wait_exit(self, seconds: float | None = None) -> None:
        """Wait for the companion to exit (at most `seconds`), patient as `_patience`."""
        noted, deadline = signals.noted(), None if seconds is None else time.monotonic() + seconds
        while self.proc.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(self.proc.args, seconds or 0)
            try:
                self.proc.wait(timeout=0.5)
            except subprocess.TimeoutExpired:
                self._patience(noted)

    def exited(self) -> str:
        """What to say of a companion that has gone."""
        try:
            status = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            status = "still running"
        return f"the MLflow process exited (status {status}); see its log above"

    def _close_input(self) -> None:
        """No more calls: once those queued are written, the companion's stdin closes."""
        if self._writer.is_alive():
            self._outbox.put(None)

    def release(self) -> None:
        """Let an unused (config error, skipped job) or finished companion exit, and wait
        for it (not if it was left to finish alone)."""
        with shielded(deliver=False):
            self._close_input()
            if not self.left:
                try:
                    self._wait_exit()
                except CompanionLeft:
                    pass

    def abandon(self) -> None:
        """This process is stopping: a companion never asked to start a run is stopped now;
        one that was gets the calls queued, sees its stdin close, ends that run KILLED (if
        no end was sent) and is waited for a while (then it goes on alone)."""
        if not self.run_requested:
            self.proc.kill()
            self.proc.wait()
            return
        with shielded(deliver=False):
            self._close_input()
            try:
                self._wait_exit(ABANDON_WAIT_SECONDS)
            except (subprocess.TimeoutExpired, CompanionLeft):
                self.left = True
                log.error(
                    "the MLflow process (pid %d) is still ending the run; it goes on alone",
                    self.proc.pid,
                )  # fmt: skip


def spawn_companion(warm: Iterable[str] = WARM_PARTS) -> Companion:
    """Start the companion early: it imports mlflow while this process imports torch, and
    what the run's end will use (`warm`: "plots", "model") while it trains."""
    # The companion logs where this process does: the console and Hydra's job log.
    console = os.dup(sys.stdout.fileno())
    files = [h.baseFilename for h in logging.getLogger().handlers if hasattr(h, "baseFilename")]
    env = {**os.environ, "RUNNER_COMPANION_CONSOLE": str(console)}
    env["RUNNER_COMPANION_LOG"] = files[0] if files else ""
    env["RUNNER_COMPANION_WARM"] = ",".join(part for part in WARM_PARTS if part in warm)
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", SERVER_MODULE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            pass_fds=(console,),
            start_new_session=True,  # a terminal's Ctrl-C is for the training process
        )
    finally:
        os.close(console)
    return Companion(proc)


class CompanionTracker:
    """The Tracker interface, served by the companion process."""

    def __init__(self, spec: TrackingSpec, companion: Companion) -> None:
        self._companion = companion
        self.run_id: str | None = None
        self.experiment_id: str | None = None
        self.final_status: str | None = None  # as the store confirmed it
        self.handed_off: str | None = None  # the status the companion writes on its own
        self._asked = 0  # tokens given to calls that wait for their answer
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

        def start() -> None:
            self._send("start", run_name, tags, parent_run_id, run_id, started_at)

        with always_ended(self._end, start):
            yield self

    def end_stale_runs(self, fingerprint: str, host: str) -> None:
        """End KILLED the runs of this config that a dead process left RUNNING, and say how
        to continue an interrupted one."""
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

    def model_outdated(self) -> None:
        """A model the continued run holds is logged anew at its end."""
        self._send("model_outdated")

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

    def settle(self) -> None:
        """Wait until the companion has run every call sent (it stores the plots and the
        model); raise the first error it reported meanwhile."""
        _, failure = self._ask_collecting("sync")
        if failure is not None:
            raise failure

    def check_errors(self) -> None:
        """Take in what the companion has said so far; raise the first error it reported."""
        while (message := self._companion.read(block=False)) is not None:
            self._handle(message)

    def wait_imports(self) -> None:
        """Block until the companion has done its imports, and have it run on idle CPU time
        from then on: contended, it would slow training threads on every core (OpenMP
        waits for its slowest thread) more than it costs."""
        self._send("yield_cpu")
        while not self._warm:
            self._handle(self._companion.read(block=True))

    def wait_run_id(self) -> str | None:
        """Block until the companion has started the run (for a checkpoint that needs it)."""
        while self.run_id is None:
            self._handle(self._companion.read(block=True))
        return self.run_id

    # The wire.

    def _send(self, method: str, *args: Any, reply: int | None = None) -> None:
        self._companion.send(method, args, reply)

    def _token(self) -> int:
        """A new token for a call that waits for its answer."""
        self._asked += 1
        return self._asked

    def _ask(self, method: str, *args: Any) -> Any:
        """Call and wait for the result (only where the answer is needed before going on)."""
        token = self._token()
        self._send(method, *args, reply=token)
        while True:
            kind, value = message = self._companion.read(block=True)
            if kind == "reply":
                if value[0] == token:  # (an answer to a wait that Ctrl-C cut is dropped)
                    return value[1]
                continue
            self._handle(message)

    def _ask_collecting(self, method: str, *args: Any) -> tuple[Any, Exception | None]:
        """Call and wait for the result, taking in every message before it; returns the
        result and the first error reported meanwhile (a gone companion still raises)."""
        token = self._token()
        self._send(method, *args, reply=token)
        first: Exception | None = None
        noted = signals.noted()
        while True:
            kind, value = message = self._companion.read(block=True, noted=noted)
            if kind == "reply":
                if value[0] == token:
                    return value[1], first
                continue
            if kind == "exit":
                self._handle(message)
            try:
                self._handle(message)
            except Exception as err:
                first = first or err

    def _handle(self, message: tuple[str, Any]) -> None:
        kind, value = message
        if kind == "warm":
            self._warm = True
        elif kind == "run_id":
            self.run_id, self.experiment_id = value
        elif kind == "error":
            name, text = value
            raise KNOWN_ERRORS.get(name, CompanionError)(text)
        elif kind == "exit":
            raise CompanionError(self._companion.exited())

    def _end(self, status: str, error: str | None, trace: str | None) -> None:
        """End the run with the status this process decides: first wait until every call
        sent has run (a failure among them makes a FINISHED run FAILED), then have the
        companion write it, and keep the status the store confirmed."""
        failure: Exception | None = None
        end_failure: Exception | None = None
        end_sent = False
        try:
            _, failure = self._ask_collecting("sync")
            if failure is not None and status == "FINISHED":
                status, error, trace = "FAILED", f"{type(failure).__name__}: {failure}", None
            else:
                failure = None  # the run's own error is what is reported
            end_sent = True
            self.final_status, end_failure = self._ask_collecting("end", status, error, trace)
        except CompanionLeft:  # the companion ends the run as told, on its own
            if not end_sent:
                self._send("end", status, error, trace)
            self.handed_off = status
        finally:
            self._companion.release()
        if failure is not None:
            raise failure
        # A run failing with an error of its own raises that one (the companion has logged
        # why its end could not be recorded).
        if end_failure is not None and self.final_status is None and error is None:
            raise end_failure
