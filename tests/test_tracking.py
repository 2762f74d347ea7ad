"""Tracking: one interface, two implementations (in this process, and the MLflow
companion process), both pinned by real runs; the store opens safely; no metric is lost."""

from __future__ import annotations

import inspect
import os
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from runner.config.spec import TrackingSpec
from runner.tracking import Tracker, make_tracker
from runner.tracking.companion import CompanionTracker, use_companion
from runner.tracking.mlflow_tracker import MlflowTracker
from tests.conftest import ready_store, run_cli, store_uri

PROTOCOL = [
    name for name, member in vars(Tracker).items() if callable(member) and not name.startswith("_")
]


@pytest.mark.parametrize("implementation", [MlflowTracker, CompanionTracker])
def test_both_trackers_implement_the_written_interface(implementation):
    assert len(PROTOCOL) >= 15
    for name in PROTOCOL:
        ours = inspect.signature(getattr(implementation, name))
        written = inspect.signature(getattr(Tracker, name))
        assert list(ours.parameters) == list(written.parameters), name
    assert "__getattr__" not in vars(implementation)  # every call can be followed by name


def test_the_companion_is_chosen_by_the_environment(monkeypatch):
    monkeypatch.setenv("RUNNER_COMPANION", "0")
    assert use_companion() is False
    monkeypatch.setenv("RUNNER_COMPANION", "1")
    assert use_companion() is True


def logged_run(cwd, companion: str) -> tuple[dict, dict, set, str]:
    """Run the default XOR job for 4 epochs; return its params, metric histories, artifacts."""
    proc = run_cli(
        "trainer.epochs=4", "trainer.progress=lines", "trainer.log_model=false",
        cwd=cwd, env={"RUNNER_COMPANION": companion},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    client = MlflowClient(store_uri(cwd))
    (run,) = client.search_runs([client.get_experiment_by_name("xor").experiment_id])
    assert run.info.status == "FINISHED"
    keys = ("train_loss", "train_total_loss", "train_acc", "val_loss", "val_acc")
    history = {
        k: [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, k)] for k in keys
    }
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    artifacts |= {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    params = {k: v for k, v in run.data.params.items() if not k.startswith("tracking.")}
    return params, history, artifacts, proc.stdout


def test_companion_and_in_process_runs_log_the_same(tmp_path):
    ready_store(tmp_path / "a"), ready_store(tmp_path / "b")
    *companion, companion_out = logged_run(tmp_path / "a", "1")
    *in_process, in_process_out = logged_run(tmp_path / "b", "0")
    assert companion == in_process  # same params, metric histories (bit for bit), artifacts
    params, history, artifacts = companion
    assert params["model.name"] == "xor_deep"
    assert all(len(points) == 4 for points in history.values())
    assert {"config.yaml", "model_summary.txt", "plots/learning_curves.png"} <= artifacts
    # Both announce the run in one form; the companion's line comes from its own process.
    for out in (companion_out, in_process_out):
        assert "in experiment 'xor', store " in out and "sqlite:" not in out


def test_buffered_logging_loses_no_metric_point(tmp_path):
    tracker = make_tracker(TrackingSpec(store_dir=str(tmp_path / "store"), experiment="logging"))
    with tracker.run("many", {}):
        for step in range(1, 401):  # 1,200 points: more than one MLflow batch
            tracker.log_metrics({"a": step, "b": -step, "c": step / 2}, step=step)
    client = MlflowClient(tracker.uri)
    (run,) = client.search_runs([client.get_experiment_by_name("logging").experiment_id])
    assert run.info.status == "FINISHED"
    for key, sign in (("a", 1), ("b", -1)):
        history = client.get_metric_history(run.info.run_id, key)
        assert sorted((m.step, m.value) for m in history) == [(s, sign * s) for s in range(1, 401)]


OPEN_NEW_STORE = """
import sys
from runner.config.spec import TrackingSpec
from runner.tracking import make_tracker

tracker = make_tracker(TrackingSpec(store_dir=sys.argv[1], experiment="xor"))
with tracker.run(sys.argv[2], {}):
    tracker.log_metrics({"x": 1.0}, step=1)
"""


def test_processes_opening_one_new_store_at_once_all_succeed(tmp_path):
    # Without the lock, at least one of two processes failed (and the store was sometimes
    # left unusable) on every one of 10 tries here.
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    store = tmp_path / "store"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN_NEW_STORE, str(store), f"run{i}"],
            env=env,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for i in range(3)
    ]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], errors
    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("xor").experiment_id])
    assert sorted(r.info.run_name for r in runs) == ["run0", "run1", "run2"]
    assert all(r.info.status == "FINISHED" and r.data.metrics["x"] == 1.0 for r in runs)


def test_bulk_insert_of_a_new_runs_metrics_equals_log_batch(tmp_path):
    """The deferred tracker's bulk insert leaves the same history and latest values as
    MLflow's log_batch, NaN, infinities, a duplicate and an out-of-order step included."""
    from mlflow.entities import Metric

    from runner.tracking.deferred import insert_new_run_metrics

    client = MlflowClient(store_uri(tmp_path))
    experiment = client.create_experiment("bulk")
    points = [Metric("loss", 1.0 / step, 1000 + step, step) for step in range(1, 40)]
    points += [
        Metric("loss", 1.0 / 39, 1039, 39),  # an exact duplicate
        Metric("acc", float("nan"), 5, 1),
        Metric("acc", float("inf"), 6, 3),
        Metric("acc", float("-inf"), 7, 2),  # older step, newer time: not the latest
        Metric("acc", 0.5, 4, 3),  # same step, older time: not the latest
    ]
    by_batch = client.create_run(experiment).info.run_id
    client.log_batch(by_batch, metrics=points)
    by_insert = client.create_run(experiment).info.run_id
    insert_new_run_metrics(client, by_insert, points)

    def stored(run_id: str) -> tuple:
        history = {
            key: sorted(
                (m.step, m.timestamp, str(m.value)) for m in client.get_metric_history(run_id, key)
            )
            for key in ("loss", "acc")
        }
        return history, {k: str(v) for k, v in client.get_run(run_id).data.metrics.items()}

    assert stored(by_insert) == stored(by_batch)
    assert len(stored(by_insert)[0]["loss"]) == 39
