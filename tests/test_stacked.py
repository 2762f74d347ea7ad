"""A seed group trained as one stacked model gives each member its solo run's numbers."""

from __future__ import annotations

import re

import pytest
import torch

from runner.job import Job, setup
from runner.loop import NonFiniteLoss, fit
from runner.spec import validate
from runner.stacked import NotStackable, stack_fit, stackable, stacked_state
from tests.configs import shipped

SEEDS = [1, 2, 3]


def xor_job(seed: int, epochs: int = 5, **trainer: object) -> Job:
    """The shipped XOR deep model with Adam (L1 on its second layer), for one seed."""
    cfg = shipped("xor_deep", "adam", epochs=epochs, **trainer)
    cfg["seed"] = seed
    return setup(cfg, validate(cfg))


def solo(seed: int, epochs: int = 5) -> tuple[Job, list[dict[str, float]]]:
    """The member's solo run, as a job trains it."""
    job = xor_job(seed, epochs)
    return job, fit(job.trainer, job.data, job.generator)


def max_diff(a: list[dict[str, float]], b: list[dict[str, float]]) -> float:
    """The largest absolute difference over every key of every row."""
    assert len(a) == len(b) and all(r.keys() == s.keys() for r, s in zip(a, b, strict=True))
    return max(abs(r[k] - s[k]) for r, s in zip(a, b, strict=True) for k in r)


def test_members_start_from_their_solo_initial_weights():
    jobs = [xor_job(seed) for seed in SEEDS]
    params, _ = stacked_state(jobs)
    for k, seed in enumerate(SEEDS):
        alone = xor_job(seed)  # set up by itself: the same seed gives the same weights
        for name, p in alone.trainer.model.named_parameters():
            assert torch.equal(params[name][k], p.detach())
    first = params["0.weight"]
    assert not torch.equal(first[0], first[1])  # different seeds, different weights


def test_stacked_histories_match_solo_runs():
    jobs = [xor_job(seed) for seed in SEEDS]
    seen: list[tuple[int, int]] = []
    results = stack_fit(jobs, lambda k, epoch, row: seen.append((k, epoch)))
    assert sorted(seen) == [(k, e) for k in range(len(SEEDS)) for e in range(1, 6)]
    worst = 0.0
    for seed, job, result in zip(SEEDS, jobs, results, strict=True):
        alone, history = solo(seed)
        assert result.failed_at is None and result.error is None
        assert {"train_loss", "train_total_loss", "train_acc", "val_loss", "val_acc"} == set(
            history[0]
        )
        first, mine = history[0], result.history[0]
        for key in first:
            assert mine[key] == pytest.approx(first[key], rel=1e-5), key
        worst = max(worst, max_diff(history, result.history))
        # The trained weights went back into the member's own model and optimizer.
        for p, q in zip(
            job.trainer.model.parameters(), alone.trainer.model.parameters(), strict=True
        ):
            assert torch.allclose(p, q, atol=1e-5)
            mine_state, solo_state = (
                job.trainer.optimizer.state[p],
                alone.trainer.optimizer.state[q],
            )
            assert float(mine_state["step"]) == float(solo_state["step"])
            assert torch.allclose(mine_state["exp_avg"], solo_state["exp_avg"], atol=1e-5)
    print(f"max abs difference over 5 epochs, {len(SEEDS)} members, every metric: {worst:.3g}")
    assert worst < 1e-4


def poisoned(job: Job) -> Job:
    """The job with nan first-layer weights: its very first step fails."""
    with torch.no_grad():
        job.trainer.model[0].weight.fill_(float("nan"))
    return job


