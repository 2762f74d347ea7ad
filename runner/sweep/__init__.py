"""Sweeps: a multirun as one thing in MLflow.

`callback` (`SweepCallback`, named in conf/config.yaml) makes the sweep's parent run before
any job and its report after the last (`report`); `seed_group`, `stacked` and `stack_plan`
train a seed group as one stacked model (`hydra/launcher=stacked`), each member recorded as
its own run through the recipe (`runner.job`). May import everything below it: the recipe,
tracking, builders, the loop, config, components, training. `stacked` and `stack_plan`
know nothing of Hydra, OmegaConf or MLflow (checked).
"""

from __future__ import annotations

from typing import Any

__all__ = ["SweepCallback"]


def __getattr__(name: str) -> Any:
    """`runner.sweep.SweepCallback` (users' configs name it) without importing Hydra early."""
    if name == "SweepCallback":
        from runner.sweep.callback import SweepCallback

        return SweepCallback
    from runner import renamed  # what the old runner/sweep.py module held

    return renamed(__name__, name, depth=3)  # (this function is one frame more)


def __dir__() -> list[str]:
    """The package's names, `SweepCallback` included (it is imported on first use)."""
    return sorted([*globals(), "SweepCallback"])
