"""Tracking: the interface every job logs through, and the one factory that picks its
implementation.

- `MlflowTracker` (`mlflow_tracker.py`) logs in this process.
- `CompanionTracker` (`companion.py`) sends the same calls to the MLflow companion, a
  process of its own (`companion_server.py`), so a single run's training process never
  imports mlflow and the store's slow calls overlap training.
- `store.py` opens the store (safely while it is new) and answers queries about past runs.
- What a run records: `tags` (the runner's tag keys), `naming` (run names, commands),
  `params` (flat params), `fingerprint` (a config's identity), `dataset_input`, `summary`
  (the model table), `pictures` and `plots`; `resume` (the checkpoint `resume=` names) and
  `sweep_record` (a sweep job's skip/continue/failed-setup) read and write the store.
- `mlflow_internals` holds every MLflow internal (not public API) the runner relies on,
  with the version it was checked against: nothing else here touches them.

May import: `runner.builders`, `runner.loop`, `runner.config`, `runner.components`,
`runner.registry`, `runner.training`, `runner.errors`. This module imports neither mlflow
nor torch: the entry point uses it before both.
"""

from __future__ import annotations

import logging
import os
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from runner.errors import RunError

if TYPE_CHECKING:
    from runner.config.spec import TrackingSpec
    from runner.tracking.companion import Companion


class Tracker(Protocol):
    """One MLflow run of a job, from start to a final status.

    Logging calls may return before the store has the data (the companion works
    asynchronously); `check_errors` raises the first failure reported so far, `flush` makes
    every metric sent so far durable, and the run's end reports anything left.
    """

    uri: str  # the tracking URI
    run_id: str | None  # None until the run has started (the companion says so later)
    experiment_id: str | None  # likewise
    final_status: str | None  # the status the store took when the run ended (None: not yet)
    handed_off: str | None  # the status the MLflow companion was left to write on its own

    def run(
        self,
        run_name: str,
        tags: dict[str, str],
        parent_run_id: str | None = None,
        run_id: str | None = None,
        started_at: float | None = None,
    ) -> AbstractContextManager[Tracker]:
        """Start a run whose start time is `started_at` (epoch seconds; default now), or
        reopen `run_id`; it ends FINISHED, FAILED or KILLED however the block exits."""

    def end_stale_runs(self, fingerprint: str, host: str) -> None:
        """End KILLED the runs of this config that a dead process on `host` left RUNNING."""

    def log_params(self, params: dict[str, str]) -> None:
        """Log the run's params."""

    def log_dataset(self, dataset: dict[str, str]) -> None:
        """Record the training data (runner.tracking.dataset_input's fields) as the run's input."""

    def log_metrics(
        self, metrics: dict[str, float], step: int, timestamp_ms: int | None = None
    ) -> None:
        """Log one step's metrics (buffered; written in batches), stamped `timestamp_ms`
        (default: now)."""

    def logged_steps(self, key: str) -> set[int]:
        """The steps at which the run already holds metric `key` (waits for the answer)."""

    def set_tags(self, tags: dict[str, str]) -> None:
        """Set run tags."""

    def model_outdated(self) -> None:
        """The continued run trains more epochs: a model it holds is older than its end
        and is logged anew."""

    def log_text(self, text: str, path: str) -> None:
        """Store `text` as an artifact file."""

    def log_dir(self, directory: str | Path, path: str) -> None:
        """Store a folder's files as artifacts under `path`."""

    def log_artifact(self, path: str | Path, directory: str) -> None:
        """Store one file as an artifact under `directory`."""

    def log_pictures(self, pictures: dict[str, Any]) -> None:
        """Draw the plots from their data (runner.tracking.pictures) and store them."""

    def log_model(self, model: Any, input_example: Any) -> None:
        """Log the trained torch model with an input example."""

    def log_predictor(self, predictor: Any, input_example: Any) -> None:
        """Log a table's raw-rows predictor (encoder + network) as an MLflow pyfunc model,
        with a few raw rows as its input example."""

    def flush(self) -> None:
        """Write every metric point sent so far."""

    def settle(self) -> None:
        """Block until every call made so far has taken effect (the model and plots are
        stored); raise the first error among them."""

    def check_errors(self) -> None:
        """Raise the first error a logging call reported so far (in-process: none pending)."""

    def wait_imports(self) -> None:
        """Block until the tracker has done its imports and keep its work off the cores
        training needs (for kernel-bound models; in-process: nothing to do)."""

    def wait_run_id(self) -> str | None:
        """Block until the run exists, and return its id."""


