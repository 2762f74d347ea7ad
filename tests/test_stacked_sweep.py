"""`hydra/launcher=stacked` for real: a seed group trained at once, each member a full child
run with the same numbers as the basic launcher's solo runs; a re-run skips them all."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient

from tests.conftest import run_cli, store_uri, tails

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
    proc = run_cli(*SWEEP, "hydra/launcher=stacked", *QUIET, cwd=stacked)
    assert proc.returncode == 0, tails(proc)
    assert "trained 3 jobs stacked" in proc.stdout + proc.stderr
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


def test_a_group_that_cannot_stack_runs_one_job_at_a_time(tmp_path):
    proc = run_cli(*SWEEP, "hydra/launcher=stacked", "scheduler=step", *QUIET, cwd=tmp_path)
    assert proc.returncode == 0, tails(proc)
    out = proc.stdout + proc.stderr
    assert "run one at a time" in out and "scheduler" in out
    _, members = children(tmp_path)
    assert [r.info.status for r in members] == ["FINISHED"] * 3
    assert all("runner.stacked" not in r.data.tags for r in members)
