"""A run written at its end in a few store calls: the tracker of a stacked group's members.

A stacked member's whole run (params, every epoch's metrics, tags, files) is known when it
is logged, after the group has trained, so nothing needs to reach the store early: the run
is created with its tags, then everything else goes in MLflow-sized `log_batch` calls, one
data set record, one artifact upload of a staged folder, and the final status. The same
Tracker calls as a solo run make it, so a member's run holds what a solo run's holds.

In a database store (SQLite, PostgreSQL) the metrics of the new run go in as one bulk
insert: MLflow's `log_batch` builds an ORM object per point and was most of a member's
writing time (BENCHMARKS.md, issue 12).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Metric, Param, RunTag

from runner.config.spec import TrackingSpec
from runner.errors import DependencyMoved
from runner.tracking import mlflow_internals
from runner.tracking import tags as run_tags
from runner.tracking.mlflow_tracker import (
    MAX_METRICS_PER_BATCH,
    MAX_PARAMS_PER_BATCH,
    MlflowTracker,
    _artifact_write,
    log_training_data,
)
from runner.tracking.store import retry_store_write

MAX_TAGS_PER_BATCH = 100  # MLflow's log_batch limits
MAX_ENTITIES_PER_BATCH = 1000


class DeferredTracker(MlflowTracker):
    """An MlflowTracker that keeps a run's writes until it ends (one opened store serves
    every run it writes)."""

    def __init__(self, spec: TrackingSpec) -> None:
        super().__init__(spec)
        self._params: list[Param] = []
        self._tags: dict[str, str] = {}
        self._dataset: dict[str, str] | None = None
        self._staged: Path | None = None

    def start(
        self,
        run_name: str,
        tags: dict[str, str],
        parent_run_id: str | None = None,
        run_id: str | None = None,
        started_at: float | None = None,
    ) -> str:
        """Create the run with its tags, or take up `run_id` (a run this tracker's kind
        opened and left RUNNING after `write_kept`)."""
        self._in_sweep = parent_run_id is not None
        if run_id is None:
            info = self._create_run(run_name, tags, parent_run_id, started_at)
        else:
            info = self.client.get_run(run_id).info
        self.run_id, self.run_name = info.run_id, info.run_name
        self.artifact_uri = info.artifact_uri
        self._params, self._tags, self._dataset = [], {}, None
        self._buffer = []
        self._drop_staged()  # (files of a run that never got written)
        return self.run_id

    def end(self, status: str, error: str | None = None, trace: str | None = None) -> str:
        """Write everything kept, then end the run with `status` (FAILED if the writing
        failed: the run would miss some of what it holds); returns the status written."""
        try:
            if error is not None:
                self._tags[run_tags.ERROR] = error[:5000]
                self.log_text(trace or error, "error/traceback.txt")
            self._write()
        except BaseException:
            status = "FAILED"
            raise
        finally:
            self._drop_staged()
            self.client.set_terminated(self.run_id, status=status)
            self.final_status = status
        return status

    def write_kept(self) -> None:
        """Write what is kept so far and leave the run RUNNING (another process may take
        it up by its id)."""
        try:
            self._write()
        finally:
            self._drop_staged()

    def _write(self) -> None:
        """Params, tags and metrics in as few log_batch calls as MLflow allows; then the
        data set and the staged files."""
        params, tags = self._params, [RunTag(k, v) for k, v in self._tags.items()]
        metrics = self._buffer
        store = mlflow_internals.database_store(self.client) if metrics else None
        if store is not None:
            try:
                parts = mlflow_internals.bulk_insert(store)
            except DependencyMoved as err:  # its own log_batch below writes them
                err.fall_back(mlflow_internals.log, mlflow_internals.LOG_BATCH)
            else:
                retry_store_write(
                    lambda: insert_new_run_metrics(self.client, self.run_id, metrics, parts)
                )
                metrics = []
        while params or tags or metrics:
            batch_params, params = params[:MAX_PARAMS_PER_BATCH], params[MAX_PARAMS_PER_BATCH:]
            batch_tags, tags = tags[:MAX_TAGS_PER_BATCH], tags[MAX_TAGS_PER_BATCH:]
            room = min(
                MAX_METRICS_PER_BATCH, MAX_ENTITIES_PER_BATCH - len(batch_params) - len(batch_tags)
            )
            batch_metrics, metrics = metrics[:room], metrics[room:]
            retry_store_write(
                lambda p=batch_params, t=batch_tags, m=batch_metrics: self.client.log_batch(
                    self.run_id, metrics=m, params=p, tags=t
                )
            )
        self._params, self._tags, self._buffer = [], {}, []
        if self._dataset is not None:
            log_training_data(self.client, self.run_id, self._dataset)
        if self._staged is not None and any(self._staged.iterdir()):
            with _artifact_write("the run's files", self.artifact_uri):
                self.client.log_artifacts(self.run_id, str(self._staged))

    def log_params(self, params: dict[str, str]) -> None:
        """Keep params for the run's end."""
        self._params.extend(Param(k, str(v)) for k, v in params.items())

    def log_dataset(self, dataset: dict[str, str]) -> None:
        """Keep the data set record for the run's end."""
        self._dataset = dataset

    def flush(self) -> None:
        """Nothing: the run's end writes everything (so `log_metrics` only keeps them)."""

    def logged_steps(self, key: str) -> set[int]:
        """The steps of metric `key` kept so far."""
        return {m.step for m in self._buffer if m.key == key}

    def set_tags(self, tags: dict[str, str]) -> None:
        """Keep tags for the run's end."""
        self._tags.update(tags)

    def _drop_staged(self) -> None:
        """Remove the folder of staged files (the next file staged makes a new one)."""
        if self._staged is not None:
            shutil.rmtree(self._staged, ignore_errors=True)
            self._staged = None

    def _stage(self, path: str) -> Path:
        assert self.run_id is not None, "no run started"
        if self._staged is None:
            self._staged = Path(tempfile.mkdtemp(prefix="runner-run-"))
        target = self._staged / path
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def log_text(self, text: str, path: str) -> None:
        """Stage `text` as an artifact file."""
        self._stage(path).write_text(text)

    def log_figure(self, figure: Any, path: str) -> None:
        """Stage a matplotlib figure as an image artifact."""
        figure.savefig(self._stage(path))

    def log_artifact(self, path: str | Path, directory: str) -> None:
        """Stage one file as an artifact under `directory`."""
        shutil.copy2(path, self._stage(f"{directory}/{Path(path).name}"))

    def log_dir(self, directory: str | Path, path: str) -> None:
        """Stage a folder's files as artifacts under `path`."""
        if Path(directory).is_dir():
            shutil.copytree(directory, self._stage(path), dirs_exist_ok=True)


