"""What a command's SOURCE names (`runner.predict`, `runner.evaluate`): a run, a sweep's
best job, an experiment's best FINISHED run, or a registered model's version, ranked as
`runner.report` ranks them (by the weights each run kept)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from runner.errors import ConfigError
from runner.sweep.report import best_run, experiments_hint, resolve_target, run_row
from runner.tracking import tags


class SourceError(LookupError):
    """SOURCE names no model (one line says what it looked for)."""


def resolve_source(client: Any, source: str) -> tuple[str, str]:
    """SOURCE as (model URI, run id of the run that logged it): a registered version, a
    run, or the best FINISHED run of a sweep or an experiment."""
    if source.startswith("models:/"):
        name, _, ref = source.removeprefix("models:/").partition("@")
        try:
            if ref:
                version = client.get_model_version_by_alias(name, ref)
            else:
                name, _, number = name.partition("/")
                version = client.get_model_version(name, number)
        except Exception as err:
            message = f"{source} names no registered model version: {first_line(err)}"
            raise SourceError(message) from None
        return source, version.run_id
    try:
        runs, title, parent = resolve_target(client, source)
    except LookupError:
        raise SourceError(
            f"{source!r} is neither a run id, an experiment nor a models:/ URI."
            + experiments_hint(client, source)
        ) from None
    if parent is None and [r.info.run_id for r in runs] == [source]:  # a run: its own model
        evaluated = runs[0].data.tags.get(tags.EVALUATES)
        if evaluated:
            raise SourceError(
                f"run {source} is an evaluation of run {evaluated}, not a trained run: "
                f"use {evaluated}"
            )
        return f"runs:/{source}/model", source
    finished = [r for r in runs if r.info.status == "FINISHED"]
    best = best_run([run_row(client, r) for r in finished], finished)
    if best is None:
        raise SourceError(f"{title} has no FINISHED run")
    return f"runs:/{best.info.run_id}/model", best.info.run_id


def run_config(client: Any, run_id: str) -> dict[str, Any]:
    """The run's resolved config, as it logged it (config.yaml)."""
    import yaml

    try:
        text = Path(client.download_artifacts(run_id, "config.yaml")).read_text()
    except Exception as err:
        raise ConfigError(
            f"SOURCE: run {run_id} has no config.yaml to rebuild its model from ({first_line(err)})"
        ) from None
    return yaml.safe_load(text) or {}


def first_line(err: BaseException) -> str:
    """An exception's message, first line only (MLflow's run on for pages)."""
    text = str(getattr(err, "message", err)).strip()
    return text.splitlines()[0] if text else type(err).__name__
