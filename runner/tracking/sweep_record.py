"""A sweep job's record in the store: a re-run sweep skips what already FINISHED
(`finished_run`) and continues what was interrupted from its checkpoint
(`continue_interrupted`); a job with a bad config still gets a FAILED child run saying why
(`record_failed_setup`). The sweep's own parent run is made by `runner.sweep.SweepCallback`.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from runner.errors import ConfigError
from runner.tracking import tags

if TYPE_CHECKING:
    from mlflow.entities import Run

    from runner.config.launch import Launch, SweepInfo
    from runner.config.spec import RunSpec, TrackingSpec

log = logging.getLogger("runner.sweep")


def finished_run(
    spec: TrackingSpec, sweep: SweepInfo, fingerprint: str, overrides: list[str]
) -> Run | None:
    """In a sweep: the FINISHED run of this exact config, linked both ways when it is no
    job of this sweep (made by an earlier command): the parent lists it with the sweep's
    `overrides` for that job, and it names the sweep (REUSED_BY_PREFIX + parent run id)."""
    store = _store(spec)
    done = store.find_finished(fingerprint)
    if done is not None and done.data.tags.get(tags.PARENT_RUN_ID) != sweep.parent_run_id:
        key, text = fingerprint[:16], " ".join(overrides) or "(none)"
        store.client.set_tag(sweep.parent_run_id, f"{tags.REUSED_PREFIX}{key}", done.info.run_id)
        store.client.set_tag(sweep.parent_run_id, f"{tags.REUSED_AS_PREFIX}{key}", text)
        store.client.set_tag(
            done.info.run_id, f"{tags.REUSED_BY_PREFIX}{sweep.parent_run_id}", text
        )
    return done


@functools.lru_cache(maxsize=4)
def _store(spec: TrackingSpec) -> Any:
    """The opened store of `spec`, once per process (a stacked launcher asks for every job)."""
    from runner.tracking.store import Store

    return Store(spec)


def continue_interrupted(
    spec: RunSpec, launch: Launch, fingerprint: str, announce: bool = True
) -> RunSpec:
    """In a re-run sweep, a job whose run was interrupted continues that run from its
    checkpoint (`resume=` it) instead of starting over (said once, where it runs)."""
    if not (launch.sweep and spec.resume is None and spec.sweep.skip_finished):
        return spec
    run = _store(spec.tracking).find_interrupted(fingerprint, launch.sweep.parent_run_id)
    if run is None:
        return spec
    if announce:
        log.info("job %s continues its interrupted run %s", launch.job_num, run.info.run_id)
    return dataclasses.replace(spec, resume=run.info.run_id)


def record_failed_setup(cfg: DictConfig, launch: Launch, err: ConfigError) -> None:
    """A sweep job whose config is bad still gets a FAILED child run saying why."""
    from runner.config.spec import TrackingSpec
    from runner.tracking import make_tracker
    from runner.tracking.naming import run_name
    from runner.tracking.params import flatten

    if launch.sweep is None:
        return
    experiment = OmegaConf.select(cfg, "tracking.experiment", default="runner")
    spec = TrackingSpec(uri=launch.sweep.tracking_uri, experiment=str(experiment))
    job_tags = {
        tags.OVERRIDES: " ".join(launch.overrides) or "(none)",
        tags.SWEEP: str(launch.sweep_dir),
        tags.SWEEP_JOB: str(launch.job_num),
    }
    model, optim = (OmegaConf.select(cfg, f"{k}.name", default="?") for k in ("model", "optim"))
    name = run_name(launch.overrides, launch.sweep.swept, str(model), str(optim))
    tracker = make_tracker(spec)
    try:
        with tracker.run(name, job_tags, launch.sweep.parent_run_id, None, launch.started_at):
            tracker.log_params(flatten(OmegaConf.to_container(cfg, resolve=False)))
            raise err
    except ConfigError:
        pass  # recorded; the caller reports it
