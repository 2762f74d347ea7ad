"""The dependencies' internals the runner relies on, fenced in one module each
(runner.tracking.mlflow_internals, hydra_plugins.runner_stacked.hydra_internals,
hydra_plugins.runner_slurm.submitit_internals): each fenced name is still there in the
installed versions (a failure names it: an upgrade moved it), each fence falls back or says
in one line what moved when one is gone, and nothing outside the fences uses them. Also: a
store that cannot be reached is said to be so, never taken for "not a run id" or "no
checkpoint"."""

from __future__ import annotations

import ast
import importlib
import logging
import signal
import socket
import subprocess
import sys
import types
import warnings
from importlib import metadata
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

import runner.errors
from hydra_plugins.runner_slurm import submitit_internals
from hydra_plugins.runner_stacked import hydra_internals
from runner.config.spec import TrackingSpec
from runner.errors import ConfigError, DependencyMoved, StoreError
from runner.tracking import mlflow_internals
from runner.training import torch_internals
from tests.conftest import PROJECT

FENCES = {
    "runner/tracking/mlflow_internals.py",
    "hydra_plugins/runner_stacked/hydra_internals.py",
    "hydra_plugins/runner_slurm/submitit_internals.py",
    "runner/training/torch_internals.py",
}
DEPENDENCIES = ("mlflow", "hydra", "submitit", "hydra_plugins.hydra_submitit_launcher", "torch")
# Private attributes of the dependencies' objects, used only inside the fences.
FENCED_ATTRIBUTES = {
    "_tracking_client", "_engine_map", "_get_run", "_check_run_is_active", "ManagedSessionMaker",
    "sanitize_metric_value", "_validate_metric", "_MODULES_TO_PACKAGES", "_usr_sig",

    "_delayed", "_timeout_countdown", "_return_value", "__dynamo_disable",
}  # fmt: skip


