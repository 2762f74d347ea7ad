"""`python -m runner.check [-m] [overrides]`: validate configs without training.

Takes the command line of `python -m runner`. Each job's config is composed as Hydra would
(with the `hydra` node, so `${hydra:runtime.cwd}` resolves), a sweep is expanded into its
jobs as Hydra's basic sweeper does (`hydra.sweeper.params`, then the command line, crossed)
and every job goes through `runner.config.spec.validate`; a table's file must exist and its header
hold the columns the config names (the header alone is read). No rows are loaded, nothing
is written, MLflow is never touched. Exit status: 0 all valid, 1 any invalid, 2 a bad command line.
"""

from __future__ import annotations

import itertools
import os
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, OverrideParseException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from runner.config.choices import group_choice_problems, shadowed_files
from runner.config.override_keys import override_problems, shaping_overrides
from runner.config.project import CONF_DIR, conf_dirs, name_folders_only, split_config_dirs
from runner.config.spec import validate
from runner.config.spec.schema import RunSpec
from runner.errors import ConfigError, failure_message
from runner.registry import DATASETS
from runner.training.fast_exit import fast_exit

USAGE = "usage: python -m runner.check [-m|--multirun] [--config-dir DIR] [override ...]"


class UsageError(Exception):
    """The command line cannot be checked as given (exit status 2)."""


