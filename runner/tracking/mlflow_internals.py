"""MLflow's internals that the runner relies on, all here (none is MLflow's public API).

Checked against mlflow 3.18.0 (`CHECKED_AGAINST`); tests/test_dependency_internals.py fails,
naming the name, on an MLflow that moved one. Each is looked up when it is used, never at
import: an MLflow that moved one still imports every runner module (a stacked sweep still
starts). Then each use falls back to MLflow's public API and says so once, or fails in one
line (`DependencyMoved`) naming the name and the version checked against:

- The bulk insert of a new run's metrics (runner.tracking.deferred: a stacked member's run
  written in one transaction). Falls back to `MlflowClient.log_batch` (slower, same rows).
  - `MlflowClient._tracking_client.store`: the client's store object
  - `mlflow.store.tracking.sqlalchemy_store.SqlAlchemyStore`: the database store's class,
    and its `_get_run`, `_check_run_is_active`, `ManagedSessionMaker`, `sanitize_metric_value`
  - `mlflow.store.tracking.dbmodels.models.SqlMetric`, `SqlLatestMetric`: the ORM models
    of the `metrics` and `latest_metrics` tables (their columns `METRIC_COLUMNS`)
  - `mlflow.utils.validation._validate_metric`: `log_batch`'s check of one metric
- Dropping inherited database connections in a forked process (store.forget_connections):
  `SqlAlchemyStore._engine_map`, MLflow's class-wide cache of engines by database URI.
  Falls back to finding the SQLAlchemy engines among the process's objects (slower).
- Creating a new SQLite store's schema aside, and telling whether a schema is complete
  (store.py): `SqlAlchemyStore(db_uri, default_artifact_root)` and its `.engine`,
  `mlflow.store.tracking.DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH`, and
  `mlflow.store.db.base_sql_model.Base.metadata` (the tables MLflow expects). No fallback:
  a `DependencyMoved` line.
- Reading a metric's history of many runs at once (`metric_histories`, the sweep report):
  `SqlAlchemyStore.engine` and the `metrics` table of `SqlMetric` (columns run_uuid, key,
  step, value, timestamp, is_nan), read with one SQL query. Falls back to
  `MlflowClient.get_metric_history` per run (a tracking server, or an MLflow that moved
  them: said once).
- The MLflow UI's shared views (runner.tracking.runs_view: the runs table's columns): an
  experiment tag `mlflow.sharedViewState.<key>` holding the view as JSON
  (`selectedColumns`: each column as metrics.NAME or params.NAME, NAME in backticks),
  restored by the URL parameter `viewStateShareKey=<key>`; names of the UI's JavaScript
  bundle, checked in it by tests/test_dependency_internals.py. If the UI drops them, it
  opens with its own columns.
- The check of a logged or loaded model's pinned requirements against the installed
  versions (`pinned_requirements`): `mlflow.utils.requirements_utils._MODULES_TO_PACKAGES`,
  its map of every module to the distributions that install it, built on first use by
  reading every installed distribution's file list. Narrowed to the runner's own pinned
  packages while it logs or loads a model; left to MLflow if gone (the same check, slower).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from runner.errors import DependencyMoved

log = logging.getLogger("runner.tracking")

CHECKED_AGAINST = "3.18.0"
# The columns the bulk insert writes, in both metric tables.
METRIC_COLUMNS = ("run_uuid", "key", "value", "timestamp", "step", "is_nan")
LOG_BATCH = "metrics are written with MlflowClient.log_batch (slower, the same rows)"


def moved(name: str) -> DependencyMoved:
    """The one-line error for an MLflow internal `name` that is gone."""
    return DependencyMoved("mlflow", name, CHECKED_AGAINST)


def _store_class() -> type:
    try:
        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore
    except ImportError as err:
        raise moved("mlflow.store.tracking.sqlalchemy_store.SqlAlchemyStore") from err
    return SqlAlchemyStore


def database_store(client: Any, instead: str = LOG_BATCH) -> Any | None:
    """The client's store where it is MLflow's own database store (SQLite, PostgreSQL),
    else None: a tracking server, or an MLflow whose internals moved (said once, with what
    the caller does `instead`)."""
    try:
        store_class = _store_class()
    except DependencyMoved as err:
        err.fall_back(log, instead)
        return None
    try:
        store = client._tracking_client.store
    except AttributeError:
        moved("MlflowClient._tracking_client.store").fall_back(log, instead)
        return None
    return store if isinstance(store, store_class) else None


@dataclass(frozen=True)
class BulkInsert:
    """MLflow's pieces for writing a new run's metric rows in one transaction."""

    validate_metric: Callable[..., None]  # (key, value, timestamp, step): raises if invalid
    sanitize_value: Callable[[float], tuple[bool, float]]  # value -> (is_nan, stored value)
    get_run: Callable[..., Any]  # (run_uuid=, session=) -> the run's ORM row
    check_active: Callable[[Any], None]  # raises unless the run is active
    session: Callable[..., Any]  # (read_only=False) -> a context manager: one transaction
    metric_table: Any  # the ORM model of every point
    latest_table: Any  # the ORM model of each key's latest point


def bulk_insert(store: Any) -> BulkInsert:
    """The pieces of a bulk metric insert into this database store; DependencyMoved names
    the first one MLflow no longer has (the caller falls back to log_batch)."""
    try:
        from mlflow.utils.validation import _validate_metric
    except ImportError as err:
        raise moved("mlflow.utils.validation._validate_metric") from err
    try:
        from mlflow.store.tracking.dbmodels.models import SqlLatestMetric, SqlMetric
    except ImportError as err:
        raise moved("mlflow.store.tracking.dbmodels.models.SqlMetric, SqlLatestMetric") from err
    for model in (SqlMetric, SqlLatestMetric):
        columns = set(getattr(getattr(model, "__table__", None), "columns", {}).keys())
        missing = [c for c in METRIC_COLUMNS if c not in columns]
        if missing:
            raise moved(f"the column(s) {', '.join(missing)} of {model.__name__}")
    # Looked up here, outside the transaction: inside it, MLflow turns every error into an
    # MlflowException, which the caller could not tell from a failed write.
    pieces = {}
    for attribute in ("sanitize_metric_value", "_get_run", "_check_run_is_active"):
        pieces[attribute] = getattr(store, attribute, None)
        if not callable(pieces[attribute]):
            raise moved(f"SqlAlchemyStore.{attribute}")
    session = getattr(store, "ManagedSessionMaker", None)
    if not callable(session):
        raise moved("SqlAlchemyStore.ManagedSessionMaker")
    return BulkInsert(
        validate_metric=_validate_metric,
        sanitize_value=pieces["sanitize_metric_value"],
        get_run=pieces["_get_run"],
        check_active=pieces["_check_run_is_active"],
        session=session,
        metric_table=SqlMetric,
        latest_table=SqlLatestMetric,
    )


def cached_engines() -> list[Any]:
    """The SQLAlchemy engines MLflow's database stores hold open in this process."""
    instead = "the database engines are found among the process's objects instead"
    try:
        return list(_store_class()._engine_map.values())
    except DependencyMoved as err:
        err.fall_back(log, instead)
    except AttributeError:
        moved("SqlAlchemyStore._engine_map").fall_back(log, instead)
    import gc

    from sqlalchemy.engine import Engine

    return [o for o in gc.get_objects() if issubclass(type(o), Engine)]


