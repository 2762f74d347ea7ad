"""A seed group trained as one stacked model gives each member its solo run's numbers."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from runner.config.spec import validate
from runner.job import Job, setup
from runner.loop import NonFiniteLoss, fit
from runner.sweep.stack_plan import (
    cache_bytes,
    chunk_cost,
    chunk_sizes,
    free_memory,
    member_bytes,
    share,
    state_bytes,
)
from runner.sweep.stacked import (
    NotStackable,
    StackInterrupted,
    fast_forward,
    member_losses,
    stack_fit,
    stackable,
    stacked_state,
)
from tests.configs import shipped

SEEDS = [1, 2, 3]
# Both forward paths: batched matmul (the default where the model allows it) and vmap.
PATHS = pytest.mark.parametrize("fast_path", [True, False], ids=["fast", "vmap"])


def xor_job(seed: int, epochs: int = 5, **trainer: object) -> Job:
    """The shipped XOR deep model with Adam (L1 on its second layer), for one seed."""
    cfg = shipped("xor_deep", "adam", epochs=epochs, **trainer)
    cfg["seed"] = seed
    return setup(cfg, validate(cfg))


def solo(seed: int, epochs: int = 5) -> tuple[Job, list[dict[str, float]]]:
    """The member's solo run, as a job trains it."""
    job = xor_job(seed, epochs)
    return job, fit(job.parts, job.data, job.generator)


def max_diff(a: list[dict[str, float]], b: list[dict[str, float]]) -> float:
    """The largest absolute difference over every key of every row."""
    assert len(a) == len(b) and all(r.keys() == s.keys() for r, s in zip(a, b, strict=True))
    return max(abs(r[k] - s[k]) for r, s in zip(a, b, strict=True) for k in r)


@PATHS
def test_a_smaller_last_batch_matches_solo_runs(fast_path: bool):
    """100 training rows in batches of 3: the last batch holds one row (MNIST's 55000 in
    batches of 64 end with 24)."""
    jobs = [xor_job(seed, epochs=3, batch_size=3) for seed in SEEDS]
    results = stack_fit(jobs, fast_path=fast_path)
    for seed, result in zip(SEEDS, results, strict=True):
        alone = xor_job(seed, epochs=3, batch_size=3)
        history = fit(alone.parts, alone.data, alone.generator)
        assert result.error is None
        assert max_diff(history, result.history) < 1e-4


def test_members_start_from_their_solo_initial_weights():
    jobs = [xor_job(seed) for seed in SEEDS]
    params, _ = stacked_state(jobs)
    for k, seed in enumerate(SEEDS):
        alone = xor_job(seed)  # set up by itself: the same seed gives the same weights
        for name, p in alone.parts.model.named_parameters():
            assert torch.equal(params[name][k], p.detach())
    first = params["0.weight"]
    assert not torch.equal(first[0], first[1])  # different seeds, different weights


@PATHS
def test_stacked_histories_match_solo_runs(fast_path: bool):
    jobs = [xor_job(seed) for seed in SEEDS]
    assert fast_forward(jobs[0].parts.model) is not None  # xor_deep can take the fast path
    seen: list[tuple[int, int]] = []
    results = stack_fit(jobs, lambda k, epoch, row: seen.append((k, epoch)), fast_path=fast_path)
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
        for p, q in zip(job.parts.model.parameters(), alone.parts.model.parameters(), strict=True):
            assert torch.allclose(p, q, atol=1e-5)
            mine_state, solo_state = (
                job.parts.optimizer.state[p],
                alone.parts.optimizer.state[q],
            )
            assert float(mine_state["step"]) == float(solo_state["step"])
            assert torch.allclose(mine_state["exp_avg"], solo_state["exp_avg"], atol=1e-5)
    print(f"max abs difference over 5 epochs, {len(SEEDS)} members, every metric: {worst:.3g}")
    assert worst < 1e-4


