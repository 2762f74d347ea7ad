"""Bad input: each problem is caught before any work, naming key, value and what is allowed."""

from __future__ import annotations

import copy

import pytest

from runner.config.spec import validate
from runner.errors import ConfigError
from tests.configs import DELETE, GOOD, shipped, with_change

CATALOGUE = [
    (
        "model.layers.0.layer",
        "lineer",
        ["model.layers[0]", "unknown layer 'lineer'", "Did you mean 'linear'", "Available:"],
    ),
    (
        "model.layers.0.init.weight",
        "xavier_unifrom",
        ["model.layers[0].init.weight", "'xavier_unifrom'", "Did you mean 'xavier_uniform'"],
    ),
    (
        "model.loss.name",
        "bce_logits",
        ["model.loss.name", "unknown loss 'bce_logits'", "Did you mean 'bce_with_logits'"],
    ),
    ("optim.name", "adma", ["optim.name", "unknown optimizer 'adma'", "Did you mean 'adam'"]),
    ("data.name", "mnits", ["data.name", "unknown dataset 'mnits'", "Did you mean 'mnist'"]),
    (
        "scheduler",
        {"name": "cosin"},
        ["scheduler.name", "unknown scheduler 'cosin'", "Did you mean 'cosine'"],
    ),
    ("optim.lr", "fast", ["optim.lr", "'fast' is not a number"]),
    ("optim.lr", -0.1, ["optim.lr", "-0.1 is out of range", "> 0"]),
    (
        "optim",
        {"name": "sgd", "lr": 0.1, "momentun": 0.9},
        ["optim.momentun", "no argument 'momentun'", "Did you mean 'momentum'"],
    ),
    ("trainer.epochs", -1, ["trainer.epochs", "-1 is out of range", ">= 1"]),
    ("trainer.epochs", "ten", ["trainer.epochs", "'ten' is not an integer"]),
    ("trainer.batch_size", 0, ["trainer.batch_size", "0 is out of range", ">= 1"]),
    ("trainer.grad_clip", -1, ["trainer.grad_clip", "-1", "> 0"]),
    ("trainer.epoch", 5, ["trainer.epoch", "unknown key", "Did you mean 'epochs'"]),
    ("trainer.progress", "fancy", ["trainer.progress", "'fancy'", "auto, bar, lines, none"]),
    ("device", "gpu", ["device", "'gpu' is not a device", "auto, cpu, cuda"]),
    ("device", "cuda", ["device", "'cuda'", "CUDA is not available"]),
    ("seed", "one", ["seed", "'one' is not an integer"]),
    ("model.layers", [], ["model.layers", "non-empty list"]),
    (
        "model.layers.0.out_features",
        DELETE,
        ["model.layers[0].out_features", "missing", "requires it"],
    ),
    ("model.layers.0.out_features", 0, ["model.layers[0].out_features", "0 is out of range"]),
    ("model.layers.0.bias", "yes", ["model.layers[0].bias", "'yes' is not true or false"]),
    (
        "model.layers.0.out_feature",
        4,
        ["model.layers[0].out_feature", "no argument", "Did you mean 'out_features'"],
    ),
    ("model.layers.1", {"relu": {}}, ["model.layers[1]", "needs a 'layer' key"]),
    ("model.l1.strength", -1, ["model.l1.strength", "-1", ">= 0"]),
    ("model.l1.layers", ["hidden9"], ["model.l1.layers", "'hidden9' names no layer", "'out'"]),
    ("model.l1.stength", 0.1, ["model.l1.stength", "unknown key", "Did you mean 'strength'"]),
    (
        "model.loss",
        {"name": "cross_entropy"},
        ["model.loss.name", "'cross_entropy' does not fit a binary task", "bce"],
    ),
    ("model.loss", {"name": "mse"}, ["does not fit a binary task"]),
    (
        "model.layers.1",
        {"layer": "dropout", "p": 1.5},
        ["model.layers[1].p", "1.5 is out of range", "0 to 1"],
    ),
    ("model.lyers", [], ["model.lyers", "unknown key", "Did you mean 'layers'"]),
    ("data.n_sample", 10, ["data.n_sample", "no argument", "Did you mean 'n_samples'"]),
    ("optim.betas", 0.9, ["optim.betas", "0.9 is not a list"]),
    ("model.loss", None, ["model.loss", "None is not a mapping"]),
    ("optim", {"lr": 0.1}, ["optim.name", "missing", "adam"]),
    ("model.init_from", 5, ["model.init_from", "5 is not an MLflow run id", "models:/"]),
    ("trainer.early_stop", {"patience": 0}, ["trainer.early_stop.patience", "0", ">= 1"]),
    ("trainer.early_stop", {"min_delta": -0.1}, ["trainer.early_stop.min_delta", "-0.1"]),
    (
        "trainer.early_stop",
        {"patiense": 3},
        ["trainer.early_stop.patiense", "unknown key", "Did you mean 'patience'"],
    ),
    ("trainer.keep", "first", ["trainer.keep", "'first' is not allowed", "best, last, or null"]),
    ("sweep.register", "team/xor", ["sweep.register", "'team/xor'", "no '/' or ':'"]),
    ("sweep.register", "", ["sweep.register", "'' is not a registered model's name"]),
    (
        "sweep",
        {"register": "xor", "skip_finished": True, "stack_max": 0},
        ["sweep.register: 'xor' needs the run's model; trainer.log_model is false"],
    ),
]


