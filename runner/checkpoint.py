"""Checkpoints and resume: all a run needs to continue bit for bit, written atomically.

A checkpoint holds the model, optimizer and scheduler states, every RNG state, the epoch,
the history so far, the MLflow run id and the config fingerprint. Only tensors and plain
Python values go in, so it loads with `torch.load(weights_only=True)`: a checkpoint file
cannot run code.
"""

from __future__ import annotations

import os
import random
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from runner.errors import ConfigError
from runner.loop import Trainer
from runner.spec import RunSpec


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
    objects; refuse one written by another config or for a run already complete."""
    target = spec.resume
    path, run_id = Path(target).expanduser(), None
    if not path.is_file():
        from runner.tracking.store import Store

        path, run_id = Store(spec.tracking).checkpoint_of_run(target), target
    try:
        state = load(path)
    except Exception as err:  # a truncated or foreign file: say so, never execute it
        raise ConfigError(f"resume: {str(path)!r} is not a readable checkpoint ({err})") from None
    if state["fingerprint"] != fingerprint:
        raise ConfigError(
            f"resume: the checkpoint {str(path)!r} was written by a different config; resume "
            "with the same overrides as the original run (resume= aside)"
        )
    state["run_id"] = state["run_id"] or run_id  # written before the run id was known
    if state["epoch"] >= spec.trainer.epochs and _finished(spec, state["run_id"]):
        raise ConfigError(
            f"resume: run {state['run_id']} already trained all {state['epoch']} epochs"
        )  # (a run stopped while writing its end continues with just that end)
    restore(state, trainer, generator)
    return state


def _finished(spec: RunSpec, run_id: str | None) -> bool:
    """Whether the store holds `run_id` as FINISHED (unknown runs count as finished; no run
    id: no store took the training, and resume= records it)."""
    if run_id is None:
        return False
    from runner.tracking.store import Store

    try:
        return Store(spec.tracking).client.get_run(run_id).info.status == "FINISHED"
    except Exception:
        return True
