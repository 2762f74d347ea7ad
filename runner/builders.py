"""Validated spec → torch objects: the data, the model (with inferred widths and
initializers), L1 parameters, loss, optimizer, scheduler, and the TrainingParts holding them.

Names resolve only through the registries (filled by runner.components.plugins during
validation)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from runner import renamed_in
from runner.components.datasets import DataSplits
from runner.config.spec import Component, L1Spec, LayerSpec, ModelSpec, RunSpec, TrainerSpec
from runner.errors import ConfigError, RunError
from runner.loop import TrainingParts
from runner.registry import DATASETS, INITIALIZERS, LAYERS, LOSSES, OPTIMIZERS, SCHEDULERS
from runner.training.metrics import TaskMetrics
from runner.training.torch_internals import spare_dynamo

# What a constructor raises when its arguments are wrong: a bad value (ValueError,
# AssertionError), a value of the wrong kind or shape (TypeError, AttributeError, IndexError,
# KeyError), an impossible size or combination (RuntimeError, ZeroDivisionError, Overflow).
# Not caught: OSError (a loader reports a missing file itself), MemoryError, and
# BaseException (Ctrl-C, SystemExit), which are no fault of the config.
REJECTIONS = (
    TypeError,
    ValueError,
    LookupError,
    AttributeError,
    RuntimeError,
    AssertionError,
    ArithmeticError,
)


def _reason(err: BaseException) -> str:
    """The exception as one line, its type first (an IndexError may carry no message)."""
    message = " ".join(str(err).split())
    return f"{type(err).__name__}: {message}" if message else type(err).__name__


def _construct(
    key: str,
    name: str,
    target: Callable[..., Any],
    args: dict[str, Any],
    *leading: Any,
    shown: dict[str, Any] | None = None,
    applied_to: str = "",
) -> Any:
    """Call `target(*leading, **args)`; a rejection of the arguments becomes a ConfigError
    naming `key`, the component, the arguments (`shown`, else `args`) and the reason.

    `leading`: what the builder passes itself (parameters, optimizer, tensor), never shown.
    """
    try:
        return target(*leading, **args)
    except (ConfigError, RunError):
        raise  # already a known failure with its own message (e.g. a loader's missing file)
    except REJECTIONS as err:
        where = f" for {applied_to}" if applied_to else ""
        shown = args if shown is None else shown
        # `from err`: HYDRA_FULL_ERROR=1 still shows the constructor's own traceback.
        raise ConfigError(
            f"{key}: {name!r} rejected its arguments {shown}{where}: {_reason(err)}"
        ) from err


@dataclass
class LayerInfo:
    """What the model summary shows for one layer."""

    index: int
    type: str
    output_shape: tuple[int, ...]
    params: int


def load_initial_weights(
    model: nn.Module, spec: ModelSpec, weights: dict[str, torch.Tensor]
) -> None:
    """Start `model` from another run's weights (`model.init_from`): every parameter and
    buffer, each of the same shape, else a ConfigError naming the layer and both shapes."""
    own = model.state_dict()
    layer = {str(i): f"{s.key} ({s.type})" for i, s in enumerate(spec.layers)}

    def where(name: str) -> str:
        index, _, part = name.partition(".")
        return f"{layer.get(index, f'model.layers[{index}]')} {part}"

    problems = [
        f"{where(name)}: shape {list(own[name].shape)} here, {list(weights[name].shape)} there"
        for name in own
        if name in weights and own[name].shape != weights[name].shape
    ]
    problems += [
        f"{where(name)}: not in the weights started from" for name in own.keys() - weights.keys()
    ]
    problems += [f"{where(name)}: not in this model" for name in weights.keys() - own.keys()]
    if problems:
        raise ConfigError(
            f"model.init_from: {spec.init_from} does not fit model {spec.name!r}: "
            + "; ".join(sorted(problems))
        )
    model.load_state_dict(weights)


def build_data(
    spec: Component, declared_outputs: int | None = None, fitted: DataSplits | None = None
) -> DataSplits:
    """Call the registered dataset loader; the config's `num_outputs`, if set, must match.
    `fitted`: a trained run's data, whose statistics (a table's encoder) encode these rows
    instead of statistics fitted on them (data with nothing fitted loads as it is)."""
    entry = DATASETS.get(spec.type, "data.type")
    if fitted is not None and fitted.encoder is not None:
        encode_as = entry.meta.get("encode_as")
        if encode_as is None:
            raise ConfigError(
                f"data.type: {spec.type!r} cannot encode its rows with the trained run's "
                "statistics (its encoder); evaluate it on data of the run's own type"
            )
        return _construct(spec.key, spec.type, encode_as, spec.args, fitted)
    data = _construct(spec.key, spec.type, entry.target, spec.args)
    if declared_outputs is not None and declared_outputs != data.num_outputs:
        raise ConfigError(
            f"data.num_outputs: {declared_outputs!r} but the loaded data has "
            f"{data.num_outputs} outputs"
        )
    return data


def _infer_inputs(layer: LayerSpec, shape: tuple[int, ...], previous: str) -> dict:
    """Fill the layer's input-width arguments from the incoming shape; reject contradictions."""
    args = dict(layer.args)
    for arg, dim in LAYERS.get(layer.type, layer.key).meta.get("infer", {}).items():
        if not shape:
            raise ConfigError(f"{layer.key}: {layer.type!r} cannot take a scalar input")
        width = shape[dim]
        if arg in args and args[arg] != width:
            raise ConfigError(
                f"{layer.key}.{arg}: {args[arg]!r} contradicts the incoming width {width} "
                f"({previous} gives shape {list(shape)}); drop the key to infer it, or set {width}"
            )
        args[arg] = width
    return args


