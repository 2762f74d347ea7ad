"""A seed group of a sweep trained as one stacked model (`hydra/launcher=stacked`), each
member still a full run: its own child MLflow run, params, per-epoch metrics, final and
test metrics, plots and model, exactly as a solo job logs them.

The launcher (hydra_plugins/runner_stacked) calls, inside Hydra's job context of each
member: `prepare_member` (validate, load, build: the solo run's seeds give the same initial
weights and batch order), then `runner.stacked.stack_fit` over the group, then
`finish_member` (the MLflow run, written in batches after training).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from runner import checkpoint, tags
from runner import job as recipe
from runner.errors import RunError
from runner.fingerprint import fingerprint
from runner.launch import Launch, launch_of
from runner.metrics import primary_metric
from runner.stacked import MemberResult
from runner.tracking import Tracker

log = logging.getLogger("runner")
# What may differ inside a stacked group: the seed, and what the stacked update takes per member.
MEMBER_KEYS = ("seed", "optim.lr", "optim.weight_decay", "model.l1.strength")


class MemberFailed(RunError):
    """A stacked member's loss went non-finite; the others went on."""


@dataclass
class Member:
    """One job of a group, prepared in its own Hydra job context."""

    launch: Launch
    job: recipe.Job | None  # None: skipped, its config already FINISHED
    done_metric: float | None = None


def prepare_member(cfg: DictConfig) -> Member:
    """Validate and build one job (raises ConfigError on bad input, as a solo job does)."""
    launch = launch_of(HydraConfig.get())
    config, spec = recipe.check(cfg)
    done = recipe.already_finished(config, spec, launch)
    if done is not None:
        return Member(launch, None, done.data.metrics.get(primary_metric(spec.task, spec.metric)))
    return Member(launch, recipe.setup(config, spec, launch.parallel))


def group_key(member: Member) -> str:
    """Members with the same key differ only in MEMBER_KEYS: they can share one model."""
    assert member.job is not None
    config = copy.deepcopy(member.job.config)
    for key in MEMBER_KEYS:
        *parents, last = key.split(".")
        node = config
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    return fingerprint(config)


def finish_member(
    member: Member, result: MemberResult, train_seconds: float, group_size: int, tracker: Tracker
) -> float | None:
    """Log one member's run as a solo job would, from what the stacked training gave it; a
    failure is logged and recorded on its run (FAILED), and the sweep goes on."""
    try:
        return _log_member(member, result.history, result.error, train_seconds, group_size, tracker)
    except Exception as err:
        log.error("job %s failed: %s: %s", member.launch.job_num, type(err).__name__, err)
        return None


def _log_member(
    member: Member,
    history: list[dict[str, float]],
    error: str | None,
    train_seconds: float,
    group_size: int,
    tracker: Tracker,
) -> float | None:
    job, launch = member.job, member.launch
    assert job is not None
    run_tags = recipe.run_tags(job, launch) | {tags.STACKED: str(group_size)}
    name = recipe.launch_name(launch, job.spec)
    with tracker.run(name, run_tags, launch.parent_run_id, None, launch.started_at):
        recipe.log_inputs(job, launch, tracker)
        for epoch, row in enumerate(history, start=1):
            tracker.log_metrics(row, step=epoch)
        # The member's weights and optimizer state were written back into its trainer: its
        # checkpoint resumes like a solo run's (the last good state, if it failed).
        path = launch.checkpoint_path
        state = checkpoint.capture(
            job.trainer, job.generator, len(history), history, tracker.run_id, job.fingerprint
        )
        checkpoint.save(state, path)
        tracker.set_tags({tags.CHECKPOINT: str(path)})
        tracker.log_artifact(path, "checkpoints")
        if error is not None:
            raise MemberFailed(error)
        tracker.set_tags({tags.TIME_TRAIN: f"{train_seconds:.3f}"})
        final = recipe.log_final(job, history, tracker)
    return recipe.announce_end(job, launch, tracker, final)