@pytest.mark.parametrize(
    "path,value,fragments", CATALOGUE, ids=[f"{p}={v!r}"[:50] for p, v, _ in CATALOGUE]
)
def test_bad_config_is_refused_with_a_clear_message(path, value, fragments):
    with pytest.raises(ConfigError) as err:
        validate(with_change(path, value))
    message = str(err.value)
    for fragment in fragments:
        assert fragment in message, message


def test_the_good_config_passes():
    spec = validate(copy.deepcopy(GOOD))
    assert spec.task == "binary" and spec.optim.args == {"lr": 0.01}


def test_all_problems_are_reported_together():
    cfg = with_change("optim.lr", "fast")
    cfg["trainer"]["epochs"] = 0
    cfg["model"]["layers"][0]["layer"] = "lineer"
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert len(err.value.problems) == 3
    assert str(err.value).startswith("3 problems:")


def test_unknown_group_choices_suggest_the_closest(tmp_path):
    from runner.config.choices import group_choice_problems
    from runner.config.project import CONF_DIR

    conf = [CONF_DIR]
    problems = group_choice_problems(["model=xor_dep", "optim=sgd,adma", "seed=3"], conf)
    assert len(problems) == 2
    assert "model: unknown model config 'xor_dep'. Did you mean 'xor_deep'?" in problems[0]
    assert "optim: unknown optim config 'adma'. Did you mean 'adam'" in problems[1]
    assert group_choice_problems(["data=house_tiny", "experiment=mnist_mlp"], conf) == []
    assert group_choice_problems(["-cp", "/x", "model=mine"], conf) == []
    mine = tmp_path / "conf"
    (mine / "model").mkdir(parents=True)
    (mine / "model" / "mine.yaml").write_text("name: mine\n")
    assert group_choice_problems(["model=mine,xor_deep"], [*conf, mine]) == []
    problems = group_choice_problems(["model=mien"], [*conf, mine])
    assert "Did you mean 'mine'?" in problems[0]


def test_config_yaml_shows_the_schema_defaults():
    """conf/config.yaml lists the trainer and sweep keys for users; the values in force when
    a key is absent are the schema's. They must be the same."""
    from omegaconf import OmegaConf

    from runner.config.project import CONF_DIR
    from runner.config.spec import SweepSpec, TrainerSpec
    from runner.config.spec.schema import defaults

    main = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "config.yaml"))
    assert main["trainer"] == defaults(TrainerSpec)
    assert main["sweep"] == defaults(SweepSpec)


def with_loss(layers: list, loss: str, data: str = "xor") -> dict:
    """GOOD (binary XOR) with these layers and loss, or MNIST's multiclass data."""
    cfg = copy.deepcopy(GOOD)
    cfg["model"] = {"name": "m", "layers": layers, "loss": {"name": loss}}
    if data == "mnist":
        cfg["data"] = {"name": "mnist", "num_outputs": 10}
    return cfg