def _initialize(module: nn.Module, layer: LayerSpec, defaults: dict[str, Component]) -> None:
    """Apply the layer's own initializers, else the model-wide defaults, to its parameters."""
    params = dict(module.named_parameters(recurse=False))
    for name in layer.init:
        if name not in params:
            raise ConfigError(
                f"{layer.key}.init.{name}: layer {layer.type!r} has no parameter {name!r}; "
                f"allowed: {', '.join(params) or 'none (it has no parameters)'}"
            )
    # Model-wide defaults touch only layers with a matrix weight (linear, conv): xavier and
    # kaiming are undefined for the 1-D weights of batchnorm or prelu.
    weight = params.get("weight")
    takes_defaults = weight is not None and weight.dim() >= 2
    for name, param in params.items():
        own = layer.init.get(name)
        init = own or (defaults.get(name) if takes_defaults else None)
        if init is None:
            continue
        fn = INITIALIZERS.get(init.type, init.key).target
        # A model-wide default's key is shared by every layer: say which one it failed on.
        applied_to = "" if init is own else f"{layer.key}.{name}"
        with torch.no_grad():
            _construct(init.key, init.type, fn, init.args, param, applied_to=applied_to)


def build_model(
    spec: ModelSpec, input_shape: tuple[int, ...]
) -> tuple[nn.Sequential, list[LayerInfo]]:
    """Stack the layers, inferring input widths by passing a dummy batch through each."""
    modules: list[nn.Module] = []
    infos: list[LayerInfo] = []
    shape = tuple(input_shape)
    previous = "the data"
    probe = torch.zeros(2, *shape)
    for layer in spec.layers:
        args = _infer_inputs(layer, shape, previous)
        module = _construct(layer.key, layer.type, LAYERS.get(layer.type, layer.key).target, args)
        _initialize(module, layer, spec.init)
        module.eval()
        try:
            with torch.no_grad():
                probe = module(probe)
        except REJECTIONS as err:  # e.g. softmax's dim out of range is an IndexError
            raise ConfigError(
                f"{layer.key}: {layer.type!r} cannot take input of shape {list(shape)} "
                f"(from {previous}): {_reason(err)}"
            ) from err
        module.train()
        shape = tuple(probe.shape[1:])
        previous = f"{layer.key} ({layer.type})"
        n_params = sum(p.numel() for p in module.parameters() if p.requires_grad)
        infos.append(LayerInfo(layer.index, layer.type, shape, n_params))
        modules.append(module)
    return nn.Sequential(*modules), infos


