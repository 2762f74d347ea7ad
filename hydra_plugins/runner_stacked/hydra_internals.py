"""Hydra's internals that the stacked launcher relies on, all here (none is Hydra's public API).

Checked against hydra-core 1.3.8 (`CHECKED_AGAINST`); tests/test_dependency_internals.py
fails, naming the name, on a Hydra that moved one. Each is looked up when it is used, never
at import: a Hydra that moved one still loads the launcher (and a sweep still runs).

- `hydra._internal.config_loader_impl.get_overrides_dirname`: how Hydra writes
  `hydra.job.override_dirname` from a job's overrides (compose.py writes it for the job
  configs it copies instead of composing). If gone: `overrides_dirname` below, a copy of
  1.3.8's, writes it (said once), which the test checks against Hydra's own.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

from runner.errors import DependencyMoved

log = logging.getLogger("runner.sweep")

CHECKED_AGAINST = "1.3.8"


def overrides_dirname(
    overrides: Sequence[Any], exclude_keys: Sequence[str], item_sep: str, kv_sep: str
) -> str:
    """`hydra.job.override_dirname` of a job with these overrides (Hydra's Override
    objects), as Hydra writes it."""
    try:
        from hydra._internal.config_loader_impl import get_overrides_dirname
    except ImportError:
        name = "hydra._internal.config_loader_impl.get_overrides_dirname"
        DependencyMoved("hydra-core", name, CHECKED_AGAINST).fall_back(
            log, f"hydra.job.override_dirname is written as hydra-core {CHECKED_AGAINST} did"
        )
        return overrides_dirname_as_checked(overrides, exclude_keys, item_sep, kv_sep)
    return get_overrides_dirname(
        overrides=list(overrides), exclude_keys=list(exclude_keys), item_sep=item_sep,
        kv_sep=kv_sep,
    )  # fmt: skip


def overrides_dirname_as_checked(
    overrides: Sequence[Any], exclude_keys: Sequence[str], item_sep: str, kv_sep: str
) -> str:
    """hydra-core 1.3.8's `get_overrides_dirname`: the overrides' input lines but those of
    excluded keys, sorted, joined by `item_sep`, each `=` made `kv_sep`."""
    lines = sorted(o.input_line for o in overrides if o.key_or_group not in exclude_keys)
    return re.sub(pattern="[=]", repl=kv_sep, string=item_sep.join(lines))
