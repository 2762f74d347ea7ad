"""Config → validated spec. Every check that needs no data runs before any work.

`schema` holds the spec dataclasses and their defaults, `args` checks a component's
arguments against its registered callable's signature (so a new layer or optimizer is
validated without extra code), `validators` checks each config section.
"""

from runner.config.spec.schema import (
    Component,
    EarlyStopSpec,
    L1Spec,
    LayerSpec,
    ModelSpec,
    RunSpec,
    SweepSpec,
    TrackingSpec,
    TrainerSpec,
)
from runner.config.spec.validators import plugin_list, precheck, unknown_key, validate

__all__ = [
    "Component",
    "EarlyStopSpec",
    "L1Spec",
    "LayerSpec",
    "ModelSpec",
    "RunSpec",
    "SweepSpec",
    "TrackingSpec",
    "TrainerSpec",
    "plugin_list",
    "precheck",
    "unknown_key",
    "validate",
]