def test_members_stop_early_and_keep_their_best_epochs_as_their_solo_runs_do():
    """trainer.early_stop and keep=best, stacked: each member is frozen after the epoch its
    solo run stops at while the others go on, and keeps its own best epoch's weights."""
    watch = {"early_stop": {"patience": 3, "min_delta": 0.002, "metric": "val_loss"}}
    trainer = {**shipped("xor_deep")["trainer"], "epochs": 80, "keep": "best", **watch}
    # Without L1: over dozens of epochs its sign(w) steps make weights near zero flip
    # between float orders, beyond the tolerance compared here.
    change = {"trainer": trainer, "model": {**shipped("xor_deep")["model"], "l1": {"strength": 0}}}
    jobs = [with_config(change, seed) for seed in SEEDS]
    assert stackable(jobs) is None
    results = stack_fit(jobs)
    stops = set()
    for seed, job, result in zip(SEEDS, jobs, results, strict=True):
        alone = with_config(change, seed)
        best: dict[str, torch.Tensor] = {}

        def keep_best(epoch: int, row: dict[str, float], alone: Job = alone, best=best) -> None:
            if alone.parts.monitor.best_epoch == epoch:
                best.update({k: v.clone() for k, v in alone.parts.model.state_dict().items()})

        history = fit(alone.parts, alone.data, alone.generator, keep_best)
        mine, theirs = job.parts.monitor, alone.parts.monitor
        assert (mine.stopped_epoch, mine.best_epoch) == (theirs.stopped_epoch, theirs.best_epoch)
        assert len(result.history) == len(history) == theirs.stopped_epoch
        assert max_diff(history, result.history) < 1e-4
        stops.add(theirs.stopped_epoch)
        for p, q in zip(job.parts.model.parameters(), alone.parts.model.parameters(), strict=True):
            assert torch.allclose(p, q, atol=1e-5)
        assert job.best_state.keys() == best.keys()
        assert all(torch.allclose(job.best_state[k], best[k], atol=1e-5) for k in best)
    assert len(stops) > 1  # members stopped at different epochs: the others went on


def poisoned(job: Job) -> Job:
    """The job with nan first-layer weights: its very first step fails."""
    with torch.no_grad():
        job.parts.model[0].weight.fill_(float("nan"))
    return job


@PATHS
def test_a_member_whose_step_raises_is_cut_out_and_the_others_match_solo(fast_path: bool):
    """BCE refuses a nan output: the solo run stops with that error, the member alone here."""
    jobs = [xor_job(seed, epochs=3) for seed in SEEDS]
    results = stack_fit([jobs[0], poisoned(jobs[1]), jobs[2]], fast_path=fast_path)
    broken = poisoned(xor_job(SEEDS[1], epochs=3))
    with pytest.raises(RuntimeError) as solo_error:
        fit(broken.parts, broken.data, broken.generator)
    assert results[1].failed_at == 1 and results[1].history == []
    assert results[1].error == f"RuntimeError: {solo_error.value}"
    assert torch.isnan(jobs[1].parts.model[0].weight).all()  # its state when it failed
    for k in (0, 2):
        assert results[k].failed_at is None
        assert max_diff(solo(SEEDS[k], epochs=3)[1], results[k].history) < 1e-5


@PATHS
def test_a_stack_whose_members_all_fail_in_one_epoch_ends_with_each_error(fast_path: bool):
    jobs = [poisoned(xor_job(seed, epochs=3)) for seed in SEEDS[:2]]
    results = stack_fit(jobs, fast_path=fast_path)
    assert [r.failed_at for r in results] == [1, 1]
    assert all(r.error.startswith("RuntimeError") and r.history == [] for r in results)


def house_job(seed: int) -> Job:
    """A regression job (MSE: a nan loss raises nothing, the epoch's loss is nan)."""
    cfg = shipped("house_linear", "adam", data="house_tiny", epochs=3, batch_size=3)
    cfg["seed"] = seed
    return setup(cfg, validate(cfg))


@PATHS
def test_a_member_whose_loss_goes_nan_stops_with_the_solo_message(fast_path: bool):
    jobs = [house_job(1), poisoned(house_job(2)), house_job(3)]
    assert fast_forward(jobs[0].parts.model) is not None
    results = stack_fit(jobs, fast_path=fast_path)
    broken = poisoned(house_job(2))
    with pytest.raises(NonFiniteLoss) as solo_error:
        fit(broken.parts, broken.data, broken.generator)
    assert results[1].failed_at == 1 and results[1].history == []
    assert results[1].error == str(solo_error.value)
    for k, seed in ((0, 1), (2, 3)):
        alone = house_job(seed)
        history = fit(alone.parts, alone.data, alone.generator)
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


