"""Fingerprints: which runs compute the same thing, so a resumed sweep can skip them."""

from __future__ import annotations

import hashlib
import json
from typing import Any

# Keys that do not change what a run computes: left out of its fingerprint.
NOT_FINGERPRINTED = {"tracking", "sweep", "plugins", "resume"}
NOT_FINGERPRINTED_TRAINER = {"progress", "threads", "checkpoint_every", "num_workers"}


def fingerprint(config: dict[str, Any]) -> str:
    """A hash of everything in a resolved config that decides a run's results (seed too)."""
    kept = {k: v for k, v in config.items() if k not in NOT_FINGERPRINTED}
    if isinstance(kept.get("trainer"), dict):
        trainer = kept["trainer"]
        kept["trainer"] = {k: v for k, v in trainer.items() if k not in NOT_FINGERPRINTED_TRAINER}
    return _sha256(kept)


def sweep_fingerprint(experiment: str, overrides: list[str]) -> str:
    """A hash of a sweep's command line: the same command again reopens the same parent run."""
    return _sha256([experiment, sorted(overrides)])


def _sha256(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()
