"""runner: declarative, config-driven PyTorch experiments logged to MLflow.

The folders are the layers, top to bottom; each imports only from the ones below it
(checked by import-linter, pyproject.toml):

    __main__                               python -m runner
    main, check, ui, new, report,          the Hydra entry and the other commands
      predict, evaluate
    sweep/        multiruns: the sweep's parent run and report, stacked seed groups
    job.py        the recipe: one run, set up, trained, recorded
    tracking/     MLflow: the tracker, the store, tags, names, plots, what a run records
    builders.py   config -> torch objects
    loop.py       the plain training loop                  } one layer: neither imports
    config/       Hydra's composition, the spec, the launch } the other
    components/   the built-in layers, losses, datasets, and users' plugins
    registry.py   the registries everything is named from
    training/     what the loop needs beyond torch: metrics, checkpoints, signals, devices
    errors.py     the errors every layer raises
"""

from __future__ import annotations

import functools
import importlib
import importlib.abc
import importlib.util
import sys
import warnings
from collections.abc import Callable
from types import ModuleType
from typing import Any

__version__ = "0.1.0"

# Modules that moved into the layer folders: the old paths, which users' plugins, scripts
# and notebooks may import, name the same module objects.
MOVED = {
    "runner.builtins": "runner.components.builtins",
    "runner.layers": "runner.components.layers",
    "runner.losses": "runner.components.losses",
    "runner.plugins": "runner.components.plugins",
    "runner.datasets": "runner.components.datasets",
    "runner.spec": "runner.config.spec",
    "runner.choices": "runner.config.choices",
    "runner.project": "runner.config.project",
    "runner.override_keys": "runner.config.override_keys",
    "runner.launch": "runner.config.launch",
    "runner.metrics": "runner.training.metrics",
    "runner.memory": "runner.training.memory",
    "runner.device": "runner.training.device",
    "runner.seeding": "runner.training.seeding",
    "runner.signals": "runner.training.signals",
    "runner.sweep_signals": "runner.training.sweep_signals",
    "runner.progress": "runner.training.progress",
    "runner.checkpoint": "runner.training.checkpoint",
    "runner.tags": "runner.tracking.tags",
    "runner.params": "runner.tracking.params",
    "runner.fingerprint": "runner.tracking.fingerprint",
    "runner.dataset_input": "runner.tracking.dataset_input",
    "runner.naming": "runner.tracking.naming",
    "runner.pictures": "runner.tracking.pictures",
    "runner.plots": "runner.tracking.plots",
    "runner.summary": "runner.tracking.summary",
    "runner.group": "runner.sweep.seed_group",
    "runner.stacked": "runner.sweep.stacked",
    "runner.stack_plan": "runner.sweep.stack_plan",
}


# Names that moved between modules or were renamed: the old name still answers (with a
# DeprecationWarning naming the new one) through its old module's `__getattr__`.
RENAMED = {
    "runner.loop.Trainer": "runner.loop.TrainingParts",
    "runner.builders.build_trainer": "runner.builders.build_training_parts",
    "runner.job.EpochHandler": "runner.job.EpochEnd",
    "runner.sweep.seed_group.group_key": "runner.sweep.seed_group.stack_key",
    "runner.training.checkpoint.load_resume": "runner.tracking.resume.load_resume",
    "runner.errors.always_ended": "runner.training.signals.always_ended",
    "runner.sweep.finished_run": "runner.tracking.sweep_record.finished_run",
    "runner.sweep.continue_interrupted": "runner.tracking.sweep_record.continue_interrupted",
    "runner.sweep.record_failed_setup": "runner.tracking.sweep_record.record_failed_setup",
    "runner.sweep.interrupted": "runner.training.sweep_signals.interrupted",
    "runner.sweep.job_interrupted": "runner.training.sweep_signals.job_interrupted",
    "runner.sweep.job_not_started": "runner.training.sweep_signals.job_not_started",
    "runner.sweep.swept_keys": "runner.sweep.callback.swept_keys",
    "runner.sweep.SweepTaken": "runner.sweep.callback.SweepTaken",
}


def renamed(module: str, name: str, depth: int = 2) -> Any:
    """`module.name` as it is now called (a module's `__getattr__` asks); else the usual
    AttributeError. The warning points `depth` frames up: at the code that used the name."""
    new = RENAMED.get(f"{module}.{name}")
    if new is None:
        raise AttributeError(f"module {module!r} has no attribute {name!r}")
    warnings.warn(f"{module}.{name} is now {new}", DeprecationWarning, stacklevel=depth)
    where, _, attribute = new.rpartition(".")
    return getattr(importlib.import_module(where), attribute)


def renamed_in(module: str) -> Callable[[str], Any]:
    """The `__getattr__` of a module whose names RENAMED lists."""
    return functools.partial(renamed, module)


def moved_to(name: str) -> str | None:
    """The module's path now, for an old path (or a module inside an old package)."""
    for old, new in MOVED.items():
        if name == old or name.startswith(old + "."):
            return new + name[len(old) :]
    return None


class _OldPath(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old path as the module at its new path (one object, not a copy)."""

    def find_spec(self, name: str, path: object, target: object = None) -> object:
        new = moved_to(name)
        return importlib.util.spec_from_loader(name, self) if new else None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        module = importlib.import_module(moved_to(spec.name) or spec.name)
        spec.loader_state = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # The import system wrote the old path's spec onto the module: give its own back.
        module.__spec__ = module.__spec__.loader_state


if not any(isinstance(finder, _OldPath) for finder in sys.meta_path):
    sys.meta_path.insert(0, _OldPath())
