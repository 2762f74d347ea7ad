"""A stacked group's members logged as full runs (runner.sweep.seed_group, with the
DeferredTracker the stacked launcher gives them): a member that failed ends FAILED with the
solo run's message and its last good checkpoint; the others finish with every epoch."""

from __future__ import annotations

import torch
from mlflow.tracking import MlflowClient

from runner.config.launch import Launch
from runner.config.spec import validate
from runner.job import Job, setup
from runner.sweep import seed_group
from runner.sweep.stacked import stack_fit
from runner.tracking.deferred import DeferredTracker
from tests.configs import shipped

EPOCHS = 3


def house_job(seed: int, store: str) -> Job:
    """A regression job (a nan loss raises nothing in MSE: the member is cut out)."""
    cfg = shipped("house_linear", "adam", data="house_tiny", epochs=EPOCHS, batch_size=3)
    cfg |= {"seed": seed, "tracking": {"store_dir": store, "experiment": "group"}}
    return setup(cfg, validate(cfg))


def test_a_failed_member_ends_failed_and_the_others_finish(tmp_path):
    store = str(tmp_path / "outputs")
    jobs = [house_job(seed, store) for seed in (1, 2, 3)]
    with torch.no_grad():
        jobs[1].parts.model[0].weight.fill_(float("nan"))
    results = stack_fit(jobs)
    assert results[1].error and results[0].error is None
    tracker = DeferredTracker(jobs[0].spec.tracking)
    values = []
    for k, (job, result) in enumerate(zip(jobs, results, strict=True)):
        output = tmp_path / "multirun" / str(k)
        (output / ".hydra").mkdir(parents=True)
        (output / ".hydra" / "overrides.yaml").write_text(f"- seed={job.spec.seed}\n")
        launch = Launch(
            multirun=True, overrides=[f"seed={job.spec.seed}"], output_dir=output,
            cwd=str(tmp_path), job_num=k,
        )  # fmt: skip
        member = seed_group.Member(launch, job)
        values.append(seed_group.finish_member(member, result, 1.0, len(jobs), tracker))
    assert values[1] is None and values[0] is not None and values[2] is not None
    client = MlflowClient(tracker.uri)
    experiment = client.get_experiment_by_name("group").experiment_id
    runs = {int(r.data.params["seed"]): r for r in client.search_runs([experiment])}
    assert [runs[s].info.status for s in (1, 2, 3)] == ["FINISHED", "FAILED", "FINISHED"]
    failed = runs[2]
    assert failed.data.tags["error"] == f"MemberFailed: {results[1].error}"
    assert failed.data.tags["runner.stacked"] == "3"
    files = {a.path for a in client.list_artifacts(failed.info.run_id, "checkpoints")}
    assert files == {"checkpoints/last.pt"}  # its state when it failed, to look into
    assert "error" in {a.path for a in client.list_artifacts(failed.info.run_id)}
    for seed in (1, 3):
        history = client.get_metric_history(runs[seed].info.run_id, "train_loss")
        assert [m.step for m in history] == list(range(1, EPOCHS + 1))
        assert runs[seed].data.metrics["val_loss"] == results[seed - 1].history[-1]["val_loss"]
