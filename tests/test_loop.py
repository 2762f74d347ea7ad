"""The plain loop: learns XOR with the deep model, not with the linear one; seeded; L1."""

from __future__ import annotations

import copy

import pytest
import torch

from runner.config.spec import validate
from runner.job import setup
from runner.loop import batch_weights, epoch_row, fit, non_finite_loss
from tests.configs import shipped, train


def test_deep_model_learns_xor_and_linear_does_not():
    deep = train(shipped("xor_deep", "adam"))
    linear = train(shipped("xor_linear", "sgd", **{}))
    assert deep[-1]["val_acc"] >= 0.9
    assert linear[-1]["val_acc"] <= 0.8
    assert len(deep) == 200 and deep[-1]["train_loss"] < deep[0]["train_loss"]


def test_same_seed_same_metrics_different_seed_different():
    cfg = shipped("xor_noisy", "sgd", epochs=15)
    first, second = train(cfg), train(cfg)
    assert first == second
    cfg["seed"] = 2
    assert train(cfg) != first


def test_l1_term_is_reported_apart_from_the_data_loss():
    history = train(shipped("xor_deep", "adam", epochs=3))
    for row in history:
        assert row["train_total_loss"] > row["train_loss"] > 0
    cfg = shipped("xor_deep", "adam", epochs=3)
    cfg["model"]["l1"]["strength"] = 0.0
    assert all("train_total_loss" not in r for r in train(cfg))  # no penalty: the loss alone


def test_l1_as_a_gradient_matches_autograd_on_the_penalty_term_bit_for_bit():
    """The loop adds strength * sign(w) to the grads; the book puts the term in the loss."""
    cfg = shipped("xor_deep", "adam", epochs=3, grad_clip=1.0)
    job = setup(cfg, validate(cfg))
    t = job.parts
    reference = copy.deepcopy(t.model)
    ref_opt = type(t.optimizer)(reference.parameters(), **t.optimizer.defaults)
    ref_l1 = [dict(reference.named_parameters())[n] for n, p in t.model.named_parameters()
              if any(p is q for q in t.l1_params)]  # fmt: skip
    assert len(ref_l1) == len(t.l1_params) == 1
    generator = torch.Generator().manual_seed(5)
    history = fit(t, job.data, torch.Generator().manual_seed(5))
    penalties = []
    for _ in range(3):
        order = torch.randperm(len(job.data.x_train), generator=generator)
        x, y = job.data.x_train[order], job.data.y_train[order]
        epoch_penalties = []
        for i in range(0, len(x), t.batch_size):
            out = reference(x[i : i + t.batch_size])
            penalty = t.l1_strength * sum(p.abs().sum() for p in ref_l1)
            loss = t.loss_fn(out.squeeze(-1), y[i : i + t.batch_size]) + penalty
            ref_opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(reference.parameters(), 1.0)
            ref_opt.step()
            epoch_penalties.append(penalty.item())
        penalties.append(sum(epoch_penalties) / len(epoch_penalties))
    for mine, theirs in zip(t.model.parameters(), reference.parameters(), strict=True):
        assert torch.equal(mine, theirs)
    for row, penalty in zip(history, penalties, strict=True):
        assert row["train_total_loss"] - row["train_loss"] == pytest.approx(penalty, rel=1e-5)


def test_regression_metrics_in_data_units():
    cfg = shipped("house_linear", "adam", data="house_tiny", epochs=5, batch_size=3)
    history = train(cfg)
    last = history[-1]
    assert {"train_mse", "train_rmse", "train_mae", "train_r2", "val_mse", "val_rmse"} <= set(last)
    assert last["val_rmse"] ** 2 == pytest.approx(last["val_mse"], rel=1e-5)
    assert last["val_rmse"] > 100  # dollars, not standardized units


def test_scheduler_steps_the_learning_rate_per_epoch():
    cfg = shipped("xor_deep", "sgd", epochs=4)
    cfg["scheduler"] = {"name": "step", "step_size": 2, "gamma": 0.1}
    history = train(cfg)
    assert [round(r["lr"], 6) for r in history] == [0.015, 0.015, 0.0015, 0.0015]


def test_grad_clip_bounds_every_step():
    """Plain SGD moves the weights by lr * grad per step; clipped, that is at most lr * clip."""

    def weight_change(grad_clip: float | None) -> float:
        cfg = shipped("xor_deep", "sgd", epochs=2, grad_clip=grad_clip)
        job = setup(cfg, validate(cfg))
        before = torch.cat([p.detach().flatten().clone() for p in job.parts.model.parameters()])
        fit(job.parts, job.data, job.generator)
        after = torch.cat([p.detach().flatten() for p in job.parts.model.parameters()])
        return float((after - before).norm())

    clip, lr, steps = 1e-3, 0.015, 2 * 50  # 2 epochs of 100 samples in batches of 2
    assert weight_change(clip) <= steps * lr * clip * (1 + 1e-5)
    assert weight_change(None) > steps * lr * clip * 10  # unclipped steps are far larger


