"""The Tracker interface in this process: one MLflow run, batched metrics, artifacts,
plots and the model. Used by sweep jobs, by single runs with the companion off, and by the
companion process itself."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities import Dataset, DatasetInput, InputTag, Metric, Param, RunInfo

from runner.config.spec import TrackingSpec
from runner.errors import ArtifactStoreError, StoreError
from runner.tracking import quiet_third_party_logs, store_label
from runner.tracking import tags as run_tags
from runner.tracking.mlflow_internals import pinned_requirements
from runner.tracking.store import Store, retry_store_write, store_failure
from runner.training.signals import always_ended, note_run, shielded

log = logging.getLogger("runner.tracking")
FLUSH_SECONDS = 2.0  # metric buffer age that triggers a write: bounded loss, few DB calls
MAX_METRICS_PER_BATCH = 1000  # MLflow's log_batch limits
MAX_PARAMS_PER_BATCH = 100


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


def log_training_data(
    client: mlflow.MlflowClient, run_id: str, dataset: dict[str, str], attempts: int = 4
) -> None:
    """Record a run's training data as an MLflow input; a record that cannot be made is a
    warning, not a failed run (the data's params are logged besides).

    Parallel jobs on the same data race to create its row (MLflow looks it up, then
    inserts it, and the loser breaks a unique key): the loser's next try finds the row.
    """
    record = DatasetInput(Dataset(**dataset), tags=[InputTag(run_tags.DATASET_CONTEXT, "training")])
    try:
        retry_store_write(
            lambda: client.log_inputs(run_id, datasets=[record]), attempts, lambda err: True
        )
    except mlflow.exceptions.MlflowException as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else ""
        log.warning("the data set of run %s was not recorded: %s", run_id, first_line)


class MlflowTracker:
    """The Tracker interface in this process: one MLflow run, started, logged into, and
    always ended with a final status."""

    def __init__(self, spec: TrackingSpec) -> None:
        quiet_third_party_logs()
        self.store = Store(spec)
        self.uri = self.store.uri
        self.client, self.experiment_id = self.store.client, self.store.experiment_id
        self.experiment_name = spec.experiment
        self.run_id: str | None = None
        self.run_name = self.artifact_uri = ""  # known once the run has started
        self.final_status: str | None = None  # as the store took it
        self.handed_off: str | None = None  # (in this process a run's end is never left)
        self._in_sweep = False  # the run is a sweep's job
        self._reopened = False  # the run is continued (resume=), not new
        self._model_outdated = False  # ... with more epochs than a model it holds saw
        self._buffer: list[Metric] = []
        self._last_flush = time.monotonic()
        self.store_failed = False  # a write outlasted the store's wait: the end tries once

    def start(
        self,
        run_name: str,
        tags: dict[str, str],
        parent_run_id: str | None = None,
        run_id: str | None = None,
        started_at: float | None = None,
    ) -> str:
        """Start a run (its start time the job's, `started_at`), or reopen run_id to
        continue it; returns the run id. The run is never MLflow's active run (whose exit
        hook would end it FINISHED), except inside the model loggers that need one."""
        self._in_sweep = parent_run_id is not None
        self._reopened = run_id is not None
        if run_id is None:
            info = self._write(lambda: self._create_run(run_name, tags, parent_run_id, started_at))
        else:
            self._write(lambda: self.client.update_run(run_id, status="RUNNING"))
            for key in (run_tags.HOST, run_tags.PID):  # the process that owns it now
                self._write(lambda k=key: self.client.set_tag(run_id, k, tags.get(k, "")))
            reopened = self.client.get_run(run_id)
            info = reopened.info
            if run_tags.STOPPED_BY in reopened.data.tags:  # said why it stopped; it goes on
                self._write(lambda: self.client.delete_tag(run_id, run_tags.STOPPED_BY))
        self.run_id, self.run_name = info.run_id, info.run_name
        self.artifact_uri = info.artifact_uri
        log.info(
            "MLflow run %s in experiment %r, store %s",
            self.run_id, self.experiment_name, store_label(self.uri),
        )  # fmt: skip
        return self.run_id

    def _create_run(
        self,
        run_name: str,
        tags: dict[str, str],
        parent_run_id: str | None,
        started_at: float | None,
    ) -> RunInfo:
        """A new run with its tags (a child of `parent_run_id`), started at `started_at`."""
        if parent_run_id is not None:
            tags = {**tags, run_tags.PARENT_RUN_ID: parent_run_id}
        start_ms = int(started_at * 1000) if started_at is not None else None
        return self.client.create_run(
            self.experiment_id, start_time=start_ms, tags=tags, run_name=run_name
        ).info

    def end(self, status: str, error: str | None = None, trace: str | None = None) -> str:
        """Flush, record an error (tag + traceback artifact) if any, and end the run;
        returns the status the store took. After a write outlasted the store's wait, only
        the status is tried, once (the checkpoint keeps the metrics for resume=)."""
        try:
            if not self.store_failed:
                if error is not None:
                    self._record_error(error, trace or error)
                self.flush()
        finally:
            self._write(
                lambda: self.client.set_terminated(self.run_id, status=status),
                wait=0.0 if self.store_failed else None,
            )
            self.final_status = status
            note_run(self.run_id, status)  # (a Slurm job's launcher asks how it ended)
            log.info("MLflow run %s ended %s", self.run_id, status)
        return status

    @contextmanager
    def run(
        self,
        run_name: str,
        tags: dict[str, str],
        parent_run_id: str | None = None,
        run_id: str | None = None,
        started_at: float | None = None,
    ) -> Iterator[MlflowTracker]:
        """A run that always ends: FINISHED, FAILED (error tagged, traceback logged) or
        KILLED (Ctrl-C, SIGTERM)."""

        def start() -> None:
            self.start(run_name, tags, parent_run_id, run_id, started_at)

        with always_ended(self.end, start):
            yield self

    def _record_error(self, error: str, trace: str) -> None:
        """Keep the failure's message as a tag and its traceback as an artifact."""
        try:
            self.flush()
            self.client.set_tag(self.run_id, run_tags.ERROR, error[:5000])
            self.client.log_text(self.run_id, trace, "error/traceback.txt")
        except StoreError as err:  # the store itself failed: its one line says why
            log.error("could not record the error in MLflow: %s", err)
        except Exception:  # the original error matters more than a failed report of it
            log.exception("could not record the error in MLflow")

    def end_stale_runs(self, fingerprint: str, host: str) -> None:
        """Runs of this config left RUNNING by a dead process on this host are ended KILLED;
        outside a sweep (whose jobs continue their own), say how to continue an interrupted
        one."""
        self.store.end_stale_runs(fingerprint, host)
        if not self._in_sweep:
            self.store.note_interrupted(fingerprint)

    def log_pictures(self, pictures: dict[str, Any]) -> None:
        """Draw the plots from their data and store them as image artifacts."""
        from runner.tracking import plots

        # Each PNG names its run, so a downloaded one can be traced back.
        caption = f"run {self.run_name} · {self.run_id} · experiment {self.experiment_name}"
        for path, figure in plots.draw({**pictures, "caption": caption}).items():
            try:
                self.log_figure(figure, path)
            except ArtifactStoreError:
                raise  # the store itself fails: the run cannot keep its files
            except Exception as err:  # a plot that cannot be rendered never fails the run
                log.warning("plot %s left out: %s: %s", path, type(err).__name__, err)
            finally:
                plots.close(figure)

    def log_params(self, params: dict[str, str]) -> None:
        """Log params in MLflow-sized batches."""
        items = [Param(k, v) for k, v in params.items()]
        for i in range(0, len(items), MAX_PARAMS_PER_BATCH):
            batch = items[i : i + MAX_PARAMS_PER_BATCH]
            self._write(lambda b=batch: self.client.log_batch(self.run_id, params=b))

    def log_dataset(self, dataset: dict[str, str]) -> None:
        """Record the run's training data (tracking.dataset_input's fields) as an MLflow input."""
        log_training_data(self.client, self.run_id, dataset)

    def log_metrics(
        self, metrics: dict[str, float], step: int, timestamp_ms: int | None = None
    ) -> None:
        """Buffer a step's metrics (stamped when they were measured, `timestamp_ms`, else
        now); write them when the buffer is older than FLUSH_SECONDS."""
        now = timestamp_ms or int(time.time() * 1000)
        self._buffer.extend(Metric(k, float(v), now, step) for k, v in metrics.items())
        if time.monotonic() - self._last_flush >= FLUSH_SECONDS:
            self.flush()

    def check_errors(self) -> None:
        """Nothing is pending in-process: a failed call has raised already."""

    def settle(self) -> None:
        """Every call has taken effect already (in this process)."""

    def wait_imports(self) -> None:
        """mlflow is imported already."""

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
            self._write(lambda b=batch: self.client.log_batch(self.run_id, metrics=b))
            del self._buffer[: len(batch)]
        self._last_flush = time.monotonic()

    def set_tags(self, tags: dict[str, str]) -> None:
        """Set several run tags."""
        for key, value in tags.items():
            self._write(lambda k=key, v=value: self.client.set_tag(self.run_id, k, v))

    def _write(self, write: Callable[[], Any], wait: float | None = None) -> Any:
        """A store write that waits for a busy store (`retry_store_write`, `wait` seconds
        at most); the store's own failure is a StoreError, and the run's end then tries
        only its status."""
        try:
            return retry_store_write(write, wait=wait)
        except StoreError:
            self.store_failed = True
            raise
        except mlflow.exceptions.MlflowException as err:  # a damaged store: said so
            failure = store_failure(self.uri, err)
            if failure is None:
                raise
            self.store_failed = True
            raise failure from err

    def log_text(self, text: str, path: str) -> None:
        """Store `text` as an artifact file."""
        with _artifact_write(path, self.artifact_uri):
            self.client.log_text(self.run_id, text, path)

    def log_figure(self, figure: Any, path: str) -> None:
        """Store a matplotlib figure as an image artifact."""
        with _artifact_write(path, self.artifact_uri):
            self.client.log_figure(self.run_id, figure, path)

    def log_artifact(self, path: str | Path, directory: str) -> None:
        """Store one file as an artifact under `directory`."""
        with _artifact_write(f"{directory}/{Path(path).name}", self.artifact_uri):
            self.client.log_artifact(self.run_id, str(path), directory)

    def log_dir(self, directory: str | Path, path: str) -> None:
        """Store a folder's files as artifacts under `path`."""
        if Path(directory).is_dir():
            with _artifact_write(f"{path}/", self.artifact_uri):
                self.client.log_artifacts(self.run_id, str(directory), path)

    def model_outdated(self) -> None:
        """The continued run trains more epochs: a model it holds is older than its end."""
        self._model_outdated = True

    def _holds_model(self) -> bool:
        """Whether a continued run already holds its model (stored before it was stopped
        while writing its end): it is not logged twice."""
        if not self._reopened or self._model_outdated:
            return False
        found = self.client.search_logged_models(
            [self.experiment_id],
            filter_string=f"source_run_id = '{self.run_id}' AND name = 'model'", max_results=1,
        )  # fmt: skip
        if found:
            log.info("run %s holds its model already (logged before it stopped)", self.run_id)
        return bool(found)

    def log_model(self, model: Any, input_example: Any) -> None:
        """Log the trained torch model with an input example (pickle: fast, no torch.export)."""
        if self._holds_model():
            return
        # Pickle rather than pt2, which traces with torch.export (see BENCHMARKS.md); the
        # model is the user's own, so mlflow's warning about untrusted pickles is noise.
        logging.getLogger("mlflow.pytorch").setLevel(logging.ERROR)
        with _artifact_write("the model", self.artifact_uri), self._active(), pinned_requirements():
            self._log_model(model, input_example)

    def log_predictor(self, predictor: Any, input_example: Any) -> None:
        """Log a table's encoder and network as one pyfunc model that takes raw rows."""
        if self._holds_model():
            return
        import mlflow.pyfunc
        import torch

        from runner.tracking.pyfunc_model import RawRowsModel, raw_rows_signature

        with _artifact_write("the model", self.artifact_uri), self._active(), pinned_requirements():
            mlflow.pyfunc.log_model(
                name="model",
                python_model=RawRowsModel(predictor),
                signature=raw_rows_signature(predictor, input_example),
                input_example=input_example,
                pip_requirements=[f"torch=={torch.__version__.split('+')[0]}", "pandas"],
            )

    @contextmanager
    def _active(self) -> Iterator[None]:
        """The run as MLflow's active run, for the model loggers only; it is left RUNNING
        (MLflow's end_run would end it FINISHED) and this process decides its end. Ctrl-C
        cannot fall between its start and the guard that takes it back (MLflow's exit hook
        would end a run left active FINISHED)."""
        active = False
        try:
            with shielded():
                mlflow.start_run(run_id=self.run_id)
                active = True
            yield
        finally:
            if active:
                with shielded():
                    mlflow.end_run(status="RUNNING")

    def _log_model(self, model: Any, input_example: Any) -> None:
        import mlflow.pytorch
        import torch

        mlflow.pytorch.log_model(
            model,
            name="model",
            input_example=input_example,
            serialization_format="pickle",
            # Given explicitly: inferring them runs a pip subprocess.
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
        )
