"""Checkpoints and resume: all a run needs to continue bit for bit, written atomically.

A checkpoint holds the model, optimizer and scheduler states, every RNG state, the epoch,
the history so far, the MLflow run id, the config fingerprint and the config it hashes.
Only tensors and plain Python values go in, so it loads with
`torch.load(weights_only=True)`: a checkpoint file cannot run code.
"""

from __future__ import annotations

import logging
import os
import random
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from runner import renamed_in
from runner.errors import ConfigError

if TYPE_CHECKING:
    from runner.loop import TrainingParts

log = logging.getLogger("runner")


def capture(
    parts: TrainingParts,
    generator: torch.Generator,
    epoch: int,
    history: list[dict[str, float]],
    run_id: str | None,
    fingerprint: str,
    config: dict[str, Any] | None = None,
    best_model: dict[str, torch.Tensor] | None = None,
) -> dict[str, Any]:
    """The state at the end of `epoch`; `config`, the fingerprinted config, lets `resume=`
    name what a later config changed."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    scheduler = parts.scheduler.state_dict() if parts.scheduler is not None else None
    if scheduler is not None and isinstance(scheduler.get("milestones"), Counter):
        scheduler["milestones"] = dict(scheduler["milestones"])  # plain dict: weights_only
    return {
        "epoch": epoch,
        "run_id": run_id,
        "fingerprint": fingerprint,
        "config": config,
        "monitor": parts.monitor.state() if parts.monitor is not None else None,
        "best_model": best_model,  # the monitored metric's best epoch's weights (keep=best)
        "history": [dict(row) for row in history],
        "model": parts.model.state_dict(),
        "optimizer": parts.optimizer.state_dict(),
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


def restore(state: dict[str, Any], parts: TrainingParts, generator: torch.Generator) -> None:
    """Put a checkpoint's states back into freshly built objects."""
    parts.model.load_state_dict(state["model"])
    parts.optimizer.load_state_dict(state["optimizer"])
    if parts.monitor is not None and state.get("monitor"):
        parts.monitor.restore(state["monitor"])
    if parts.scheduler is not None and state["scheduler"] is not None:
        parts.scheduler.load_state_dict(state["scheduler"])
        if isinstance(getattr(parts.scheduler, "milestones", None), dict):
            parts.scheduler.milestones = Counter(parts.scheduler.milestones)
    rng = state["rng"]
    torch.set_rng_state(rng["torch"])
    if rng["cuda"]:
        torch.cuda.set_rng_state_all(rng["cuda"])
    generator.set_state(rng["generator"])
    kind, keys, pos, has_gauss, gauss = rng["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = rng["python"]
    random.setstate((version, tuple(internal), gauss_next))


def save_weights(weights: dict[str, torch.Tensor], epoch: int, path: Path) -> Path:
    """The kept weights alone (`checkpoints/best.pt`): `torch.load(weights_only=True)`."""
    return save({"epoch": epoch, "model": weights}, path)


def stopped_early(state: dict[str, Any]) -> bool:
    """Whether a checkpoint's run stopped early (nothing is left to train)."""
    return bool((state.get("monitor") or {}).get("stopped_epoch"))


def read(path: Path) -> dict[str, Any]:
    """A checkpoint's state; a truncated or foreign file is a one-line error, never run."""
    try:
        return load(path)
    except Exception as err:
        raise ConfigError(f"resume: {str(path)!r} is not a readable checkpoint ({err})") from None


__getattr__ = renamed_in(__name__)  # names this module had before (runner.RENAMED)