@pytest.fixture(autouse=True)
def say_each_move_anew(monkeypatch):
    """Each test sees the once-per-process line of the moves it makes."""
    monkeypatch.setattr(runner.errors, "_SAID_MOVED", set())


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A real SQLite store, opened as a run opens it."""
    from runner.tracking.store import Store

    folder = tmp_path_factory.mktemp("store")
    return Store(TrackingSpec(uri=f"sqlite:///{folder / 'mlflow.db'}", experiment="internals"))


def moved_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    """The lines a fence logged for a moved name."""
    lines = [r.getMessage() for r in caplog.records]
    return [line for line in lines if "which the runner relies on" in line]


# --- every fenced name is still there --------------------------------------------------


@pytest.mark.parametrize(
    ("dependency", "checked"),
    [
        ("mlflow", mlflow_internals.CHECKED_AGAINST),
        ("hydra-core", hydra_internals.CHECKED_AGAINST),
        ("torch", torch_internals.CHECKED_AGAINST),
        *submitit_internals.CHECKED_AGAINST.items(),
    ],
)
def test_the_installed_version_is_the_one_checked_or_a_warning_says_so(dependency, checked):
    """Not a failure (the names' tests below decide): a reminder to update CHECKED_AGAINST."""
    installed = metadata.version(dependency)
    if installed != checked:
        warnings.warn(
            f"{dependency} {installed} is installed, its internals were checked against "
            f"{checked}: if this file's other tests pass, set CHECKED_AGAINST to {installed}",
            stacklevel=1,
        )


def test_mlflows_fenced_names_are_there(store):
    """The bulk insert's pieces, the engine cache, the schema's tables, the requirement scan."""
    database = mlflow_internals.database_store(store.client)
    assert database is not None, "MlflowClient._tracking_client.store is no SqlAlchemyStore"
    parts = mlflow_internals.bulk_insert(database)  # raises, naming the missing name
    assert parts.sanitize_value(float("nan"))[0] is True
    engines = mlflow_internals.cached_engines()
    assert database.engine in engines, "SqlAlchemyStore._engine_map no longer holds its engine"
    tables = mlflow_internals.expected_tables()
    assert {"runs", "metrics", "latest_metrics", "experiments"} <= tables
    from mlflow.utils import requirements_utils

    assert hasattr(requirements_utils, "_MODULES_TO_PACKAGES"), (
        "mlflow.utils.requirements_utils._MODULES_TO_PACKAGES is gone"
    )


def test_the_uis_shared_view_names_are_in_its_bundle():
    """The runs table's saved view (runner.tracking.runs_view) relies on names of MLflow's
    UI: its JavaScript must still read the experiment tag and the URL parameter."""
    import mlflow

    bundle = Path(mlflow.__file__).parent / "server" / "js" / "build" / "static" / "js"
    text = "".join(path.read_text(errors="ignore") for path in bundle.glob("main.*.js"))
    for name in (
        mlflow_internals.SHARED_VIEW_TAG, mlflow_internals.SHARED_VIEW_PARAMETER,
        "selectedColumns",
    ):  # fmt: skip
        assert name in text, f"MLflow's UI no longer has {name!r}"


def test_pinned_requirements_are_checked_without_mapping_every_distribution(monkeypatch, caplog):
    """Within the fence MLflow's requirement check still tells a met pin from a broken one,
    without its scan of every installed distribution, and leaves no narrowed map behind."""
    import torch
    from mlflow.utils import requirements_utils

    monkeypatch.setattr(requirements_utils, "_MODULES_TO_PACKAGES", None)
    scanned = []
    monkeypatch.setattr(
        requirements_utils.importlib_metadata, "packages_distributions", lambda: scanned.append(1)
    )
    installed = torch.__version__.split("+")[0]
    caplog.set_level(logging.WARNING)
    with mlflow_internals.pinned_requirements():
        assert requirements_utils._check_requirement_satisfied(f"torch=={installed}") is None
        assert requirements_utils._check_requirement_satisfied("pandas") is None
        broken = requirements_utils._check_requirement_satisfied("torch==0.0.1")
        assert broken is not None and broken.installed_version == installed
        requirements_utils.warn_dependency_requirement_mismatches(["torch==0.0.1"])
    assert "torch (current: " in caplog.text  # (MLflow's own warning, as outside the fence)
    assert scanned == []
    assert requirements_utils._MODULES_TO_PACKAGES is None


def test_hydras_fenced_name_is_there_and_its_copy_writes_the_same_dirname():
    from hydra._internal.config_loader_impl import get_overrides_dirname
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = OverridesParser.create().parse_overrides(
        ["seed=3", "optim.lr=0.1", "model=mlp", "+extra='a=b'", "trainer.epochs=2"]
    )
    for exclude, item_sep, kv_sep in (([], ",", "="), (["seed"], "/", ":")):
        hydras = get_overrides_dirname(
            overrides=overrides, exclude_keys=exclude, item_sep=item_sep, kv_sep=kv_sep
        )
        args = (overrides, exclude, item_sep, kv_sep)
        ours = hydra_internals.overrides_dirname_as_checked(*args)
        assert ours == hydras == hydra_internals.overrides_dirname(*args)


def test_submitits_fenced_names_are_there():
    from submitit.core.job_environment import SignalHandler
    from submitit.core.utils import DelayedSubmission
    from submitit.slurm.slurm import SlurmJob, SlurmJobEnvironment

    assert callable(SlurmJob.results)
    assert submitit_internals.launch_collects_results(), (
        "hydra-submitit-launcher's BaseSubmititLauncher.launch no longer collects with "
        f"{submitit_internals.LAUNCH_COLLECTS}"
    )
    assert SlurmJobEnvironment.USR_SIG == "USR2"
    assert submitit_internals.preempt_signal() == signal.SIGUSR2
    delayed = DelayedSubmission(print)
    delayed.set_timeout(60, 2)  # an hour, requeued at most twice
    handler = SignalHandler(SlurmJobEnvironment(), None, delayed)
    # Just started: not timed out, two time limits left.
    assert submitit_internals.requeue_state(handler.checkpoint_and_try_requeue) == (False, 2)
    assert submitit_internals.requeue_state(signal.SIG_DFL) is None  # not a submitit job


def test_the_slurm_results_are_replaced_for_the_block_only():
    from submitit.core.core import Job
    from submitit.slurm.slurm import SlurmJob

    def results(job, original):
        return ["replaced"]

    with submitit_internals.slurm_results_replaced(results):
        assert SlurmJob.results(object()) == ["replaced"]
        assert "results" not in vars(Job) or Job.results is not SlurmJob.results  # Job's own
    assert "results" not in vars(SlurmJob) and SlurmJob.results is Job.results


def test_nothing_outside_the_fences_uses_the_dependencies_internals():
    """Their private modules, names and attributes appear in the fence modules only, and
    there only inside functions (a moved name never breaks an import)."""
    found = []
    for folder in ("runner", "hydra_plugins", "cluster"):
        for path in sorted((PROJECT / folder).rglob("*.py")):
            relative = path.relative_to(PROJECT).as_posix()
            tree = ast.parse(path.read_text(), relative)
            fence = relative in FENCES
            top_level = {id(node) for node in tree.body}
            imported = {  # names this file imports from the dependencies
                alias.asname or alias.name
                for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(DEPENDENCIES)
                for alias in node.names
            }
            for node in ast.walk(tree):
                used = _private_use(node, imported)
                if used and (not fence or id(node) in top_level):
                    found.append(f"{relative}:{node.lineno}: {used}")
    assert not found, "dependency internals outside a fence (or at its import):\n" + "\n".join(
        found
    )


def _private_use(node: ast.AST, imported: set[str]) -> str | None:
    """What private part of a dependency this node uses, if any (`imported`: the names the
    file imports from the dependencies)."""
    if isinstance(node, ast.Import | ast.ImportFrom):
        module = node.module if isinstance(node, ast.ImportFrom) else None
        names = [module] if module else [alias.name for alias in node.names]
        for name in names:
            if name and name.startswith(DEPENDENCIES) and _private_module(name):
                return name
        if isinstance(node, ast.ImportFrom) and module and module.startswith(DEPENDENCIES):
            private = [a.name for a in node.names if a.name.startswith("_")]
            if private:
                return f"{module}.{private[0]}"
    if isinstance(node, ast.Attribute) and node.attr in FENCED_ATTRIBUTES:
        return f".{node.attr}"
    if isinstance(node, ast.keyword) and node.arg in FENCED_ATTRIBUTES:
        return f"{node.arg}="
    if isinstance(node, ast.Assign):  # a dependency's class patched (Job.results = ...)
        for target in node.targets:
            if (
                isinstance(target, ast.Attribute)
                and isinstance(target.value, ast.Name)
                and target.value.id in imported
            ):
                return f"{target.value.id}.{target.attr} = ..."
    return None


def _private_module(name: str) -> bool:
    parts = name.split(".")
    return (
        any(p.startswith("_") for p in parts)
        or "dbmodels" in parts
        or name.startswith(("mlflow.store", "mlflow.utils.validation"))
    )


# --- a moved name: the fallback, or one line ---------------------------------------------


def as_if_renamed(monkeypatch: pytest.MonkeyPatch, module: str, name: str) -> None:
    """Imports from `module` find no `name`, as after an upgrade that renamed it; the
    dependency's own code, which looks it up in its module's globals, is left working."""
    real = importlib.import_module(module)
    renamed = types.ModuleType(module)
    renamed.__dict__.update({k: v for k, v in vars(real).items() if k != name})
    monkeypatch.setitem(sys.modules, module, renamed)


def test_without_validate_metric_a_members_run_is_written_by_log_batch(store, monkeypatch, caplog):
    """The stacked members' tracker still writes every point, and says once why slower."""
    from runner.tracking.deferred import DeferredTracker

    as_if_renamed(monkeypatch, "mlflow.utils.validation", "_validate_metric")
    tracker = DeferredTracker(TrackingSpec(uri=store.uri, experiment="internals"))
    tracker.start("member", {})
    for step in range(1, 6):
        tracker.log_metrics({"loss": 1.0 / step}, step)
    assert tracker.end("FINISHED") == "FINISHED"
    run_id = tracker.run_id
    assert len(tracker.client.get_metric_history(run_id, "loss")) == 5
    assert tracker.client.get_run(run_id).info.status == "FINISHED"
    [line] = moved_lines(caplog)
    assert "mlflow.utils.validation._validate_metric" in line
    assert f"checked against mlflow {mlflow_internals.CHECKED_AGAINST}" in line
    assert "log_batch" in line


def test_metric_histories_read_in_bulk_equal_each_runs_own(store, monkeypatch, caplog):
    """One query for many runs gives each run's points as its own history call does; without
    MLflow's metrics table, the same points one run at a time (said once)."""
    client = store.client
    experiment = client.create_experiment("histories")
    run_ids = []
    for n in (3, 1, 4):
        run = client.create_run(experiment)
        for step in range(1, n + 1):
            client.log_metric(run.info.run_id, "val_acc", step / 10 + n, step=step)
        client.log_metric(run.info.run_id, "val_loss", 1.0, step=1)
        run_ids.append(run.info.run_id)
    run_ids.append(client.create_run(experiment).info.run_id)  # nothing logged

    def own() -> dict[str, list[tuple[int, float]]]:
        return {
            run_id: [(m.step, m.value) for m in client.get_metric_history(run_id, "val_acc")]
            for run_id in run_ids
        }

    def bulk() -> dict[str, list[tuple[int, float]]]:
        read = mlflow_internals.metric_histories(client, run_ids, "val_acc")
        return {run_id: [(m.step, m.value) for m in points] for run_id, points in read.items()}

    expected = own()
    assert [len(points) for points in expected.values()] == [3, 1, 4, 0]
    calls = []
    with monkeypatch.context() as patch:  # the bulk read makes no call per run
        patch.setattr(client, "get_metric_history", lambda *a: calls.append(a) or [])
        assert bulk() == expected and calls == []
    from mlflow.store.tracking.dbmodels import models

    monkeypatch.setattr(models, "SqlMetric", object)  # as if MLflow renamed its tables
    assert bulk() == expected
    assert "the columns of SqlMetric" in moved_lines(caplog)[0]


@pytest.mark.parametrize("attribute", ["_get_run", "_check_run_is_active"])
def test_a_store_method_gone_is_named(store, monkeypatch, attribute):
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    monkeypatch.delattr(SqlAlchemyStore, attribute)
    database = mlflow_internals.database_store(store.client)
    with pytest.raises(DependencyMoved, match=rf"has no SqlAlchemyStore\.{attribute}, which"):
        mlflow_internals.bulk_insert(database)


def test_a_client_without_its_store_falls_back_to_log_batch(caplog):
    assert mlflow_internals.database_store(object()) is None
    [line] = moved_lines(caplog)
    assert "MlflowClient._tracking_client.store" in line and "log_batch" in line


def test_without_the_engine_map_a_forked_process_still_finds_the_engines(
    store, monkeypatch, caplog
):
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    engine = mlflow_internals.database_store(store.client).engine
    monkeypatch.delattr(SqlAlchemyStore, "_engine_map")
    assert engine in mlflow_internals.cached_engines()
    [line] = moved_lines(caplog)
    assert "SqlAlchemyStore._engine_map" in line


def test_without_mlflows_table_list_a_store_fails_to_open_in_one_line(store, monkeypatch):
    from runner.tracking.store import open_store

    as_if_renamed(monkeypatch, "mlflow.store.db.base_sql_model", "Base")
    with pytest.raises(DependencyMoved) as failed:
        open_store(store.uri, "internals", None)
    message = str(failed.value)
    assert "\n" not in message
    assert "mlflow.store.db.base_sql_model.Base.metadata" in message
    assert f"checked against mlflow {mlflow_internals.CHECKED_AGAINST}" in message


def test_without_mlflows_module_map_the_requirement_check_is_mlflows_own(monkeypatch, caplog):
    from mlflow.utils import requirements_utils

    monkeypatch.delattr(requirements_utils, "_MODULES_TO_PACKAGES")
    caplog.set_level(logging.DEBUG, "runner.tracking")
    with mlflow_internals.pinned_requirements():
        pass
    assert "_MODULES_TO_PACKAGES" in moved_lines(caplog)[0]


def test_without_hydras_dirname_the_copy_writes_it(monkeypatch, caplog):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = OverridesParser.create().parse_overrides(["seed=3", "optim.lr=0.1"])
    as_if_renamed(monkeypatch, "hydra._internal.config_loader_impl", "get_overrides_dirname")
    assert hydra_internals.overrides_dirname(overrides, ["seed"], ",", "=") == "optim.lr=0.1"
    [line] = moved_lines(caplog)
    assert "hydra._internal.config_loader_impl.get_overrides_dirname" in line
    assert "checked against hydra-core 1.3.8" in line


def test_without_submitits_names_the_slurm_launcher_goes_on(monkeypatch, caplog):
    from submitit.core.job_environment import JobEnvironment, SignalHandler
    from submitit.core.utils import DelayedSubmission
    from submitit.slurm.slurm import SlurmJobEnvironment

    monkeypatch.delattr(JobEnvironment, "USR_SIG")
    assert submitit_internals.preempt_signal() == signal.SIGUSR2
    delayed = DelayedSubmission(print)
    delayed.set_timeout(60, 2)
    handler = SignalHandler(SlurmJobEnvironment(), None, delayed)
    del delayed._timeout_countdown
    assert submitit_internals.requeue_state(handler.checkpoint_and_try_requeue) == (False, None)
    monkeypatch.setattr(submitit_internals, "LAUNCH_COLLECTS", "j.no_such_call()")
    with submitit_internals.slurm_results_replaced(lambda job, results: results()):
        pass
    lines = moved_lines(caplog)
    assert len(lines) == 3
    assert "USR_SIG" in lines[0] and "SignalHandler._delayed._timeout_countdown" in lines[1]
    assert "hydra-submitit-launcher 1.2.0 has no `j.no_such_call()`" in lines[2]


# Two optimizers trained in a fresh interpreter, torch's way or spared (Adam spared before
# it is built; SGD built, then spared: its step already wrapped by torch's hooks).
SPARED_TRAINING = r"""
import sys
import torch
from runner.training.torch_internals import spare_dynamo

spared = sys.argv[1] == "spared"
torch.manual_seed(0)
x, y = torch.randn(16, 3), torch.randn(16, 1)
result = []
for name in ("Adam", "SGD"):
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    cls = getattr(torch.optim, name)
    if spared and name == "Adam":
        spare_dynamo(cls)
    optimizer = cls(model.parameters(), lr=0.05)
    if spared and name == "SGD":
        spare_dynamo(cls)
    for _ in range(5):
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        optimizer.step()
        assert torch.is_grad_enabled()  # the step's grad mode is undone
    optimizer.load_state_dict(optimizer.state_dict())
    result.append([p.tolist() for p in model.parameters()])
print(repr(result))
print("torch._dynamo" in sys.modules)
"""


def test_torchs_fenced_names_are_there_and_a_spared_optimizer_trains_the_same_without_dynamo():
    assert torch_internals.wrapper_codes()  # raises, naming what changed
    outputs = {}
    for way in ("torch", "spared"):
        proc = subprocess.run(
            [sys.executable, "-c", SPARED_TRAINING, way],
            capture_output=True, text=True, timeout=120, cwd=PROJECT,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-2000:]
        outputs[way] = proc.stdout.splitlines()
    assert outputs["spared"][0] == outputs["torch"][0]  # the same parameters, bit for bit
    assert outputs["torch"][1] == "True" and outputs["spared"][1] == "False"


def test_a_changed_step_wrapper_is_left_alone(monkeypatch):
    monkeypatch.setattr(torch_internals, "USE_GRAD_NAMES", frozenset({"graph_break"}))
    torch_internals.wrapper_codes.cache_clear()
    try:
        with pytest.raises(DependencyMoved, match="_use_grad_for_differentiable as checked"):
            torch_internals.wrapper_codes()
    finally:
        torch_internals.wrapper_codes.cache_clear()


# --- a store that cannot be reached is said to be so -----------------------------------


@pytest.fixture
def closed_port() -> int:
    """A local port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_the_report_against_a_server_that_is_down_says_so(tmp_path, closed_port):
    uri = f"http://127.0.0.1:{closed_port}"
    proc = subprocess.run(
        [sys.executable, "-m", "runner.report", "0123abcd", "--tracking-uri", uri],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert uri in line and "Connection refused" in line
    assert "no experiment or run" not in line


def test_a_lookup_that_meets_a_dead_server_is_no_missing_run(store, closed_port, monkeypatch):
    """Past the report's first check (the server went away after it), and in resume's
    queries: the connection's failure, not "not a run id" / "no checkpoint"."""
    from runner.report import resolve_target

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # (else minutes of retries)
    dead = MlflowClient(f"http://127.0.0.1:{closed_port}")
    with pytest.raises(StoreError, match="cannot connect \\(Connection refused\\)"):
        resolve_target(dead, "0123abcd")
    with pytest.raises(LookupError, match="no experiment or run named '0123abcd'"):
        resolve_target(store.client, "0123abcd")  # (a store that answers: not there)

    monkeypatch.setattr(store, "client", dead)
    with pytest.raises(StoreError, match="resume: cannot read run '0123abcd' .*Connection refused"):
        store.run_to_resume("0123abcd")
    with pytest.raises(StoreError, match="logged checkpoints of run 0123abcd .*Connection refused"):
        store.logged_checkpoint("0123abcd")


def test_a_missing_run_or_checkpoint_is_still_said_as_before(store, tmp_path):
    run_id = store.client.create_run(store.experiment_id).info.run_id
    store.client.set_terminated(run_id, "KILLED")
    with pytest.raises(ConfigError, match="neither a checkpoint file nor an MLflow run id"):
        store.run_to_resume("no such run")
    with pytest.raises(ConfigError, match=f"run {run_id} has no checkpoint"):
        store.logged_checkpoint(run_id)
    saved = tmp_path / "last.pt"
    saved.write_bytes(b"state")
    store.client.log_artifact(run_id, str(saved), "checkpoints")
    assert store.logged_checkpoint(run_id).read_bytes() == b"state"


def test_a_run_whose_checkpoints_cannot_be_listed_is_said_so(
    store, closed_port, monkeypatch, caplog
):
    """Looking for an interrupted run to continue: a store gone away is said, and counted
    as no checkpoint (a new run starts), as before."""
    run = store.client.get_run(store.client.create_run(store.experiment_id).info.run_id)
    store.client.set_terminated(run.info.run_id, "KILLED")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setattr(store, "client", MlflowClient(f"http://127.0.0.1:{closed_port}"))
    assert store._has_checkpoint(run) is False
    [line] = [r.getMessage() for r in caplog.records if r.name == "runner.tracking"]
    assert f"logged checkpoints of run {run.info.run_id}" in line
    assert "Connection refused" in line and "counted as having no checkpoint" in line
