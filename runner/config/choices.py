"""Did-you-mean for config-group choices (`model=xor_dep`), checked before Hydra composes.

Hydra lists a group's options when one is missing; this adds the closest match and keeps
the message to one line per problem.
"""

from __future__ import annotations

import re
from pathlib import Path

from runner.errors import unknown_name

SIMPLE_CHOICE = re.compile(r"^\+?(?P<group>[a-z_]+)=(?P<values>[\w.,-]+)$")
# Flags that replace where configs come from: then Hydra alone can judge the choices.
SEARCH_PATH_FLAGS = ("-cp", "--config-path", "hydra.searchpath")


def group_choice_problems(argv: list[str], conf_dirs: list[Path]) -> list[str]:
    """One message per `group=value` override whose value has no YAML file in the group
    (in any of `conf_dirs`: the shipped groups and the user's)."""
    if any(flag in arg for arg in argv for flag in SEARCH_PATH_FLAGS):
        return []
    problems = []
    for arg in argv:
        match = SIMPLE_CHOICE.match(arg)
        options = group_options(match["group"], conf_dirs) if match else None
        if options is None:
            continue
        for value in match["values"].split(","):
            if value not in options and value != "null":
                problems.append(
                    unknown_name(match["group"], f"{match['group']} config", value, options)
                )
    return problems


def group_options(group: str, conf_dirs: list[Path]) -> list[str] | None:
    """The choices of a config group (its YAML files in any of `conf_dirs`), sorted; None
    when no folder has the group."""
    folders = [d / group for d in conf_dirs if (d / group).is_dir()]
    if not folders:
        return None
    return sorted({p.stem for folder in folders for p in folder.glob("*.yaml")})


def shadowed_files(conf_dirs: list[Path]) -> list[str]:
    """One warning per user config file that a shipped file of the same name hides (Hydra
    takes the first folder on its search path that has the name)."""
    shipped, *users = conf_dirs
    warnings = []
    for folder in users:
        for path in sorted([*folder.glob("*.yaml"), *folder.glob("*/*.yaml")]):
            name = path.relative_to(folder).as_posix()
            if (shipped / name).is_file():
                warnings.append(
                    f"warning: {path} is not read: the runner ships a {name} of its own; "
                    "give yours another name"
                )
    return warnings