@pytest.mark.parametrize(
    "schedule",
    [{"name": "step", "step_size": 2, "gamma": 0.5}, {"name": "cosine", "eta_min": 0.001}],
    ids=["step", "cosine"],
)
def test_a_group_with_a_learning_rate_schedule_matches_solo_runs(schedule: dict):
    """An epoch schedule does not couple the members: each member's own scheduler steps
    (its state is its solo run's), and the stacked optimizer takes the rate it gives."""
    five_epochs = {
        "scheduler": schedule,
        "trainer": {**shipped("xor_deep")["trainer"], "epochs": 5},
    }
    jobs = [with_config(five_epochs, seed) for seed in SEEDS]
    assert stackable(jobs) is None
    results = stack_fit(jobs)
    for seed, job, result in zip(SEEDS, jobs, results, strict=True):
        alone = with_config(five_epochs, seed)
        history = fit(alone.parts, alone.data, alone.generator)
        assert [r["lr"] for r in result.history] == [r["lr"] for r in history]
        assert max_diff(history, result.history) < 1e-4
        assert job.parts.scheduler.state_dict() == alone.parts.scheduler.state_dict()
        mine, theirs = (t.optimizer.param_groups[0] for t in (job.parts, alone.parts))
        assert (mine["lr"], mine["initial_lr"]) == (theirs["lr"], theirs["initial_lr"])
    mixed = [with_config({"scheduler": schedule}), with_config({}, seed=2)]
    assert "schedules differ" in stackable(mixed)


def test_a_group_is_trained_in_chunks_that_fit_in_memory():
    jobs = [xor_job(seed) for seed in SEEDS]
    assert chunk_sizes(jobs, stack_max=2) == [2, 1]
    # An XOR member takes kilobytes: any machine fits a hundred; an MNIST-sized member's
    # shuffled copy of its 55000 x 784 training images alone is 172 MB.
    assert member_bytes(jobs[0]) < 100_000
    assert chunk_sizes(jobs, stack_max=0) == [len(jobs)]  # one chunk
    assert free_memory(torch.device("cpu")) > 0


def test_a_group_too_big_for_the_cpu_cache_trains_in_even_chunks_that_fit(tmp_path):
    cfg = shipped("mlp", "adam", epochs=1)
    cfg["model"]["hidden"] = [64, 64]
    jobs = [setup(cfg, validate(cfg)) for _ in range(10)]
    state = state_bytes(jobs[0])  # weights, gradients, two Adam moments
    assert state == 4 * 4 * sum(p.numel() for p in jobs[0].parts.model.parameters())
    # Three members fit in a core's share of half the cache: ten train as 3 + 3 + 2 + 2.
    assert chunk_sizes(jobs, 0, cache=2 * 2 * 3 * state, cores=2) == [3, 3, 2, 2]
    assert chunk_sizes(jobs, 0, cache=2 * 1 * 7 * state, cores=1) == [5, 5]
    assert chunk_sizes(jobs, 0, cache=2 * 2 * 10 * state, cores=2) == [10]
    # A member too big for its share trains alone; no cache figure: memory decides.
    assert chunk_sizes(jobs, 0, cache=state, cores=2) == [1] * 10
    assert chunk_sizes(jobs, 0, cache=None) == [10]
    assert chunk_sizes(jobs, 3, cache=2 * 2 * 3 * state) == [3, 3, 3, 1]  # the user's choice
    # The machine's own figure, as Linux gives it.
    for level, size in ((1, "48K"), (2, "2048K"), (3, "32M")):
        index = tmp_path / f"index{level}"
        index.mkdir()
        (index / "size").write_text(f"{size}\n")
    assert cache_bytes(tmp_path) == 32 * 2**20
    assert cache_bytes(tmp_path / "none") is None


def test_chunks_are_shared_out_to_workers_costliest_first():
    small = xor_job(1)
    cfg = shipped("mlp", "adam", epochs=5)
    cfg["model"]["hidden"] = [256, 256]
    big = setup(cfg, validate(cfg))
    # A step's fixed cost counts: ten tiny members cost little more than one; wide ones add up.
    assert chunk_cost([small]) < chunk_cost([small] * 10) < 1.1 * chunk_cost([small])
    assert chunk_cost([big] * 10) > 5 * chunk_cost([big])
    assert share([9, 1, 1, 5, 4], workers=2) == [[0, 1], [2, 3, 4]]  # 10 and 10
    assert share([3, 2], workers=4) == [[0], [1]]
    assert share([], workers=2) == []


