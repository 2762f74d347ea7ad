"""The MLflow store: opened safely while it is new, and queried about past runs.

Queries here serve resume and sweeps: a config's FINISHED run (skip it), its runs left
RUNNING by a dead process (end them KILLED), a run's checkpoint (continue it).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

try:
    import fcntl
except ImportError:  # Windows: no file locks here; open new stores from one process first
    fcntl = None

from runner import tags
from runner.errors import ConfigError
from runner.spec import TrackingSpec
from runner.tracking import sqlite_file, store_location

log = logging.getLogger("runner.tracking")


@contextmanager
def store_opening(uri: str) -> Iterator[None]:
    """Open a SQLite store one process at a time while it is new or needs migrating.

    Two processes that create (or migrate) the same SQLite store at once can leave it
    broken ("table _alembic_tmp_... already exists" on every later open). The first opener
    takes an exclusive lock on `<db>.lock`, lets mlflow create the schema, and writes
    mlflow's version into the lock file; later opens of a store marked with the running
    mlflow's version skip the lock.
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


class Store:
    """An opened store and one experiment in it: the queries resume and sweeps need."""

    def __init__(self, spec: TrackingSpec) -> None:
        self.uri, artifact_root = store_location(spec)
        mlflow.set_tracking_uri(self.uri)
        self.client, self.experiment_id = open_store(self.uri, spec.experiment, artifact_root)

    def find_finished(self, fingerprint: str) -> Run | None:
        """The latest FINISHED run of this experiment with the given config fingerprint."""
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{tags.FINGERPRINT}` = '{fingerprint}' "
            "and attributes.status = 'FINISHED'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        return runs[0] if runs else None

    def end_stale_runs(self, fingerprint: str, host: str) -> None:
        """Runs of this config left RUNNING by a dead process on this host are ended KILLED."""
        running = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{tags.FINGERPRINT}` = '{fingerprint}' "
            "and attributes.status = 'RUNNING'",
        )
        for run in running:
            run_tags = run.data.tags
            if run_tags.get(tags.HOST) != host or _alive(run_tags.get(tags.PID)):
                continue
            self.client.set_terminated(run.info.run_id, status="KILLED")
            log.warning(
                "run %s of this config was left RUNNING by a dead process: ended KILLED; "
                "resume=%s continues it from its last checkpoint",
                run.info.run_id, run.info.run_id,
            )  # fmt: skip

    def checkpoint_of_run(self, run_id: str) -> Path:
        """A run's checkpoint: its local file if still there, else the one logged to MLflow."""
        try:
            run = self.client.get_run(run_id)
        except Exception:
            raise ConfigError(
                f"resume: {run_id!r} is neither a checkpoint file nor an MLflow run id in "
                f"{self.uri}"
            ) from None
        local = Path(run.data.tags.get(tags.CHECKPOINT, ""))
        if local.is_file():
            return local
        try:
            return Path(self.client.download_artifacts(run_id, "checkpoints/last.pt"))
        except Exception:
            raise ConfigError(f"resume: run {run_id} has no checkpoint (local or logged)") from None


def retry_when_locked(write: Callable[[], Any], attempts: int = 8) -> None:
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
