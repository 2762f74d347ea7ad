"""Fingerprints: which runs compute the same thing, so a resumed sweep can skip them."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from runner.tracking.params import flatten

# Keys that do not change what a run computes: left out of its fingerprint.
NOT_FINGERPRINTED = {"tracking", "sweep", "plugins", "resume"}
NOT_FINGERPRINTED_TRAINER = {"progress", "threads", "checkpoint_every", "num_workers"}
# What `resume=` may change besides those: how long the run trains (more epochs continue
# it as if trained that long at once) and what it logs at its end.
CONTINUABLE = {"trainer.epochs", "trainer.plots", "trainer.log_model"}


def fingerprinted(config: dict[str, Any]) -> dict[str, Any]:
    """The part of a resolved config that decides a run's results (what is hashed)."""
    kept = {k: v for k, v in config.items() if k not in NOT_FINGERPRINTED}
    if isinstance(kept.get("trainer"), dict):
        trainer = kept["trainer"]
        kept["trainer"] = {k: v for k, v in trainer.items() if k not in NOT_FINGERPRINTED_TRAINER}
    return kept


def fingerprint(config: dict[str, Any]) -> str:
    """A hash of everything in a resolved config that decides a run's results (seed too)."""
    return _sha256(fingerprinted(config))


def config_changes(saved: dict[str, Any], config: dict[str, Any]) -> dict[str, str]:
    """Each dotted key in which `config` differs from the fingerprinted config a checkpoint
    was written by, with both values (`trainer.epochs 20 -> 40`)."""
    before, after = flatten(saved), flatten(fingerprinted(config))
    return {
        key: f"{key} {_shown(before, key)} -> {_shown(after, key)}"
        for key in sorted(before.keys() | after.keys())
        if before.get(key) != after.get(key)
    }


def _shown(values: dict[str, Any], key: str) -> str:
    """A config value as YAML and the command line write it (null, true), or (unset)."""
    if key not in values:
        return "(unset)"
    value = str(values[key])  # (flattened: Python's str of each value)
    return {"None": "null", "True": "true", "False": "false"}.get(value, value)


def sweep_fingerprint(experiment: str, overrides: list[str]) -> str:
    """A hash of a sweep's command line: the same command again reopens the same parent run."""
    return _sha256([experiment, sorted(overrides)])


def _sha256(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()