def compose_job(overrides: list[str], num: int | None = None) -> DictConfig:
    """Compose one job and set Hydra's runtime state as its launcher would (num: in a sweep)."""
    name_folders_only()
    cfg = compose(config_name="config", overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        out = cfg.hydra.run.dir
        if num is not None:
            cfg.hydra.job.num, cfg.hydra.job.id = num, num
            out = f"{cfg.hydra.sweep.dir}/{cfg.hydra.sweep.subdir}"
        cfg.hydra.runtime.output_dir = os.path.abspath(out)  # never created
    HydraConfig.instance().set_config(cfg)  # what `${hydra:...}` resolves against
    return cfg


def _compose(overrides: list[str]) -> DictConfig:
    return compose(config_name="config", overrides=overrides)


def job_problems(
    overrides: list[str], num: int | None = None, dirs: list[Path] | None = None
) -> list[str]:
    """Compose, resolve and validate one job; [] when it would start (`dirs`: the config
    folders its group choices may come from, the shipped one by default)."""
    choices = [o for o in overrides if not o.startswith("hydra.searchpath=")]
    problems = group_choice_problems(choices, dirs or [CONF_DIR])  # sweeper params name groups
    if problems:
        return problems
    try:
        cfg = compose_job(overrides, num)
        with open_dict(cfg):
            del cfg["hydra"]  # as in a job: the task config has no hydra node
        data_preflight(validate(OmegaConf.to_container(cfg, resolve=True)))
    except ConfigError as err:
        return err.problems
    except (HydraException, OmegaConfBaseException) as err:
        # A key the config lacks: the line `python -m runner` gives, not Hydra's six.
        keys = override_problems(overrides, dirs or [CONF_DIR], _compose)
        return keys or [str(err)]
    except Exception as err:  # a bug, e.g. in the validator: the run would crash on it too
        return [f"unexpected {type(err).__name__}: {err}"]
    return []


def data_preflight(spec: RunSpec) -> None:
    """The data loader's own cheap checks, where it has some (a table: the file exists and
    its header holds the named columns); raises a ConfigError."""
    preflight = DATASETS.get(spec.data.type, spec.data.key).meta.get("preflight")
    if preflight is not None:
        preflight(**spec.data.args)


def expand(base: DictConfig, task: list[str], parser: OverridesParser) -> list[list[str]]:
    """The jobs Hydra's basic sweeper would launch: sweeper params, then the command line."""
    params = base.hydra.sweeper.get("params") or {}
    lines = [f"{k}={v}" for k, v in params.items()] + task
    choices: dict[str, list[str]] = {}  # a later override of the same key wins, as in Hydra
    for o in parser.parse_overrides(lines):
        key = o.get_key_element()
        if not o.is_sweep_override():
            choices[key] = [f"{key}={o.get_value_element_as_str()}"]
        elif o.is_discrete_sweep():
            choices[key] = [f"{key}={v}" for v in o.sweep_string_iterator()]
        else:
            raise UsageError(f"{o.input_line}: the basic sweeper cannot enumerate this sweep")
    return [list(job) for job in itertools.product(*choices.values())]


def plan(
    multirun: bool, overrides: list[str], dirs: list[Path]
) -> tuple[list[str], list[list[str]], bool, str]:
    """Hydra-level overrides, each job's task overrides, whether it is a sweep, and a note
    (`dirs`: the config folders)."""
    parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
    parsed = parser.parse_overrides(overrides)
    sweeps = [o for o in parsed if o.is_sweep_override()]
    if any(o.is_hydra_override() for o in sweeps):
        raise UsageError("sweeping over Hydra's own configuration is not supported")
    hydra = [o.input_line for o in parsed if o.is_hydra_override()]
    task = [o.input_line for o in parsed if not o.is_hydra_override()]
    fixed = [o.input_line for o in parsed if not (o.is_hydra_override() or o.is_sweep_override())]
    # Like Hydra's own multirun, the base config ignores the sweep values; nor does it need
    # the values of keys (a key it lacks fails each job, not the whole plan).
    shaping = shaping_overrides(fixed, dirs)
    try:
        base = compose(config_name="config", overrides=hydra + shaping, return_hydra_config=True)
    except Exception:  # Hydra, OmegaConf (or a bug in them): checking the job reports it
        return [], [hydra + fixed], multirun, ""
    if not (multirun or base.hydra.mode == RunMode.MULTIRUN):
        if sweeps:
            raise UsageError(f"{sweeps[0].input_line}: sweep values need -m (a list: key=[a,b])")
        return hydra, [fixed], False, ""
    sweeper = base.hydra.runtime.choices.get("hydra/sweeper", "basic")
    if sweeper != "basic":  # a search proposes its jobs while it runs: only the base is known
        keys = list(base.hydra.sweeper.get("params") or {}) + [o.key_or_group for o in sweeps]
        return hydra, [fixed], True, (
            f"note: hydra/sweeper={sweeper} searches {', '.join(keys) or 'its own space'}; "
            "that search space is not expanded, only the base config is checked"
        )  # fmt: skip
    return hydra + ["hydra.mode=MULTIRUN"], expand(base, task, parser), True, ""


def main(argv: list[str]) -> int:
    """Check every job the command line describes; return the exit status."""
    if "-h" in argv or "--help" in argv:
        print(f"{USAGE}\n\n{__doc__}")
        return 0
    try:
        dirs = conf_dirs(argv)
        extra_dirs, argv = split_config_dirs(argv)
        unknown = [a for a in argv if a.startswith("-") and a not in ("-m", "--multirun")]
        if unknown:
            raise UsageError(
                f"unknown option {unknown[0]!r}; only -m/--multirun and --config-dir are understood"
            )
        overrides = [a for a in argv if not a.startswith("-")]
        multirun = len(overrides) < len(argv)
        missing = [d for d in extra_dirs if not d.is_dir()]
        if missing:
            raise UsageError(f"--config-dir: {missing[0]} is not a folder")
        for warning in shadowed_files(dirs):
            print(warning, file=sys.stderr)
        problems = group_choice_problems(overrides, dirs)
        if problems:  # the same did-you-mean as `python -m runner`, before composing
            print(failure_message(ConfigError(problems)), file=sys.stderr)
            return 1
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            if extra_dirs:  # as `--config-dir` does for `python -m runner`
                paths = ",".join(f"'file://{d}'" for d in extra_dirs)
                overrides.append(f"hydra.searchpath=[{paths}]")
            try:
                hydra, jobs, sweep, note = plan(multirun, overrides, dirs)
            except OverrideParseException as err:
                raise UsageError(str(err)) from None
            if note:
                print(note)
            failed = 0
            for num, job in enumerate(jobs):
                problems = job_problems(hydra + job, num if sweep else None, dirs)
                failed += bool(problems)
                print(f"{'FAIL' if problems else 'ok  '} {' '.join(job) or '(no overrides)'}")
                for problem in problems:
                    print("    - " + problem.replace("\n", "\n      "))
    except UsageError as err:
        print(f"{USAGE}\nerror: {err}", file=sys.stderr)
        return 2
    print(f"{len(jobs)} job{'s' if len(jobs) != 1 else ''} checked, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    fast_exit(main(sys.argv[1:]))  # skip torch's slow interpreter teardown; nothing is open