def test_nan_loss_stops_naming_epoch_and_batch_or_is_skipped():
    from runner.loop import NonFiniteLoss

    cfg = shipped("house_linear", "sgd", data="house_tiny", epochs=50, batch_size=1)
    cfg["optim"]["lr"] = 1e9  # diverges within a few steps
    with pytest.raises(NonFiniteLoss, match=r"loss became (nan|inf) at epoch \d+, batch \d+"):
        train(cfg)
    cfg["trainer"]["on_nan"] = "skip"
    with pytest.raises(NonFiniteLoss, match="every batch of epoch"):
        train(cfg)  # once the weights are inf, every batch is skipped: still an error
    ok = shipped("xor_deep", "adam", epochs=2)
    ok["trainer"]["on_nan"] = "skip"
    history = train(ok)
    assert [row["skipped_batches"] for row in history] == [0.0, 0.0]


def test_deterministic_switch_keeps_cpu_results():
    cfg = shipped("xor_noisy", "sgd", epochs=3)
    plain = train(cfg)
    cfg["trainer"]["deterministic"] = True
    try:
        assert train(cfg) == plain
    finally:
        torch.use_deterministic_algorithms(False)


def test_epoch_bookkeeping_shared_by_fit_and_stacked_training():
    """Batch weights follow the batch sizes (a smaller last batch weighs less), the
    non-finite error names the first bad batch, and a row holds only what applies."""
    weights = batch_weights(7, 3, torch.device("cpu"))
    assert weights.tolist() == pytest.approx([3 / 7, 3 / 7, 1 / 7])
    error = non_finite_loss(4, float("nan"), torch.tensor([0.5, float("inf"), float("nan")]))
    assert str(error) == "loss became nan at epoch 4, batch 2"
    assert epoch_row(0.5, {"acc": 0.9}, {}) == {"train_loss": 0.5, "train_acc": 0.9}
    row = epoch_row(0.5, {"acc": 0.9}, {"loss": 0.6}, penalty=0.25, lr=0.01)
    assert list(row) == ["train_loss", "train_total_loss", "train_acc", "val_loss", "lr"]
    assert row["train_total_loss"] == 0.75 and row["lr"] == 0.01


def test_early_stopping_stops_after_patience_and_a_resume_keeps_its_count():
    """xor_noisy (random draws in the model) with patience 3: training stops once val_loss
    has not improved for 3 epochs. Cut at an epoch mid-way, checkpointed and restored into
    freshly built objects, it stops at the same epoch with the same history, bit for bit."""
    from runner.training import checkpoint

    cfg = shipped("xor_noisy", "sgd", epochs=300, early_stop={"patience": 3, "metric": "loss"})
    spec = validate(cfg)
    whole = setup(cfg, spec)
    history = fit(whole.parts, whole.data, whole.generator)
    watched = whole.parts.monitor
    assert watched.metric == "val_loss" and watched.stopped
    assert len(history) == watched.stopped_epoch < 300
    losses = [row["val_loss"] for row in history]
    assert min(losses) == watched.best == losses[watched.best_epoch - 1]
    assert watched.stopped_epoch - watched.best_epoch == 3  # no improvement in 3 epochs

    cut = watched.stopped_epoch - 2  # within the patience window: its count matters
    first = setup(cfg, spec)
    first.parts.epochs = cut
    seen = fit(first.parts, first.data, first.generator)
    state = checkpoint.capture(first.parts, first.generator, cut, seen, None, "f")
    assert not first.parts.monitor.stopped and first.parts.monitor.bad_epochs >= 1
    again = setup(cfg, spec)
    checkpoint.restore(copy.deepcopy(state), again.parts, again.generator)
    resumed = fit(again.parts, again.data, again.generator, start_epoch=cut + 1, history=seen)
    assert resumed == history and again.parts.monitor == watched


def test_an_epoch_without_the_watched_metric_neither_improves_nor_uses_up_patience():
    from runner.training.early_stopping import Monitor

    watched = Monitor("val_r2", patience=2)
    for epoch in range(1, 6):  # R² of equal validation targets is not computed
        assert not watched.update(epoch, {"val_loss": 1.0})
    assert not watched.stopped and watched.best_epoch is None
    assert watched.update(6, {"val_r2": 0.5, "val_loss": 0.9}) and watched.best_epoch == 6