def test_members_must_share_architecture_data_and_optimizer():
    plain = with_config({})
    assert stackable([plain, with_config({}, seed=2)]) is None
    wider = shipped("xor_deep")["model"]
    wider["layers"][0]["out_features"] = 8
    assert "architectures differ" in stackable([plain, with_config({"model": wider})])
    other_data = {"data": {**shipped("xor_deep")["data"], "n_samples": 300}}
    assert "data" in stackable([plain, with_config(other_data)])
    other_betas = {"optim": {**shipped("xor_deep")["optim"], "betas": [0.8, 0.99]}}
    assert "optim" in stackable([plain, with_config(other_betas)])
    no_l1 = shipped("xor_deep")["model"]
    no_l1["l1"]["strength"] = 0.0
    assert "model.l1" in stackable([plain, with_config({"model": no_l1})])


def own_args(optim: str, lr: float, weight_decay: float, strength: float, seed: int) -> Job:
    """A 4-epoch XOR job with its own rate, weight decay and L1 strength."""
    cfg = shipped("xor_deep", optim, epochs=4)
    cfg["optim"] |= {"lr": lr, "weight_decay": weight_decay}
    if optim == "sgd":
        cfg["optim"]["momentum"] = 0.9
    cfg["model"]["l1"]["strength"] = strength
    cfg["seed"] = seed
    return setup(cfg, validate(cfg))


@pytest.mark.parametrize("optim", ["adam", "adamw", "sgd"])
def test_members_with_their_own_rate_decay_and_l1_strength_match_solo_runs(optim: str):
    """lr, weight_decay and model.l1.strength may differ within a group (an Optuna batch, a
    grid over rates): each member's update is its solo run's."""
    args = [(0.015, 0.0, 0.01, 1), (0.05, 0.01, 0.001, 2), (0.002, 0.1, 0.05, 1)]
    jobs = [own_args(optim, *a) for a in args]
    assert stackable(jobs) is None
    results = stack_fit(jobs)
    for a, job, result in zip(args, jobs, results, strict=True):
        alone = own_args(optim, *a)
        history = fit(alone.parts, alone.data, alone.generator)
        assert result.error is None
        for key in history[0]:
            assert result.history[0][key] == pytest.approx(history[0][key], rel=1e-5), key
        assert max_diff(history, result.history) < 1e-4
        for p, q in zip(job.parts.model.parameters(), alone.parts.model.parameters(), strict=True):
            assert torch.allclose(p, q, atol=1e-5)


def xor_layers_job(layers: list[dict], seed: int, epochs: int = 3) -> Job:
    """An XOR job (Adam, BCE, no L1) with the given layers."""
    cfg = shipped("xor_deep", "adam", epochs=epochs)
    cfg["model"] = {"name": "m", "layers": layers, "loss": {"name": "bce"}}
    cfg["seed"] = seed
    return setup(cfg, validate(cfg))


def assert_matches_solo(layers: list[dict], fast_path: bool) -> None:
    """Stacked members of an XOR model with `layers` get their solo runs' rows."""
    jobs = [xor_layers_job(layers, seed) for seed in SEEDS]
    results = stack_fit(jobs, fast_path=fast_path)
    for seed, result in zip(SEEDS, results, strict=True):
        alone = xor_layers_job(layers, seed)
        history = fit(alone.parts, alone.data, alone.generator)
        assert result.failed_at is None
        for key in history[0]:
            assert result.history[0][key] == pytest.approx(history[0][key], rel=1e-5), key
        assert max_diff(history, result.history) < 1e-4


