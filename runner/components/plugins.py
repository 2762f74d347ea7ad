"""The one place that fills the registries: the built-ins, then the config's `plugins:`."""

from __future__ import annotations

import importlib
import os
import sys

from runner.errors import ConfigError


def load_components(plugins: list[str]) -> None:
    """Register the built-in components, then import each module listed under `plugins:`
    (found beside where one launches, as `python -m runner` finds it, or on the path)."""
    import runner.components.builtins  # noqa: F401  (imported here: it pulls in torch)

    # The `runner` command, unlike `python -m runner`, does not put the launch folder on
    # the import path, where a project's plugin module lives.
    if plugins and "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    for i, name in enumerate(plugins):
        try:
            importlib.import_module(name)
        except Exception as err:  # ImportError, or the module failing as it loads
            raise ConfigError(
                f"plugins[{i}]: cannot import {name!r}: {type(err).__name__}: {err}"
            ) from None
