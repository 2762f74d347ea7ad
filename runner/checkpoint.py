"""Checkpoints and resume: all a run needs to continue bit for bit, written atomically.

A checkpoint holds the model, optimizer and scheduler states, every RNG state, the epoch,
the history so far, the MLflow run id and the config fingerprint. Only tensors and plain
Python values go in, so it loads with `torch.load(weights_only=True)`: a checkpoint file
cannot run code.
"""

from __future__ import annotations

import logging
import os
import random
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from runner.errors import ConfigError, Refused
from runner.loop import Trainer
from runner.spec import RunSpec

log = logging.getLogger("runner")


def capture(
    trainer: Trainer,
    generator: torch.Generator,
    epoch: int,
    history: list[dict[str, float]],
    run_id: str | None,
    fingerprint: str,
) -> dict[str, Any]:
    """The state at the end of `epoch`."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    scheduler = trainer.scheduler.state_dict() if trainer.scheduler is not None else None
    if scheduler is not None and isinstance(scheduler.get("milestones"), Counter):
        scheduler["milestones"] = dict(scheduler["milestones"])  # plain dict: weights_only
    return {
        "epoch": epoch,
        "run_id": run_id,
        "fingerprint": fingerprint,
        "history": [dict(row) for row in history],
        "model": trainer.model.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": scheduler,
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "generator": generator.get_state(),
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
            "python": random.getstate(),
        },
    }


def save(state: dict[str, Any], path: Path) -> Path:
    """Write atomically: a crash mid-write leaves the previous checkpoint intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)
    return path


def load(path: Path) -> dict[str, Any]:
    """Read a checkpoint without executing anything from it."""
    return torch.load(path, map_location="cpu", weights_only=True)


def restore(state: dict[str, Any], trainer: Trainer, generator: torch.Generator) -> None:
    """Put a checkpoint's states back into freshly built objects."""
    trainer.model.load_state_dict(state["model"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    if trainer.scheduler is not None and state["scheduler"] is not None:
        trainer.scheduler.load_state_dict(state["scheduler"])
        if isinstance(getattr(trainer.scheduler, "milestones", None), dict):
            trainer.scheduler.milestones = Counter(trainer.scheduler.milestones)
    rng = state["rng"]
    torch.set_rng_state(rng["torch"])
    if rng["cuda"]:
        torch.cuda.set_rng_state_all(rng["cuda"])
    generator.set_state(rng["generator"])
    kind, keys, pos, has_gauss, gauss = rng["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = rng["python"]
    random.setstate((version, tuple(internal), gauss_next))


def load_resume(
    spec: RunSpec, fingerprint: str, trainer: Trainer, generator: torch.Generator
) -> dict[str, Any]:
    """Load the checkpoint `resume=` names (a file, or an MLflow run id) into freshly built
    objects; refuse one written by another config, for a run already complete, or for a
    run another process is still training. `state["run_id"]` is the run it continues."""
    from runner.tracking.store import Store, local_checkpoint

    target = spec.resume
    store = Store(spec.tracking)
    path = Path(target).expanduser()
    if path.is_file():
        state = _read(path)
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
        state = _read(path)
        if state["run_id"] not in (None, run_id):  # the folder was reused by a later run
            path = store.logged_checkpoint(run_id)
            state = _read(path)
    if state["run_id"] not in (None, run_id):
        raise ConfigError(
            f"resume: the checkpoint {str(path)!r} belongs to run {state['run_id']}, not {run_id}"
        )
    if state["fingerprint"] != fingerprint:
        raise ConfigError(
            f"resume: the checkpoint {str(path)!r} was written by a different config; resume "
            "with the same overrides as the original run (resume= aside)"
        )
    state["run_id"] = run_id
    # A run stopped while writing its end continues with just that end; a training that
    # no store took (no run) is recorded by this resume.
    if state["epoch"] >= spec.trainer.epochs and run is not None and run.info.status == "FINISHED":
        raise Refused(
            f"resume: run {run_id} already trained all {state['epoch']} epochs (more epochs "
            "are another config: start a new run without resume=)"
        )
    restore(state, trainer, generator)
    return state


def _read(path: Path) -> dict[str, Any]:
    """A checkpoint's state; a truncated or foreign file is a one-line error, never run."""
    try:
        return load(path)
    except Exception as err:
        raise ConfigError(f"resume: {str(path)!r} is not a readable checkpoint ({err})") from None
