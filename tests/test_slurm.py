"""Sweeps on a real Slurm cluster (a single node on this machine, started and stopped by
cluster/slurm.py), logging to the PostgreSQL-backed team tracking server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import pause_layer, paused_model, run_cli, store_uri, tails, wait_until
from tests.test_server import server  # noqa: F401 (the fixture, one server for this module)
from tests.test_sweeps import assert_one_sweep, split_runs

# The shared Slurm cluster (tests/conftest.py's `slurm_conf`), and the README's, on one
# worker: one cluster at a time on this machine (munged is shared).
pytestmark = pytest.mark.xdist_group("slurm")

QUIET = ["trainer.progress=none", "trainer.log_model=false", "trainer.plots=false"]
# Two one-CPU jobs at a time on this 2-core node.
SLURM = ["hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2"]


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
    states: list[str] = []

    def completed() -> bool:
        states[:] = subprocess.run(
            ["sacct", "-n", "-X", "-P", "-o", "State"],
            env={**os.environ, "SLURM_CONF": slurm_conf}, capture_output=True, text=True,
            check=True,
        ).stdout.split()  # fmt: skip
        return states.count("COMPLETED") >= 8

    wait_until(completed, lambda: f"8 COMPLETED jobs in sacct (it says {states})", 20, 0.5)
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

    def training() -> list:
        experiment = client.get_experiment_by_name("cancel")
        runs = client.search_runs([experiment.experiment_id]) if experiment else []
        return [r for r in runs if "runner.is_sweep" not in r.data.tags and r.data.metrics]

    wait_until(lambda: len(training()) == 2, "both jobs training", 240, 0.5, proc=sweep)
    experiment = client.get_experiment_by_name("cancel")
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


# A layer that passes its input on after a pause while training: epochs of a known least
# length (0.2 s with 5 batches) whatever the machine's load, so that the job below surely
# needs more training than one time limit allows.
PAUSE_LAYER = pause_layer(0.04)
PAUSED = paused_model(batch_size=20)
# A one-minute limit (Slurm's least), warned 10 s ahead. Slurm looks at its limits every 30 s,
# so the warning comes 20 to 50 s after a job starts (the job trains at most ~46 s of it), and
# its kill at the next look, 30 s later.
LIMIT = ["hydra.launcher.timeout_min=1", "hydra.launcher.signal_delay_s=10"]


def test_a_job_longer_than_its_time_limit_continues_its_run_until_it_finishes(
    slurm_conf,
    server,  # noqa: F811
    tmp_path,
):
    """300 epochs of at least 0.2 s: 60 s of training, more than a time limit's worth. Warned
    of its limit while not allowed a requeue, the job stops after its epoch and its run ends
    KILLED, saying why; the same command again continues that run, requeued by Slurm after
    each limit, until it ends FINISHED with every epoch logged once, equal to a run never
    cut."""
    epochs = 300
    job = ["seed=1", *PAUSED, f"trainer.epochs={epochs}", *QUIET]
    for folder in (tmp_path, tmp_path / "reference"):
        folder.mkdir(exist_ok=True)
        (folder / "pause_layer.py").write_text(PAUSE_LAYER)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    reference = subprocess.Popen(  # the same job never cut, meanwhile, in a store of its own
        [sys.executable, "-m", "runner", *job], cwd=tmp_path / "reference", env=env,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    sweep = ["-m", *SLURM, *job, *LIMIT, f"tracking.uri={server}", "tracking.experiment=limits"]
    env["SLURM_CONF"] = slurm_conf

    # Not allowed a requeue, warned of its limit early (as Slurm warns it, by the test here:
    # Slurm's own comes at a time the job's speed cannot be matched to).
    first = subprocess.Popen(
        [sys.executable, "-m", "runner", *sweep, "hydra.launcher.max_num_timeout=0"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    client = MlflowClient(server)

    def training() -> bool:
        experiment = client.get_experiment_by_name("limits")
        runs = client.search_runs([experiment.experiment_id]) if experiment else []
        return any("runner.is_sweep" not in r.data.tags and r.data.metrics for r in runs)

    wait_until(training, "the job training", 240, 0.5, proc=first)
    queue = subprocess.run(["squeue", "-h", "-o", "%i"], env=env, capture_output=True, text=True)
    (slurm_job,) = queue.stdout.split()
    subprocess.run(["scancel", "--signal=USR2", slurm_job], env=env, check=True)
    out, _ = first.communicate(timeout=300)
    assert first.returncode == 1, out[-3000:]  # a job did not finish
    (parent,), (cut,) = split_runs(client, "limits")
    assert cut.info.status == "KILLED", out[-3000:]  # not FAILED mid-epoch, as submitit's own
    reason = cut.data.tags["runner.stopped_by"]
    assert reason.startswith("the time limit of Slurm job ") and "not requeued" in reason
    assert f"(run): KILLED {reason}" in out  # the sweep's report says why
    trained = [m.step for m in client.get_metric_history(cut.info.run_id, "train_loss")]
    assert trained == list(range(1, len(trained) + 1)) and len(trained) < epochs

    # Allowed requeues, it meets Slurm's own time limit at least once more.
    again = run_cli(*sweep, "hydra.launcher.max_num_timeout=5", cwd=tmp_path,
                    env={"SLURM_CONF": slurm_conf}, timeout=600)  # fmt: skip
    assert again.returncode == 0, tails(again)
    (parent,), (done,) = split_runs(client, "limits")
    assert parent.info.status == "FINISHED"
    assert done.info.run_id == cut.info.run_id and done.info.status == "FINISHED"
    assert "runner.stopped_by" not in done.data.tags  # (it went on each time)
    logs = "".join(p.read_text() for p in tmp_path.glob("outputs/multirun/*/*/.submitit/*/*.out"))
    assert "; requeued to continue from its checkpoint" in logs, logs[-3000:]
    assert logs.count("resuming at epoch") >= 2, logs[-3000:]  # continued, then requeued

    out, _ = reference.communicate(timeout=600)
    assert reference.returncode == 0, out[-3000:]
    ref_client = MlflowClient(store_uri(tmp_path / "reference"))
    (ref,) = ref_client.search_runs([ref_client.get_experiment_by_name("xor").experiment_id])
    assert set(done.data.metrics) == set(ref.data.metrics)
    for key in ref.data.metrics:  # every epoch once, bit for bit as if never cut
        points = [(m.step, m.value) for m in client.get_metric_history(done.info.run_id, key)]
        expected = [(m.step, m.value) for m in ref_client.get_metric_history(ref.info.run_id, key)]
        assert sorted(points) == sorted(expected), key
        once = key.startswith(("best_", "test_"))  # logged at the end: the kept weights'
        assert len({step for step, _ in points}) == len(points) == (1 if once else epochs), key


WARNED = """
import signal
from runner.training import signals


signals.install()
with signals.stop_on_signals():  # a job trains
    signals.warned(signal.SIGUSR2, "the warning")
    assert signals.STOP.signum == signal.SIGUSR2  # it stops after its epoch
    signals.warned(signal.SIGUSR2, "the warning")  # (a second warning changes nothing)
    try:
        signal.raise_signal(signal.SIGTERM)  # the limit's own signal: it stops at once
        raise AssertionError("not stopped at once")
    except signals.Interrupted as err:
        assert err.at_once and err.signum == signal.SIGTERM
signals.warned(signal.SIGUSR2, "the warning")  # a run's end being written: only noted
print("noted", signals.interrupted())
"""


def test_slurms_warning_stops_a_job_after_its_epoch_and_never_at_once():
    done = subprocess.run([sys.executable, "-c", WARNED], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["noted", str(int(signal.SIGUSR2))]
