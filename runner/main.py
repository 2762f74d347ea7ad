"""The entry point: `python -m runner [overrides]`, a single run or (`-m`) a sweep.

Kept light on purpose: torch and the job's modules are imported inside the job, so a
config typo fails at once and a sweep's launching process starts fast. Known failures
(runner.errors) end a single run with one line and exit status 1.
"""

from __future__ import annotations

import sys
from types import ModuleType

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from runner.config.choices import group_choice_problems, shadowed_files
from runner.config.launch import launch_of
from runner.config.override_keys import command_line_problems
from runner.config.project import CONF_DIR, conf_dirs
from runner.errors import ConfigError, exit_on_known_failure
from runner.training.signals import shielded


def warm_parts(cfg: DictConfig) -> list[str]:
    """What the MLflow companion prepares while the run trains: its plots, its model."""
    wanted = {"plots": "trainer.plots", "model": "trainer.log_model"}
    return [part for part, key in wanted.items() if OmegaConf.select(cfg, key, default=True)]


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Hydra's task function: one job; returns its final validation metric (for sweepers)."""
    launch = launch_of(HydraConfig.get())
    if launch.multirun:  # a sweep's jobs log in-process; failures stay within the job
        return import_job().run_job(cfg, launch)
    from runner.tracking.companion import spawn_companion, use_companion

    with exit_on_known_failure():
        precheck(cfg)
        # Started before torch is imported (inside runner.job), so both imports overlap.
        companion = spawn_companion(warm_parts(cfg)) if use_companion() else None
        try:
            return import_job().run_job(cfg, launch, companion)
        except BaseException:
            # A run it started has ended already (the tracker waits for that); one never
            # used would still be importing mlflow, which nothing needs now.
            if companion is not None:
                companion.abandon()
            raise
        finally:
            if companion is not None:
                companion.release()


def import_job() -> ModuleType:
    """runner.job, and torch with it. A signal meanwhile acts once the import is done:
    torch's C start-up swallows a KeyboardInterrupt raised while it imports numpy, and
    would then train without it."""
    with shielded():
        import runner.job
    return runner.job


def precheck(cfg: DictConfig) -> None:
    """Fail at once, before torch is imported, on the config problems that can be found
    without it (the job's validation reports every other one)."""
    from runner.config.spec import precheck as check_plain_sections

    try:
        config = OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # an interpolation error: the job reports it with its context
        return
    check_plain_sections(config)


def cli() -> None:
    """`python -m runner`: reject unknown config-group choices and keys the config lacks
    early, then hand over to Hydra."""
    with exit_on_known_failure():
        dirs = conf_dirs(sys.argv[1:])
        for warning in shadowed_files(dirs):
            print(warning, file=sys.stderr)
        problems = group_choice_problems(sys.argv[1:], dirs)
        if not problems:  # composing (for keys of the group files) needs valid choices
            problems = command_line_problems(sys.argv[1:], dirs)
        if problems:
            raise ConfigError(problems)
    main()