def check_output(infos: list[LayerInfo], task: str, num_outputs: int) -> None:
    """The model's output must match the data: one unit for binary/regression, C for C classes."""
    out = infos[-1].output_shape
    if out != (num_outputs,):
        raise ConfigError(
            f"model.layers[{len(infos) - 1}]: the model outputs shape {list(out)} per sample, "
            f"but the {task} data needs [{num_outputs}]; end the model with a layer of "
            f"{num_outputs} outputs (e.g. out_features: ${{data.num_outputs}})"
        )


def l1_parameters(model: nn.Sequential, spec: ModelSpec) -> list[nn.Parameter]:
    """The parameters the L1 penalty covers: weights of the chosen layers, biases if asked."""
    l1: L1Spec = spec.l1
    if l1.strength == 0:
        return []
    by_id = {layer.id: layer.index for layer in spec.layers if layer.id is not None}
    if l1.layers is None:
        indices = list(range(len(model)))
    else:
        indices = [by_id[ref] if isinstance(ref, str) else ref for ref in l1.layers]
    params = []
    for index in indices:
        for name, param in model[index].named_parameters():
            if name.endswith("bias") and not l1.include_bias:
                continue
            params.append(param)
    return params


def build_loss(spec: Component) -> nn.Module:
    """Instantiate the loss named by the spec."""
    return _construct(spec.key, spec.type, LOSSES.get(spec.type, spec.key).target, spec.args)


def build_optimizer(
    spec: Component, params: list[nn.Parameter], device: torch.device | None = None
) -> torch.optim.Optimizer:
    """Instantiate the optimizer over `params` (already on `device`).

    Unless the config chooses `foreach` or `fused` itself, optimizers that have a fused
    kernel for the device use it: one kernel per step instead of one per tensor.
    """
    args = {k: tuple(v) if isinstance(v, list) else v for k, v in spec.args.items()}
    entry = OPTIMIZERS.get(spec.type, spec.key)
    # torch's fused kernels refuse `differentiable`: the automatic choice must not break it.
    chosen = "fused" in args or "foreach" in args or bool(args.get("differentiable"))
    shown = dict(spec.args)  # as the config wrote them (lists, not the tuples torch gets)
    if device is not None and not chosen and device.type in entry.meta.get("fused", ()):
        args["fused"] = shown["fused"] = True
    if isinstance(entry.target, type):
        spare_dynamo(entry.target)  # (the runner never compiles an optimizer)
    return _construct(spec.key, spec.type, entry.target, args, params, shown=shown)


def build_scheduler(
    spec: Component | None, optimizer: torch.optim.Optimizer, trainer: TrainerSpec
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """Instantiate the per-epoch LR scheduler, filling trainer-derived defaults (cosine T_max)."""
    if spec is None:
        return None
    entry = SCHEDULERS.get(spec.type, spec.key)
    args = dict(spec.args)
    for arg, trainer_key in entry.meta.get("from_trainer", {}).items():
        args.setdefault(arg, getattr(trainer, trainer_key))
    return _construct(spec.key, spec.type, entry.target, args, optimizer)


def output_kind(spec: ModelSpec) -> str:
    """What the model's output means for its loss: probability, logits, value, ..."""
    return LOSSES.get(spec.loss.type, spec.loss.key).meta.get("output", "value")


def build_training_parts(
    spec: RunSpec, model: nn.Module, data: DataSplits, device: torch.device
) -> TrainingParts:
    """Loss, optimizer, scheduler, metrics and trainer settings around a model on `device`."""
    model.to(device)  # before the optimizer, so fused kernels see the device
    optimizer = build_optimizer(spec.optim, list(model.parameters()), device)
    return TrainingParts(
        model=model,
        loss_fn=build_loss(spec.model.loss),
        optimizer=optimizer,
        metrics=TaskMetrics(
            data.task, output_kind(spec.model), data.target_mean, data.target_std, spec.metric
        ),
        device=device,
        epochs=spec.trainer.epochs,
        batch_size=spec.trainer.batch_size,
        scheduler=build_scheduler(spec.scheduler, optimizer, spec.trainer),
        l1_params=l1_parameters(model, spec.model),
        l1_strength=spec.model.l1.strength,
        grad_clip=spec.trainer.grad_clip,
        on_nan=spec.trainer.on_nan,
        data_path=spec.trainer.data_path,
        num_workers=spec.trainer.num_workers,
    )


__getattr__ = renamed_in(__name__)  # names this module had before (runner.RENAMED)
