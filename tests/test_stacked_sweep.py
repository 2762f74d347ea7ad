"""`hydra/launcher=stacked` for real: a seed group trained at once, each member a full child
run with the same numbers as the basic launcher's solo runs; a re-run skips them all."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import mlflow.pytorch
import pytest
import torch
from mlflow.entities import ViewType
from mlflow.tracking import MlflowClient

from runner.training.device import usable_cores
from tests.conftest import ready_store, run_cli, store_uri, tails
from tests.test_sweeps import await_finished_jobs

SWEEP = ["-m", "seed=1,2,3", "trainer.epochs=5", "trainer.plots=false", "trainer.log_model=false"]
QUIET = ["trainer.progress=none"]


def children(cwd) -> tuple[MlflowClient, list]:
    client = MlflowClient(store_uri(cwd))
    experiment = client.get_experiment_by_name("xor")
    runs = client.search_runs([experiment.experiment_id])
    jobs = [r for r in runs if r.data.tags.get("runner.is_sweep") != "true"]
    return client, sorted(jobs, key=lambda r: int(r.data.params["seed"]))


def _files(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    """Every artifact file of a run, by path."""
    found = set()
    for item in client.list_artifacts(run_id, path):
        found |= _files(client, run_id, item.path) if item.is_dir else {item.path}
    return found


def test_a_stacked_seed_group_matches_solo_runs(tmp_path):
    stacked, solo = tmp_path / "stacked", tmp_path / "solo"
    stacked.mkdir(), solo.mkdir()
    ready_store(stacked), ready_store(solo)
    proc = run_cli(*SWEEP, "hydra/launcher=stacked", *QUIET, cwd=stacked)
    assert proc.returncode == 0, tails(proc)
    assert "trained 3 jobs stacked" in proc.stdout + proc.stderr
    # The members end one after another on one console: each line says whose it is.
    for seed in (1, 2, 3):
        assert f"] seed={seed}: final: val_loss=" in proc.stdout, tails(proc)
    assert run_cli(*SWEEP, *QUIET, cwd=solo).returncode == 0
    client, members = children(stacked)
    solo_client, solo_runs = children(solo)
    assert [r.info.status for r in members] == ["FINISHED"] * 3
    parent_ids = {r.data.tags["mlflow.parentRunId"] for r in members}
    assert len(parent_ids) == 1
    for member, alone in zip(members, solo_runs, strict=True):
        assert member.data.tags["runner.stacked"] == "3"
        artifacts = {a.path for a in client.list_artifacts(member.info.run_id, "checkpoints")}
        assert artifacts == {"checkpoints/last.pt"}
        assert member.info.run_name == f"s{member.data.params['seed']}"
        assert member.data.tags["runner.fingerprint"] == alone.data.tags["runner.fingerprint"]
        differ = {k for k, v in member.data.params.items() if alone.data.params.get(k) != v}
        assert differ == {"tracking.store_dir"}  # the two sweeps' own folders
        # Written at its end in a few calls, the member's run holds what the solo run holds.
        assert set(member.data.params) == set(alone.data.params)
        assert set(member.data.metrics) == set(alone.data.metrics)
        assert set(alone.data.tags) - set(member.data.tags) == {"runner.time_logging_s"}
        assert _files(client, member.info.run_id) == _files(solo_client, alone.info.run_id)
        (data,) = [i.dataset for i in member.inputs.dataset_inputs]
        (solo_data,) = [i.dataset for i in alone.inputs.dataset_inputs]
        assert (data.name, data.digest, data.schema) == (
            solo_data.name, solo_data.digest, solo_data.schema,
        )  # fmt: skip
        for key in ("train_loss", "val_loss", "val_acc"):
            history = client.get_metric_history(member.info.run_id, key)
            reference = solo_client.get_metric_history(alone.info.run_id, key)
            assert [m.step for m in history] == [1, 2, 3, 4, 5]
            assert history[0].value == pytest.approx(reference[0].value, rel=1e-5)
            assert history[-1].value == pytest.approx(reference[-1].value, rel=1e-3, abs=0.011)
    # The report and the parent work unchanged; the same command again trains nothing.
    parent = client.get_run(parent_ids.pop())
    assert parent.data.tags["runner.best_run"] in {r.info.run_id for r in members}
    again = run_cli(*SWEEP, "hydra/launcher=stacked", *QUIET, cwd=stacked)
    assert again.returncode == 0, tails(again)
    assert (again.stdout + again.stderr).count("this exact config already FINISHED") == 3
    assert len(children(stacked)[1]) == 3


def test_a_stacked_group_stops_each_member_early_and_keeps_its_best_epoch(tmp_path):
    ready_store(tmp_path)
    watch = ["trainer.early_stop.patience=3", "trainer.early_stop.min_delta=0.002",
             "trainer.early_stop.metric=loss", "trainer.keep=best"]  # fmt: skip
    sweep = ["-m", "seed=1,2,3", "trainer.epochs=80", "trainer.plots=false", *watch, *QUIET]
    proc = run_cli(*sweep, "hydra/launcher=stacked", cwd=tmp_path)
    assert proc.returncode == 0, tails(proc)
    assert "trained 3 jobs stacked" in proc.stdout + proc.stderr
    client, members = children(tmp_path)
    assert [r.info.status for r in members] == ["FINISHED"] * 3
    for member in members:
        stopped = int(member.data.tags["runner.stopped_early"])
        assert len(client.get_metric_history(member.info.run_id, "val_loss")) == stopped < 80
        best = int(member.data.metrics["best_epoch"])
        last = Path(member.data.tags["runner.checkpoint"])
        assert torch.load(last.with_name("best.pt"), weights_only=True)["epoch"] == best
        kept = torch.load(last, weights_only=True)["best_model"]
        mlflow.set_tracking_uri(store_uri(tmp_path))
        model = mlflow.pytorch.load_model(f"runs:/{member.info.run_id}/model")
        assert all(torch.equal(v, kept[k]) for k, v in model.state_dict().items())


# A fault injected through the plugin mechanism: stacked training of seed 3 breaks.
BREAK_SEED_3 = """
import runner.sweep.stacked