THIRD_PARTY_LOGGERS = ("mlflow", "alembic", "urllib3")  # their INFO lines would split the epochs
# A warning MLflow prints on every table run's model: the runner pickles its own encoder and
# network there, on purpose (runner/tracking/pyfunc_model.py), so it tells the user nothing.
PICKLED_MODEL_NOTICE = "Passing a Python object as `python_model`"


def _not_the_pickled_model_notice(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith(PICKLED_MODEL_NOTICE)


def _not_a_lock_traceback(record: logging.LogRecord) -> bool:
    """MLflow logs a traceback for each write that met a locked SQLite store: the runner
    waits for the store and tries again, and says in one line if it gives up."""
    return "database is locked" not in record.getMessage()


def quiet_third_party_logs() -> None:
    """Keep only warnings and errors of the libraries the tracker drives (and not MLflow's
    "View run ... at: URL" lines: the runner prints each run's page in its own last line)."""
    for name in THIRD_PARTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
    pyfunc = logging.getLogger("mlflow.pyfunc")
    if _not_the_pickled_model_notice not in pyfunc.filters:
        pyfunc.addFilter(_not_the_pickled_model_notice)
    db_utils = logging.getLogger("mlflow.store.db.utils")
    if _not_a_lock_traceback not in db_utils.filters:
        db_utils.addFilter(_not_a_lock_traceback)
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


def make_tracker(spec: TrackingSpec, companion: Companion | None = None) -> Tracker:
    """The tracker for a job: through the companion process if one was started, else
    in this process."""
    if companion is not None:
        from runner.tracking.companion import CompanionTracker

        return CompanionTracker(spec, companion)
    from runner.tracking.mlflow_tracker import MlflowTracker

    return MlflowTracker(spec)


SERVER_TIMEOUT = 5.0  # seconds a tracking server has to answer its health check


class ServerUnreachable(RunError):
    """No MLflow tracking server answers at the URI a run is to log to."""


def check_server(uri: str, timeout: float = SERVER_TIMEOUT) -> None:
    """For an http(s) tracking URI, fail at once, naming it, if no server answers there:
    MLflow's own client retries a refused connection for minutes, then prints a traceback."""
    if not uri.startswith(("http://", "https://")):
        return
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout):
            pass
    except urllib.error.HTTPError as err:
        if err.code in (401, 403):  # a server behind a login: MLflow's client signs in
            return
        raise ServerUnreachable(
            f"no MLflow tracking server answers at {uri}: its health check gave HTTP "
            f"{err.code}. Check tracking.uri / MLFLOW_TRACKING_URI"
        ) from None
    except (OSError, ValueError) as err:
        reason = getattr(err, "reason", err)
        raise ServerUnreachable(
            f"cannot reach the MLflow tracking server {uri}: {reason}. Start it (`python -m "
            "runner.ui`, or `mlflow server`), or set tracking.uri / MLFLOW_TRACKING_URI to one "
            "that runs"
        ) from None
    _check_credentials(uri, timeout)


def _check_credentials(uri: str, timeout: float) -> None:
    """On a server with logins (`mlflow server --app-name basic-auth`), fail at once if it
    refuses the credentials MLflow's client would send (MLFLOW_TRACKING_USERNAME and
    MLFLOW_TRACKING_PASSWORD, or MLFLOW_TRACKING_TOKEN); a server without logins passes."""
    import base64
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        f"{uri.rstrip('/')}/api/2.0/mlflow/experiments/search?max_results=1"
    )
    user, password = (os.environ.get(f"MLFLOW_TRACKING_{k}") for k in ("USERNAME", "PASSWORD"))
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    if user and password:
        pair = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {pair}")
    elif token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=timeout):
            return
    except urllib.error.HTTPError as err:
        if err.code == 401:
            given = f"user {user!r}" if user and password else "a run without credentials"
            raise ServerUnreachable(
                f"the MLflow tracking server {uri} refuses {given} (HTTP 401): set "
                "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD to an account of it"
            ) from None
        if err.code == 403:
            raise ServerUnreachable(
                f"the MLflow tracking server {uri} lets user {user!r} in but not read its "
                "experiments (HTTP 403): ask its admin for a permission"
            ) from None
    except (OSError, ValueError):
        pass  # the health check answered: MLflow's own client reports anything else


def store_location(spec: TrackingSpec) -> tuple[str, str | None]:
    """Tracking URI and artifact root (None: the server's own) for a tracking spec:
    `tracking.uri`, else MLFLOW_TRACKING_URI, else the embedded store under store_dir."""
    uri = spec.uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri, None
    return embedded_store(spec.store_dir)


