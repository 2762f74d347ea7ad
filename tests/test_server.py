"""A team tracking server for real: `mlflow server` on PostgreSQL with served artifacts,
started and stopped by the project's own script (cluster/tracking_server.py), with sweeps
and many writers logging to it at once."""

from __future__ import annotations

import base64
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import (
    PROJECT,
    free_port,
    run_cli,
    start_service,
    stop_service,
    tails,
    wait_until,
)
from tests.test_sweeps import assert_one_sweep

SCRIPT = PROJECT / "cluster" / "tracking_server.py"
QUIET = ["trainer.progress=none", "trainer.log_model=false", "trainer.plots=false"]


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> str:
    """The tracking URI of a server started for these tests (stopped after them)."""
    folder = tmp_path_factory.mktemp("team-server")
    yield start_service(SCRIPT, folder)
    pg_home = Path((folder / "pg.path").read_text())
    stop_service(SCRIPT, folder, "--purge")
    assert not pg_home.exists()  # PostgreSQL stopped, its database deleted


LAUNCHERS = {
    "joblib": ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
    # One stacked group: runs made while it trains, completed by forked writers.
    "stacked": ["hydra/launcher=stacked"],
}


# The tests on the module's server run on one worker under `--dist loadgroup`: each worker
# would start a server (PostgreSQL and MLflow, about 11 s of CPU) of its own.
ON_THE_SERVER = pytest.mark.xdist_group("team-server")