real_stack_fit = runner.sweep.stacked.stack_fit


def stack_fit(jobs, *args, **kwargs):
    if any(job.spec.seed == 3 for job in jobs):
        raise RuntimeError("injected for the test")
    return real_stack_fit(jobs, *args, **kwargs)


runner.sweep.stacked.stack_fit = stack_fit
"""


def test_sweep_stack_max_trains_a_group_in_chunks_side_by_side(tmp_path):
    ready_store(tmp_path)
    (tmp_path / "break_seed_3.py").write_text(BREAK_SEED_3)
    args = [*SWEEP, "hydra/launcher=stacked", "sweep.stack_max=2", "plugins=[break_seed_3]"]
    proc = run_cli(*args, *QUIET, cwd=tmp_path)
    assert proc.returncode == 0, tails(proc)
    out = proc.stdout + proc.stderr
    assert "train stacked in chunks of [2, 1] members (sweep.stack_max=2)" in out
    if usable_cores() > 1:  # the two chunks train side by side, each in its own process
        assert "2 stacked chunks train on 2 processes at once" in out
    # The chunk whose stacked training failed ran its job alone, in its worker process.
    assert "trained 2 jobs stacked" in out
    assert "stacked training of jobs [2] failed (RuntimeError: injected for the test)" in out
    # ... saying why it falls back, with the traceback (a bug there is not hidden)
    assert "costs time, not results. Its traceback:" in out
    assert 'raise RuntimeError("injected for the test")' in out
    _, members = children(tmp_path)
    assert [r.info.status for r in members] == ["FINISHED"] * 3
    assert [r.data.tags.get("runner.stacked") for r in members] == ["2", "2", None]
    assert all(len(client_history(tmp_path, r)) == 5 for r in members)


def test_runs_made_for_a_stacked_training_that_failed_are_deleted(tmp_path):
    """One group: its runs are made while it trains (on a second core), then its stacked
    training fails; each job runs alone in its own run, and those made early are deleted."""
    ready_store(tmp_path)
    (tmp_path / "break_seed_3.py").write_text(BREAK_SEED_3)
    args = ["-m", "seed=3,4", *SWEEP[2:], "hydra/launcher=stacked", "plugins=[break_seed_3]"]
    proc = run_cli(*args, *QUIET, cwd=tmp_path)
    assert proc.returncode == 0, tails(proc)
    assert "they run one at a time" in proc.stdout + proc.stderr
    client, members = children(tmp_path)
    assert [r.info.status for r in members] == ["FINISHED"] * 2
    assert all("runner.stacked" not in r.data.tags for r in members)
    experiment = client.get_experiment_by_name("xor").experiment_id
    deleted = client.search_runs([experiment], run_view_type=ViewType.DELETED_ONLY)
    assert len(deleted) == (2 if usable_cores() > 1 else 0)
    assert all(r.data.tags["runner.stacked"] == "2" for r in deleted)


def client_history(cwd, run) -> list:
    """A run's train_loss points."""
    return MlflowClient(store_uri(cwd)).get_metric_history(run.info.run_id, "train_loss")