def insert_new_run_metrics(
    client: mlflow.MlflowClient,
    run_id: str,
    metrics: list[Metric],
    parts: mlflow_internals.BulkInsert | None = None,
) -> None:
    """Write all metric points of a run that has none yet in one transaction: its rows and
    each key's latest value, as MLflow's `log_batch` would have left them (in a database
    store whose internals are as mlflow_internals knows them: `parts`, looked up if None)."""
    from sqlalchemy import insert

    if parts is None:
        store = mlflow_internals.database_store(client)
        assert store is not None, "a bulk insert needs a database store"
        parts = mlflow_internals.bulk_insert(store)
    rows, latest = [], {}
    for metric in dict.fromkeys(metrics):  # MLflow drops exact duplicates as well
        if metric.key not in latest:  # a key's points share its checks but the value's
            parts.validate_metric(metric.key, metric.value, metric.timestamp, metric.step)
        elif not isinstance(metric.value, (int, float)):
            raise TypeError(f"metric {metric.key!r}: {metric.value!r} is not a number")
        is_nan, value = parts.sanitize_value(metric.value)
        row = {
            "run_uuid": run_id,
            "key": metric.key,
            "value": value,
            "timestamp": metric.timestamp,
            "step": metric.step,
            "is_nan": is_nan,
        }
        rows.append(row)
        order = (row["step"], row["timestamp"], row["value"])  # MLflow's "more recent" rule
        if metric.key not in latest or order > latest[metric.key][0]:
            latest[metric.key] = (order, row)
    with parts.session(read_only=False) as session:
        parts.check_active(parts.get_run(run_uuid=run_id, session=session))
        session.execute(insert(parts.metric_table), rows)
        session.execute(insert(parts.latest_table), [row for _, row in latest.values()])
