"""The store under another process's lock, or damaged, while a run trains (issue 22, part 3):
a busy store is waited for up to RUNNER_STORE_WAIT and named with the lock's holder, the
training is never lost (its checkpoint and the command that records it), and the last line
names the real cause. The lock is a plain sqlite3 connection of this test, in BEGIN
EXCLUSIVE, so the holder named is this process."""

from __future__ import annotations

import os
import shlex
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from runner.errors import ConfigError, StoreError
from runner.tracking import embedded_store
from runner.tracking.store import forget_connections, open_store
from runner.training import checkpoint
from tests.conftest import pause_layer, paused_model, run_cli, store_uri

QUIET = ["trainer.progress=none", "trainer.plots=false"]
# The lock's holder is named from /proc/locks.
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def new_store(cwd: Path) -> Path:
    """A complete store where runs launched from `cwd` log (as a first run leaves it)."""
    uri, artifacts = embedded_store(str(cwd / "outputs"))
    open_store(uri, "xor", artifacts)
    return cwd / "outputs" / "mlflow.db"


@contextmanager
def locked(db: Path) -> Iterator[sqlite3.Connection]:
    """Another tool's write lock on the store (a backup, a long transaction)."""
    with closing(sqlite3.connect(db, isolation_level=None)) as holder:
        holder.execute("BEGIN EXCLUSIVE")
        try:
            yield holder
        finally:
            holder.execute("ROLLBACK")


