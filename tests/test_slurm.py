"""Sweeps on a real Slurm cluster (a single node on this machine, started and stopped by
cluster/slurm.py), logging to the PostgreSQL-backed team tracking server."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import PROJECT, run_cli, start_service, stop_service, tails
from tests.test_server import server  # noqa: F401 (the fixture, one server for this module)
from tests.test_sweeps import assert_one_sweep, split_runs

SCRIPT = PROJECT / "cluster" / "slurm.py"
QUIET = ["trainer.progress=none", "trainer.log_model=false", "trainer.plots=false"]
# Two one-CPU jobs at a time on this 2-core node.
SLURM = ["hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2"]


@pytest.fixture(scope="module")
def slurm_conf(tmp_path_factory) -> str:
    """The slurm.conf of a one-node cluster started for these tests (stopped after them)."""
    folder = tmp_path_factory.mktemp("slurm")
    yield start_service(SCRIPT, folder)
    stop_service(SCRIPT, folder, check=False)


def test_an_eight_job_sweep_on_slurm_logs_to_the_team_server(slurm_conf, server, tmp_path):  # noqa: F811
    proc = run_cli(
        "-m", *SLURM, "seed=range(1,9)", "model=xor_linear", "trainer.epochs=5", *QUIET,
        f"tracking.uri={server}", cwd=tmp_path, env={"SLURM_CONF": slurm_conf}, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, tails(proc)
    client = MlflowClient(server)
    parent, jobs = assert_one_sweep(client, 8, 5)
    assert parent.data.tags["runner.best_run"] in {r.info.run_id for r in jobs}
    # Each job ran in a Slurm job of its own, on the node, not in the launching process.
    assert len({r.data.tags["runner.pid"] for r in jobs}) == 8
    # Accounting (slurmdbd) knows how each ended, so submitit asked sacct, not guessed. (Its
    # record of the last job's end may lag the job by a moment.)
    deadline = time.time() + 20
    while True:
        states = subprocess.run(
            ["sacct", "-n", "-X", "-P", "-o", "State"],
            env={**os.environ, "SLURM_CONF": slurm_conf}, capture_output=True, text=True,
            check=True,
        ).stdout.split()  # fmt: skip
        if states.count("COMPLETED") >= 8 or time.time() > deadline:
            break
        time.sleep(0.5)
    assert states.count("COMPLETED") >= 8, " ".join(states)
    assert "sacct" not in proc.stdout + proc.stderr  # submitit's "sacct is disabled" warning


def test_a_job_that_raises_on_slurm_fails_alone(slurm_conf, server, tmp_path):  # noqa: F811
    proc = run_cli(
        "-m", *SLURM, "experiment=house_tiny", "optim=sgd", "optim.lr=1e6,0.01",
        "trainer.epochs=30", *QUIET, f"tracking.uri={server}", cwd=tmp_path,
        env={"SLURM_CONF": slurm_conf}, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 1, tails(proc)  # the sweep says a job failed, and nothing hangs
    client = MlflowClient(server)
    (parent,), jobs = split_runs(client, "house_tiny")
    assert parent.info.status == "FAILED"
    status = {r.data.params["optim.lr"]: r.info.status for r in jobs}
    assert status == {"1000000.0": "FAILED", "0.01": "FINISHED"}
    assert "NonFiniteLoss" in jobs[0].data.tags.get("error", "") + jobs[1].data.tags.get(
        "error", ""
    )


def test_a_cancelled_job_ends_killed_and_the_same_sweep_again_continues_only_it(
    slurm_conf,
    server,  # noqa: F811
    tmp_path,
):
    args = ["-m", *SLURM, "seed=1,2", "model=xor_linear", "trainer.epochs=400", *QUIET]
    args += [f"tracking.uri={server}", "tracking.experiment=cancel"]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["SLURM_CONF"] = slurm_conf
    sweep = subprocess.Popen(
        [sys.executable, "-m", "runner", *args], cwd=tmp_path, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    client = MlflowClient(server)
    deadline = time.time() + 240
    while True:  # both jobs train and have logged metrics
        experiment = client.get_experiment_by_name("cancel")
        runs = client.search_runs([experiment.experiment_id]) if experiment else []
        training = [r for r in runs if "runner.is_sweep" not in r.data.tags and r.data.metrics]
        if len(training) == 2:
            break
        assert time.time() < deadline and sweep.poll() is None, "the jobs never trained"
        time.sleep(0.5)
    queue = subprocess.run(["squeue", "-h", "-o", "%i"], env=env, capture_output=True, text=True)
    (first,) = [job for job in queue.stdout.split() if job.endswith("_0")]  # seed=1's job
    subprocess.run(["scancel", first], env=env, check=True)
    out, err = sweep.communicate(timeout=300)
    assert sweep.returncode == 1, out[-3000:] + err[-3000:]  # a job did not finish
    # Slurm's SIGTERM stopped the job after its epoch: its run ended KILLED with a checkpoint.
    done = client.search_runs([experiment.experiment_id])
    (cancelled,) = [r for r in done if r.data.params.get("seed") == "1"]
    assert cancelled.info.status == "KILLED", out[-3000:] + err[-3000:]
    assert "runner.checkpoint" in cancelled.data.tags
    seed2 = {r.info.run_id for r in done
             if r.data.params.get("seed") == "2" and r.info.status == "FINISHED"}  # fmt: skip
    assert len(seed2) == 1

    again = run_cli(*args, cwd=tmp_path, env={"SLURM_CONF": slurm_conf}, timeout=600)
    assert again.returncode == 0, tails(again)
    runs = [r for r in client.search_runs([experiment.experiment_id])
            if "runner.is_sweep" not in r.data.tags]  # fmt: skip
    by_status = sorted((r.data.params.get("seed", "?"), r.info.status) for r in runs)
    # The cancelled job's run went on from its checkpoint; seed 2 was not trained again.
    assert by_status == [("1", "FINISHED"), ("2", "FINISHED")], by_status
    assert {cancelled.info.run_id, *seed2} == {r.info.run_id for r in runs}
