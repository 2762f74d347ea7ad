"""`python -m runner.ui` for real (issue 11): a light MLflow server on a runner store that
opens on the runs of model-training experiments, with no empty Default in the way."""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from runner.tracking import run_url
from runner.tracking.store import EXPERIMENT_KIND, MODEL_TRAINING
from tests.conftest import free_port, run_cli, store_uri, wait_until

QUIET = ["trainer.epochs=2", "trainer.progress=none", "trainer.log_model=false"]
QUIET += ["trainer.plots=false"]
MAX_PROCESSES = 3  # runner.ui, `mlflow server`, its one uvicorn worker
MAX_RSS = 1024**3  # all of them together, in bytes (`mlflow ui`: 16 processes, ~3.1 GiB)


def readline(proc: subprocess.Popen, timeout: float) -> str:
    """The next line of the process's stdout, waiting at most `timeout` seconds."""
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        assert selector.select(timeout), f"no line within {timeout} s"
    return proc.stdout.readline()


def api(base: str, path: str, body: dict | None = None) -> dict:
    """One call of the server's REST API (POST with a body, else GET)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        f"{base}/api/2.0/mlflow/{path}", data=data, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.load(answer)


def tree(pid: int) -> list[int]:
    """The process and its descendants (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # ended meanwhile
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        found.append(todo.pop())
        todo += children.get(found[-1], [])
    return found


def rss(pid: int) -> int:
    """A process's resident memory in bytes (0 once it ended)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_ui_opens_on_the_runs_of_training_experiments_with_one_light_server(tmp_path):
    proc = run_cli(*QUIET, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # A store from before issue 11: an unmarked experiment and an empty, active Default.
    client = MlflowClient(store_uri(tmp_path))
    experiment = client.get_experiment_by_name("xor")
    assert experiment.tags[EXPERIMENT_KIND] == MODEL_TRAINING  # the runner marks what it makes
    assert client.get_experiment("0").lifecycle_stage == "deleted"  # and hides Default
    client.delete_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND)
    client.restore_experiment("0")

    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    ui = subprocess.Popen(
        [sys.executable, "-m", "runner.ui", "--store-dir", str(tmp_path / "outputs")]
        + ["--port", str(port)],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        line = readline(ui, timeout=120)
        base = f"http://127.0.0.1:{port}"
        url = f"{base}/#/experiments/{experiment.experiment_id}/runs?workflowType=machine_learning"
        url += "&viewStateShareKey=runner"  # the runner's view of the runs table: its columns
        assert line.split() == ["MLflow", "UI:", url, "(Ctrl-C", "stops", "it)"], line
        # That view shows the primary metric and the params given on the command line.
        view = client.get_experiment(experiment.experiment_id).tags["mlflow.sharedViewState.runner"]
        columns = json.loads(view)["selectedColumns"]
        # The kept (best) epoch's value first: the weights the run ended with, as its closing
        # line and the sweep report give them; then the last epoch's.
        assert columns[:3] == [
            "metrics.`best_val_acc`", "metrics.`val_acc`", "params.`trainer.epochs`"
        ], columns  # fmt: skip
        assert "params.`trainer.progress`" not in columns  # (no difference between runs)
        assert "attributes.`Source`" in columns
        # The experiment is marked again; Default is hidden again (restorable, not shown).
        (shown,) = api(base, "experiments/search", {"max_results": 100})["experiments"]
        assert shown["name"] == "xor"
        assert {"key": EXPERIMENT_KIND, "value": MODEL_TRAINING} in shown["tags"]
        default = api(base, "experiments/get?experiment_id=0")["experiment"]
        assert default["lifecycle_stage"] == "deleted"
        # One light server.
        pids = tree(ui.pid)
        memory = sum(rss(pid) for pid in pids)
        print(f"{len(pids)} processes, {memory / 2**20:.0f} MiB resident")
        assert len(pids) <= MAX_PROCESSES and memory < MAX_RSS
    finally:
        ui.send_signal(signal.SIGTERM)  # as Ctrl-C: the server is stopped cleanly
        try:
            out, err = ui.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            for pid in tree(ui.pid)[::-1]:
                os.kill(pid, signal.SIGKILL)
            raise
    assert ui.returncode == 0, err
    assert "warning" not in (out + err).lower(), err
    # The UI waited for `mlflow server`; its uvicorn worker ends a moment after that.
    wait_until(
        lambda: not [pid for pid in pids if rss(pid)], "every server process ended", timeout=5
    )


def test_the_ui_of_a_store_not_made_yet_says_so_in_one_line(tmp_path):
    proc = run_cli("--store-dir", str(tmp_path / "outputs"), cwd=tmp_path, module="runner.ui")
    assert proc.returncode == 1
    (line,) = proc.stderr.strip().splitlines()
    assert line == f"error: no MLflow store at {tmp_path / 'outputs' / 'mlflow.db'} yet: " + (
        "`make run` (python -m runner) makes one"
    )
    assert not (tmp_path / "outputs").exists()  # nothing made in its place


def test_run_urls_point_at_the_run_page_of_the_ui():
    assert run_url("sqlite:///x/mlflow.db", "1", "abc") == (
        "http://127.0.0.1:5000/#/experiments/1/runs/abc?workflowType=machine_learning"
    )
    assert run_url("http://tracking:8080/", "2", "def", "artifacts") == (
        "http://tracking:8080/#/experiments/2/runs/def/artifacts?workflowType=machine_learning"
    )


def test_a_port_a_stopped_ui_left_in_time_wait_is_free_again():
    """Stopped after a browser's request, the server's side of that connection lingers in
    TIME_WAIT for a minute: the server can bind again at once, so the check must say free."""
    import socket

    from runner.ui import port_free

    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        with socket.create_connection(("127.0.0.1", port)) as client:
            accepted, _ = server.accept()
            accepted.close()  # the server closes first: its side goes to TIME_WAIT
            client.recv(1)
        assert not port_free("127.0.0.1", port)  # listening: taken
    assert port_free("127.0.0.1", port)
