"""Keys on the command line that the config lacks (`trainer.epoch=10`), caught before Hydra
composes: one line per key, with a did-you-mean among the keys at that place.

Hydra refuses `key=value` for a key the composed config does not have, with six lines that
suggest `+key=value`: the wrong fix for a typo. What "unknown" means depends on the section:

- `trainer`, `sweep`, `tracking` and the top level have the keys the spec defines
  (runner/spec/schema.py) and no others: any other key is a typo, given with `+` or not
  (the validator rejects `+trainer.epoch=10` with the same line). Checked without composing,
  so a run pays nothing for it.
- `model`, `data`, `optim`, `scheduler` take their keys from a config-group file, and a file
  need not set every key that is valid there: `optim.*` are the optimizer's arguments
  (`optim.amsgrad` for Adam), `data.*` the loader's (`data.folds`), `data.columns.<name>`
  any column of the table, `model.layers.N.*` any argument of that layer. There a key is
  unknown when the composed config lacks it (exactly what Hydra refuses). A close match
  among the keys at that place is suggested as a typo; without one the line says that
  `+key=value` adds it, after which the validator checks it against the component.

`+key`/`++key` (adding) and `~key` (deleting) are Hydra's to apply and are not checked here;
neither are `hydra.*` keys. In a sweep every job's choice of config group is composed once.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import yaml
from hydra import compose as hydra_compose
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import Glob, Override
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from runner.config.choices import group_options
from runner.config.project import CONF_DIR, split_config_dirs
from runner.config.spec import unknown_key
from runner.config.spec.schema import TOP_LEVEL_KEYS, SweepSpec, TrackingSpec, TrainerSpec, defaults
from runner.errors import did_you_mean

# The sections whose keys the spec fixes (see above); the top level is one too.
SPECS = {"trainer": TrainerSpec, "sweep": SweepSpec, "tracking": TrackingSpec}
CLOSED = {section: set(defaults(spec)) for section, spec in SPECS.items()}
# Flags that replace the config or where configs come from: Hydra alone can judge those.
OWN_CONFIG_FLAGS = ("-cp", "--config-path", "-cn", "--config-name")
# Hydra flags that take a value (the next word, or after `=`); any other `-x` takes none.
VALUE_FLAGS = ("-c", "--cfg", "-p", "--package", "-cd", "--config-dir", "--experimental-rerun")

# Groups whose files set keys anywhere (`@package _global_`) and choose other groups' files.
GLOBAL_GROUPS = ("experiment", "hparams_search")

Compose = Callable[[list[str]], DictConfig]


def command_line_problems(argv: list[str], dirs: list[Path]) -> list[str]:
    """`python -m runner`'s command line: one message per override of a key the config
    lacks ([] when none, or when Hydra is left to judge: its own config flags, a line it
    cannot parse). `dirs`: the folders of the config groups."""
    own = [a for a in argv if a.partition("=")[0] in OWN_CONFIG_FLAGS]
    if own or any(a.startswith("hydra.searchpath=") for a in argv):
        return []
    extra_dirs, argv = split_config_dirs(argv)
    lines = _overrides(argv)
    if extra_dirs:  # where `--config-dir` adds its groups, as runner.check does
        lines.append(f"hydra.searchpath=[{','.join(f'file://{d}' for d in extra_dirs)}]")

    with ExitStack() as stack:  # Hydra is initialized at the first compose; most runs need none

        def compose(overrides: list[str]) -> DictConfig:
            if not GlobalHydra.instance().is_initialized():
                stack.enter_context(initialize_config_dir(str(CONF_DIR), version_base="1.3"))
            return hydra_compose(config_name="config", overrides=overrides)

        return override_problems(lines, dirs, compose)


def _overrides(argv: list[str]) -> list[str]:
    """The override words of a command line (Hydra's positional arguments)."""
    words, args = [], iter(argv)
    for arg in args:
        if arg in VALUE_FLAGS:
            next(args, None)
        elif not arg.startswith("-") and ("=" in arg or arg.startswith("~")):
            words.append(arg)  # not `--info`'s optional topic, a plain word
    return words


def override_problems(lines: list[str], dirs: list[Path], compose: Compose) -> list[str]:
    """One message per override in `lines` whose key the config lacks; `compose(overrides)`
    composes the config (only called when a group-section key needs it)."""
    try:
        base, checked = _split(lines, dirs)
    except HydraException:
        return []  # Hydra reports a line it cannot parse
    groups = _groups(dirs)
    problems = [p for o in checked if (p := _static_problem(o.key_or_group, groups))]
    composed = [o for o in checked if _needs_config(o.key_or_group) and not _read(o, base, dirs)]
    configs = _configs(base, dirs, compose) if composed else []
    for override in composed:
        failing = [(label, cfg) for label, cfg in configs if _config_problem(override, cfg)]
        if failing:  # in a sweep, perhaps with some choices only: say which
            some = len(failing) < len(configs)
            note = f" in the jobs with {', '.join(label for label, _ in failing)}" if some else ""
            problem = _config_problem(override, failing[0][1], note)
            problems.append(_with_choices_that_set(problem, override.key_or_group, dirs))
    return problems


def _with_choices_that_set(problem: str, key: str, dirs: list[Path]) -> str:
    """An optimizer's or schedule's key that other choices of its group set
    (`scheduler.step_size` with scheduler=none): the `+` hint would add an argument the
    chosen one does not take, so name those choices instead."""
    group, _, rest = key.partition(".")
    # (Only where the choice is the component whose arguments these are; a model or data
    # file's keys, such as model.l1, hold for every choice.)
    if group not in ("optim", "scheduler") or "adds a key the config does not set" not in problem:
        return problem
    top = rest.split(".")[0]
    setting = [
        choice
        for choice in group_options(group, dirs) or []
        for folder in dirs
        if (file := folder / group / f"{choice}.yaml").is_file()
        and top in (yaml.safe_load(file.read_text()) or {})
    ]
    if not setting:
        return problem
    head = problem.rpartition(";")[0]
    shown = ", ".join(f"{group}={c}" for c in dict.fromkeys(setting))
    return f"{head}; {top!r} belongs to {shown}: choose one of those first"


def shaping_overrides(lines: list[str], dirs: list[Path]) -> list[str]:
    """The overrides that decide which keys the config has (group choices, `+`, `++`, `~`
    and Hydra's own), without those that only set a key's value."""
    try:
        return [override.input_line or "" for override in _split(lines, dirs)[0]]
    except HydraException:
        return lines


def _split(lines: list[str], dirs: list[Path]) -> tuple[list[Override], list[Override]]:
    """Parsed overrides: those that shape the config, and those that set a key's value
    (the ones checked here)."""
    groups = _groups(dirs)
    shaping, setting = [], []
    for override in OverridesParser.create().parse_overrides(lines):
        plain = not (override.is_add() or override.is_force_add() or override.is_delete())
        hydra_own = override.is_hydra_override() or override.package is not None
        if plain and not hydra_own and override.key_or_group.split("/")[0] not in groups:
            setting.append(override)
        else:
            shaping.append(override)
    return shaping, setting


def _groups(dirs: list[Path]) -> set[str]:
    """The config groups a command line can choose from (`model=...`), Hydra's own too."""
    return {p.name for d in dirs if d.is_dir() for p in d.iterdir() if p.is_dir()} | {"hydra"}


def _needs_config(key: str) -> bool:
    """Whether a key's presence depends on the composed config (a group-file section)."""
    section, _, rest = key.partition(".")
    return bool(rest) and section in TOP_LEVEL_KEYS and section not in CLOSED


def _read(override: Override, base: list[Override], dirs: list[Path]) -> bool:
    """Whether files every job's composition reads hold the key already, so that a run
    composes nothing here: conf/config.yaml's own sections, the chosen experiment (or
    search) file, or the file(s) chosen for the key's group by the command line, else by
    the experiment, else by config.yaml. Composing only adds keys (a `~` aside)."""
    key = override.key_or_group
    section, _, rest = key.partition(".")
    main = _yaml(CONF_DIR / "config.yaml")
    if any(o.is_delete() for o in base):
        return False
    if _has(main.get(section), rest):
        return True
    chosen = {o.key_or_group: o for o in base if not o.is_hydra_override() and not o.package}
    names = [d[section] for d in main.get("defaults", []) if isinstance(d, dict) and section in d]
    for group in GLOBAL_GROUPS:
        pick = chosen.get(group)
        if pick is None or pick.value() is None:
            continue
        path = None if pick.is_sweep_override() else _group_file(group, str(pick.value()), dirs)
        if path is None or "@package _global_" not in path.read_text():
            return False
        if _has(_yaml(path), key):
            return True
        picks = _picks(_yaml(path))
        if picks is None:
            return False
        names = [picks[section]] if section in picks else names
    if section in chosen:
        pick = chosen[section]
        names = _sweep_values(pick, dirs) if pick.is_sweep_override() else [str(pick.value())]
    files = [_group_file(section, name, dirs) for name in names]
    if not files or None in files:
        return False
    return all("@package" not in f.read_text() and _has(_yaml(f), rest) for f in files if f)


def _picks(experiment: dict[str, Any]) -> dict[str, str] | None:
    """The group choices an experiment file makes (`- override /model: mlp`); None where
    its defaults list holds anything else."""
    picks = {}
    for entry in experiment.get("defaults") or []:
        if entry == "_self_":
            continue
        if not (isinstance(entry, dict) and len(entry) == 1):
            return None
        ((name, value),) = entry.items()
        if not (name.startswith("override /") and isinstance(value, str)):
            return None
        picks[name.removeprefix("override /")] = value
    return picks


def _group_file(group: str, name: str, dirs: list[Path]) -> Path | None:
    """The file Hydra reads for `group=name`: the first folder's that has it."""
    return next(
        (d / group / f"{name}.yaml" for d in dirs if (d / group / f"{name}.yaml").is_file()), None
    )


@functools.cache
def _yaml(path: Path) -> dict[str, Any]:
    loaded = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    return loaded if isinstance(loaded, dict) else {}


def _has(node: Any, key: str) -> bool:
    """Whether a dotted key (list indices allowed) is in a plain YAML tree."""
    for part in key.split("."):
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return False
    return True


def _static_problem(key: str, groups: set[str]) -> str | None:
    """A key outside the spec's sections, or a closed section's key the spec lacks."""
    section, _, rest = key.partition(".")
    if section not in TOP_LEVEL_KEYS:
        top = f"{key}: unknown key" + (f" ({section!r} is no section)." if rest else ".")
        allowed = sorted(TOP_LEVEL_KEYS | groups - {"hydra"})
        return f"{top}{did_you_mean(section, allowed)} Allowed: {', '.join(allowed)}."
    if section in CLOSED and rest:
        name, _, deeper = rest.partition(".")
        if name not in CLOSED[section]:
            return unknown_key(f"{section}.{name}", CLOSED[section])
        default = defaults(SPECS[section]).get(name)
        if deeper and isinstance(default, dict):  # a nested section (trainer.early_stop)
            inner, _, rest = deeper.partition(".")
            if inner not in default:
                return unknown_key(f"{section}.{name}.{inner}", set(default))
            deeper = rest
        if deeper:
            return f"{key}: unknown key ({section}.{name} is a single value, not a mapping)"
    return None


def _configs(base: list[Override], dirs: list[Path], compose: Compose) -> list[tuple[str, dict]]:
    """The config composed from the overrides that are not checked, once per combination
    of swept group choices (labelled by them); other swept values take their first, since
    they cannot change which keys exist."""
    options = []
    for override in base:
        key = override.get_key_element()
        if not override.is_sweep_override():
            options.append([(override.input_line, False)])
        elif override.is_discrete_sweep():
            values = [(f"{key}={v}", True) for v in _sweep_values(override, dirs)]
            added = override.is_add() or override.is_force_add()
            options.append(values[:1] if added else values)
        # an interval (a search's range) has no value to compose with: left out
    configs = []
    for job in itertools.product(*options):
        try:
            cfg = OmegaConf.to_container(compose([line for line, _ in job]), resolve=False)
        except (HydraException, OmegaConfBaseException):
            continue  # Hydra will report what stops it composing
        configs.append((" ".join(line for line, swept in job if swept), cfg))
    return configs


def _sweep_values(override: Override, dirs: list[Path]) -> list[str]:
    """A discrete sweep's values; a glob over a group's choices (`model=glob(xor_*)`) is
    matched against the group's files here, as Hydra's config loader would."""
    value = override.value()
    if isinstance(value, Glob):
        return value.filter(group_options(override.key_or_group, dirs) or [])
    return list(override.sweep_string_iterator())


def _config_problem(override: Override, cfg: dict[str, Any], note: str = "") -> str | None:
    """Walk the override's key through the composed config; a message where it leaves it
    (`note`: which jobs of a sweep, where not all)."""
    key = override.key_or_group
    parts = key.split(".")
    node: Any = cfg
    for depth, part in enumerate(parts):
        where = ".".join(parts[:depth])
        if isinstance(node, list):
            if not (part.isdigit() and int(part) < len(node)):
                allowed = f"0 to {len(node) - 1}" if node else "none, the list is empty"
                return f"{key}: {where} has no item {part!r}{note}; allowed: {allowed}"
            node = node[int(part)]
        elif isinstance(node, dict):
            if part not in node:
                return _missing(override, where, part, list(node), note)
            node = node[part]
        else:
            return f"{key}: unknown key{note} ({where} is a single value, {node!r}, not a mapping)"
    return None


def _missing(override: Override, where: str, part: str, keys: list[str], note: str) -> str:
    """A key absent from a group-file section: a typo when one of `keys` is close, else
    perhaps an argument the file does not set, which `+` adds."""
    key = override.key_or_group
    inner = "" if f"{where}.{part}" == key else f" ({where} has no {part!r})"
    head = f"{key}: unknown key{note}{inner}."
    shown = f"Keys of {where or 'the config'}: {', '.join(sorted(keys)) or 'none'}"
    close = did_you_mean(part, keys)
    if close:
        return f"{head}{close} {shown}."
    value = override.input_line.partition("=")[2] if override.input_line else "..."
    return f"{head} {shown}; +{key}={value} adds a key the config does not set."
