"""The runs table the runner opens in MLflow's UI: each experiment's primary metric and the
params its runs were given on the command line as columns from the first look (MLflow's
default columns are Source, Models and Dataset, every metric behind "Show more columns").

MLflow's UI restores a "shared view" from an experiment tag named by the URL parameter
`viewStateShareKey` (names in `mlflow_internals`: the UI's own, not a Python API); the
runner writes one such view per experiment and `python -m runner.ui` opens it.
"""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from runner.tracking import mlflow_internals, tags
from runner.tracking.naming import GROUP_PARAMS, QUIET_KEYS  # (QUIET: progress bars, plots)

VIEW = "runner"  # the share key of the runner's view, in every experiment
SHOWN_RUNS = 200  # the latest runs whose primary metrics and overrides choose the columns
MOST_PARAMS = 6
DEFAULT_COLUMNS = ["attributes.`Source`", "attributes.`Models`", "attributes.`Dataset`"]


def _param_of(override: str) -> str:
    key = override.split("=", 1)[0].lstrip("+~")
    return GROUP_PARAMS.get(key, key)


def view_columns(runs: list[Any]) -> list[str]:
    """The columns for these runs: their primary metrics (the most common first; the best
    epoch's beside the last's), then the params most often set on their command lines (a
    config group's choice as its name), then MLflow's defaults."""
    metrics = Counter(
        r.data.tags[tags.PRIMARY_METRIC] for r in runs if tags.PRIMARY_METRIC in r.data.tags
    )
    params: Counter[str] = Counter()
    for run in runs:
        for override in run.data.tags.get(tags.OVERRIDES, "").split():
            name = _param_of(override)
            if name in run.data.params and not name.startswith(QUIET_KEYS):
                params[name] += 1
    chosen = []
    for metric, _ in metrics.most_common():
        # A run that kept its best epoch's weights (trainer.keep=best) ends with those, whose
        # value is best_<metric>; <metric> itself is the last epoch's, as MLflow shows it.
        if any(f"best_{metric}" in run.data.metrics for run in runs):
            chosen.append(f"metrics.`best_{metric}`")
        chosen.append(f"metrics.`{metric}`")
    chosen += [f"params.`{p}`" for p, _ in params.most_common(MOST_PARAMS)]
    return chosen + DEFAULT_COLUMNS


def write_view(client: Any, experiment_id: str) -> None:
    """Save the runner's view of this experiment's runs table (see the module docstring)."""
    runs = client.search_runs(
        [experiment_id], order_by=["attributes.start_time DESC"], max_results=SHOWN_RUNS
    )
    state = {"selectedColumns": view_columns(list(runs))}
    client.set_experiment_tag(
        experiment_id, mlflow_internals.SHARED_VIEW_TAG + VIEW, json.dumps(state)
    )