def create_database_store(db_uri: str, artifact_root: str | None) -> None:
    """Create MLflow's schema in the database at `db_uri` (artifacts default to MLflow's
    default root), leaving no connection open on it."""
    store_class = _store_class()
    try:
        from mlflow.store.tracking import DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH
    except ImportError as err:
        raise moved("mlflow.store.tracking.DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH") from err
    store = store_class(db_uri, artifact_root or DEFAULT_LOCAL_FILE_AND_ARTIFACT_PATH)
    engine = getattr(store, "engine", None)
    if engine is None:
        raise moved("SqlAlchemyStore.engine")
    engine.dispose()


def expected_tables() -> set[str]:
    """The names of the tables MLflow's database store expects (it migrates nothing once
    all are there)."""
    try:
        from mlflow.store.db.base_sql_model import Base
        from mlflow.store.tracking import sqlalchemy_store  # noqa: F401  (defines the tables)

        return set(Base.metadata.tables)
    except (ImportError, AttributeError) as err:
        raise moved("mlflow.store.db.base_sql_model.Base.metadata") from err


SHARED_VIEW_TAG = "mlflow.sharedViewState."  # + the view's key: an experiment tag
SHARED_VIEW_PARAMETER = "viewStateShareKey"  # the UI's URL parameter naming the key
BULK_CHUNK = 500  # run ids per query (SQLite's limit on a statement's variables is higher)


