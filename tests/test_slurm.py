"""Sweeps on a real Slurm cluster (a single node on this machine, started and stopped by
cluster/slurm.py), logging to the PostgreSQL-backed team tracking server."""

from __future__ import annotations

import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import PROJECT, run_cli, tails
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
    start = subprocess.run(
        [sys.executable, str(SCRIPT), "start", "--dir", str(folder)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    if start.returncode != 0:
        subprocess.run([sys.executable, str(SCRIPT), "stop", "--dir", str(folder)], timeout=120)
        reason = (start.stderr.strip().splitlines() or ["no message"])[-1]
        if "is not installed" in reason:  # no root or no packages: it cannot start here
            pytest.skip(f"no Slurm cluster here: {reason}")
        pytest.fail(f"the Slurm cluster did not start: {start.stdout}{start.stderr}")
    yield start.stdout.strip().splitlines()[-1]
    subprocess.run([sys.executable, str(SCRIPT), "stop", "--dir", str(folder)], timeout=120)


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
