"""MLflow tracking: the store, one run per job, batched metrics, artifacts and the model.

The default store is embedded: SQLite plus a local artifact folder, both under one absolute
`store_dir`, so every job of a sweep lands in the same store whatever Hydra's job folder.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric, Param, Run
from mlflow.tracking import MlflowClient

try:
    import fcntl
except ImportError:  # Windows: no file locks here; open new stores from one process first
    fcntl = None

from runner.errors import ArtifactStoreError, always_ended
from runner.spec import TrackingSpec

log = logging.getLogger(__name__)
FLUSH_SECONDS = 2.0  # metric buffer age that triggers a write: bounded loss, few DB calls
MAX_METRICS_PER_BATCH = 1000  # MLflow's log_batch limits
MAX_PARAMS_PER_BATCH = 100


def default_store(store_dir: str) -> tuple[str, str]:
    """Tracking URI and artifact root of the embedded store in `store_dir` (absolute)."""
    root = Path(store_dir).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}", (root / "mlartifacts").as_uri()


def sqlite_file(uri: str) -> Path | None:
    """The database file of a `sqlite:///...` tracking URI (None for any other store)."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix) or uri[len(prefix) :] in ("", ":memory:"):
        return None
    return Path(uri[len(prefix) :].split("?")[0])


