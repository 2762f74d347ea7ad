"""A component that rejects its arguments at construction (dataset, layer, initializer, loss,
optimizer, scheduler) is one ConfigError naming the key and the value, never a traceback,
and it comes before any MLflow run starts."""

from __future__ import annotations

import pytest
import torch
from mlflow.tracking import MlflowClient

from runner import builders
from runner.config.spec import Component, validate
from runner.errors import ConfigError
from runner.job import setup
from tests.configs import shipped, with_change
from tests.conftest import run_cli, store_uri


def build(cfg: dict) -> None:
    """Validate and set up as a job does before its run starts."""
    setup(cfg, validate(cfg))


def params() -> list[torch.nn.Parameter]:
    return list(torch.nn.Linear(2, 1).parameters())


# (key, value, fragments the one-line message holds): validation catches some, the
# builders' constructor wrap the rest; either way the key and the bad value are named.
CASES = {
    "adam betas too short": ("optim.betas", [0.9], ["optim.betas: [0.9]", "[0, 1)"]),
    "adam beta above 1": ("optim.betas", [0.9, 1.5], ["optim.betas: [0.9, 1.5]", "[0, 1)"]),
    "negative lr": ("optim.lr", -1, ["optim.lr: -1 is out of range"]),
    "nesterov without momentum": (
        "optim",
        {"name": "sgd", "lr": 0.1, "nesterov": True},
        ["optim: 'sgd' rejected its arguments", "'nesterov': True", "ValueError: Nesterov"],
    ),
    "loss weight not a tensor": (
        "model.loss",
        {"name": "bce", "weight": [1.0]},
        ["model.loss: 'bce' rejected its arguments {'weight': [1.0]}: TypeError:"],
    ),
    "scheduler step_size 0": ("scheduler", {"name": "step", "step_size": 0}, ["step_size: 0"]),
    "multistep milestones not a list": (
        "scheduler",
        {"name": "multistep", "milestones": 3},
        ["scheduler: 'multistep' rejected its arguments {'milestones': 3}: TypeError:"],
    ),
    "kaiming nonlinearity": (
        "model.layers.0.init",
        {"weight": {"name": "kaiming_uniform", "nonlinearity": "bogus"}},
        ["model.layers[0].init.weight: 'kaiming_uniform'", "'nonlinearity': 'bogus'"],
    ),
    "model-wide init names the layer": (  # layer 2 has no init of its own
        "model.init",
        {"weight": {"name": "kaiming_normal", "mode": "bogus"}},
        ["model.init.weight: 'kaiming_normal'", "'mode': 'bogus'", "for model.layers[2].weight"],
    ),
    "xor low": (
        "data.low",
        float("-inf"),
        ["data: 'xor' rejected its arguments", "'low': -inf", "OverflowError"],
    ),
    "layer dtype": (
        "model.layers.0",
        {"layer": "linear", "out_features": 4, "dtype": "float"},
        ["model.layers[0]: 'linear' rejected its arguments", "'dtype': 'float'", "TypeError"],
    ),
    "loss reduction": (  # torch takes any string and fails only at the first batch
        "model.loss",
        {"name": "bce", "reduction": "bogus"},
        ["model.loss.reduction: 'bogus' is not allowed; allowed: mean, sum"],
    ),
    "softmax dim": (  # torch raises IndexError on the first batch through it
        "model.layers.1",
        {"layer": "softmax", "dim": 5},
        ["model.layers[1]: 'softmax' cannot take input of shape [4]", "IndexError", "got 5"],
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_rejected_argument_is_one_config_error(case):
    key, value, fragments = CASES[case]
    with pytest.raises(ConfigError) as caught:
        build(with_change(key, value))
    message = str(caught.value)
    assert "\n" not in message
    for fragment in fragments:
        assert fragment in message


def test_a_table_loader_that_rejects_a_value_names_data_and_the_value():
    cfg = shipped("house_linear", "adam", data="house_tiny")
    cfg["data"]["columns"] = ["RoofType"]  # a list where a mapping belongs
    expected = r"^data.columns: \['RoofType'\] is not a mapping; give each column its"
    with pytest.raises(ConfigError, match=expected):
        build(cfg)


# The builders alone (no validation in front): the wrap still names key, value and reason.
def test_the_builder_reports_an_empty_torch_message_by_its_type():
    spec = Component("optim", "adam", {"lr": 0.01, "betas": [0.9]})
    with pytest.raises(ConfigError) as caught:
        builders.build_optimizer(spec, params())
    assert str(caught.value) == (
        "optim: 'adam' rejected its arguments {'lr': 0.01, 'betas': [0.9]}: "
        "IndexError: tuple index out of range"
    )
    assert isinstance(caught.value.__cause__, IndexError)  # kept for HYDRA_FULL_ERROR=1


def test_the_builder_refuses_a_negative_lr_and_shows_the_automatic_fused():
    spec = Component("optim", "sgd", {"lr": -1})
    with pytest.raises(ConfigError) as caught:
        builders.build_optimizer(spec, params(), torch.device("cpu"))
    assert str(caught.value) == (
        "optim: 'sgd' rejected its arguments {'lr': -1, 'fused': True}: "
        "ValueError: Invalid learning rate: -1"
    )


def test_differentiable_turns_the_automatic_fused_kernel_off():
    spec = Component("optim", "adam", {"lr": 0.01, "differentiable": True})
    optimizer = builders.build_optimizer(spec, params(), torch.device("cpu"))
    assert not optimizer.param_groups[0]["fused"]


def test_a_loaders_own_config_error_passes_through_untouched():
    with pytest.raises(ConfigError) as caught:
        builders.build_data(Component("data", "xor", {"n_samples": 10, "n_train": 20}))
    assert str(caught.value).startswith("data.n_train: 20 is out of range")
    with pytest.raises(ConfigError, match=r"^data.path: '/nonexistent.csv' is not a file"):
        builders.build_data(Component("data", "csv", {"path": "/nonexistent.csv", "target": "y"}))


@pytest.mark.parametrize("error", [KeyboardInterrupt(), OSError("disk"), MemoryError()])
def test_interrupts_and_environment_failures_are_not_config_errors(error):
    def target(**_):
        raise error

    with pytest.raises(type(error)):
        builders._construct("data", "x", target, {})


@pytest.mark.parametrize(
    "override,fragments",
    [
        ("optim.betas=[0.9]", ["optim.betas: [0.9]"]),  # caught by validation
        ("+model.loss.weight=[1.0]", ["model.loss: 'bce' rejected", "[1.0]"]),  # in setup
    ],
)
def test_cli_exits_1_with_one_line_and_no_run(tmp_path, override, fragments):
    proc = run_cli(override, "trainer.progress=lines", cwd=tmp_path)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("config error:")]
    for fragment in fragments:
        assert fragment in line
    db = tmp_path / "outputs" / "mlflow.db"
    if db.exists():  # no run was created, so none can be left RUNNING
        client = MlflowClient(store_uri(tmp_path))
        experiments = client.search_experiments()
        assert not [r for e in experiments for r in client.search_runs([e.experiment_id])]