def metric_histories(client: Any, run_ids: Sequence[str], key: str) -> dict[str, list[Any]]:
    """Every logged point (mlflow Metric) of metric `key` of each run, by run id, in step
    order: on a database store one plain SQL query per BULK_CHUNK runs (the rows as
    tuples: MLflow's own bulk read builds an ORM object per point, 3x slower), else one
    call per run (a tracking server, or an MLflow whose tables moved: said once)."""
    from mlflow.entities import Metric

    one_by_one = "metric histories are read one run at a time"
    store = database_store(client, one_by_one)
    histories: dict[str, list[Any]] = {run_id: [] for run_id in run_ids}
    read = _metric_rows(store, one_by_one) if store is not None else None
    if read is None:
        for run_id in run_ids:
            histories[run_id] = list(client.get_metric_history(run_id, key))
        return histories
    ids = list(run_ids)
    for start in range(0, len(ids), BULK_CHUNK):
        for run_id, step, value, timestamp, is_nan in read(ids[start : start + BULK_CHUNK], key):
            histories[run_id].append(Metric(key, math.nan if is_nan else value, timestamp, step))
    for points in histories.values():
        points.sort(key=lambda m: (m.step, m.timestamp))
    return histories


def _metric_rows(store: Any, instead: str) -> Callable[[list[str], str], list[tuple]] | None:
    """A reader of the `metrics` table's (run_uuid, step, value, timestamp, is_nan) rows of
    some runs and a key, through the store's SQLAlchemy engine; None if MLflow moved them."""
    try:
        from mlflow.store.tracking.dbmodels.models import SqlMetric
        from sqlalchemy import select
    except ImportError:
        moved("mlflow.store.tracking.dbmodels.models.SqlMetric").fall_back(log, instead)
        return None
    table, engine = getattr(SqlMetric, "__table__", None), getattr(store, "engine", None)
    columns = ("run_uuid", "step", "value", "timestamp", "is_nan", "key")
    if table is None or engine is None or any(c not in table.c for c in columns):
        moved("SqlAlchemyStore.engine and the columns of SqlMetric").fall_back(log, instead)
        return None
    c = table.c

    def read(run_ids: list[str], key: str) -> list[tuple]:
        query = select(c.run_uuid, c.step, c.value, c.timestamp, c.is_nan).where(
            c.key == key, c.run_uuid.in_(run_ids)
        )
        with engine.connect() as connection:
            return [tuple(row) for row in connection.execute(query)]

    return read


PINNED = ("mlflow", "torch", "pandas")  # every requirement the runner's models are logged with


@contextmanager
def pinned_requirements(packages: Sequence[str] = PINNED) -> Iterator[None]:
    """While logging or loading a model whose pip requirements the runner pins itself
    (`packages`, each its own module): MLflow's check of them against the installed
    versions looks up just those, instead of first mapping every installed distribution's
    files to its modules (1.3 s of CPU per process here). MLflow's map, if it had built it
    already, is left alone; a map that moved is left to MLflow (said once, at debug level)."""
    from mlflow.utils import requirements_utils

    if not hasattr(requirements_utils, "_MODULES_TO_PACKAGES"):
        moved("mlflow.utils.requirements_utils._MODULES_TO_PACKAGES").fall_back(
            log, "MLflow maps every installed distribution to check the model's requirements",
            logging.DEBUG,
        )  # fmt: skip
        yield
        return
    if requirements_utils._MODULES_TO_PACKAGES is not None:
        yield
        return
    requirements_utils._MODULES_TO_PACKAGES = {name: [name] for name in packages}
    try:
        yield
    finally:  # (anything else that infers requirements later builds the whole map)
        requirements_utils._MODULES_TO_PACKAGES = None
        requirements_utils._PACKAGES_TO_MODULES = None
