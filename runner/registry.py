"""Named registries: the only way a config name becomes code.

Each registry maps a config name to a callable plus metadata that the validator and
builders read. This module is a leaf: built-in entries are registered by
`runner.components.builtins`, users register their own in a module listed under `plugins:`,
and `runner.components.plugins` is the one place that imports both (validation calls it
before it reads any name).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from runner.errors import ConfigError, unknown_name


@dataclass(frozen=True)
class Entry:
    """One registered component: its name, the callable that builds it, and metadata."""

    name: str
    target: Callable[..., Any]
    meta: dict[str, Any] = field(default_factory=dict)


class Registry:
    """A named table of components of one kind (layer, loss, ...)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry] = {}

    def register(self, name: str, target: Callable[..., Any] | None = None, **meta: Any) -> Any:
        """Add `target` under `name`; without `target`, return a decorator that does it."""

        def add(obj: Callable[..., Any]) -> Callable[..., Any]:
            if name in self._entries and self._entries[name].target is not obj:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = Entry(name, obj, dict(meta))
            return obj

        return add if target is None else add(target)

    def get(self, name: Any, key: str) -> Entry:
        """Return the entry for `name`, or raise a ConfigError naming `key` and the options."""
        if not isinstance(name, str) or name not in self._entries:
            raise ConfigError(unknown_name(key, self.kind, name, self._entries))
        return self._entries[name]

    def names(self) -> list[str]:
        """All registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry]:
        return iter(self._entries.values())


LAYERS = Registry("layer")  # torch.nn modules stacked by a model config
INITIALIZERS = Registry("initializer")  # torch.nn.init functions for weights and biases
LOSSES = Registry("loss")  # criteria; meta: tasks it fits, what output it expects
OPTIMIZERS = Registry("optimizer")  # torch.optim classes
SCHEDULERS = Registry("scheduler")  # torch.optim.lr_scheduler classes, stepped per epoch
DATASETS = Registry("dataset")  # functions returning in-memory splits; meta: task, check
TEMPLATES = Registry("model template")  # functions expanding a few knobs into a layer list
