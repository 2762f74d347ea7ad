"""The validated spec: what one run needs, as frozen dataclasses. Each default is written
here once; conf/config.yaml shows the same values to users (a test keeps them equal)."""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields, is_dataclass
from typing import Any


@dataclass(frozen=True)
class Component:
    """A registry name with its arguments, remembered with the config key it came from."""

    key: str
    type: str
    args: dict[str, Any]
    name: str = ""


@dataclass(frozen=True)
class LayerSpec:
    """One layer of a model: its registry type, arguments, optional id and initializers."""

    key: str
    index: int
    type: str
    args: dict[str, Any]
    id: str | None
    init: dict[str, Component]


@dataclass(frozen=True)
class L1Spec:
    """L1 penalty: strength, the layers (ids or indices; None: all) and whether biases count."""

    strength: float = 0.0
    layers: list[int | str] | None = None
    include_bias: bool = False


@dataclass(frozen=True)
class ModelSpec:
    """A validated model: layers, model-wide default initializers, L1 penalty and loss."""

    name: str
    layers: list[LayerSpec]
    init: dict[str, Component]
    l1: L1Spec
    loss: Component
    init_from: str | None = None  # a run id or models:/ URI whose weights it starts from


@dataclass(frozen=True)
class EarlyStopSpec:
    """Stop a run once its monitored validation metric has not improved by more than
    `min_delta` for `patience` epochs (None: never); `metric` None: the run's primary one."""

    patience: int | None = None
    min_delta: float = 0.0
    metric: str | None = None


@dataclass(frozen=True)
class TrainerSpec:
    """How long and how to train (conf/config.yaml explains each key)."""

    epochs: int = 200
    batch_size: int = 2
    grad_clip: float | None = None
    log_model: bool = True
    plots: bool = True
    progress: str = "auto"
    threads: int | str = "auto"
    data_path: str = "auto"
    num_workers: int = 0
    checkpoint_every: int = 10
    on_nan: str = "stop"
    deterministic: bool = False
    early_stop: EarlyStopSpec = EarlyStopSpec()
    # The weights a run ends with: best (by the monitored metric) or last; None: best where
    # the data has validation rows, else last.
    keep: str | None = None


@dataclass(frozen=True)
class TrackingSpec:
    """Where runs go: a tracking URI (None: the embedded store under store_dir)."""

    uri: str | None = None
    store_dir: str = "outputs"
    experiment: str = "runner"


@dataclass(frozen=True)
class SweepSpec:
    """Sweep behaviour: skip jobs whose exact config already has a FINISHED run; how many
    members a stacked group trains at once (0: as many as fit in memory and, on a CPU, in a
    core's share of its cache)."""

    skip_finished: bool = True
    stack_max: int = 0
    register: str | None = None  # a registered model name: the best job's model joins it


@dataclass(frozen=True)
class RunSpec:
    """Everything one run needs, checked."""

    seed: int
    device: str
    trainer: TrainerSpec
    model: ModelSpec
    data: Component
    task: str  # derived from the data, not a config key
    optim: Component
    scheduler: Component | None
    tracking: TrackingSpec
    plugins: list[str] = field(default_factory=list)
    sweep: SweepSpec = field(default_factory=SweepSpec)
    resume: str | None = None
    metric: str = ""  # the data's primary metric (`data.metric`, else the task's), derived


def defaults(spec_class: type) -> dict[str, Any]:
    """A spec dataclass's field defaults, by key: the config keys it accepts (a nested
    spec's as a mapping, as the config writes it)."""
    return {
        f.name: asdict(f.default) if is_dataclass(f.default) else f.default
        for f in fields(spec_class)
        if f.default is not MISSING
    }


TOP_LEVEL_KEYS = {f.name for f in fields(RunSpec)} - {"task", "metric"}
MODEL_KEYS = {f.name for f in fields(ModelSpec)} | {"template"}
LAYER_KEYS = {"layer", "id", "init"}  # the rest of a layer's mapping are its arguments
