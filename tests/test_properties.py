"""Property tests: random valid layer stacks validate, build and train a step; random
corruptions of a good config are refused with a ConfigError, never with another exception.

Inputs that once slipped through `validate` (raising TypeError, or accepted and failing in
torch later) are kept in FOUND_BUGS as regression cases: each must now be a ConfigError.
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from runner import builders
from runner.config.spec import L1Spec, SweepSpec, TrackingSpec, TrainerSpec, validate
from runner.config.spec.args import signature_params
from runner.config.spec.schema import LAYER_KEYS, MODEL_KEYS, TOP_LEVEL_KEYS, defaults
from runner.errors import ConfigError
from runner.registry import DATASETS, INITIALIZERS, LAYERS, LOSSES, OPTIMIZERS, SCHEDULERS
from runner.training.metrics import align
from tests.configs import DELETE, GOOD, with_change

MLP: dict[str, Any] = {
    "name": "mlp",
    "template": "mlp",
    "width": 4,
    "depth": 1,
    "hidden": None,
    "activation": "relu",
    "dropout": 0.0,
    "out_features": 1,
    "loss": {"name": "auto"},
}
DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")  # every name that may exist
FAST = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_the_base_configs_are_valid():
    validate(copy.deepcopy(GOOD))
    validate(with_change("model", copy.deepcopy(MLP)))


# --- (a) random valid layer stacks build and train one step -------------------------------

ACTIVATIONS = ["relu", "leaky_relu", "tanh", "gelu", "sigmoid", "elu", "prelu"]
WEIGHT_INITS = ["xavier_uniform", "xavier_normal", "kaiming_uniform", "orthogonal", "zeros"]


@st.composite
def block(draw: st.DrawFn) -> list[dict[str, Any]]:
    """linear + activation, optionally followed by dropout or batchnorm."""
    linear: dict[str, Any] = {"layer": "linear", "out_features": draw(st.integers(1, 16))}
    init = draw(st.none() | st.sampled_from(WEIGHT_INITS))
    if init:
        linear["init"] = {"weight": init}
    layers = [linear, {"layer": draw(st.sampled_from(ACTIVATIONS))}]
    extra = draw(st.sampled_from(["none", "dropout", "batchnorm1d"]))
    if extra == "dropout":
        layers.append({"layer": "dropout", "p": draw(st.floats(0, 0.9))})
    elif extra == "batchnorm1d":
        layers.append({"layer": "batchnorm1d"})
    return layers


@FAST
@given(
    blocks=st.lists(block(), min_size=1, max_size=4),
    optim=st.sampled_from(["sgd", "adam", "adamw", "rmsprop"]),
    lr=st.floats(1e-3, 0.5),
    seed=st.integers(0, 2**16),
)
def test_a_random_valid_stack_builds_and_trains_one_step(blocks, optim, lr, seed):
    cfg = copy.deepcopy(GOOD)
    layers = [layer for b in blocks for layer in b]
    layers += [{"layer": "linear", "out_features": 1}, {"layer": "sigmoid"}]
    cfg["model"] = {"name": "random", "layers": layers, "loss": {"name": "bce"}}
    cfg["optim"] = {"name": optim, "lr": lr}
    spec = validate(cfg)
    with torch.random.fork_rng():  # the seed stays local to this example
        torch.manual_seed(seed)
        model, infos = builders.build_model(spec.model, (2,))
        builders.check_output(infos, spec.task, 1)
        loss_fn = builders.build_loss(spec.model.loss)
        optimizer = builders.build_optimizer(spec.optim, list(model.parameters()))
        before = [p.detach().clone() for p in model.parameters()]
        x, y = torch.randn(4, 2), torch.randint(0, 2, (4,)).float()
        model.train()
        loss = loss_fn(align(model(x), y), y)
        loss.backward()
        optimizer.step()
    assert torch.isfinite(loss)
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters(), strict=True))


# --- (b) random corruptions are refused with a ConfigError -----------------------------


@dataclass(frozen=True)
class Bug:
    """An input `validate` once mishandled: what happened, and the config change that did it."""

    what: str
    path: str
    example: Any


FOUND_BUGS = {
    # validate() raises TypeError instead of ConfigError:
    "layer-id-unhashable": Bug(
        "TypeError: unhashable type, at 'if layer_id in ids' in _model",
        "model.layers.2.id",
        ["a"],
    ),
    "l1-layers-unhashable": Bug(
        "TypeError: unhashable type, at 'ref in ids' in _l1",
        "model.l1.layers",
        [[1]],
    ),
    "plugins-not-a-list": Bug(
        "TypeError: not iterable, at list(plugins) in validate", "plugins", 3
    ),
    "mlp-hidden-not-a-list": Bug(
        "TypeError in the mlp template: list(hidden)",
        "model",
        {**MLP, "hidden": 5},
    ),
    "mlp-depth-none": Bug(
        "TypeError in the mlp template: [width] * None",
        "model",
        {**MLP, "depth": None},
    ),
    "mlp-dropout-none": Bug(
        "TypeError in the mlp template: None > 0",
        "model",
        {**MLP, "dropout": None},
    ),
    # validate() accepts the value; the run fails later (a traceback, or a late ConfigError):
    "lr-none": Bug("accepted; TypeError in torch.optim.Adam at setup", "optim.lr", None),
    "lr-nan": Bug("accepted; ValueError in torch.optim.Adam at setup", "optim.lr", math.nan),
    "weight-decay-none": Bug(
        "accepted; TypeError in torch.optim.Adam at setup", "optim.weight_decay", None
    ),
    "out-features-none": Bug(
        "accepted; ConfigError only when building", "model.layers.0.out_features", None
    ),
    "dropout-p-nan": Bug(
        "accepted (nan passes the range check); ConfigError only when building",
        "model.layers.1",
        {"layer": "dropout", "p": math.nan},
    ),
    "grad-clip-nan": Bug("accepted; NaN loss while training", "trainer.grad_clip", math.nan),
    "l1-strength-nan": Bug("accepted; NaN loss while training", "model.l1.strength", math.nan),
    "mlp-width-none": Bug(
        "accepted; ConfigError only when building",
        "model",
        {**MLP, "width": None},
    ),
    "n-samples-none": Bug("accepted; TypeError in the xor loader", "data.n_samples", None),
    "trainer-not-a-mapping": Bug("accepted and ignored: defaults train", "trainer", 5),
}


text = st.text(max_size=12)
junk = st.one_of(  # never a number, never None
    text,
    st.booleans(),
    st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)
floats = st.floats()  # nan and infinities included


def names(registry: Any, special: tuple[str, ...] = ()) -> st.SearchStrategy:
    """Values that are not a name in `registry` (nor one with a special meaning there)."""
    valid = set(registry.names()) | set(special)
    return (junk | st.integers() | st.none()).filter(
        lambda v: not isinstance(v, str) or v not in valid
    )


def _allowed(target: Any, extra: set[str]) -> set[str]:
    return set(signature_params(target)) | extra


UNKNOWN_NAMES = {
    "model.layers.0.layer": names(LAYERS),
    "model.layers.1.layer": names(LAYERS),
    "model.layers.0.init.weight": names(INITIALIZERS),
    "model.loss.name": names(LOSSES, ("auto",)),
    "optim.name": names(OPTIMIZERS),
    "data.name": names(DATASETS),
    "scheduler.name": names(SCHEDULERS, ("none",)).filter(lambda v: v is not None),
}
BAD_VALUES = {
    "seed": junk | st.none() | floats | st.integers(max_value=-1),
    "trainer.epochs": junk | st.none() | floats | st.integers(max_value=0),
    "trainer.batch_size": junk | st.none() | floats | st.integers(max_value=0),
    "trainer.num_workers": junk | st.none() | floats | st.integers(max_value=-1),
    "trainer.grad_clip": st.one_of(
        junk, st.floats(max_value=0), st.integers(max_value=0), st.just(math.nan)
    ),
    "trainer.progress": junk.filter(lambda v: v not in ("auto", "bar", "lines", "none")),
    "trainer.plots": text | st.integers() | floats | st.none(),
    "model.l1.include_bias": text | st.integers() | floats | st.none(),
    "sweep.skip_finished": text | st.integers() | floats | st.none(),
    "sweep.stack_max": text | floats | st.integers(max_value=-1) | st.none() | st.booleans(),
    "optim.lr": st.one_of(
        junk, st.floats(max_value=0), st.integers(max_value=0), st.sampled_from([None, math.nan])
    ),
    "optim.weight_decay": junk | st.floats(max_value=-1e-9) | st.integers(max_value=-1) | st.none(),
    "model.layers.0.out_features": junk | floats | st.integers(max_value=0) | st.none(),
    "model.l1.strength": junk | st.none() | st.floats(max_value=-1e-9) | st.just(math.nan),
    "data.n_samples": junk | floats | st.integers(max_value=1) | st.none(),
    "device": (text | st.integers() | st.none()).filter(
        lambda v: not (isinstance(v, str) and DEVICE.match(v))  # a GPU machine has cuda
    ),
    "model": junk.filter(lambda v: not isinstance(v, dict)) | st.none(),
    "optim": (st.integers() | st.booleans() | st.lists(st.integers(), max_size=2)) | st.none(),
    "model.loss": st.integers() | st.booleans() | st.none() | st.lists(st.text(), max_size=2),
    "model.l1": text | st.integers() | st.lists(st.integers(), max_size=2),
    "model.layers": junk.filter(lambda v: v != []) | st.none() | st.just([]),
    "model.layers.1": junk | st.none() | st.just({"relu": {}}),
    "model.l1.layers": st.lists(st.integers() | text, min_size=1, max_size=3).filter(
        lambda refs: any(
            isinstance(r, str) and r != "out" or isinstance(r, int) and not -4 <= r < 4
            for r in refs
        )
    ),
    "model.layers.0.id": st.just("out"),  # a duplicate id
    # any other id leaves model.l1.layers' "out" naming no layer
    "model.layers.2.id": st.one_of(
        text.filter(lambda v: v != "out"),
        st.integers(),
        st.lists(st.integers(), max_size=2),
        st.dictionaries(text, st.integers(), max_size=1),
    ),
}
UNKNOWN_KEY_PLACES = {
    "": TOP_LEVEL_KEYS,
    "trainer.": set(defaults(TrainerSpec)),
    "model.": MODEL_KEYS,
    "model.l1.": set(defaults(L1Spec)),
    "model.layers.0.": _allowed(torch.nn.Linear, set(LAYER_KEYS)),
    "optim.": _allowed(OPTIMIZERS.get("adam", "optim").target, {"name", "type"}),
    "data.": _allowed(DATASETS.get("xor", "data").target, {"name", "type", "num_outputs"}),
    "tracking.": set(defaults(TrackingSpec)),
    "sweep.": set(defaults(SweepSpec)),
}
REQUIRED = [
    "model", "model.layers", "model.loss", "data", "data.name", "optim", "optim.name",
    "model.layers.0.layer", "model.layers.0.out_features", "model.layers.2.id",
]  # fmt: skip
MLP_BAD_KNOBS = {
    "width": junk | floats | st.integers(max_value=0) | st.none(),
    "depth": junk | floats | st.integers(max_value=-1) | st.none(),
    "dropout": st.one_of(
        text,
        st.floats(min_value=1, exclude_min=True),
        st.floats(max_value=0, exclude_max=True),
        st.none(),
    ),
    "hidden": st.one_of(
        st.integers(), st.booleans(), st.lists(st.integers(max_value=0) | text, min_size=1)
    ),
    "activation": names(LAYERS),
    "out_features": junk | floats | st.integers(max_value=0),
}


@st.composite
def unknown_key(draw: st.DrawFn) -> tuple[str, Any]:
    place = draw(st.sampled_from(sorted(UNKNOWN_KEY_PLACES)))
    key = draw(
        st.text(min_size=1, max_size=12).filter(lambda k: k not in UNKNOWN_KEY_PLACES[place])
    )
    assume("." not in key)  # a dot would make the path name a nested key
    return place + key, draw(st.integers() | text)


@st.composite
def mlp_knob(draw: st.DrawFn) -> tuple[str, Any]:
    knob = draw(st.sampled_from(sorted(MLP_BAD_KNOBS)))
    return "model", {**copy.deepcopy(MLP), knob: draw(MLP_BAD_KNOBS[knob])}


def _path_and(table: dict[str, st.SearchStrategy]) -> st.SearchStrategy:
    return st.sampled_from(sorted(table)).flatmap(lambda p: table[p].map(lambda v: (p, v)))


CORRUPTIONS = {
    "unknown name": _path_and(UNKNOWN_NAMES),
    "bad value": _path_and(BAD_VALUES),
    "unknown key": unknown_key(),
    "out-of-range dropout": (
        st.floats(max_value=0, exclude_max=True)
        | st.floats(min_value=1, exclude_min=True)
        | st.just(math.nan)
    ).map(lambda p: ("model.layers.1", {"layer": "dropout", "p": p})),
    "missing key": st.sampled_from(REQUIRED).map(lambda p: (p, DELETE)),
    "template knob": mlp_knob(),
}


@pytest.mark.parametrize("kind", sorted(CORRUPTIONS))
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(data=st.data())
def test_a_corrupted_config_is_refused_with_a_config_error(kind, data):
    path, value = data.draw(CORRUPTIONS[kind], label="corruption")
    with pytest.raises(ConfigError):
        validate(with_change(path, value))


@pytest.mark.parametrize("name", sorted(FOUND_BUGS))
def test_found_bug_is_now_a_config_error(name):
    """Each input the properties once caught slipping through is refused clearly now."""
    bug = FOUND_BUGS[name]
    with pytest.raises(ConfigError):
        validate(with_change(bug.path, copy.deepcopy(bug.example)))
