"""A multirun is one thing in MLflow: a parent run made before any job starts, every job a
child of it (whatever the launcher), and a comparison report when the sweep ends.

The launching process creates the store, the experiment and the parent run once (parallel
jobs would race to), and writes their ids to a file in the sweep folder that every job,
in any process or on any node, reads back.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

log = logging.getLogger("runner.sweep")
SWEEP_FILE = "mlflow_sweep.json"
REUSED_PREFIX = "runner.reused."  # parent tags naming finished runs a resumed sweep reused
# Keys that do not change what a run computes: left out of its fingerprint.
NOT_FINGERPRINTED = {"tracking", "sweep", "plugins", "resume"}
NOT_FINGERPRINTED_TRAINER = {"progress", "threads", "checkpoint_every", "num_workers"}


@dataclass(frozen=True)
class SweepInfo:
    """Where a sweep's jobs log: the tracking URI, experiment and parent run."""

    tracking_uri: str
    experiment_id: str
    parent_run_id: str


def fingerprint(config: dict[str, Any]) -> str:
    """A hash of everything in a resolved config that decides a run's results (seed too)."""
    kept = {k: v for k, v in config.items() if k not in NOT_FINGERPRINTED}
    if isinstance(kept.get("trainer"), dict):
        trainer = kept["trainer"]
        kept["trainer"] = {k: v for k, v in trainer.items() if k not in NOT_FINGERPRINTED_TRAINER}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()


def parallel_jobs(hydra_cfg: Any) -> int:
    """How many jobs the launcher runs at once (joblib's n_jobs; 1 for the basic launcher)."""
    n_jobs = OmegaConf.select(hydra_cfg, "launcher.n_jobs", default=None)
    if not isinstance(n_jobs, int):
        return 1
    return n_jobs if n_jobs > 0 else max(1, (os.cpu_count() or 1) + 1 + n_jobs)


def read_sweep(sweep_dir: str) -> SweepInfo | None:
    """The sweep's MLflow ids, as the launching process wrote them (None outside a sweep)."""
    path = Path(sweep_dir) / SWEEP_FILE
    if not path.is_file():
        return None
    return SweepInfo(**json.loads(path.read_text()))


def _tracking_target(config: DictConfig) -> tuple[str, str | None, str]:
    """Tracking URI, artifact root (embedded store only) and experiment, from the config."""
    from hydra.core.hydra_config import HydraConfig

    from runner.tracking import default_store

    # Before any job, `${hydra:...}` interpolations need the sweep's config installed.
    HydraConfig.instance().set_config(config)
    tracking = OmegaConf.to_container(config.tracking, resolve=True)
    uri = tracking.get("uri") or os.environ.get("MLFLOW_TRACKING_URI")
    artifact_root = None
    if not uri:
        uri, artifact_root = default_store(tracking["store_dir"])
    return uri, artifact_root, str(tracking.get("experiment") or "runner")


class SweepCallback(Callback):
    """Hydra callback: the sweep's parent run, before the jobs and after them."""

    def __init__(self) -> None:
        self.info: SweepInfo | None = None
        self.started = 0.0

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        """Create (or, for a re-run of the same command, reopen) the parent run."""
        from runner.report import SWEEP_TAG
        from runner.tracking import open_store

        uri, artifact_root, experiment = _tracking_target(config)
        client, experiment_id = open_store(uri, experiment, artifact_root)
        overrides = sorted(str(o) for o in config.hydra.overrides.task)
        key = hashlib.sha256(json.dumps([experiment, overrides]).encode()).hexdigest()
        previous = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`runner.sweep_fingerprint` = '{key}'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        sweep_dir = str(Path(config.hydra.sweep.dir).resolve())
        if previous:
            run_id = previous[0].info.run_id
            client.update_run(run_id, status="RUNNING")
            client.set_tag(run_id, "runner.sweep", sweep_dir)
            self._end_stale_children(client, experiment_id, run_id)
            log.info("resuming sweep run %s: finished jobs will be skipped", run_id)
        else:
            tags = {
                SWEEP_TAG: "true",
                "runner.sweep_fingerprint": key,
                "runner.sweep": sweep_dir,
                "runner.overrides": " ".join(overrides) or "(none)",
            }
            name = "sweep " + time.strftime("%Y-%m-%d %H:%M:%S")
            run_id = client.create_run(experiment_id, run_name=name, tags=tags).info.run_id
        self.info = SweepInfo(uri, experiment_id, run_id)
        self.started = time.time()
        Path(sweep_dir).mkdir(parents=True, exist_ok=True)
        (Path(sweep_dir) / SWEEP_FILE).write_text(json.dumps(self.info.__dict__))
        log.info("sweep run %s in experiment %r (%s)", run_id, experiment, uri)

    @staticmethod
    def _end_stale_children(client: Any, experiment_id: str, run_id: str) -> None:
        """Jobs left RUNNING by a killed launcher are dead: end them KILLED before resuming."""
        stale = client.search_runs(
            [experiment_id],
            filter_string=f"tags.mlflow.parentRunId = '{run_id}' and attributes.status = 'RUNNING'",
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
