"""The registries: lookups with did-you-mean, the decorator, and plugins filling them."""

from __future__ import annotations

import sys

import pytest
import torch

from runner import builders
from runner.components.plugins import load_components
from runner.config.spec import validate
from runner.errors import ConfigError
from runner.registry import LAYERS, Registry
from tests.configs import layers_config as config


def test_registry_is_a_leaf_filled_by_one_module():
    """runner.registry imports no component module; runner.plugins fills it from builtins."""
    import ast
    import inspect

    import runner.registry

    tree = ast.parse(inspect.getsource(runner.registry))
    imported = {
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    }
    assert {m for m in imported if m and m.startswith("runner")} == {"runner.errors"}
    load_components([])
    assert {"linear", "relu", "noisy_linear"} <= set(LAYERS.names())


def test_unknown_names_suggest_the_closest_and_list_all():
    with pytest.raises(ConfigError) as err:
        LAYERS.get("lineer", "model.layers[0].layer")
    message = str(err.value)
    assert "unknown layer 'lineer'. Did you mean 'linear'?" in message
    assert "Available: avgpool2d, batchnorm1d" in message


def test_registry_decorator_and_duplicates():
    registry = Registry("thing")

    @registry.register("double", kind="demo")
    def double(x: int = 1) -> int:
        return 2 * x

    assert registry.get("double", "k").target(3) == 6
    assert registry.get("double", "k").meta == {"kind": "demo"}
    with pytest.raises(ValueError, match="already registered"):
        registry.register("double", lambda: 0)


def test_plugins_register_layers_from_a_listed_module(tmp_path, monkeypatch):
    (tmp_path / "my_layers.py").write_text(
        "from torch import nn\n"
        "from runner.registry import LAYERS\n\n"
        "@LAYERS.register('square')\n"
        "class Square(nn.Module):\n"
        "    def forward(self, x):\n"
        "        return x * x\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "square" not in LAYERS
    load_components(["my_layers"])
    try:
        spec = validate(config([{"layer": "square"}]))
        model, _ = builders.build_model(spec.model, (2,))
        assert torch.equal(model(torch.tensor([[3.0, 2.0]])), torch.tensor([[9.0, 4.0]]))
    finally:
        LAYERS._entries.pop("square", None)
        sys.modules.pop("my_layers", None)
    with pytest.raises(ConfigError, match="plugins\\[0\\]: cannot import 'nope_nothing'"):
        load_components(["nope_nothing"])