@contextmanager
def store_opening(uri: str) -> Iterator[None]:
    """Open a SQLite store one process at a time while it is new or needs migrating.

    Two processes that create (or migrate) the same SQLite store at once leave it broken
    ("table _alembic_tmp_... already exists" on every later open): measured on every try
    here. The first opener takes an exclusive lock on `<db>.lock`, lets mlflow create the
    schema, and writes mlflow's version into the lock file; later opens of a store marked
    with the running mlflow's version skip the lock.
    """
    db = sqlite_file(uri)
    if db is None or fcntl is None:
        yield
        return
    db.parent.mkdir(parents=True, exist_ok=True)
    marker = f"schema ready for mlflow {mlflow.__version__}\n"
    lock_path = db.with_name(db.name + ".lock")
    if db.is_file() and lock_path.is_file() and lock_path.read_text() == marker:
        yield
        return
    with open(lock_path, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # waits while another process creates the schema
        try:
            yield
            lock.seek(0)
            lock.truncate()
            lock.write(marker)
            lock.flush()  # written before another process may take the lock
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def open_store(uri: str, experiment: str, artifact_root: str | None) -> tuple[MlflowClient, str]:
    """A client on the store (created safely if new) and the experiment's id in it."""
    with store_opening(uri):
        client = MlflowClient(uri)
        return client, ensure_experiment(client, experiment, artifact_root)


def ensure_experiment(client: MlflowClient, name: str, artifact_root: str | None) -> str:
    """The experiment's id, creating it (artifacts under the store's root) on first use."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = f"{artifact_root}/{name}" if artifact_root else None
    try:
        return client.create_experiment(name, artifact_location=location)
    except mlflow.exceptions.MlflowException:
        found = client.get_experiment_by_name(name)  # another process created it first
        if found is None:
            raise
        return found.experiment_id


@contextmanager
def _artifact_write(what: str, uri: str) -> Iterator[None]:
    """Turn an OS error while storing an artifact into one message naming where and why."""
    try:
        yield
    except OSError as err:
        raise ArtifactStoreError(
            f"cannot store {what} in {uri}: {err.strerror or err}. Params and metrics logged "
            "so far are kept; free space or fix the artifact folder, then resume= the run"
        ) from err


class Tracker:
    """One MLflow run: start it, log into it, and always end it with a final status."""

    def __init__(self, spec: TrackingSpec) -> None:
        uri = spec.uri or os.environ.get("MLFLOW_TRACKING_URI")
        artifact_root = None
        if not uri:
            uri, artifact_root = default_store(spec.store_dir)
        self.uri = uri
        mlflow.set_tracking_uri(uri)
        self.client, self.experiment_id = open_store(uri, spec.experiment, artifact_root)
        self.run_id: str | None = None
        self._buffer: list[Metric] = []
        self._last_flush = time.monotonic()

    def find_finished(self, fingerprint: str) -> Run | None:
        """The latest FINISHED run of this experiment with the given config fingerprint."""
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`runner.fingerprint` = '{fingerprint}' "
            "and attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        return runs[0] if runs else None

    def running_runs(self, fingerprint: str) -> list[Run]:
        """Runs of this experiment with the given config fingerprint still marked RUNNING."""
        return self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`runner.fingerprint` = '{fingerprint}' "
            "and attributes.status = 'RUNNING'",
        )

    def start(
        self,
        run_name: str,
        tags: dict[str, str],
        parent_run_id: str | None = None,
        run_id: str | None = None,
    ) -> str:
        """Start a run, or reopen run_id to continue it; returns the run id."""
        if run_id is not None:
            run = mlflow.start_run(run_id=run_id)
            self.client.set_tag(run_id, "runner.pid", tags.get("runner.pid", ""))
        else:
            run = mlflow.start_run(
                experiment_id=self.experiment_id,
                run_name=run_name,
                tags=tags,
                parent_run_id=parent_run_id,
            )
        self.run_id = run.info.run_id
        return self.run_id

    def end(self, status: str, error: str | None = None, trace: str | None = None) -> None:
        """Flush, record an error (tag + traceback artifact) if any, and end the run."""
        try:
            if error is not None:
                self._record_error(error, trace or error)
            self.flush()
        finally:
            mlflow.end_run(status=status)
            log.info("MLflow run %s ended %s (store: %s)", self.run_id, status, self.uri)

    @contextmanager
    def run(
        self,
        run_name: str,
        tags: dict[str, str],
        parent_run_id: str | None = None,
        run_id: str | None = None,
    ) -> Iterator[Tracker]:
        """A run that always ends: FINISHED, FAILED (error tagged, traceback logged) or
        KILLED (Ctrl-C, SIGTERM)."""
        self.start(run_name, tags, parent_run_id, run_id)
        with always_ended(self.end):
            yield self

    def _record_error(self, error: str, trace: str) -> None:
        """Keep the failure's message as a tag and its traceback as an artifact."""
        try:
            self.flush()
            self.client.set_tag(self.run_id, "error", error[:5000])
            self.client.log_text(self.run_id, trace, "error/traceback.txt")
        except Exception:  # the original error matters more than a failed report of it
            log.exception("could not record the error in MLflow")

    def end_stale_runs(self, fingerprint: str, host: str) -> None:
        """Runs of this config left RUNNING by a dead process on this host are ended KILLED."""
        for run in self.running_runs(fingerprint):
            tags = run.data.tags
            if tags.get("runner.host") != host or _alive(tags.get("runner.pid")):
                continue
            self.client.set_terminated(run.info.run_id, status="KILLED")
            log.warning(
                "run %s of this config was left RUNNING by a dead process: ended KILLED; "
                "resume=%s continues it from its last checkpoint",
                run.info.run_id, run.info.run_id,
            )  # fmt: skip

    def log_pictures(self, pictures: dict[str, Any]) -> None:
        """Draw the plots from their data and store them as image artifacts."""
        from runner import plots

        for path, figure in plots.draw(pictures).items():
            self.log_figure(figure, path)
            plots.close(figure)

    def log_params(self, params: dict[str, str]) -> None:
        """Log params in MLflow-sized batches."""
        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
            self.client.log_batch(self.run_id, params=items[i : i + MAX_PARAMS_PER_BATCH])

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Buffer a step's metrics; write them when the buffer is older than FLUSH_SECONDS."""
        now = int(time.time() * 1000)
        self._buffer.extend(Metric(k, float(v), now, step) for k, v in metrics.items())
        if time.monotonic() - self._last_flush >= FLUSH_SECONDS:
            self.flush()

    def poll(self) -> None:
        """Nothing to collect in-process (RemoteTracker reports its companion's errors here)."""

    def wait_warm(self) -> None:
        """Nothing to wait for in-process."""

    def wait_run_id(self) -> str | None:
        """The run id (known at once in-process)."""
        return self.run_id

    def logged_steps(self, key: str) -> set[int]:
        """The steps at which this run already has a value of metric `key`."""
        return {m.step for m in self.client.get_metric_history(self.run_id, key)}

    def flush(self) -> None:
        """Write every buffered metric point."""
        while self._buffer:
            batch = self._buffer[:MAX_METRICS_PER_BATCH]
            _retry_when_locked(lambda b=batch: self.client.log_batch(self.run_id, metrics=b))
            del self._buffer[: len(batch)]
        self._last_flush = time.monotonic()

    def set_tags(self, tags: dict[str, str]) -> None:
        """Set several run tags."""
        for key, value in tags.items():
            self.client.set_tag(self.run_id, key, value)

    def _artifact_uri(self) -> str:
        return self.client.get_run(self.run_id).info.artifact_uri

    def log_text(self, text: str, path: str) -> None:
        """Store `text` as an artifact file."""
        with _artifact_write(path, self._artifact_uri()):
            self.client.log_text(self.run_id, text, path)

    def log_figure(self, figure: Any, path: str) -> None:
        """Store a matplotlib figure as an image artifact."""
        with _artifact_write(path, self._artifact_uri()):
            self.client.log_figure(self.run_id, figure, path)

    def log_artifact(self, path: str | Path, directory: str) -> None:
        """Store one file as an artifact under `directory`."""
        with _artifact_write(f"{directory}/{Path(path).name}", self._artifact_uri()):
            self.client.log_artifact(self.run_id, str(path), directory)

    def log_dir(self, directory: str | Path, path: str) -> None:
        """Store a folder's files as artifacts under `path`."""
        if Path(directory).is_dir():
            with _artifact_write(f"{path}/", self._artifact_uri()):
                self.client.log_artifacts(self.run_id, str(directory), path)

    def log_model(self, model: Any, input_example: Any) -> None:
        """Log the trained torch model with an input example (pickle: fast, no torch.export)."""
        # Pickle (0.7 s here) rather than pt2 (2.5 s, torch.export): the model is the
        # user's own, so mlflow's warning about loading untrusted pickles is noise.
        logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)
        with _artifact_write("the model", self._artifact_uri()):
            self._log_model(model, input_example)

    def _log_model(self, model: Any, input_example: Any) -> None:
        import mlflow.pytorch
        import torch

        mlflow.pytorch.log_model(
            model,
            name="model",
            input_example=input_example,
            serialization_format="pickle",
            # Given explicitly: inferring them runs a subprocess that takes seconds.
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
        )


def _retry_when_locked(write: Any, attempts: int = 8) -> None:
    """Run a store write, waiting out SQLite's "database is locked" while another process
    (a parallel job, the UI, a report) holds the file: metrics are not dropped for that."""
    for attempt in range(attempts):
        try:
            write()
            return
        except mlflow.exceptions.MlflowException as err:
            if "locked" not in str(err) or attempt == attempts - 1:
                raise
            time.sleep(0.05 * 2**attempt)


def _alive(pid: str | None) -> bool:
    """Whether a process with this id still exists on this host."""
    if not pid or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
