"""Section validators: each config block checked, every problem collected, one
ConfigError listing them all (each names the key path, the bad value and what is allowed).

`precheck` runs the checks that need neither torch nor the registries (a single run calls
it before torch is imported); `validate` runs them all and returns the RunSpec.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable
from typing import Any

from runner.components.plugins import load_components
from runner.config.spec.args import check_args, is_number, range_problem, signature_params
from runner.config.spec.outputs import loss_output_problem
from runner.config.spec.schema import (
    LAYER_KEYS,
    MODEL_KEYS,
    TOP_LEVEL_KEYS,
    Component,
    EarlyStopSpec,
    L1Spec,
    LayerSpec,
    ModelSpec,
    RunSpec,
    SweepSpec,
    TrackingSpec,
    TrainerSpec,
    defaults,
)
from runner.errors import ConfigError, did_you_mean, unknown_name
from runner.registry import (
    DATASETS,
    INITIALIZERS,
    LAYERS,
    LOSSES,
    OPTIMIZERS,
    SCHEDULERS,
    TEMPLATES,
    Registry,
)

# `loss: {name: auto}` picks the usual loss for the data's task (the model emits logits).
AUTO_LOSS = {"binary": "bce_with_logits", "multiclass": "cross_entropy", "regression": "mse"}
DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
PROGRESS_MODES = ("auto", "bar", "lines", "none")
KEEP = ("best", "last", None)
DATA_PATHS = ("auto", "memory", "loader")
ON_NAN = ("stop", "skip")


class _Problems:
    """Collects problems so that all of them are reported together."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def add(self, message: str) -> None:
        self.items.append(message)

    def capture(self, fn: Callable[[], Any]) -> Any:
        """Run fn; record its ConfigError problems and return None instead of raising."""
        try:
            return fn()
        except ConfigError as err:
            self.items.extend(err.problems)
            return None


def _component(
    problems: _Problems,
    key: str,
    value: Any,
    registry: Registry,
    reserved: set[str] = frozenset(),
    provided: set[str] = frozenset(),
    skip_first: bool = False,
) -> Component | None:
    """Validate a `{name, type?, **args}` block (or a bare name) against a registry."""
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, dict):
        problems.add(f"{key}: {value!r} is not a mapping with a 'name' key")
        return None
    if "name" not in value and "type" not in value:
        problems.add(f"{key}.name: missing; allowed: {', '.join(registry.names())}")
        return None
    type_key = "type" if "type" in value else "name"
    type_name = value[type_key]
    entry = problems.capture(lambda: registry.get(type_name, f"{key}.{type_key}"))
    if entry is None:
        return None
    args = {k: v for k, v in value.items() if k not in {"name", "type"} | reserved}
    for p in check_args(key, registry.kind, type_name, entry.target, args, skip_first, provided):
        problems.add(p)
    return Component(key=key, type=type_name, args=args, name=str(value.get("name", type_name)))


