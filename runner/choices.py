"""Did-you-mean for config-group choices (`model=xor_dep`), checked before Hydra composes.

Hydra lists a group's options when one is missing; this adds the closest match and keeps
the message to one line per problem.
"""

from __future__ import annotations

import re
from pathlib import Path

from runner.errors import unknown_name

SIMPLE_CHOICE = re.compile(r"^\+?(?P<group>[a-z_]+)=(?P<values>[\w.,-]+)$")
# Flags that change where configs come from: then Hydra alone can judge the choices.
SEARCH_PATH_FLAGS = ("-cp", "--config-path", "-cd", "--config-dir", "hydra.searchpath")


def group_choice_problems(argv: list[str], conf_dir: Path) -> list[str]:
    """One message per `group=value` override whose value has no YAML file in the group."""
    if any(flag in arg for arg in argv for flag in SEARCH_PATH_FLAGS):
        return []
    problems = []
    for arg in argv:
        match = SIMPLE_CHOICE.match(arg)
        if not match or not (conf_dir / match["group"]).is_dir():
            continue
        options = sorted(p.stem for p in (conf_dir / match["group"]).glob("*.yaml"))
        for value in match["values"].split(","):
            if value not in options and value != "null":
                problems.append(
                    unknown_name(match["group"], f"{match['group']} config", value, options)
                )
    return problems
