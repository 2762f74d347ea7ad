"""The entry point: `python -m runner [overrides]`, a single run or (`-m`) a sweep.

Kept light on purpose: torch and the job's modules are imported inside the job, so a
config-group typo fails at once and a sweep's launching process starts fast.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from runner.choices import group_choice_problems
from runner.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parents[1]
# `${runner.project:}` in a config: the project's folder, for files that ship with it.
OmegaConf.register_new_resolver("runner.project", lambda: str(PROJECT_ROOT), replace=True)


@hydra.main(version_base="1.3", config_path=str(PROJECT_ROOT / "conf"), config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Hydra's task function: one job; returns its final validation metric (for sweepers)."""
    from hydra.types import RunMode

    from runner.sidecar import spawn_companion, use_companion

    hydra_cfg = HydraConfig.get()
    single = hydra_cfg.mode == RunMode.RUN
    if single:
        early_config_check(cfg)
    # A single run logs through a companion process, started before torch is imported
    # below so both imports overlap; a sweep's jobs share one in-process MLflow instead of
    # paying a companion's imports per job.
    companion = spawn_companion() if single and use_companion() else None
    try:
        from runner.job import run_job

        return run_job(cfg, hydra_cfg, companion)
    finally:
        if companion is not None:  # unused (a config error, a skipped job) or done: let it go
            companion.stdin.close()
            companion.wait()


def early_config_check(cfg: DictConfig) -> None:
    """Fail a single run at once, before torch is imported, on the config problems that can
    be found without it (the job's full validation reports every other one)."""
    from runner.spec import precheck

    try:
        config = OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # an interpolation error: the job reports it with its context
        return
    try:
        precheck(config)
    except ConfigError as err:
        if os.environ.get("HYDRA_FULL_ERROR"):
            raise
        print(f"config error: {err}", file=sys.stderr)
        sys.exit(1)


def cli() -> None:
    """`python -m runner`: reject unknown config-group choices early, then hand over to Hydra."""
    problems = group_choice_problems(sys.argv[1:], PROJECT_ROOT / "conf")
    if problems:
        print(f"config error: {ConfigError(problems)}", file=sys.stderr)
        sys.exit(1)
    main()