# Every kind of layer the fast path takes: shifted dims, a shared prelu slope, no bias.
FAST_LAYERS = [
    {"layer": "linear", "out_features": 6},
    {"layer": "prelu"},
    {"layer": "linear", "out_features": 6, "bias": False},
    {"layer": "leaky_relu", "negative_slope": 0.1},
    {"layer": "softmax", "dim": 1},
    {"layer": "linear", "out_features": 4},
    {"layer": "elu"},
    {"layer": "gelu", "approximate": "tanh"},
    {"layer": "log_softmax", "dim": -1},
    {"layer": "tanh"},
    {"layer": "identity"},
    {"layer": "flatten"},
    {"layer": "linear", "out_features": 1},
    {"layer": "sigmoid"},
]


@PATHS
def test_every_fast_path_layer_matches_solo(fast_path: bool):
    assert fast_forward(xor_layers_job(FAST_LAYERS, 1).parts.model) is not None
    assert_matches_solo(FAST_LAYERS, fast_path)


def test_a_layer_the_fast_path_cannot_take_falls_back_to_vmap(monkeypatch: pytest.MonkeyPatch):
    """Per-channel prelu slopes: the model goes through vmap, and still matches solo."""
    layers = [
        {"layer": "linear", "out_features": 4},
        {"layer": "prelu", "num_parameters": 4},
        {"layer": "linear", "out_features": 1},
        {"layer": "sigmoid"},
    ]
    chosen: list[object] = []

    def spy(model: nn.Module) -> object:
        forward = fast_forward(model)
        chosen.append(forward)
        return forward

    monkeypatch.setattr("runner.sweep.stacked.fast_forward", spy)
    assert_matches_solo(layers, fast_path=True)
    assert chosen == [None]


@pytest.mark.parametrize(
    "model",
    [
        nn.Sequential(nn.Conv2d(2, 2, 1), nn.Flatten()),
        nn.Sequential(nn.Linear(3, 3), nn.PReLU(3)),
        nn.Sequential(nn.Linear(3, 3), nn.Softmax()),  # implicit dim depends on the rank
        nn.Sequential(nn.Sequential(nn.Linear(3, 3)), nn.ReLU()),  # not a plain Sequential
        nn.Sequential(nn.Linear(3, 3), nn.BatchNorm1d(3)),
        nn.Linear(3, 3),
    ],
)
def test_fast_forward_refuses_what_it_cannot_apply_directly(model: nn.Module):
    assert fast_forward(model) is None


@pytest.mark.parametrize(
    "make",
    [
        lambda: nn.Sequential(
            nn.Softmax(dim=1),  # before any parameters: no member dim yet when shared
            nn.Linear(3, 4),
            nn.PReLU(),
            nn.Softmax(dim=1),
            nn.Flatten(),
            nn.Linear(8, 5, bias=False),
            nn.LogSoftmax(dim=1),
        ),
        lambda: nn.Sequential(nn.PReLU(), nn.Flatten(), nn.Linear(6, 5)),
    ],
    ids=["linear-first", "prelu-first"],
)
# torch's own vmap of prelu over a shared input warns (the reference, not the fast path).
@pytest.mark.filterwarnings("ignore:An output with one or more elements was resized")
def test_fast_forward_equals_vmap_on_higher_rank_inputs(make: Callable[[], nn.Module]):
    """Per-sample [2, 3] inputs, own or shared by all members (evaluation): linear over the
    last dim, softmax and flatten dims shifted past the member dim only once it exists."""
    torch.manual_seed(0)
    models = [make() for _ in range(4)]
    params, buffers = stack_module_state(models)
    for p in params.values():  # distinct slopes per member
        p.data.add_(torch.randn_like(p) * 0.1)
    base = models[0].to("meta")
    forward = fast_forward(base)
    assert forward is not None
    call = lambda p, b, xb: functional_call(base, (p, b), (xb,))  # noqa: E731
    own, shared = torch.randn(4, 7, 2, 3), torch.randn(7, 2, 3)
    for x, is_shared, dims in ((own, False, 0), (shared, True, (0, 0, None))):
        mine = forward(params, x, is_shared)
        theirs = vmap(call, dims)(params, buffers, x)
        assert mine.shape == theirs.shape == (4, 7, 5)
        assert torch.allclose(mine, theirs, atol=1e-6)
        grads = torch.autograd.grad(mine.sum(), list(params.values()))
        expected = torch.autograd.grad(theirs.sum(), list(params.values()))
        for g, h in zip(grads, expected, strict=True):
            assert torch.allclose(g, h, atol=1e-6)