def test_jobs_differing_in_rate_and_l1_strength_train_as_one_group(tmp_path):
    ready_store(tmp_path)
    grid = ["seed=1,2", "optim.lr=0.01,0.05", "model.l1.strength=0.01,0.001"]
    args = ["-m", *grid, "hydra/launcher=stacked", "trainer.epochs=3", *SWEEP[3:], *QUIET]
    proc = run_cli(*args, cwd=tmp_path)
    assert proc.returncode == 0, tails(proc)
    assert "trained 8 jobs stacked" in proc.stdout + proc.stderr
    _, members = children(tmp_path)
    assert [r.info.status for r in members] == ["FINISHED"] * 8
    assert {(r.data.params["optim.lr"], r.data.params["model.l1.strength"]) for r in members} == {
        (lr, s) for lr in ("0.01", "0.05") for s in ("0.01", "0.001")
    }


def test_a_group_that_cannot_stack_runs_one_job_at_a_time(tmp_path):
    ready_store(tmp_path)
    proc = run_cli(*SWEEP, "hydra/launcher=stacked", "trainer.grad_clip=1.0", *QUIET, cwd=tmp_path)
    assert proc.returncode == 0, tails(proc)
    out = proc.stdout + proc.stderr
    assert "run one at a time" in out and "trainer.grad_clip" in out
    _, members = children(tmp_path)
    assert [r.info.status for r in members] == ["FINISHED"] * 3
    assert all("runner.stacked" not in r.data.tags for r in members)


def test_a_stacked_sweep_killed_while_writing_its_members_trains_only_the_rest(tmp_path):
    ready_store(tmp_path)
    seeds = 12
    args = ["-m", f"seed=range(1,{seeds + 1})", "hydra/launcher=stacked", "trainer.epochs=30"]
    args += ["trainer.plots=false", "trainer.log_model=false", *QUIET]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    # Its own process group: the kill takes the forked writer processes too.
    proc = subprocess.Popen(
        [sys.executable, "-m", "runner", *args], cwd=tmp_path, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    await_finished_jobs(proc, tmp_path, 3, timeout=240, poll=0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    client = MlflowClient(store_uri(tmp_path))
    experiment = client.get_experiment_by_name("xor").experiment_id
    before = [r for r in client.search_runs([experiment]) if "runner.is_sweep" not in r.data.tags]
    done = {r.info.run_id for r in before if r.info.status == "FINISHED"}
    # Those being written when killed stay RUNNING (with their tags only) until the re-run.
    assert 3 <= len(done) < seeds, [r.info.status for r in before]

    rerun = run_cli(*args, cwd=tmp_path)
    assert rerun.returncode == 0, tails(rerun)
    out = rerun.stdout + rerun.stderr
    assert out.count("this exact config already FINISHED") == len(done)
    # A member whose checkpoint was written before the kill continues its own run (just its
    # end is left); the others train stacked.
    said = re.findall(r"job (\d+) continues its interrupted run [0-9a-f]{32}", out)
    continued = len(set(said))
    assert len(said) == continued, said  # once each (preparing the stack said it again)
    fresh = seeds - len(done) - continued
    assert fresh < 2 or f"trained {fresh} jobs stacked" in out, out[-3000:]
    after = [r for r in client.search_runs([experiment]) if "runner.is_sweep" not in r.data.tags]
    finished = [r for r in after if r.info.status == "FINISHED"]
    assert sorted(int(r.data.params["seed"]) for r in finished) == list(range(1, seeds + 1))
    assert done <= {r.info.run_id for r in finished}  # kept, not trained again
    assert all(r.info.status in ("FINISHED", "KILLED") for r in after)  # none left RUNNING
    parents = [r for r in client.search_runs([experiment]) if "runner.is_sweep" in r.data.tags]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"  # the same sweep
    assert len([line for line in rerun.stdout.splitlines() if line.startswith("seed=")]) == seeds
