"""One valid config for validation tests, and a way to change one key of it."""

from __future__ import annotations

import copy
from typing import Any

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
DELETE = object()  # with_change's value that removes the key


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