@pytest.mark.parametrize(
    "loss_fn",
    [nn.BCELoss(), nn.MSELoss(reduction="sum"), nn.HuberLoss(delta=0.5), nn.CrossEntropyLoss()],
)
def test_member_losses_are_each_members_solo_loss(loss_fn: nn.Module):
    torch.manual_seed(0)
    if isinstance(loss_fn, nn.CrossEntropyLoss):  # not elementwise: vmapped
        out, y = torch.randn(3, 5, 4), torch.randint(0, 4, (3, 5))
    else:
        out, y = torch.rand(3, 5, 1), torch.rand(3, 5)
    losses = member_losses(loss_fn)(out, y)
    for k in range(3):
        solo_out = out[k].squeeze(-1) if out.shape[-1] == 1 else out[k]
        assert losses[k].item() == pytest.approx(loss_fn(solo_out, y[k]).item(), rel=1e-6)


def test_a_group_stopped_at_once_keeps_the_rows_of_the_epochs_every_member_finished():
    jobs = [xor_job(seed) for seed in (1, 2, 3)]
    _, reference = solo(1)

    def second_ctrl_c(member: int, epoch: int, row: dict[str, float]) -> None:
        if (epoch, member) == (3, 1):  # within epoch 3: member 0 has its row, the others not
            raise KeyboardInterrupt

    with pytest.raises(StackInterrupted) as stopped:
        stack_fit(jobs, second_ctrl_c)
    assert stopped.value.epoch == 2 and stopped.value.at_once
    assert [len(r.history) for r in stopped.value.results] == [2, 2, 2]
    assert max_diff(stopped.value.results[0].history, reference[:2]) < 1e-6


def test_a_group_asked_to_stop_after_an_epoch_ends_there_with_its_state():
    jobs = [xor_job(seed) for seed in (1, 2)]
    asked = iter([False, False, True])
    results = stack_fit(jobs, should_stop=lambda: next(asked))
    assert [len(r.history) for r in results] == [3, 3]


class Swish(nn.Module):
    """The starter project's own layer (runner.new): parameter-free, no random draws."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * x.sigmoid()


class Jitter(nn.Module):
    """A user's layer that draws noise while training."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.01 * torch.randn_like(x) if self.training else x


class Gate(nn.Module):
    """A user's layer whose forward reads a tensor's value (which vmap cannot)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x if x.sum().item() > -1e9 else -x


@pytest.fixture
def user_layers():
    """Swish, Jitter and Gate registered as a user's plugin would register them."""
    from runner.registry import LAYERS

    for name, layer in (("swish", Swish), ("jitter", Jitter), ("gate", Gate)):
        LAYERS.register(name, layer)
    yield
    for name in ("swish", "jitter", "gate"):
        LAYERS._entries.pop(name, None)


def test_a_parameter_free_user_layer_stacks_and_matches_its_solo_runs(user_layers):
    swish = layers_with({"layer": "swish"})
    jobs = [with_config(swish, seed) for seed in SEEDS]
    assert stackable(jobs) is None
    assert fast_forward(jobs[0].parts.model) is None  # an unknown layer: the vmap path
    results = stack_fit(jobs)
    for seed, result in zip(SEEDS, results, strict=True):
        alone = with_config(swish, seed)
        history = fit(alone.parts, alone.data, alone.generator)
        assert result.error is None
        assert max_diff(history, result.history) < 1e-4


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ({"layer": "jitter"}, "layer 'jitter' is not stackable: it draws random numbers"),
        ({"layer": "gate"}, "layer 'gate' is not stackable: its forward cannot run under torch"),
        ({"layer": "dropout", "p": 0.1}, "layer 'dropout' is not stackable: it draws random"),
        ({"layer": "batchnorm1d"}, "layer 'batchnorm1d' is not stackable: it keeps buffers"),
    ],
    ids=["random-draws", "not-vmappable", "dropout", "batchnorm"],
)
def test_a_layer_that_cannot_stack_is_named_with_the_true_reason(user_layers, extra, reason):
    jobs = [with_config(layers_with(extra), seed) for seed in (1, 2)]
    before = torch.random.get_rng_state()
    assert f"model.layers[2]: {reason}" in stackable(jobs)
    assert torch.equal(torch.random.get_rng_state(), before)  # the probe drew nothing of ours
