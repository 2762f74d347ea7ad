"""`model.init_from`: the weights a new run starts from, read from another run (the weights
it kept, from its last checkpoint, local or logged) or from a model in MLflow
(`models:/<name>@<alias>`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from runner.errors import ConfigError
from runner.training import checkpoint

if TYPE_CHECKING:
    from runner.config.spec import TrackingSpec

KEY = "model.init_from"


def initial_weights(source: str, spec: TrackingSpec, key: str = KEY) -> dict[str, torch.Tensor]:
    """The state dict `model.init_from` names (a run id, or a models:/ URI); errors name
    `key` (the setting, or the command's argument, that named the source)."""
    from runner.tracking.store import Store, local_checkpoint

    store = Store(spec)
    if source.startswith("models:/"):
        return _registered_weights(source, store.uri, key)
    run = store.run_or_none(source, key)
    if run is None:
        raise ConfigError(
            f"{key}: {source!r} is neither an MLflow run id in {store.uri} nor a "
            "models:/<name>@<alias> URI"
        ) from None
    path = local_checkpoint(run)
    if path is None or checkpoint.read(path).get("run_id") not in (None, source):
        try:
            path = store.logged_checkpoint(source)
        except ConfigError:
            raise ConfigError(
                f"{key}: run {source} ({run.info.run_name}) has no weights to load: it "
                "left no checkpoint (it failed before its first epoch?)"
            ) from None
    state = checkpoint.read(path)
    return state.get("best_model") or state["model"]  # the kept weights (trainer.keep)


def _registered_weights(uri: str, tracking_uri: str, key: str) -> dict[str, torch.Tensor]:
    """A registered (or logged) model's network weights: a torch model's, or the network
    inside a table model (raw rows in)."""
    import mlflow.pyfunc

    from runner.tracking.mlflow_internals import pinned_requirements

    try:
        with pinned_requirements():
            model: Any = mlflow.pyfunc.load_model(uri)
    except Exception as err:
        raise ConfigError(f"{key}: {uri!r} names no model in {tracking_uri}: {err}") from None
    network = _network(model)
    if network is None:
        raise ConfigError(f"{key}: {uri!r} is not a model the runner logged (no torch network)")
    return {k: v.detach().clone() for k, v in network.state_dict().items()}


def _network(model: Any) -> torch.nn.Module | None:
    """The torch network inside a loaded pyfunc model, if there is one: a torch model's
    own, or a table model's (its predictor's network)."""
    try:
        raw = model.get_raw_model()  # the torch flavor's model
    except NotImplementedError:
        raw = None
    if isinstance(raw, torch.nn.Module):
        return raw
    from runner.tracking.pyfunc_model import table_predictor

    network = getattr(table_predictor(model), "model", None)
    return network if isinstance(network, torch.nn.Module) else None
