"""Runs that meet other runs: one folder and one writer per run, no job trained twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from mlflow.tracking import MlflowClient

from tests.conftest import (
    pause_layer,
    paused_model,
    ready_store,
    run_cli,
    store_uri,
    tails,
    wait_until,
)

QUIET = ["trainer.plots=false", "trainer.log_model=false", "trainer.progress=lines"]


def popen(cwd: Path, *args: str) -> subprocess.Popen:
    """`python -m runner ARGS` started in the background (its own process group, as a
    shell's job), its output in `proc.log`."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["RUNNER_COMPANION"] = "1"
    log = cwd / f"launch-{time.monotonic_ns()}.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "runner", *args], cwd=cwd, env=env, text=True,
        stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    proc.log = log
    return proc


def output(proc: subprocess.Popen, timeout: float = 300) -> str:
    """Wait for the process; all it printed."""
    proc.wait(timeout=timeout)
    return proc.log.read_text()


def wait_for_line(proc: subprocess.Popen, text: str) -> str:
    """Wait until the process has printed `text`; what it printed so far."""
    return wait_until(
        lambda: text in proc.log.read_text() and proc.log.read_text(), f"a line with {text!r}"
    )


def running_run(cwd: Path):
    """Wait until the store holds a RUNNING run, and return it."""

    def found():
        try:
            return [r for r in xor_runs(cwd)[1] if r.info.status == "RUNNING"]
        except Exception:  # the store or the experiment is still being made
            return None

    return wait_until(found, "a RUNNING run in the store")[0]


def xor_runs(cwd: Path) -> tuple[MlflowClient, list]:
    client = MlflowClient(store_uri(cwd))
    exp = client.get_experiment_by_name("xor")
    return client, client.search_runs([exp.experiment_id], order_by=["attributes.start_time"])


def test_runs_started_in_the_same_second_each_have_their_own_folder_and_checkpoint(tmp_path):
    procs = [
        popen(tmp_path, f"seed={seed}", "trainer.epochs=12", "trainer.checkpoint_every=5", *QUIET)
        for seed in range(1, 5)  # four at once: more than the cores, all in one second
    ]
    outputs = [output(p) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, "\n".join(o[-1500:] for o in outputs)
    assert not any("Traceback" in o for o in outputs)
    client, runs = xor_runs(tmp_path)
    assert [r.info.status for r in runs] == ["FINISHED"] * 4
    paths = {r.info.run_id: Path(r.data.tags["runner.checkpoint"]) for r in runs}
    assert len(set(paths.values())) == 4  # four folders, four checkpoints
    for run_id, path in paths.items():
        assert torch.load(path, weights_only=True)["run_id"] == run_id
    # Each is resumable: one run continued for more epochs from its own id stays itself.
    first = runs[0]
    seed = first.data.params["seed"]
    more = run_cli(f"seed={seed}", "trainer.epochs=12", f"resume={first.info.run_id}", *QUIET,
                   cwd=tmp_path)  # fmt: skip
    assert more.returncode == 1 and "already trained all 12 epochs" in more.stderr
    assert first.info.run_id in more.stderr and "config error" not in more.stderr
    empty = run_cli(f"seed={seed}", "trainer.epochs=12", "resume=", *QUIET, cwd=tmp_path)
    assert empty.returncode == 1 and "resume: empty" in empty.stderr


def test_two_sweeps_started_at_once_each_hold_only_their_own_jobs(tmp_path):
    args = ["-m", "trainer.epochs=5", *QUIET]
    first = popen(tmp_path, *args, "seed=1,2")
    second = popen(tmp_path, *args, "seed=3,4")
    outs = [output(p) for p in (first, second)]
    assert [first.returncode, second.returncode] == [0, 0], "\n".join(o[-2000:] for o in outs)
    client, runs = xor_runs(tmp_path)
    parents = [r for r in runs if r.data.tags.get("runner.sweep_fingerprint")]
    assert len(parents) == 2
    for parent in parents:
        jobs = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        seeds = sorted(r.data.params["seed"] for r in jobs)
        assert seeds in (["1", "2"], ["3", "4"]), seeds
        assert len({r.data.tags["runner.checkpoint"] for r in jobs}) == 2
    sweep_dirs = {p.data.tags["runner.sweep"] for p in parents}
    assert len(sweep_dirs) == 2


def test_a_run_still_training_cannot_be_resumed_until_its_process_is_gone(tmp_path):
    ready_store(tmp_path)
    # Epochs that wait rather than compute: the run keeps training, leaving the cores free.
    (tmp_path / "pause_layer.py").write_text(pause_layer(0.05))
    args = ["trainer.epochs=3000", "trainer.checkpoint_every=1", *paused_model(1000), *QUIET]
    proc = popen(tmp_path, *args)
    run = running_run(tmp_path)
    second = run_cli(*args, f"resume={run.info.run_id}", cwd=tmp_path)
    assert second.returncode == 1, tails(second)
    last = second.stderr.strip().splitlines()[-1]
    assert f"run {run.info.run_id} is still training in process {proc.pid}" in last, last
    assert f"kill -INT {proc.pid}" in last
    os.killpg(proc.pid, signal.SIGINT)
    output(proc, timeout=60)
    client, (run,) = xor_runs(tmp_path)
    assert run.info.status == "KILLED"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_acc")]
    assert len(steps) == len(set(steps))  # nothing was logged twice


def test_a_second_launch_of_a_running_sweep_is_refused_and_no_job_trains_twice(tmp_path):
    ready_store(tmp_path)
    args = ["-m", "seed=1,2", "trainer.epochs=150", *QUIET]
    first = popen(tmp_path, *args)
    running_run(tmp_path)
    second = run_cli(*args, cwd=tmp_path)
    assert second.returncode == 1, tails(second)
    assert "this sweep is already running: sweep run" in second.stderr
    assert f"process {first.pid}" in second.stderr
    assert len(list((tmp_path / "outputs" / "multirun").glob("*/*"))) == 1  # no empty folder
    out = output(first)
    assert first.returncode == 0, out[-3000:]
    client, runs = xor_runs(tmp_path)
    jobs = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert sorted(r.data.params["seed"] for r in jobs) == ["1", "2"]
    assert {r.info.status for r in runs} == {"FINISHED"}
    # Once it is over, the same command is a re-run: every job already finished.
    again = run_cli(*args, cwd=tmp_path)
    assert again.returncode == 0, tails(again)
    assert len(xor_runs(tmp_path)[1]) == len(runs)


def test_a_checkpoint_from_before_its_run_id_was_known_continues_its_own_run(tmp_path):
    ready_store(tmp_path)
    args = ["trainer.epochs=200", "trainer.checkpoint_every=10", *QUIET]
    proc = popen(tmp_path, *args)
    running_run(tmp_path)
    wait_for_line(proc, "epoch 12/")
    os.killpg(proc.pid, signal.SIGTERM)  # stops after its epoch, checkpointed, KILLED
    assert proc.wait(timeout=60) == 143, proc.log.read_text()[-2000:]
    client, (run,) = xor_runs(tmp_path)
    assert run.info.status == "KILLED"
    path = Path(run.data.tags["runner.checkpoint"])
    # What a checkpoint written in a run's first second held: no run id yet.
    state = torch.load(path, weights_only=True)
    torch.save({**state, "run_id": None}, path)
    resumed = run_cli(*args, f"resume={path}", cwd=tmp_path)
    assert resumed.returncode == 0, tails(resumed)
    assert f"resuming at epoch {state['epoch'] + 1}" in resumed.stdout
    client, (again,) = xor_runs(tmp_path)  # still one run: the same one, continued
    assert again.info.run_id == run.info.run_id and again.info.status == "FINISHED"
    assert len(client.get_metric_history(run.info.run_id, "val_acc")) == 200
    latest = Path(again.data.tags["runner.checkpoint"])  # the resumed process's folder
    assert torch.load(latest, weights_only=True)["run_id"] == run.info.run_id


def test_checking_a_config_makes_no_run_folder(tmp_path):
    checked = run_cli("-m", "seed=1,2", cwd=tmp_path, module="runner.check")
    assert checked.returncode == 0, tails(checked)
    assert not (tmp_path / "outputs").exists()
