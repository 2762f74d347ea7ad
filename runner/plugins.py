"""The one place that fills the registries: the built-ins, then the config's `plugins:`."""

from __future__ import annotations

import importlib

from runner.errors import ConfigError


def load_components(plugins: list[str]) -> None:
    """Register the built-in components, then import each module listed under `plugins:`."""
    import runner.builtins  # noqa: F401  (imported here: it pulls in torch)

    for i, name in enumerate(plugins):
        try:
            importlib.import_module(name)
        except Exception as err:  # ImportError, or the module failing as it loads
            raise ConfigError(
                f"plugins[{i}]: cannot import {name!r}: {type(err).__name__}: {err}"
            ) from None