LINEAR = [{"layer": "linear", "out_features": 4}, {"layer": "relu"}]
LOSS_AFTER_LAYER = [
    (  # the XOR: 200 epochs at 53% accuracy, no word
        [*LINEAR, {"layer": "linear", "out_features": 1}, {"layer": "sigmoid"}],
        "bce_with_logits",
        "xor",
        "model.loss.name: 'bce_with_logits' expects raw scores (logits), but the model ends "
        "with sigmoid (model.layers[3]), which outputs probabilities; after a sigmoid use "
        "'bce', or remove the sigmoid layer",
    ),
    (
        [*LINEAR, {"layer": "linear", "out_features": 1}],
        "bce",
        "xor",
        "model.loss.name: 'bce' expects probabilities, but the model ends with linear "
        "(model.layers[2]); end the model with a sigmoid layer, or use 'bce_with_logits' on "
        "its raw outputs",
    ),
    (
        [*LINEAR, {"layer": "linear", "out_features": 1}, {"layer": "tanh"}],
        "bce",
        "xor",
        "which outputs values squashed into (-1, 1); end the model with a sigmoid layer",
    ),
    (  # softmax over one output is always 1
        [*LINEAR, {"layer": "linear", "out_features": 1}, {"layer": "softmax", "dim": -1}],
        "bce",
        "xor",
        "ends with softmax (model.layers[3]), which does not fit a binary task; end the "
        "model with a sigmoid layer",
    ),
    (
        [*LINEAR, {"layer": "linear", "out_features": 10}, {"layer": "softmax", "dim": -1}],
        "cross_entropy",
        "mnist",
        "'cross_entropy' expects raw scores (logits), but the model ends with softmax "
        "(model.layers[3]), which outputs probabilities; after a softmax use 'mse_onehot', "
        "or remove the softmax layer",
    ),
    (
        [*LINEAR, {"layer": "linear", "out_features": 10}, {"layer": "softmax", "dim": -1}],
        "nll",
        "mnist",
        "'nll' expects log-probabilities, but the model ends with softmax (model.layers[3]), "
        "which outputs probabilities; end the model with a log_softmax layer, or use "
        "'cross_entropy' on its raw outputs",
    ),
    (  # a dropout after the sigmoid passes its values on: the sigmoid is what counts
        [
            *LINEAR,
            {"layer": "linear", "out_features": 1},
            {"layer": "sigmoid"},
            {"layer": "dropout"},
        ],
        "bce_with_logits",
        "xor",
        "the model ends with sigmoid (model.layers[3])",
    ),
]


@pytest.mark.parametrize("layers,loss,data,message", LOSS_AFTER_LAYER)
def test_a_loss_that_does_not_fit_the_last_layer_names_both(layers, loss, data, message):
    with pytest.raises(ConfigError) as err:
        validate(with_loss(layers, loss, data))
    assert len(err.value.problems) == 1
    assert message in err.value.problems[0]


@pytest.mark.parametrize(
    "last,loss,data",
    [
        ([{"layer": "linear", "out_features": 1}, {"layer": "sigmoid"}], "bce", "xor"),
        ([{"layer": "linear", "out_features": 1}], "bce_with_logits", "xor"),
        ([{"layer": "linear", "out_features": 10}], "cross_entropy", "mnist"),
        ([{"layer": "linear", "out_features": 10}, {"layer": "log_softmax"}], "nll", "mnist"),
        # log_softmax changes nothing under cross_entropy's own log-softmax
        (
            [{"layer": "linear", "out_features": 10}, {"layer": "log_softmax"}],
            "cross_entropy",
            "mnist",
        ),
        ([{"layer": "linear", "out_features": 10}, {"layer": "sigmoid"}], "mse_onehot", "mnist"),
    ],
)
def test_a_loss_after_the_layer_it_expects_passes(last, loss, data):
    assert validate(with_loss([*LINEAR, *last], loss, data)).model.loss.type == loss


def test_loss_auto_after_a_squashing_template_output_says_what_it_picked():
    cfg = copy.deepcopy(GOOD)
    cfg["model"] = {"name": "mlp", "template": "mlp", "out_activation": "sigmoid"}
    cfg["model"]["loss"] = {"name": "auto"}
    with pytest.raises(ConfigError, match=r"'bce_with_logits' \(what loss auto picks\)"):
        validate(cfg)
    cfg["model"]["loss"] = {"name": "bce"}
    assert validate(cfg).model.layers[-1].type == "sigmoid"


def test_an_unknown_layer_is_reported_alone_not_as_a_loss_mismatch():
    with pytest.raises(ConfigError) as err:
        validate(with_change("model.layers.3.layer", "sigmoidd"))
    assert err.value.problems == [
        p for p in err.value.problems if p.startswith("model.layers[3]: unknown layer")
    ]


def test_an_unknown_task_is_named_with_the_tasks_not_as_a_loss_mismatch():
    cfg = copy.deepcopy(GOOD)
    cfg["data"] = {"name": "t", "type": "csv", "path": "t.csv", "target": "y", "task": "classify"}
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert err.value.problems == [
        "data.task: unknown task 'classify'. Available: binary, multiclass, regression."
    ]


def test_the_shipped_xor_net_with_a_logits_loss_fails_before_training():
    cfg = shipped("xor_deep")
    cfg["model"]["loss"] = {"name": "bce_with_logits"}
    with pytest.raises(ConfigError, match=r"ends with sigmoid \(model.layers\[5\]\).*use 'bce'"):
        validate(cfg)