def _init_block(problems: _Problems, key: str, value: Any) -> dict[str, Component]:
    """Validate `{weight: spec, bias: spec}` initializer blocks."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        problems.add(f"{key}: {value!r} is not a mapping of parameter name to initializer")
        return {}
    out = {}
    for param, spec in value.items():
        comp = _component(problems, f"{key}.{param}", spec, INITIALIZERS, skip_first=True)
        if comp is not None:
            out[str(param)] = comp
    return out


def unknown_key(key: str, allowed: Iterable[str]) -> str:
    """The message for a key (`trainer.epoch`) its section does not have: the closest of
    `allowed` (the section's keys), then all of them."""
    allowed = sorted(allowed)
    name = key.rsplit(".", 1)[-1]
    return f"{key}: unknown key.{did_you_mean(name, allowed)} Allowed: {', '.join(allowed)}."


def _unknown_keys(problems: _Problems, key: str, given: dict, allowed: set[str]) -> None:
    for name in given:
        if name not in allowed:
            problems.add(unknown_key(f"{key}.{name}", allowed))


def _model(problems: _Problems, cfg: Any) -> ModelSpec | None:
    if not isinstance(cfg, dict):
        problems.add(f"model: {cfg!r} is not a mapping; pick one with model=<name>")
        return None
    layers_cfg = cfg.get("layers")
    if "template" in cfg:
        layers_cfg = _expand_template(problems, cfg)
    else:
        _unknown_keys(problems, "model", cfg, MODEL_KEYS)
    if layers_cfg is None and "template" in cfg:
        layers_cfg = []  # the template's own problems are already reported
    elif not isinstance(layers_cfg, list) or not layers_cfg:
        problems.add(f"model.layers: {layers_cfg!r} is not a non-empty list of layer specs")
        layers_cfg = []
    layers: list[LayerSpec] = []
    ids: set[str] = set()
    for i, layer in enumerate(layers_cfg):
        key = f"model.layers[{i}]"
        if not isinstance(layer, dict) or "layer" not in layer:
            problems.add(f"{key}: {layer!r} needs a 'layer' key naming a registered layer")
            continue
        entry = problems.capture(lambda layer=layer, key=key: LAYERS.get(layer["layer"], key))
        if entry is None:
            continue
        args = {k: v for k, v in layer.items() if k not in LAYER_KEYS}
        inferred = set(entry.meta.get("infer", {}))
        for p in check_args(key, "layer", layer["layer"], entry.target, args, provided=inferred):
            problems.add(p)
        layer_id = layer.get("id")
        if layer_id is not None and not isinstance(layer_id, str):
            problems.add(f"{key}.id: {layer_id!r} is not a string")
            layer_id = None
        if layer_id is not None:
            if layer_id in ids:
                problems.add(f"{key}.id: {layer_id!r} is used by another layer; ids are unique")
            ids.add(str(layer_id))
        init = _init_block(problems, f"{key}.init", layer.get("init"))
        layers.append(
            LayerSpec(key=key, index=i, type=layer["layer"], args=args, id=layer_id, init=init)
        )
    init = _init_block(problems, "model.init", cfg.get("init"))
    l1 = _l1(problems, cfg.get("l1"), len(layers_cfg), ids)
    loss_cfg = cfg.get("loss")
    if isinstance(loss_cfg, dict) and loss_cfg.get("name") == "auto":
        loss = Component(key="model.loss", type="auto", args={})  # resolved once the task is known
    else:
        loss = _component(problems, "model.loss", loss_cfg, LOSSES)
    init_from = cfg.get("init_from")
    if init_from is not None and (not isinstance(init_from, str) or not init_from.strip()):
        problems.add(
            f"model.init_from: {init_from!r} is not an MLflow run id or a "
            "models:/<name>@<alias> URI"
        )
    if loss is None or l1 is None:
        return None
    return ModelSpec(
        name=str(cfg.get("name", "model")), layers=layers, init=init, l1=l1, loss=loss,
        init_from=init_from if isinstance(init_from, str) else None,
    )  # fmt: skip


def _expand_template(problems: _Problems, cfg: dict) -> list | None:
    """Validate a model template's knobs (the model keys it takes) and expand its layers."""
    if "layers" in cfg:
        problems.add("model.layers: give either layers or a template, not both")
    entry = problems.capture(lambda: TEMPLATES.get(cfg["template"], "model.template"))
    if entry is None:
        return None
    knobs = {k: v for k, v in cfg.items() if k not in MODEL_KEYS}
    found = check_args("model", "model template", cfg["template"], entry.target, knobs)
    for problem in found:
        problems.add(problem)
    if found:
        return None
    try:
        return entry.target(**knobs)
    except (TypeError, ValueError) as err:
        problems.add(f"model: template {cfg['template']!r} rejected {knobs}: {err}")
        return None


def _l1(problems: _Problems, cfg: Any, n_layers: int, ids: set[str]) -> L1Spec | None:
    cfg = {} if cfg is None else cfg
    if not isinstance(cfg, dict):
        problems.add(f"model.l1: {cfg!r} is not a mapping with strength, layers, include_bias")
        return None
    _unknown_keys(problems, "model.l1", cfg, set(defaults(L1Spec)))
    merged = {**defaults(L1Spec), **cfg}
    strength, layers = merged["strength"], merged["layers"]
    if not is_number(strength) or not strength >= 0:  # `not >=` catches nan
        problems.add(f"model.l1.strength: {strength!r} is not a number >= 0")
        strength = 0.0
    if layers is not None:
        if not isinstance(layers, list):
            layers = [layers]
        for ref in layers:
            ok = (isinstance(ref, int) and not isinstance(ref, bool)) and (
                -n_layers <= ref < n_layers
            )
            ok = ok or (isinstance(ref, str) and ref in ids)
            if not ok:
                problems.add(
                    f"model.l1.layers: {ref!r} names no layer; allowed: layer indices 0 to "
                    f"{n_layers - 1} or ids {sorted(ids) or '(none set)'}"
                )
    if not isinstance(merged["include_bias"], bool):
        problems.add(f"model.l1.include_bias: {merged['include_bias']!r} is not true or false")
    return L1Spec(
        strength=float(strength), layers=layers, include_bias=bool(merged["include_bias"])
    )


def _int_at_least(problems: _Problems, key: str, value: Any, low: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        problems.add(f"{key}: {value!r} is not an integer")
        return low
    if value < low:
        problems.add(f"{key}: {value!r} is out of range; allowed: >= {low}")
    return value


def _mapping(problems: _Problems, key: str, cfg: Any) -> dict:
    """The config block at `key` as a dict; a scalar or list there is a problem."""
    if cfg is None:
        return {}
    if not isinstance(cfg, dict):
        problems.add(f"{key}: {cfg!r} is not a mapping of {key} settings")
        return {}
    return cfg


def _trainer(problems: _Problems, cfg: Any) -> TrainerSpec:
    cfg = _mapping(problems, "trainer", cfg)
    _unknown_keys(problems, "trainer", cfg, set(defaults(TrainerSpec)))
    merged = {
        **defaults(TrainerSpec),
        **{k: v for k, v in cfg.items() if k in defaults(TrainerSpec)},
    }
    merged["epochs"] = _int_at_least(problems, "trainer.epochs", merged["epochs"], 1)
    merged["batch_size"] = _int_at_least(problems, "trainer.batch_size", merged["batch_size"], 1)
    clip = merged["grad_clip"]
    if clip is not None and (not is_number(clip) or not clip > 0):  # `not >` catches nan
        problems.add(f"trainer.grad_clip: {clip!r} is not a number > 0 (or null for none)")
    for flag in ("log_model", "plots", "deterministic"):
        if not isinstance(merged[flag], bool):
            problems.add(f"trainer.{flag}: {merged[flag]!r} is not true or false")
    for key, allowed in (
        ("progress", PROGRESS_MODES),
        ("data_path", DATA_PATHS),
        ("on_nan", ON_NAN),
    ):
        if merged[key] not in allowed:
            problems.add(
                f"trainer.{key}: {merged[key]!r} is not allowed; allowed: {', '.join(allowed)}"
            )
    threads = merged["threads"]
    if threads != "auto" and (not isinstance(threads, int) or isinstance(threads, bool)):
        problems.add(f"trainer.threads: {threads!r} is not allowed; allowed: auto or an integer")
    elif threads != "auto" and threads < 1:
        problems.add(f"trainer.threads: {threads!r} is out of range; allowed: >= 1")
    merged["num_workers"] = _int_at_least(problems, "trainer.num_workers", merged["num_workers"], 0)
    merged["checkpoint_every"] = _int_at_least(
        problems, "trainer.checkpoint_every", merged["checkpoint_every"], 0
    )
    merged["early_stop"] = _early_stop(problems, merged["early_stop"])
    if merged["keep"] not in KEEP:
        problems.add(
            f"trainer.keep: {merged['keep']!r} is not allowed; allowed: best, last, or null "
            "(best where the data has validation rows)"
        )
    return TrainerSpec(**merged)


def _early_stop(problems: _Problems, cfg: Any) -> EarlyStopSpec:
    cfg = _mapping(problems, "trainer.early_stop", cfg)
    _unknown_keys(problems, "trainer.early_stop", cfg, set(defaults(EarlyStopSpec)))
    patience, min_delta = cfg.get("patience"), cfg.get("min_delta", 0.0)
    metric = cfg.get("metric")
    if patience is not None:
        # (0 would stop after any epoch that is not a new best: null is "never stop")
        patience = _int_at_least(problems, "trainer.early_stop.patience", patience, 1)
    if not is_number(min_delta) or not min_delta >= 0:  # `not >=` catches nan
        problems.add(f"trainer.early_stop.min_delta: {min_delta!r} is not a number >= 0")
        min_delta = 0.0
    if metric is not None and (not isinstance(metric, str) or not metric.strip()):
        problems.add(
            f"trainer.early_stop.metric: {metric!r} is not a validation metric's name "
            "(val_loss, val_acc, val_rmse...) or null for the run's primary metric"
        )
        metric = None
    if isinstance(metric, str) and not metric.startswith("val_"):
        metric = f"val_{metric}"  # `loss` means the validation loss: what early stopping reads
    return EarlyStopSpec(patience=patience, min_delta=float(min_delta), metric=metric)


def _device(problems: _Problems, value: Any) -> str:
    """The device, if this machine has it (its spelling is checked in _plain_sections)."""
    if not isinstance(value, str) or not DEVICE_PATTERN.match(value):
        return "cpu"
    from runner.training.device import device_problem

    problem = device_problem(value)
    if problem:
        problems.add(f"device: {problem}")
    return value


def _data(problems: _Problems, cfg: Any) -> tuple[Component | None, str | None]:
    """The dataset and its task (None where unknown: the problem is reported)."""
    from runner.components.datasets.base import TASKS

    found = len(problems.items)
    comp = _component(problems, "data", cfg, DATASETS, reserved={"num_outputs"})
    if comp is None:
        return None, None
    entry = DATASETS.get(comp.type, "data.type")
    if "check" in entry.meta:  # the loader's own rules, on the arguments found sound
        flagged = problems.items[found:]
        sound = {k: v for k, v in comp.args.items() if not _named(f"data.{k}", flagged)}
        for problem in entry.meta["check"](sound):
            problems.add(problem)
    task = entry.meta.get("task") or comp.args.get("task")
    if task is None:
        task = signature_params(entry.target)["task"].default
    if isinstance(task, str) and task not in TASKS:
        problems.add(unknown_name("data.task", "task", task, TASKS))
        task = None
    return comp, task


def _named(key: str, problems: list[str]) -> bool:
    """Whether one of `problems` is about `key` (or a key inside it)."""
    return any(p.startswith((f"{key}:", f"{key}.")) for p in problems)


def _metric(problems: _Problems, data: Component | None, task: str | None) -> str:
    """The primary metric: `data.metric` where the data takes one, else the task's."""
    from runner.training.metrics import DEFAULT_METRIC, METRICS

    if task not in METRICS:
        return ""
    chosen = data.args.get("metric") if data else None
    if chosen is None:
        return DEFAULT_METRIC[task]
    if chosen not in METRICS[task]:
        problems.add(unknown_name("data.metric", f"{task} metric", chosen, METRICS[task]))
        return DEFAULT_METRIC[task]
    return chosen


def _loss_fits_task(problems: _Problems, loss: Component, task: str | None) -> None:
    tasks = LOSSES.get(loss.type, loss.key).meta.get("tasks", ())
    if task is not None and tasks and task not in tasks:
        fitting = [e.name for e in LOSSES if task in e.meta.get("tasks", ())]
        problems.add(
            f"{loss.key}.name: loss {loss.type!r} does not fit a {task} task (the data's); "
            f"allowed for {task}: {', '.join(fitting)}"
        )


def _loss_fits_output(problems: _Problems, model: ModelSpec, task: str | None) -> None:
    """The last layer emits what the loss expects (checked once the loss fits the task)."""
    fits_task = task in LOSSES.get(model.loss.type, model.loss.key).meta.get("tasks", (task,))
    if task is None or not fits_task:
        return
    problem = loss_output_problem(model.loss, model.layers, task)
    if problem:
        problems.add(problem)


def _optimizer(problems: _Problems, cfg: Any) -> Component | None:
    """The optimizer, with `betas` checked beyond its type: torch's Adam indexes it without
    checking its length, so `[0.9]` would fail inside the constructor as an IndexError."""
    optim = _component(problems, "optim", cfg, OPTIMIZERS, provided={"params"})
    if optim is not None and "betas" in optim.args:
        problem = _betas_problem(optim)
        if problem:
            problems.add(problem)
    return optim


def _betas_problem(optim: Component) -> str | None:
    """`betas` must hold as many numbers in [0, 1) as the optimizer's default (Adam: 2)."""
    betas = optim.args["betas"]
    default = signature_params(OPTIMIZERS.get(optim.type, "optim").target)["betas"].default
    if not isinstance(betas, (list, tuple)) or not isinstance(default, (list, tuple)):
        return None  # a non-list is reported as a type problem; an odd default is not ours
    if len(betas) == len(default) and all(is_number(b) and 0 <= b < 1 for b in betas):
        return None
    return (
        f"optim.betas: {list(betas)!r} is not {len(default)} numbers in [0, 1); "
        f"allowed: e.g. {list(default)!r}"
    )


def _scheduler(problems: _Problems, cfg: Any) -> Component | None:
    """An optional LR scheduler; absent, null or name 'none' means a constant rate."""
    name = cfg.get("type", cfg.get("name")) if isinstance(cfg, dict) else cfg
    if name in (None, "none"):
        extra = sorted(k for k in cfg if k not in ("name", "type")) if isinstance(cfg, dict) else []
        if extra:  # a setting the constant rate would silently drop
            problems.add(
                f"scheduler.{extra[0]}: scheduler 'none' (a constant rate) takes no "
                f"arguments; choose a schedule first, e.g. scheduler=step scheduler."
                f"{extra[0]}=..., from: {', '.join(n for n in SCHEDULERS.names())}"
            )
        return None
    provided = {"optimizer"}
    if isinstance(name, str) and name in SCHEDULERS:
        provided |= set(SCHEDULERS.get(name, "scheduler").meta.get("from_trainer", {}))
    return _component(problems, "scheduler", cfg, SCHEDULERS, provided=provided)


def _tracking(problems: _Problems, cfg: Any, data_name: str) -> TrackingSpec:
    cfg = _mapping(problems, "tracking", cfg)
    _unknown_keys(problems, "tracking", cfg, set(defaults(TrackingSpec)))
    experiment = cfg.get("experiment") or data_name
    if not isinstance(experiment, str):
        problems.add(f"tracking.experiment: {experiment!r} is not a string")
    return TrackingSpec(
        uri=cfg.get("uri"),
        store_dir=str(cfg.get("store_dir") or TrackingSpec.store_dir),
        experiment=str(experiment),
    )


def _sweep(problems: _Problems, cfg: Any) -> SweepSpec:
    cfg = _mapping(problems, "sweep", cfg)
    _unknown_keys(problems, "sweep", cfg, set(defaults(SweepSpec)))
    skip = cfg.get("skip_finished", SweepSpec.skip_finished)
    if not isinstance(skip, bool):
        problems.add(f"sweep.skip_finished: {skip!r} is not true or false")
    stack_max = cfg.get("stack_max", SweepSpec.stack_max)
    if isinstance(stack_max, bool) or not isinstance(stack_max, int) or stack_max < 0:
        problems.add(
            f"sweep.stack_max: {stack_max!r} is not a whole number >= 0 (0: as many members "
            "as fit in memory and, on a CPU, in a core's share of its cache)"
        )
        stack_max = SweepSpec.stack_max
    register = cfg.get("register")
    if register is not None and (not isinstance(register, str) or not register.strip()):
        problems.add(f"sweep.register: {register!r} is not a registered model's name (or null)")
        register = None
    elif register is not None and (set(register) & {"/", ":"} or register.strip(".") == ""):
        problems.add(
            f"sweep.register: {register!r} is not a name MLflow's registry takes (no '/' or "
            "':', not only dots)"
        )
    return SweepSpec(skip_finished=bool(skip), stack_max=stack_max, register=register)


def plugin_list(value: Any) -> list[str]:
    """`plugins:` as a list of module names, or a ConfigError saying what it must be."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"plugins: {value!r} is not a list of module names, e.g. [my_layers]")
    return value


def _plain_sections(problems: _Problems, cfg: dict[str, Any]) -> tuple[int, TrainerSpec, SweepSpec]:
    """The checks that need neither torch nor the registries: top-level keys, seed, the
    device's spelling, trainer, sweep, resume."""
    _unknown_keys(problems, "config", cfg, TOP_LEVEL_KEYS)
    seed = _int_at_least(problems, "seed", cfg.get("seed", 0), 0)
    problem = range_problem("seed", "seed", seed)
    if problem:
        problems.add(problem)
    device = cfg.get("device", "auto")
    if not isinstance(device, str) or not DEVICE_PATTERN.match(device):
        problems.add(f"device: {device!r} is not a device; allowed: auto, cpu, cuda, cuda:N, mps")
    trainer = _trainer(problems, cfg.get("trainer"))
    sweep = _sweep(problems, cfg.get("sweep"))
    if sweep.register and not trainer.log_model:
        problems.add(
            f"sweep.register: {sweep.register!r} needs the run's model; trainer.log_model is "
            "false (set it true, or leave sweep.register null)"
        )
    resume = cfg.get("resume")
    if resume is not None and not isinstance(resume, str):
        problems.add(f"resume: {resume!r} is not a checkpoint path or an MLflow run id")
    elif resume is not None and not resume.strip():
        problems.add("resume: empty; give an MLflow run id or a checkpoint file, or leave it out")
    return seed, trainer, sweep


def precheck(cfg: dict[str, Any]) -> None:
    """Raise a ConfigError for the problems found without importing torch (see
    _plain_sections): a single run calls this first, so such a typo fails at once."""
    problems = _Problems()
    _plain_sections(problems, cfg)
    if problems.items:
        raise ConfigError(problems.items)


def validate(cfg: dict[str, Any]) -> RunSpec:
    """Check a resolved config and return its RunSpec, or raise one ConfigError listing all.

    Fills the registries first (built-ins and the config's `plugins:`), so every name the
    config uses can be looked up."""
    plugins = plugin_list(cfg.get("plugins"))
    load_components(plugins)
    problems = _Problems()
    seed, trainer, sweep = _plain_sections(problems, cfg)
    device = _device(problems, cfg.get("device", "auto"))
    before = len(problems.items)
    model = _model(problems, cfg.get("model"))
    model_sound = len(problems.items) == before  # its layers all known: the last is the last
    data, task = _data(problems, cfg.get("data"))
    optim = _optimizer(problems, cfg.get("optim"))
    scheduler = _scheduler(problems, cfg.get("scheduler"))
    if not isinstance(task, str):
        task = None  # already reported as data.task's type problem
    if model is not None and model.loss.type == "auto" and task in AUTO_LOSS:
        loss = Component(key="model.loss", type=AUTO_LOSS[task], args={}, name="auto")
        model = dataclasses.replace(model, loss=loss)
    if model is not None and model.loss.type != "auto":
        _loss_fits_task(problems, model.loss, task)
        if model_sound:
            _loss_fits_output(problems, model, task)
    metric = _metric(problems, data, task)
    tracking = _tracking(problems, cfg.get("tracking"), data.name if data else "runner")
    if problems.items:
        raise ConfigError(problems.items)
    assert model and data and optim and task
    return RunSpec(
        seed=seed,
        device=device,
        trainer=trainer,
        model=model,
        data=data,
        task=task,
        optim=optim,
        scheduler=scheduler,
        tracking=tracking,
        plugins=list(plugins),
        sweep=sweep,
        resume=cfg.get("resume"),
        metric=metric,
    )
