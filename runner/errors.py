"""The project's exception types and the one place that turns them into a clean exit.

`ConfigError` is bad user input; `RunError` a known failure during a run (a non-finite loss,
an unwritable artifact store). `exit_on_known_failure` prints either as one line and exits
1; everything else is a bug and keeps its traceback. `always_ended` ends an MLflow run with
the status an exception implies.
"""

from __future__ import annotations

import difflib
import logging
import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from runner import renamed_in


class ConfigError(Exception):
    """Bad user input: one or more problems, each naming a config key, its value and the fix."""

    def __init__(self, problems: list[str] | str) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))

    def __str__(self) -> str:
        if len(self.problems) == 1:
            return self.problems[0]
        return f"{len(self.problems)} problems:\n" + "\n".join(f"  - {p}" for p in self.problems)


class RunError(RuntimeError):
    """A known failure during a run: reported in one line, the run ended FAILED."""

    run_id: str | None = None  # set once the run that failed is known
    run_status: str | None = None  # the status the store confirmed for it, if it did
    then: str | None = None  # what the user can do next, said after the status


class ArtifactStoreError(RunError):
    """Artifacts could not be written (disk full, unwritable folder): a clear, final error."""


class StoreError(RunError):
    """The MLflow store cannot be opened, read or written (busy past the wait, damaged,
    unreachable): one line naming the store and why."""


class DependencyMoved(RunError):
    """A private name of a dependency that the runner relies on is gone (an upgrade moved
    it): one line naming the dependency, the name, and the version the runner was checked
    against. Each dependency's fence module (runner.tracking.mlflow_internals,
    hydra_plugins.runner_stacked.hydra_internals, hydra_plugins.runner_slurm.submitit_internals,
    runner.training.torch_internals) raises it, or falls back to a public path and says so once."""

    def __init__(self, dependency: str, name: str, checked: str) -> None:
        from importlib import metadata

        try:
            installed = metadata.version(dependency)
        except metadata.PackageNotFoundError:
            installed = "(not installed)"
        self.dependency, self.name, self.checked, self.installed = (
            dependency, name, checked, installed,
        )  # fmt: skip
        super().__init__(
            f"{dependency} {installed} has no {name}, which the runner relies on (checked "
            f"against {dependency} {checked}): install {dependency}=={checked}, or a runner "
            "that knows this version"
        )

    def fall_back(self, logger: logging.Logger, instead: str, level: int = logging.WARNING) -> None:
        """Say once per process (at `level`) that the runner goes on without the name, and
        how: `instead`."""
        key = (self.dependency, self.name)
        if key in _SAID_MOVED:
            return
        _SAID_MOVED.add(key)
        logger.log(
            level,
            "%s %s has no %s, which the runner relies on (checked against %s %s): %s",
            self.dependency, self.installed, self.name, self.dependency, self.checked, instead,
        )  # fmt: skip


_SAID_MOVED: set[tuple[str, str]] = set()  # the moved names said so far in this process


def did_you_mean(value: Any, allowed: Iterable[str]) -> str:
    """Return ' Did you mean 'x'?' for the closest allowed names, or '' when none is close."""
    close = difflib.get_close_matches(str(value), list(allowed), n=3, cutoff=0.6)
    if not close:
        return ""
    return " Did you mean " + " or ".join(repr(c) for c in close) + "?"


class Refused(ConfigError):
    """A request refused for the state of things rather than for its config (a run that is
    still training, or already complete); it fails before any work, as a config error does."""


def unknown_name(key: str, kind: str, value: Any, allowed: Iterable[str]) -> str:
    """Format the message for a name that is not in a registry or option list."""
    allowed = sorted(allowed)
    return (
        f"{key}: unknown {kind} {value!r}.{did_you_mean(value, allowed)} "
        f"Available: {', '.join(allowed)}."
    )


def failure_message(err: ConfigError | RunError) -> str:
    """The one line a known failure prints (the run's status only as the store confirmed it)."""
    if isinstance(err, Refused):
        return f"error: {err}"
    if isinstance(err, ConfigError):
        return f"config error: {err}"
    line = f"error: {err}"
    if err.run_id and err.run_status:
        line += f" (run {err.run_id} ended {err.run_status})"
    elif err.run_id:
        line += f" (run {err.run_id}: its end could not be recorded)"
    return f"{line}; {err.then}" if err.then else line


@contextmanager
def exit_on_known_failure() -> Iterator[None]:
    """Known failures print one message and exit 1 (HYDRA_FULL_ERROR=1: the traceback)."""
    try:
        yield
    except (ConfigError, RunError) as err:
        if os.environ.get("HYDRA_FULL_ERROR"):
            raise
        print(failure_message(err), file=sys.stderr)
        sys.exit(1)


def ending(err: BaseException) -> tuple[str, str | None, str | None]:
    """How an exception ends a run: KILLED for Ctrl-C/SIGTERM, else FAILED with its error."""
    import traceback

    if isinstance(err, KeyboardInterrupt):
        return "KILLED", None, None
    trace = "".join(traceback.format_exception(type(err), err, err.__traceback__))
    return "FAILED", f"{type(err).__name__}: {err}", trace


__getattr__ = renamed_in(__name__)  # names this module had before (runner.RENAMED)