def test_a_member_whose_step_raises_is_cut_out_and_the_others_match_solo():
    """BCE refuses a nan output: the solo run stops with that error, the member alone here."""
    jobs = [xor_job(seed, epochs=3) for seed in SEEDS]
    results = stack_fit([jobs[0], poisoned(jobs[1]), jobs[2]])
    broken = poisoned(xor_job(SEEDS[1], epochs=3))
    with pytest.raises(RuntimeError) as solo_error:
        fit(broken.trainer, broken.data, broken.generator)
    assert results[1].failed_at == 1 and results[1].history == []
    assert results[1].error == f"RuntimeError: {solo_error.value}"
    assert torch.isnan(jobs[1].trainer.model[0].weight).all()  # its state when it failed
    for k in (0, 2):
        assert results[k].failed_at is None
        assert max_diff(solo(SEEDS[k], epochs=3)[1], results[k].history) < 1e-5


def house_job(seed: int) -> Job:
    """A regression job (MSE: a nan loss raises nothing, the epoch's loss is nan)."""
    cfg = shipped("house_linear", "adam", data="house_tiny", epochs=3, batch_size=3)
    cfg["seed"] = seed
    return setup(cfg, validate(cfg))


def test_a_member_whose_loss_goes_nan_stops_with_the_solo_message():
    jobs = [house_job(1), poisoned(house_job(2)), house_job(3)]
    results = stack_fit(jobs)
    broken = poisoned(house_job(2))
    with pytest.raises(NonFiniteLoss) as solo_error:
        fit(broken.trainer, broken.data, broken.generator)
    assert results[1].failed_at == 1 and results[1].history == []
    assert results[1].error == str(solo_error.value)
    for k, seed in ((0, 1), (2, 3)):
        alone = house_job(seed)
        history = fit(alone.trainer, alone.data, alone.generator)
        assert results[k].failed_at is None
        # Regression metrics in dollars: compare relatively.
        for mine, theirs in zip(results[k].history, history, strict=True):
            assert mine.keys() == theirs.keys()
            for key in mine:
                assert mine[key] == pytest.approx(theirs[key], rel=1e-4, abs=1e-6), key


def with_config(change: dict, seed: int = 1) -> Job:
    """A 2-epoch XOR job with top-level config keys replaced."""
    cfg = shipped("xor_deep", "adam", epochs=2)
    cfg.update(change)
    cfg["seed"] = seed
    return setup(cfg, validate(cfg))


def layers_with(extra: dict) -> dict:
    """xor_deep's model with `extra` inserted after its first ReLU."""
    model = shipped("xor_deep")["model"]
    model["layers"].insert(2, extra)
    return {"model": model}


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"scheduler": {"name": "step", "step_size": 2}}, "scheduler"),
        ({"trainer": {**shipped("xor_deep")["trainer"], "grad_clip": 1.0}}, "trainer.grad_clip"),
        ({"trainer": {**shipped("xor_deep")["trainer"], "on_nan": "skip"}}, "trainer.on_nan"),
        ({"trainer": {**shipped("xor_deep")["trainer"], "data_path": "loader"}}, "data_path"),
        (layers_with({"layer": "dropout", "p": 0.1}), "model.layers[2]: layer 'dropout'"),
        (layers_with({"layer": "batchnorm1d"}), "model.layers[2]: layer 'batchnorm1d'"),
    ],
)
def test_stackable_names_the_key_that_prevents_stacking(change: dict, key: str):
    jobs = [with_config(change, seed) for seed in (1, 2)]
    reason = stackable(jobs)
    assert reason is not None and key in reason
    with pytest.raises(NotStackable, match=re.escape(key)):
        stack_fit(jobs)


def test_members_must_share_architecture_data_and_optimizer():
    plain = with_config({})
    assert stackable([plain, with_config({}, seed=2)]) is None
    wider = shipped("xor_deep")["model"]
    wider["layers"][0]["out_features"] = 8
    assert "architectures differ" in stackable([plain, with_config({"model": wider})])
    other_data = {"data": {**shipped("xor_deep")["data"], "n_samples": 300}}
    assert "data" in stackable([plain, with_config(other_data)])
    other_lr = {"optim": {**shipped("xor_deep")["optim"], "lr": 0.1}}
    assert "optim" in stackable([plain, with_config(other_lr)])
