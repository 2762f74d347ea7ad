"""A resolved config as MLflow params: flat dotted keys (`model.layers.0.out_features`)."""

from __future__ import annotations

from typing import Any

MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value


def flatten(value: Any, prefix: str = "") -> dict[str, str]:
    """Nested dicts and lists as flat dotted keys (`model.layers.0.out_features`)."""
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list) and value and any(isinstance(v, (dict, list)) for v in value):
        items = ((str(i), v) for i, v in enumerate(value))
    else:
        return {prefix: str(value)[:MAX_PARAM_LENGTH]}
    out: dict[str, str] = {}
    for key, sub in items:
        out.update(flatten(sub, f"{prefix}.{key}" if prefix else str(key)))
    return out
