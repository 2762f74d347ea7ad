"""`sweep.register`: a run's logged model as a new version of a registered model (MLflow's
Model Registry), with the alias `champion`, so that `models:/<name>@champion` names it."""

from __future__ import annotations

import logging

from runner.errors import RunError

log = logging.getLogger("runner")
CHAMPION = "champion"


class RegistryRefused(RunError):
    """The store would not register the model (a name it refuses, no registry)."""


def register(tracking_uri: str, run_id: str, name: str, description: str) -> str:
    """Make the run's latest logged model a new version of `name` and point `champion` at
    it; returns the version. RegistryRefused, in one line, if the store says no."""
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    # The registry reads the version's source (models:/<id>) through the process's own
    # tracking URI, not the client's.
    mlflow.set_tracking_uri(tracking_uri)
    client = MlflowClient(tracking_uri)
    try:
        run = client.get_run(run_id)
        # The newest: a run continued with more epochs holds one model per end it wrote.
        found = client.search_logged_models(
            [run.info.experiment_id],
            filter_string=f"source_run_id = '{run_id}' AND name = 'model'",
            order_by=[{"field_name": "creation_timestamp", "ascending": False}],
            max_results=1,
        )
        if not found:
            raise RegistryRefused(
                f"sweep.register: run {run_id} ({run.info.run_name}) has no logged model"
            )
        model_id = found[0].model_id
        try:
            client.create_registered_model(name)
        except MlflowException as err:
            if err.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
                raise
        version = client.create_model_version(
            name, source=f"models:/{model_id}", run_id=run_id, description=description,
            model_id=model_id,
        )  # fmt: skip
        client.set_registered_model_alias(name, CHAMPION, version.version)
    except MlflowException as err:
        message = str(err.message).splitlines()[0]
        raise RegistryRefused(
            f"sweep.register: {tracking_uri} would not register run {run_id}'s model as "
            f"{name!r}: {message}"
        ) from None
    log.info(
        "registered model %r version %s (alias %s): run %s; load it as models:/%s@%s",
        name, version.version, CHAMPION, run_id, name, CHAMPION,
    )  # fmt: skip
    return str(version.version)
