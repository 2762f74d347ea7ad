"""Configs for tests: one valid config and a way to change one key of it, a config around
a list of layers, the shipped YAML files merged, and a job trained without Hydra or MLflow."""

from __future__ import annotations

import copy
from typing import Any

from omegaconf import OmegaConf

from runner.config.project import CONF_DIR

GOOD: dict[str, Any] = {
    "seed": 1,
    "device": "cpu",
    "trainer": {"epochs": 2, "batch_size": 2, "plots": False, "log_model": False},
    "model": {
        "name": "m",
        "layers": [
            {"layer": "linear", "out_features": 4, "init": {"weight": "xavier_uniform"}},
            {"layer": "relu"},
            {"layer": "linear", "out_features": 1, "id": "out"},
            {"layer": "sigmoid"},
        ],
        "l1": {"strength": 0.01, "layers": ["out"], "include_bias": False},
        "loss": {"name": "bce"},
    },
    "data": {"name": "xor", "num_outputs": 1, "n_samples": 200, "n_train": 100},
    "optim": {"name": "adam", "lr": 0.01},
    "scheduler": {"name": "none"},
    "tracking": {"experiment": "xor"},
    "sweep": {"skip_finished": True},
    "plugins": [],
}


class _Delete:
    """with_change's value that removes the key; its repr is stable, since a test id that
    holds a memory address differs between pytest-xdist workers and fails collection."""

    def __repr__(self) -> str:
        return "DELETE"


DELETE = _Delete()


def with_change(path: str, value: Any) -> dict[str, Any]:
    """GOOD with one dotted key (list indices allowed) set, or removed for DELETE."""
    cfg = copy.deepcopy(GOOD)
    *parents, last = path.split(".")
    node: Any = cfg
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if value is DELETE:
        del node[int(last) if isinstance(node, list) else last]
    else:
        node[int(last) if isinstance(node, list) else last] = value
    return cfg


def layers_config(layers: list, **overrides: Any) -> dict[str, Any]:
    """A valid config around the given layers: a regression table with MSE, a loss that
    takes whatever the last layer emits (a classification loss checks it; the table is
    never read by the builders' tests)."""
    cfg = {
        "seed": 1,
        "device": "cpu",
        "trainer": {"epochs": 1, "batch_size": 2},
        "model": {"name": "m", "layers": layers, "loss": {"name": "mse"}},
        "data": {"name": "table", "type": "csv", "path": "t.csv", "target": "y"},
        "optim": {"name": "sgd", "lr": 0.1},
    }
    cfg.update(overrides)
    return cfg


def shipped(model: str, optim: str = "adam", data: str = "xor", **trainer: Any) -> dict:
    """The shipped YAML files merged as the default config would merge them."""
    main = OmegaConf.load(CONF_DIR / "config.yaml")
    cfg = OmegaConf.create(
        {
            "seed": 1,
            "device": "cpu",
            "trainer": {**OmegaConf.to_container(main.trainer), "progress": "none", **trainer},
            "model": OmegaConf.load(CONF_DIR / "model" / f"{model}.yaml"),
            "data": OmegaConf.load(CONF_DIR / "data" / f"{data}.yaml"),
            "optim": OmegaConf.merge(
                OmegaConf.load(CONF_DIR / "optim" / f"{optim}.yaml"), main.optim
            ),
        }
    )
    return OmegaConf.to_container(cfg, resolve=True)


def train(cfg: dict) -> list[dict[str, float]]:
    """Validate, build and fit exactly as a job does, without Hydra or MLflow."""
    from runner.config.spec import validate
    from runner.job import setup
    from runner.loop import fit

    spec = validate(cfg)
    job = setup(cfg, spec)
    return fit(job.parts, job.data, job.generator)