def start(cwd: Path, *args: str, wait: float) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env |= {"RUNNER_COMPANION": "1", "RUNNER_STORE_WAIT": str(wait)}
    return subprocess.Popen(
        [sys.executable, "-m", "runner", *args], cwd=cwd, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def read_until(proc: subprocess.Popen, text: str, timeout: float = 120) -> str:
    """The process's output up to the first line holding `text`."""
    seen, deadline = [], time.monotonic() + timeout
    for line in proc.stdout:
        seen.append(line)
        if text in line or time.monotonic() > deadline:
            break
    assert text in seen[-1], "".join(seen)[-3000:]
    return "".join(seen)


def runs_in(db: Path) -> list:
    client = MlflowClient(f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("xor")
    return client.search_runs([experiment.experiment_id]) if experiment else []


def test_a_store_locked_at_the_start_is_waited_for_and_the_run_recorded(tmp_path):
    db = new_store(tmp_path)
    with locked(db):
        proc = start(tmp_path, "trainer.epochs=30", *QUIET, wait=60)
        busy = read_until(proc, "is busy")
        time.sleep(1)  # held a while longer: the run keeps waiting
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    line = busy.splitlines()[-1]
    assert f"the MLflow store {db} is busy: pid {os.getpid()} (" in line, line
    assert "holds a write lock on it; waiting up to 60 s" in line, line
    assert "broken" not in busy + out + err and "Traceback" not in out + err
    (run,) = runs_in(db)
    assert run.info.status == "FINISHED"
    client = MlflowClient(f"sqlite:///{db}")
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) == 30


def test_a_training_finished_under_a_lock_past_the_wait_is_kept_and_recorded_later(tmp_path):
    db = new_store(tmp_path)
    with locked(db):
        # 5 epochs train in a moment: the store's wait ends long after the training.
        proc = run_cli("trainer.epochs=5", *QUIET, cwd=tmp_path, env={"RUNNER_STORE_WAIT": "4"})
    assert proc.returncode == 1, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(
        f"error: the MLflow store {db} is busy: pid {os.getpid()} ("
    ), last  # fmt: skip
    assert "holds a write lock on it, still after 4 s of waiting (set RUNNER_STORE_WAIT" in last
    assert "broken" not in last and "NoneType" not in proc.stdout + proc.stderr
    kept, _, command = last.partition("; all 5 epochs are kept in ")[2].partition("; ")
    saved = checkpoint.load(tmp_path / kept)
    assert saved["epoch"] == 5 and len(saved["history"]) == 5
    assert not runs_in(db)  # the store took nothing
    prefix = "once the store works again, record them with: python -m runner "
    assert command.startswith(prefix), last
    # The store is free: the command records the training, trained once, as a run.
    again = run_cli(*shlex.split(command.removeprefix(prefix)), cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "training starts" not in again.stdout
    (run,) = runs_in(db)
    assert run.info.status == "FINISHED"
    assert run.data.params["trainer.epochs"] == "5"
    client = MlflowClient(f"sqlite:///{db}")
    logged = sorted(
        (m.step, m.value) for m in client.get_metric_history(run.info.run_id, "val_acc")
    )
    assert logged == [(i, row["val_acc"]) for i, row in enumerate(saved["history"], start=1)]
    assert client.search_logged_models(
        [run.info.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}'"
    )


def test_a_longer_run_stopped_by_the_lock_names_it_and_keeps_its_epochs(tmp_path):
    db = new_store(tmp_path)
    with locked(db):
        proc = run_cli("trainer.epochs=3000", *QUIET, cwd=tmp_path, env={"RUNNER_STORE_WAIT": "2"})
    assert proc.returncode == 1, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: the MLflow store {db} is busy: pid {os.getpid()} ("), last
    assert "NoneType" not in proc.stdout + proc.stderr
    kept = last.partition(" of 3000 epochs are kept in ")
    assert kept[1], last
    epochs = int(kept[0].rpartition("the first ")[2])
    saved = checkpoint.load(tmp_path / kept[2].partition(";")[0])
    assert saved["epoch"] == epochs == len(saved["history"]) and 0 < epochs < 3000
    assert last.endswith(f"resume={kept[2].partition(';')[0]}")


# An epoch of at least 0.1 s (one batch through a pausing layer): a run that outlasts the
# moment its store is cut, with few epochs left for the recording command to train.
SLOW = paused_model(batch_size=1000)


def test_a_store_truncated_mid_run_is_named_damaged_in_the_last_line(tmp_path):
    db = new_store(tmp_path)
    (tmp_path / "pause_layer.py").write_text(pause_layer(0.1))
    proc = start(tmp_path, "trainer.epochs=150", *SLOW, *QUIET, wait=60)
    read_until(proc, "MLflow run ")  # the run exists in the store
    os.truncate(db, 8192)  # a disk or a copy cut it short
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 1
    last = err.strip().splitlines()[-1]
    assert last.startswith(
        f"error: the MLflow store {db} is damaged (SQLite: database disk image is malformed): "
        "restore it from a backup"
    ), last
    assert " of 150 epochs are kept in " in last and "NoneType" not in out + err
    # Moved aside, as the message advises: the printed command records the kept epochs (and
    # trains the rest) as a run of the new store.
    db.rename(db.with_suffix(".damaged"))
    prefix = "once the store works again, record them and train the rest with: python -m runner "
    command = last.partition(prefix)[2]
    assert command, last
    again = run_cli(*shlex.split(command), cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    forget_connections()  # this process's own, still to the damaged file
    (run,) = runs_in(db)
    assert run.info.status == "FINISHED" and "resume" not in run.info.run_name
    steps = [
        m.step
        for m in MlflowClient(f"sqlite:///{db}").get_metric_history(run.info.run_id, "val_acc")
    ]
    assert sorted(steps) == list(range(1, 151))


def test_open_store_waits_for_the_documented_limit_and_names_the_holder(tmp_path, monkeypatch):
    db = new_store(tmp_path)
    uri = store_uri(tmp_path)
    monkeypatch.setenv("RUNNER_STORE_WAIT", "1.5")
    with locked(db):
        started = time.monotonic()
        with pytest.raises(StoreError) as caught:
            open_store(uri, "xor", None)
        waited = time.monotonic() - started
    assert 1.5 <= waited < 10, waited
    assert "still after 1.5 s of waiting" in str(caught.value)
    assert f"pid {os.getpid()} (" in str(caught.value)
    monkeypatch.setenv("RUNNER_STORE_WAIT", "soon")
    with pytest.raises(ConfigError, match="RUNNER_STORE_WAIT='soon': not a number of seconds"):
        open_store(uri, "xor", None)