@ON_THE_SERVER
@pytest.mark.parametrize("launcher", LAUNCHERS.values(), ids=LAUNCHERS.keys())
def test_a_parallel_sweep_logs_to_the_postgresql_server(server, tmp_path, launcher):
    experiment = f"xor_{launcher[0].split('=')[1]}"  # (the same jobs in one would be skipped)
    proc = run_cli(
        "-m", *launcher, "seed=range(1,9)", "model=xor_linear", "trainer.epochs=5", *QUIET,
        f"tracking.uri={server}", f"tracking.experiment={experiment}", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, tails(proc)
    assert not (tmp_path / "outputs" / "mlflow.db").exists()  # nothing went to a local store
    client = MlflowClient(server)
    parent, jobs = assert_one_sweep(client, 8, 5, experiment)
    assert parent.data.tags["runner.best_run"] in {r.info.run_id for r in jobs}
    stacked = "stacked" in launcher[0]
    assert all((r.data.tags.get("runner.stacked") == "8") == stacked for r in jobs)
    files = {a.path for a in client.list_artifacts(jobs[0].info.run_id, "checkpoints")}
    assert files == {"checkpoints/last.pt"}  # artifacts went through the server


# Many writers at once, each as a sweep job writes: its own run, buffered metric batches.
WRITER = r"""
import multiprocessing as mp, sys
from mlflow.tracking import MlflowClient
from runner.config.spec import TrackingSpec
from runner.tracking.mlflow_tracker import MlflowTracker

def write(uri, barrier, k):
    tracker = MlflowTracker(TrackingSpec(uri=uri, experiment="writers"))
    barrier.wait()
    with tracker.run(f"writer {k}", {"writer": str(k)}):
        tracker.log_params({"k": str(k)})
        for step in range(1, 51):
            tracker.log_metrics({f"m{i}": step + i / 10 for i in range(4)}, step=step)

if __name__ == "__main__":
    uri, count = sys.argv[1], int(sys.argv[2])
    barrier = mp.Barrier(count)
    procs = [mp.Process(target=write, args=(uri, barrier, k)) for k in range(count)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    print(sum(p.exitcode == 0 for p in procs))
"""


@ON_THE_SERVER
def test_sixteen_writers_at_once_lose_no_run_or_metric_point(server):
    proc = subprocess.run(
        [sys.executable, "-c", WRITER, server, "16"],
        cwd=PROJECT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == "16"  # processes that ended well
    client = MlflowClient(server)
    experiment = client.get_experiment_by_name("writers").experiment_id
    runs = client.search_runs([experiment], max_results=100)
    assert sorted(int(r.data.tags["writer"]) for r in runs) == list(range(16))
    points = 0
    for run in runs:
        assert run.info.status == "FINISHED"
        for i in range(4):
            history = client.get_metric_history(run.info.run_id, f"m{i}")
            assert [m.step for m in sorted(history, key=lambda m: m.step)] == list(range(1, 51))
            points += len(history)
    assert points == 16 * 4 * 50


@ON_THE_SERVER
def test_predict_and_evaluate_read_a_run_from_the_server(server, tmp_path):
    """The commands that use a trained run find it, its config and its model on the team
    server (`--tracking-uri`), and evaluate logs its run there: no local store is made."""
    trained = run_cli(
        "experiment=house_tiny", "trainer.epochs=3", "trainer.plots=false",
        "trainer.progress=none", f"tracking.uri={server}", "tracking.experiment=houses",
        cwd=tmp_path,
    )  # fmt: skip
    assert trained.returncode == 0, tails(trained)
    client = MlflowClient(server)
    (run,) = client.search_runs([client.get_experiment_by_name("houses").experiment_id])
    rows = PROJECT / "data" / "house_tiny.csv"
    where = ["--tracking-uri", server]
    predicted = run_cli(
        "houses", "--input", str(rows), "--output", "prices.csv", *where, cwd=tmp_path,
        module="runner.predict",
    )  # fmt: skip
    assert predicted.returncode == 0, tails(predicted)
    import mlflow.pyfunc
    import pandas as pd

    mlflow.set_tracking_uri(server)
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    table = pd.read_csv(rows).drop(columns=["Price"])
    written = pd.read_csv(tmp_path / "prices.csv")
    assert written["prediction"].tolist() == pytest.approx(list(model.predict(table)), rel=1e-6)
    evaluated = run_cli(run.info.run_id, "--split", "train", *where, cwd=tmp_path,
                        module="runner.evaluate")  # fmt: skip
    assert evaluated.returncode == 0, tails(evaluated)
    (evaluation,) = client.search_runs(
        [run.info.experiment_id], f"tags.`runner.evaluates` = '{run.info.run_id}'"
    )
    assert evaluation.info.status == "FINISHED" and "eval_rmse" in evaluation.data.metrics
    assert not (tmp_path / "outputs" / "mlflow.db").exists()  # nothing went to a local store


INVALID_HOST = "Invalid Host header - possible DNS rebinding attack detected"  # MLflow's


def ask(
    port: int, host: str, origin: str | None = None, account: tuple[str, str] | None = None
) -> tuple[int, str]:
    """POST an experiments search to 127.0.0.1:`port` under Host `host` (and Origin
    `origin`, signed in as `account`); the status and body. Loopback only, whatever the name."""
    headers = {"Host": host, "Content-Type": "application/json"}
    if origin:
        headers["Origin"] = origin
    if account:
        headers["Authorization"] = "Basic " + base64.b64encode(":".join(account).encode()).decode()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        path = "/api/2.0/mlflow/experiments/search"
        connection.request("POST", path, body='{"max_results": 1}', headers=headers)
        response = connection.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        connection.close()


def listening(port: int) -> bool:
    """Whether something takes connections on 127.0.0.1:`port`."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2):
            return True
    except OSError:
        return False


def test_stop_keeps_the_database_and_a_new_start_serves_the_same_runs(tmp_path):
    """What `stop` promises: both servers stopped (nothing answers on the MLflow server's
    port or PostgreSQL's), the database kept: started again on the same folder, this time on
    every interface (`--host 0.0.0.0`, no logins as told), it serves the same run with its
    params, metrics and artifact; it prints the URI by this machine's name and takes that
    name as a Host header, and refuses others. `stop --purge` deletes the database."""
    folder, port = tmp_path / "again", free_port()
    network = ["--host", "0.0.0.0", "--no-auth-on-network"]
    name = socket.gethostname()
    try:
        client = MlflowClient(start_service(SCRIPT, folder, "--port", str(port)))
        run_id = client.create_run(client.create_experiment("kept"), run_name="kept").info.run_id
        client.log_param(run_id, "lr", "0.1")
        for step, loss in ((1, 0.5), (2, 0.25)):
            client.log_metric(run_id, "loss", loss, step=step)
        client.log_text(run_id, "its notes", "notes.txt")  # through the server, to its store
        client.set_terminated(run_id)
        pg_home, pg_port = Path((folder / "pg.path").read_text()), (folder / "pg.port").read_text()
        stop_service(SCRIPT, folder)
        assert not listening(port) and not listening(int(pg_port))  # both stopped
        assert start_service(SCRIPT, folder, "--port", str(port), *network) == (
            f"http://{name}:{port}"
        )
        local = MlflowClient(f"http://localhost:{port}")  # the tests reach it through loopback
        kept = local.get_run(run_id)
        assert (kept.info.status, kept.info.run_name) == ("FINISHED", "kept")
        assert kept.data.params == {"lr": "0.1"}
        history = local.get_metric_history(run_id, "loss")
        assert sorted((m.step, m.value) for m in history) == [(1, 0.5), (2, 0.25)]
        notes = local.download_artifacts(run_id, "notes.txt", str(tmp_path))
        assert Path(notes).read_text() == "its notes"
        assert ask(port, f"{name}:{port}")[0] == 200
        assert ask(port, f"evil.example:{port}") == (403, INVALID_HOST)
        pg_port = (folder / "pg.port").read_text()
    finally:
        stop_service(SCRIPT, folder, "--purge")
    assert not listening(port) and not listening(int(pg_port))
    assert not pg_home.exists() and not (folder / "pg.path").exists()  # the database deleted


def test_a_sweep_outlives_a_restart_of_its_tracking_server(tmp_path):
    """The MLflow server killed while a sweep's first job trains and started again on the
    same database and port: the clients retry, and the parent and both jobs end FINISHED
    with every epoch's metrics."""
    folder, port = tmp_path / "restarted", str(free_port())
    uri = start_service(SCRIPT, folder, "--port", port)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    sweep = subprocess.Popen(
        [sys.executable, "-m", "runner", "-m", "seed=1,2", "model=xor_deep",
         "trainer.epochs=300", *QUIET, f"tracking.uri={uri}", "tracking.experiment=restart"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        client = MlflowClient(uri)

        def logged() -> bool:
            experiment = client.get_experiment_by_name("restart")
            runs = client.search_runs([experiment.experiment_id]) if experiment else []
            return any(r.data.metrics for r in runs)

        wait_until(logged, "the first job training, with some epochs stored", proc=sweep)
        os.killpg(int((folder / "mlflow-server.pid").read_text()), signal.SIGKILL)
        # Not a wait for something: the outage under test, a while long as a crash's is.
        time.sleep(3)
        assert start_service(SCRIPT, folder, "--port", port) == uri
        out, err = sweep.communicate(timeout=300)
        assert sweep.returncode == 0, out[-2000:] + err[-2000:]
        parent, jobs = assert_one_sweep(client, 2, 300, experiment="restart")
        assert parent.info.status == "FINISHED"
    finally:
        sweep.kill()
        stop_service(SCRIPT, folder, "--purge", check=False)


def test_the_script_will_not_open_a_server_without_logins_to_the_network(tmp_path):
    """`--host 0.0.0.0` without `--auth`: refused in one line naming both ways out, before
    anything starts."""
    folder = tmp_path / "open"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "start", "--dir", str(folder), "--host", "0.0.0.0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 1 and not proc.stdout
    (line,) = proc.stderr.strip().splitlines()
    assert "--host 0.0.0.0" in line and "--auth" in line and "--no-auth-on-network" in line
    assert not folder.exists()


def test_a_server_with_logins_takes_runs_that_sign_in_and_refuses_others(tmp_path, monkeypatch):
    """`--auth` on every interface (`--host 0.0.0.0`), the reachable team setup: the admin
    from MLFLOW_TRACKING_USERNAME/PASSWORD; a run with them through localhost logs, a run
    without or with a wrong password fails at once in one line; a Host header or a browser
    Origin not in `--allowed-hosts` is refused; the password is in no file the server or
    the script wrote."""
    password = "not-in-any-file-7f3a"
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
    folder, port = tmp_path / "server", free_port()
    network = ["--host", "0.0.0.0", "--allowed-hosts", "team.example"]
    printed = start_service(SCRIPT, folder, "--auth", "--port", str(port), *network)
    try:
        assert printed == f"http://team.example:{port}"  # the name teammates use
        uri = f"http://localhost:{port}"  # 127.0.0.1 under a listed name (loopback always is)
        run = [f"tracking.uri={uri}", "model=xor_linear", "trainer.epochs=3", *QUIET]
        signed_in = run_cli(*run, cwd=tmp_path)
        assert signed_in.returncode == 0, tails(signed_in)
        (logged,) = MlflowClient(uri).search_runs(
            [MlflowClient(uri).get_experiment_by_name("xor").experiment_id]
        )
        assert logged.info.status == "FINISHED"
        for wrong in ({"MLFLOW_TRACKING_PASSWORD": "guess"}, {"MLFLOW_TRACKING_USERNAME": ""}):
            started = time.monotonic()
            refused = run_cli(*run, cwd=tmp_path, env=wrong)
            assert refused.returncode == 1 and time.monotonic() - started < 15
            (line,) = refused.stderr.strip().splitlines()
            assert f"the MLflow tracking server {uri} refuses" in line and "HTTP 401" in line
        alice = ("alice", password)
        listed, origin = f"team.example:{port}", f"http://team.example:{port}"
        assert ask(port, listed, origin, alice)[0] == 200  # the UI's own origin
        assert ask(port, listed, account=None)[0] == 401  # named right, but not signed in
        assert ask(port, f"evil.example:{port}", account=alice) == (403, INVALID_HOST)
        assert ask(port, "team.example:1", account=alice) == (403, INVALID_HOST)  # other port
        assert ask(port, listed, "http://evil.example", alice)[0] == 403  # a foreign page
        written = [p for p in folder.rglob("*") if p.is_file()]
        assert not [p for p in written if password in p.read_text(errors="replace")]
    finally:
        stop_service(SCRIPT, folder, "--purge", check=False)