def embedded_store(store_dir: str) -> tuple[str, str]:
    """Tracking URI and artifact root of the embedded store in `store_dir` (made absolute,
    so every job of a sweep lands in the same store whatever its working folder)."""
    root = Path(store_dir).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}", (root / "mlartifacts").as_uri()


def store_label(uri: str) -> str:
    """The store as the console names it: a SQLite file's path (relative to here when
    under here), else the URI."""
    path = sqlite_file(uri)
    if path is None and "://" in uri:
        return uri
    path = Path(path or uri)
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


UI_URL = "http://127.0.0.1:5000"  # where `make ui` / `python -m runner.ui` serves
# MLflow 3.17's UI picks an experiment's view from this URL parameter (else the browser's
# last choice, GenAI's traces at first): every printed URL opens the "Model training" view.
TRAINING_VIEW = "workflowType=machine_learning"


def ui_base(tracking_uri: str | None = None) -> str:
    """The UI's base URL for a tracking URI: a tracking server's own, else `make ui`'s."""
    if tracking_uri and tracking_uri.startswith(("http://", "https://")):
        return tracking_uri.rstrip("/")
    return UI_URL


def experiment_url(base: str, experiment_id: str, view: str | None = None) -> str:
    """The URL of an experiment's runs table (the model-training view) in the UI at `base`;
    `view`: the key of a saved view of its columns (runner.tracking.runs_view)."""
    url = f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs?{TRAINING_VIEW}"
    if view:
        from runner.tracking.mlflow_internals import SHARED_VIEW_PARAMETER

        url += f"&{SHARED_VIEW_PARAMETER}={view}"
    return url


def run_url(tracking_uri: str | None, experiment_id: str, run_id: str, tab: str = "") -> str:
    """The URL of one run's page (or its `tab`: model-metrics, artifacts...) in the UI that
    shows `tracking_uri` (a server's URL; any other store: `make ui`'s address)."""
    page = f"/{tab.strip('/')}" if tab else ""
    base = ui_base(tracking_uri)
    return f"{base}/#/experiments/{experiment_id}/runs/{run_id}{page}?{TRAINING_VIEW}"


def run_page(uri: str, experiment_id: str | None, run_id: str | None) -> str:
    """Where a person sees this run: its page on the tracking server, or on the local UI
    with the command that starts it."""
    path = sqlite_file(uri)
    if path is None and not uri.startswith(("http://", "https://")):
        return f"run {run_id} in {uri}"
    url = run_url(uri, str(experiment_id), str(run_id))
    if path is None:
        return url
    store_dir = path.parent
    if store_dir.resolve() != (Path.cwd() / "outputs").resolve():
        start = f"python -m runner.ui --store-dir {store_label(str(store_dir))}"
    elif _has_make_ui(Path.cwd()):
        start = "make ui"  # in a clone of the runner's repository
    else:
        start = "python -m runner.ui"  # in a user's own project
    return f"{url} (after `{start}`)"


def runs_table(uri: str, experiment_id: str | None) -> str | None:
    """The URL of the experiment's runs table with the runner's columns (runs_view), on the
    tracking server or the local UI; None for a store no UI serves."""
    if sqlite_file(uri) is None and not uri.startswith(("http://", "https://")):
        return None
    from runner.tracking.runs_view import VIEW

    return experiment_url(ui_base(uri), str(experiment_id), VIEW)


def _has_make_ui(folder: Path) -> bool:
    makefile = folder / "Makefile"
    return makefile.is_file() and "runner.ui" in makefile.read_text(errors="replace")


def sqlite_file(uri: str) -> Path | None:
    """The database file of a `sqlite:///...` tracking URI (None for any other store)."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix) or uri[len(prefix) :] in ("", ":memory:"):
        return None
    return Path(uri[len(prefix) :].split("?")[0])


def command_store(given: str | None) -> tuple[str, str | None]:
    """The store a command reads (`--tracking-uri`, else MLFLOW_TRACKING_URI, else the
    embedded store under ./outputs), and the error line when that is a SQLite file that is
    not there (say so, rather than create an empty store)."""
    uri = given or os.environ.get("MLFLOW_TRACKING_URI")
    uri = uri or f"sqlite:///{Path('outputs/mlflow.db').resolve()}"
    db = sqlite_file(uri)
    if db is not None and not db.is_file():
        return uri, (
            f"error: no MLflow store at {db}; run from the folder you launched the runs "
            "from, or pass --tracking-uri"
        )
    return uri, None
