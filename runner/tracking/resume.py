"""`resume=`: the checkpoint a run id or a file names, checked against the store (the run
it continues, whether another process still trains it) and loaded into fresh objects."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from runner.errors import ConfigError, Refused
from runner.tracking import tags
from runner.tracking.fingerprint import CONTINUABLE, config_changes, fingerprint
from runner.training import checkpoint

if TYPE_CHECKING:
    from runner.config.spec import RunSpec
    from runner.loop import TrainingParts

log = logging.getLogger("runner")
SHOWN_CHANGES = 5  # refused differences named in the line (a whole other experiment has dozens)


def load_resume(
    spec: RunSpec, config: dict[str, Any], parts: TrainingParts, generator: torch.Generator
) -> dict[str, Any]:
    """Load the checkpoint `resume=` names (a file, or an MLflow run id) into freshly built
    objects; refuse one written by another config (but for more epochs and what the run
    shows), for a run already complete, or for a run another process is still training.
    `state["run_id"]` is the run it continues; `state["continued"]`, what changed."""
    from runner.tracking.store import Store, local_checkpoint  # imports MLflow

    target = spec.resume
    store = Store(spec.tracking)
    path = Path(target).expanduser()
    if path.is_file():
        state = checkpoint.read(path)
        # A file from before its run id was known: its run is the one tagged with the file.
        run_id = state["run_id"] or store.run_of_checkpoint(path)
        run = store.run_to_resume(run_id, path) if run_id else None
        if run_id and run is None:  # (a damaged store moved aside): kept, in a new run
            log.warning(
                "resume: run %s of %s is not in %s: its epochs are recorded as a new run",
                run_id, path, store.uri,
            )  # fmt: skip
            state["run_id"] = run_id = None
    else:
        run = store.run_to_resume(target)
        run_id = target
        path = local_checkpoint(run) or store.logged_checkpoint(run_id)
        state = checkpoint.read(path)
        if state["run_id"] not in (None, run_id):  # the folder was reused by a later run
            path = store.logged_checkpoint(run_id)
            state = checkpoint.read(path)
    if state["run_id"] not in (None, run_id):
        raise ConfigError(
            f"resume: the checkpoint {str(path)!r} belongs to run {state['run_id']}, not {run_id}"
        )
    was = run.data.tags.get(tags.OVERRIDES) if run is not None else None
    # When the run ended (interrupted, or finished before more epochs), and how long it had
    # already been paused before: the time until this resume is not the run's own.
    state["ended_at"] = run.info.end_time / 1000 if run is not None and run.info.end_time else None
    state["paused_before"] = float(run.data.tags.get(tags.PAUSED, 0)) if run is not None else 0.0
    state["continued"] = continued(state, config, path, was)
    trained, epochs = state["epoch"], spec.trainer.epochs
    if trained > epochs:
        raise ConfigError(
            f"resume: the checkpoint {str(path)!r} has trained {trained} epochs already: "
            f"trainer.epochs={epochs} is fewer (fewer epochs are a new run: without resume=)"
        )
    refuse_a_longer_schedule(spec, state, path)
    state["run_id"] = run_id
    # A run stopped while writing its end continues with just that end; a training that
    # no store took (no run) is recorded by this resume.
    if checkpoint.stopped_early(state) and run is not None and run.info.status == "FINISHED":
        raise Refused(
            f"resume: run {run_id} stopped early after epoch {trained} (trainer.early_stop): "
            "its training is over"
        )
    if trained >= epochs and run is not None and run.info.status == "FINISHED":
        raise Refused(
            f"resume: run {run_id} already trained all {trained} epochs (trainer.epochs="
            f"{trained + 10}, say, trains it 10 more)"
        )
    checkpoint.restore(state, parts, generator)
    return state


def refuse_a_longer_schedule(spec: RunSpec, state: dict[str, Any], path: Path) -> None:
    """A scheduler whose length is trainer.epochs (cosine's T_max unless set) annealed the
    epochs trained so far over the old count: more epochs cannot equal a run trained that
    long at once (the restored schedule would run on at its end, a cosine at lr 0)."""
    from runner.registry import SCHEDULERS

    saved = (state.get("config") or {}).get("trainer", {}).get("epochs")
    if spec.scheduler is None or saved in (None, spec.trainer.epochs):
        return
    entry = SCHEDULERS.get(spec.scheduler.type, spec.scheduler.key)
    derived = [
        arg for arg, key in entry.meta.get("from_trainer", {}).items()
        if key == "epochs" and arg not in spec.scheduler.args
    ]  # fmt: skip
    if derived:
        raise ConfigError(
            f"resume: trainer.epochs {saved} -> {spec.trainer.epochs} with scheduler "
            f"{spec.scheduler.type!r}, whose {derived[0]} is trainer.epochs: the checkpoint "
            f"{str(path)!r} was annealed over {saved} epochs, so no continuation equals a run "
            f"of {spec.trainer.epochs} epochs at once. Start a new run with "
            f"trainer.epochs={spec.trainer.epochs} (no resume=), or set "
            f"scheduler.{derived[0]} in both runs"
        )


def continued(
    state: dict[str, Any], config: dict[str, Any], path: Path, was: str | None = None
) -> list[str]:
    """What the config changes in the run a checkpoint continues (`trainer.epochs 20 ->
    40`): only what a continued run may change, else a ConfigError naming the keys (the
    first few) and the overrides the run was started with (`was`, where known)."""
    if state["fingerprint"] == fingerprint(config):
        return []
    saved = state.get("config")  # (not in checkpoints from before it was kept there)
    changes = config_changes(saved, config) if saved is not None else {}
    refused = [text for key, text in changes.items() if key not in CONTINUABLE]
    if saved is None or refused:
        more = f", and {len(refused) - SHOWN_CHANGES} more" if len(refused) > SHOWN_CHANGES else ""
        changes = f" ({', '.join(refused[:SHOWN_CHANGES])}{more})" if refused else ""
        raise ConfigError(
            f"resume: the checkpoint {str(path)!r} was written by a different config{changes}; "
            "resume with the same overrides as the original run (resume= aside)"
            + (f", which were: {was}" if was else "")
            + ". Only trainer.epochs (more), trainer.plots, trainer.log_model and how progress "
            "shows may change"
        )
    return list(changes.values())
