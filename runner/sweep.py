"""A multirun is one thing in MLflow: a parent run made before any job starts, every job a
child of it (whatever the launcher), and a comparison report when the sweep ends.

`SweepCallback` (named in conf/config.yaml) runs in the launching process: it creates the
store, the experiment and the parent run once (parallel jobs would race to) and leaves
their ids for the jobs (runner.launch). The job side: `finished_run` lets a re-run sweep
skip what already finished, `record_failed_setup` gives a job with a bad config its FAILED
child run.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from runner import tags
from runner.errors import ConfigError
from runner.fingerprint import sweep_fingerprint
from runner.launch import Launch, SweepInfo, write_sweep

if TYPE_CHECKING:
    from mlflow.entities import Run
    from mlflow.tracking import MlflowClient

    from runner.spec import TrackingSpec

log = logging.getLogger("runner.sweep")


def finished_run(spec: TrackingSpec, sweep: SweepInfo, fingerprint: str) -> Run | None:
    """In a re-run sweep: the FINISHED run of this exact config, linked to this sweep."""
    from runner.tracking.store import Store

    store = Store(spec)
    done = store.find_finished(fingerprint)
    if done is not None and done.data.tags.get(tags.PARENT_RUN_ID) != sweep.parent_run_id:
        key = f"{tags.REUSED_PREFIX}{fingerprint[:16]}"
        store.client.set_tag(sweep.parent_run_id, key, done.info.run_id)
    return done


def record_failed_setup(cfg: DictConfig, launch: Launch, err: ConfigError) -> None:
    """A sweep job whose config is bad still gets a FAILED child run saying why."""
    from runner.params import flatten
    from runner.spec import TrackingSpec
    from runner.tracking import make_tracker

    if launch.sweep is None:
        return
    experiment = OmegaConf.select(cfg, "tracking.experiment", default="runner")
    spec = TrackingSpec(uri=launch.sweep.tracking_uri, experiment=str(experiment))
    job_tags = {
        tags.OVERRIDES: " ".join(launch.overrides) or "(none)",
        tags.SWEEP: str(launch.sweep_dir),
        tags.SWEEP_JOB: str(launch.job_num),
    }
    tracker = make_tracker(spec)
    try:
        with tracker.run(launch.run_name, job_tags, parent_run_id=launch.sweep.parent_run_id):
            tracker.log_params(flatten(OmegaConf.to_container(cfg, resolve=False)))
            raise err
    except ConfigError:
        pass  # recorded; the caller reports it


def _tracking_target(config: DictConfig) -> tuple[str, str | None, str]:
    """Tracking URI, artifact root (embedded store only) and experiment, from the config."""
    from hydra.core.hydra_config import HydraConfig

    from runner.spec import TrackingSpec
    from runner.tracking import store_location

    # Before any job, `${hydra:...}` interpolations need the sweep's config installed.
    HydraConfig.instance().set_config(config)
    tracking = OmegaConf.to_container(config.tracking, resolve=True)
    experiment = str(tracking.get("experiment") or "runner")
    spec = TrackingSpec(
        uri=tracking.get("uri"), store_dir=tracking["store_dir"], experiment=experiment
    )
    return *store_location(spec), experiment


class SweepCallback(Callback):
    """Hydra callback: the sweep's parent run, before the jobs and after them."""

    def __init__(self) -> None:
        self.info: SweepInfo | None = None
        self.started = 0.0

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Create (or, for a re-run of the same command, reopen) the parent run."""
        from runner.tracking.store import open_store

        uri, artifact_root, experiment = _tracking_target(config)
        client, experiment_id = open_store(uri, experiment, artifact_root)
        overrides = sorted(str(o) for o in config.hydra.overrides.task)
        key = sweep_fingerprint(experiment, overrides)
        previous = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{tags.SWEEP_FINGERPRINT}` = '{key}'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        sweep_dir = str(Path(config.hydra.sweep.dir).resolve())
        if previous:
            run_id = previous[0].info.run_id
            client.update_run(run_id, status="RUNNING")
            client.set_tag(run_id, tags.SWEEP, sweep_dir)
            self._end_stale_children(client, experiment_id, run_id)
            log.info("resuming sweep run %s: finished jobs will be skipped", run_id)
        else:
            parent_tags = {
                tags.IS_SWEEP: "true",
                tags.SWEEP_FINGERPRINT: key,
                tags.SWEEP: sweep_dir,
                tags.OVERRIDES: " ".join(overrides) or "(none)",
            }
            name = "sweep " + time.strftime("%Y-%m-%d %H:%M:%S")
            run_id = client.create_run(experiment_id, run_name=name, tags=parent_tags).info.run_id
        self.info = SweepInfo(uri, experiment_id, run_id)
        self.started = time.time()
        write_sweep(sweep_dir, self.info)
        log.info("sweep run %s in experiment %r (%s)", run_id, experiment, uri)

    @staticmethod
    def _end_stale_children(client: MlflowClient, experiment_id: str, run_id: str) -> None:
        """Jobs left RUNNING by a killed launcher are dead: end them KILLED before resuming."""
        stale = client.search_runs(
            [experiment_id],
            filter_string=f"tags.{tags.PARENT_RUN_ID} = '{run_id}' "
            "and attributes.status = 'RUNNING'",
            max_results=10000,
        )
        for run in stale:
            client.set_terminated(run.info.run_id, status="KILLED")
            log.info(
                "run %s was left RUNNING by an interrupted sweep: ended KILLED", run.info.run_id
            )

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """Report the sweep, end the parent run, and exit non-zero if any job failed."""
        if self.info is None:
            return
        from mlflow.tracking import MlflowClient

        from runner.report import build_report, log_report, sweep_runs

        client = MlflowClient(self.info.tracking_uri)
        parent = client.get_run(self.info.parent_run_id)
        runs = sweep_runs(client, parent)
        failed = True
        try:
            if runs:
                report = build_report(client, runs, parent.info.run_name)
                print(report.text, flush=True)
                log_report(client, parent.info.run_id, report)
                failed = any(r.status != "FINISHED" for r in report.rows)
            else:
                print("sweep ended with no runs", flush=True)
        finally:
            status = "FAILED" if failed else "FINISHED"
            client.set_terminated(self.info.parent_run_id, status=status)
            log.info("sweep run %s ended %s", self.info.parent_run_id, status)
        if failed:
            sys.exit(1)  # Hydra turns callback exceptions into warnings; an exit still counts
