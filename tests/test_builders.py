"""Builders: every registered name builds; widths are inferred; init, L1, losses,
optimizers and schedulers take effect."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from runner import builders
from runner.config.spec import Component, TrainerSpec, validate
from runner.errors import ConfigError
from runner.registry import INITIALIZERS, LAYERS, LOSSES, OPTIMIZERS, SCHEDULERS
from tests.configs import layers_config as config

# Arguments and the per-sample input shape each built-in layer is tried with.
LAYER_CASES = {
    "linear": ({"out_features": 3}, (5,)),
    "noisy_linear": ({"out_features": 3, "noise_std": 0.1}, (5,)),
    "identity": ({}, (5,)),
    "relu": ({}, (5,)),
    "leaky_relu": ({"negative_slope": 0.1}, (5,)),
    "prelu": ({}, (5,)),
    "elu": ({}, (5,)),
    "gelu": ({}, (5,)),
    "sigmoid": ({}, (5,)),
    "tanh": ({}, (5,)),
    "softmax": ({"dim": -1}, (5,)),
    "log_softmax": ({"dim": -1}, (5,)),
    "dropout": ({"p": 0.5}, (5,)),
    "flatten": ({}, (2, 4, 4)),
    "batchnorm1d": ({}, (5,)),
    "batchnorm2d": ({}, (3, 8, 8)),
    "conv2d": ({"out_channels": 4, "kernel_size": 3}, (1, 8, 8)),
    "maxpool2d": ({"kernel_size": 2}, (3, 8, 8)),
    "avgpool2d": ({"kernel_size": 2}, (3, 8, 8)),
}
EXPECTED_SHAPES = {"linear": (3,), "noisy_linear": (3,), "flatten": (32,), "conv2d": (4, 6, 6)}
EXPECTED_SHAPES |= {"maxpool2d": (3, 4, 4), "avgpool2d": (3, 4, 4)}


def test_every_registered_layer_has_a_case():
    assert set(LAYERS.names()) == set(LAYER_CASES)


@pytest.mark.parametrize("name", sorted(LAYER_CASES))
def test_every_layer_builds_with_inferred_input(name):
    args, shape = LAYER_CASES[name]
    spec = validate(config([{"layer": name, **args}]))
    model, infos = builders.build_model(spec.model, shape)
    out = model(torch.randn(4, *shape))
    assert tuple(out.shape[1:]) == infos[0].output_shape
    assert infos[0].output_shape == EXPECTED_SHAPES.get(name, shape)
    assert infos[0].params == sum(p.numel() for p in model.parameters())


def test_a_contradicting_explicit_width_is_refused():
    layers = [{"layer": "linear", "out_features": 8}, {"layer": "linear", "in_features": 3}]
    layers[1]["out_features"] = 1
    spec = validate(config(layers))
    with pytest.raises(ConfigError, match=r"model.layers\[1\].in_features: 3 contradicts.* 8"):
        builders.build_model(spec.model, (2,))


def test_shape_errors_name_the_layer():
    spec = validate(config([{"layer": "conv2d", "out_channels": 2, "kernel_size": 9}]))
    with pytest.raises(ConfigError, match=r"model.layers\[0\]: 'conv2d' cannot take input"):
        builders.build_model(spec.model, (1, 4, 4))


@pytest.mark.parametrize("name", INITIALIZERS.names())
def test_every_initializer_applies_per_layer(name):
    args = {"val": 0.5} if name == "constant" else {}
    init = {"weight": {"name": name, **args}, "bias": "zeros"}
    spec = validate(config([{"layer": "linear", "out_features": 4, "init": init}]))
    torch.manual_seed(0)
    model, _ = builders.build_model(spec.model, (6,))
    assert torch.count_nonzero(model[0].bias) == 0
    if name == "zeros":
        assert torch.count_nonzero(model[0].weight) == 0
    if name == "constant":
        assert torch.all(model[0].weight == 0.5)


def test_initializer_arguments_and_model_wide_defaults():
    layers = [
        {
            "layer": "linear",
            "out_features": 4,
            "init": {"weight": {"name": "normal", "std": 0.0, "mean": 2.0}},
        },
        {"layer": "batchnorm1d"},
        {"layer": "linear", "out_features": 1},
    ]
    cfg = config(layers)
    cfg["model"]["init"] = {"weight": {"name": "constant", "val": 0.25}, "bias": "zeros"}
    model, _ = builders.build_model(validate(cfg).model, (3,))
    assert torch.all(model[0].weight == 2.0)  # the layer's own init wins
    assert torch.all(model[2].weight == 0.25) and torch.all(model[2].bias == 0)
    assert torch.all(model[1].weight == 1.0)  # 1-D batchnorm weights keep torch's init


def test_init_on_a_missing_parameter_is_refused():
    spec = validate(config([{"layer": "relu", "init": {"weight": "zeros"}}]))
    with pytest.raises(
        ConfigError, match=r"layers\[0\].init.weight: layer 'relu' has no parameter"
    ):
        builders.build_model(spec.model, (2,))


def test_l1_covers_the_named_layers_weights_only():
    layers = [
        {"layer": "linear", "out_features": 4},
        {"layer": "relu"},
        {"layer": "linear", "out_features": 1, "id": "out"},
    ]
    cfg = config(layers)
    cfg["model"]["l1"] = {"strength": 0.1, "layers": ["out"]}
    spec = validate(cfg)
    model, _ = builders.build_model(spec.model, (2,))
    assert builders.l1_parameters(model, spec.model) == [model[2].weight]
    cfg["model"]["l1"] = {"strength": 0.1, "layers": [0], "include_bias": True}
    spec = validate(cfg)
    assert builders.l1_parameters(model, spec.model) == [model[0].weight, model[0].bias]


@pytest.mark.parametrize("name", LOSSES.names())
def test_every_loss_builds_and_computes(name):
    loss = builders.build_loss(Component("model.loss", name, {}))
    task = LOSSES.get(name, "x").meta["tasks"][0]
    if task == "multiclass":
        value = loss(torch.randn(4, 3), torch.tensor([0, 1, 2, 1]))
    elif name == "bce":
        value = loss(torch.rand(4), torch.tensor([0.0, 1.0, 1.0, 0.0]))
    else:
        value = loss(torch.randn(4), torch.rand(4))
    assert torch.isfinite(value)


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_every_optimizer_steps(name):
    cfg = config([{"layer": "linear", "out_features": 1}], optim={"name": name, "lr": 0.1})
    spec = validate(cfg)
    model, _ = builders.build_model(spec.model, (2,))
    optimizer = builders.build_optimizer(spec.optim, list(model.parameters()))
    before = model[0].weight.detach().clone()
    model(torch.ones(3, 2)).sum().backward()
    optimizer.step()
    assert not torch.equal(before, model[0].weight)


def test_sgd_takes_momentum_nesterov_and_weight_decay():
    optim = {"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True, "weight_decay": 1e-4}
    spec = validate(config([{"layer": "linear", "out_features": 1}], optim=optim))
    model, _ = builders.build_model(spec.model, (2,))
    group = builders.build_optimizer(spec.optim, list(model.parameters())).param_groups[0]
    assert (group["momentum"], group["nesterov"], group["weight_decay"]) == (0.9, True, 1e-4)


@pytest.mark.parametrize(
    "scheduler,lr_after_4",
    [
        ({"name": "step", "step_size": 2, "gamma": 0.5}, 0.025),
        ({"name": "cosine"}, 0.0),
        ({"name": "exponential", "gamma": 0.5}, 0.00625),
        ({"name": "multistep", "milestones": [1, 3], "gamma": 0.1}, 0.001),
    ],
)
def test_schedulers_step_per_epoch(scheduler, lr_after_4):
    cfg = config([{"layer": "linear", "out_features": 1}], scheduler=scheduler)
    cfg["trainer"]["epochs"] = 4
    spec = validate(cfg)
    model, _ = builders.build_model(spec.model, (2,))
    optimizer = builders.build_optimizer(spec.optim, list(model.parameters()))
    sched = builders.build_scheduler(spec.scheduler, optimizer, spec.trainer)
    for _ in range(4):
        optimizer.step()
        sched.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(lr_after_4, abs=1e-9)
    assert set(SCHEDULERS.names()) >= {"step", "cosine"}


def test_no_scheduler_by_default():
    spec = validate(config([{"layer": "linear", "out_features": 1}], scheduler={"name": "none"}))
    assert spec.scheduler is None
    assert builders.build_scheduler(None, None, TrainerSpec(epochs=1, batch_size=1)) is None


def test_noisy_linear_adds_noise_only_in_training():
    layer = LAYERS.get("noisy_linear", "k").target(in_features=2, out_features=3, noise_std=0.5)
    x = torch.ones(4, 2)
    layer.eval()
    assert torch.equal(layer(x), layer(x))
    layer.train()
    assert not torch.equal(layer(x), layer(x))
    assert isinstance(layer, nn.Module)


def test_mlp_template_expands_knobs_and_picks_the_loss_for_the_task():
    cfg = config([], data={"name": "xor"})
    cfg["model"] = {"name": "mlp", "template": "mlp", "width": 5, "depth": 2, "out_features": 1}
    cfg["model"]["loss"] = {"name": "auto"}
    spec = validate(cfg)
    assert [layer.type for layer in spec.model.layers] == ["linear", "relu"] * 2 + ["linear"]
    assert spec.model.loss.type == "bce_with_logits"  # binary data, logits out
    model, infos = builders.build_model(spec.model, (2,))
    assert sum(i.params for i in infos) == (2 * 5 + 5) + (5 * 5 + 5) + (5 + 1)
    cfg["model"]["hidden"] = []
    assert [layer.type for layer in validate(cfg).model.layers] == ["linear"]
    cfg["model"] |= {"hidden": [3, 7], "dropout": 0.2, "activation": "tanh"}
    types = [layer.type for layer in validate(cfg).model.layers]
    assert types == ["linear", "tanh", "dropout", "linear", "tanh", "dropout", "linear"]
    cfg["model"]["widht"] = 3
    with pytest.raises(ConfigError, match="model.widht: model template 'mlp' has no argument"):
        validate(cfg)
