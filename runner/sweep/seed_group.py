"""A seed group of a sweep trained as one stacked model (`hydra/launcher=stacked`), each
member still a full run: its own child MLflow run, params, per-epoch metrics, final and
test metrics, plots and model, exactly as a solo job logs them.

The launcher (hydra_plugins/runner_stacked) calls, inside Hydra's job context of each
member: `prepare_member` (validate, load, build: the solo run's seeds give the same initial
weights and batch order), `stack_key` (which seed group it trains in), `open_member` (the
run with its params and config files, made while the group trains, where a core is free
for it), `runner.sweep.stacked.stack_fit` over the group, then `finish_member` (metrics,
checkpoint, final results, written in batches).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import signal
from collections.abc import Iterator
from dataclasses import dataclass

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from runner import job as recipe
from runner import renamed_in
from runner.config.launch import Launch, launch_of
from runner.errors import RunError
from runner.sweep.stacked import MemberResult
from runner.tracking import Tracker, sweep_record, tags
from runner.tracking.deferred import DeferredTracker
from runner.tracking.fingerprint import fingerprint, fingerprinted
from runner.tracking.naming import split_override
from runner.training import checkpoint
from runner.training.metrics import primary_metric
from runner.training.signals import Interrupted

log = logging.getLogger("runner")
# What may differ inside a seed group: the seed, and what the stacked update takes per member.
MEMBER_KEYS = ("seed", "optim.lr", "optim.weight_decay", "model.l1.strength")


class MemberFailed(RunError):
    """A stacked member's loss went non-finite; the others went on."""


@dataclass
class Member:
    """One job of a seed group, prepared in its own Hydra job context."""

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
    # (said by the job itself: a member that continues its run trains alone, as solo jobs do)
    spec = sweep_record.continue_interrupted(spec, launch, fingerprint(config), announce=False)
    return Member(launch, recipe.setup(config, spec, launch.parallel))


def stack_key(member: Member) -> str:
    """Which seed group a member is in: members with the same key differ only in MEMBER_KEYS,
    so they can share one stacked model."""
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


def open_member(member: Member, stack_size: int, tracker: DeferredTracker, pid: int) -> str | None:
    """Make a member's run while its group trains: tags (`pid`: the training process), params,
    data set and config files, written at once; it stays RUNNING until `finish_member` takes
    it up. None where that fails (the run, if made, is deleted; `finish_member` makes it)."""
    job, launch = member.job, member.launch
    assert job is not None
    run_tags = recipe.run_tags(job, launch) | {tags.STACKED: str(stack_size), tags.PID: str(pid)}
    run_id = None  # (the tracker serves several members: its run_id may be the last one's)
    try:
        run_id = tracker.start(
            recipe.launch_name(launch, job.spec), run_tags, launch.parent_run_id,
            None, launch.started_at,
        )  # fmt: skip
        recipe.log_inputs(job, launch, tracker)
        tracker.write_kept()
        return run_id
    except Exception as err:
        log.warning(
            "job %s: its run is written after training (opening it failed: %s: %s)",
            launch.job_num, type(err).__name__, err,
        )  # fmt: skip
        discard_runs([run_id], tracker)
        return None


def discard_runs(run_ids: list[str | None], tracker: DeferredTracker) -> None:
    """Delete runs opened for a stacked training that did not take place (best effort)."""
    for run_id in filter(None, run_ids):
        try:
            tracker.client.delete_run(run_id)
        except Exception as err:
            log.warning("could not delete run %s: %s: %s", run_id, type(err).__name__, err)


def kill_runs(run_ids: list[str | None], tracker: DeferredTracker) -> None:
    """End KILLED the runs opened for a stacked training that was interrupted (best effort:
    a re-run ends any left RUNNING, their process being gone)."""
    for run_id in filter(None, run_ids):
        try:
            tracker.client.set_terminated(run_id, status="KILLED")
        except Exception as err:
            log.warning("could not end run %s: %s: %s", run_id, type(err).__name__, err)


def finish_member(
    member: Member,
    result: MemberResult,
    train_seconds: float,
    stack_size: int,
    tracker: Tracker,
    run_id: str | None = None,
    stopped: int | None = None,
    at_once: bool = False,
) -> float | None:
    """Log one member's run as a solo job would, from what the stacked training gave it (in
    the run `open_member` made, if given); a failure is logged and recorded on its run
    (FAILED), and the sweep goes on. `stopped`: the signal that stopped the group after its
    last epoch (`at_once`: within the next one, its weights mid-epoch, so no checkpoint):
    the run ends KILLED with its epochs, as a solo job's."""
    with _lines_named(member_label(member.launch)):
        try:
            return _log_member(
                member, result.history, result.error, train_seconds, stack_size, tracker,
                run_id, stopped, at_once,
            )  # fmt: skip
        except Interrupted as err:
            log.warning(
                "job %s interrupted after epoch %s: run %s ended KILLED",
                member.launch.job_num, err.epoch, tracker.run_id,
            )  # fmt: skip
            return None
        except Exception as err:
            log.error("job %s failed: %s: %s", member.launch.job_num, type(err).__name__, err)
            return None


def member_label(launch: Launch) -> str:
    """What a member's log lines begin with: its swept overrides (`seed=2`), as the sweep's
    table names its job."""
    swept = launch.swept or []
    named = [o for o in launch.overrides if split_override(o)[0] in swept]
    return " ".join(named) or f"job {launch.job_num}"


@contextlib.contextmanager
def _lines_named(label: str) -> Iterator[None]:
    """Begin the job's own lines (kept epoch, early stop, final) with `label`: the members
    of a seed group end one after another in one process, under one console."""

    def name(record: logging.LogRecord) -> bool:
        record.msg = f"{label}: {record.msg}"
        return True

    log.addFilter(name)
    try:
        yield
    finally:
        log.removeFilter(name)


def _log_member(
    member: Member,
    history: list[dict[str, float]],
    error: str | None,
    train_seconds: float,
    stack_size: int,
    tracker: Tracker,
    run_id: str | None,
    stopped: int | None = None,
    at_once: bool = False,
) -> float | None:
    job, launch = member.job, member.launch
    assert job is not None
    run_tags = recipe.run_tags(job, launch) | {tags.STACKED: str(stack_size)}
    name = recipe.launch_name(launch, job.spec)
    with tracker.run(name, run_tags, launch.parent_run_id, run_id, launch.started_at):
        if run_id is None:
            recipe.log_inputs(job, launch, tracker)
        for epoch, row in enumerate(history, start=1):
            tracker.log_metrics(row, step=epoch)
        if at_once:  # no state to continue from: the weights were mid-epoch
            raise Interrupted(stopped or signal.SIGINT, len(history), at_once=True)
        # The member's weights and optimizer state were written back into its training parts: its
        # checkpoint resumes like a solo run's (the last good state, if it failed).
        path = launch.checkpoint_path
        state = checkpoint.capture(
            job.parts, job.generator, len(history), history, tracker.run_id, job.fingerprint,
            fingerprinted(job.config), job.best_state,
        )  # fmt: skip
        checkpoint.save(state, path)
        watched = job.parts.monitor
        if job.best_state is not None and watched is not None and watched.best_epoch:
            checkpoint.save_weights(job.best_state, watched.best_epoch, path.with_name("best.pt"))
        tracker.set_tags({tags.CHECKPOINT: str(path)})
        tracker.log_artifact(path, "checkpoints")
        if error is not None:
            raise MemberFailed(error)
        stopped_early = watched is not None and watched.stopped
        if stopped is not None and len(history) < job.spec.trainer.epochs and not stopped_early:
            raise Interrupted(stopped, len(history))
        tracker.set_tags({tags.TIME_TRAIN: f"{train_seconds:.3f}"})
        final = recipe.log_final(job, history, tracker)
    return recipe.announce_end(job, launch, tracker, final)


__getattr__ = renamed_in(__name__)  # names this module had before (runner.RENAMED)
