"""Train a seed group as one stacked model: K same-shape members in one process, one
computation, each member getting the numbers of its own solo `runner.loop.fit` run.

Each member keeps its own initial weights (its `setup` seeded torch before building the
model) and its own batch order (its `job.generator`). The members' parameters are stacked
into [K, ...] tensors (torch.func.stack_module_state), the forward pass is vmapped over
the member dimension, the per-member losses are summed (so each member's gradient is its
own), and one optimizer of the solo type and arguments steps the stacked tensors: Adam,
AdamW, SGD and RMSprop act element by element, so the members stay independent.

Fast path: when the model is a plain Sequential of layers that act directly on a
[K, batch, ...] tensor (linear as a batched matmul, elementwise activations, ...), the
forward pass runs on the stacked tensors without vmap (`fast_forward`); tiny models spend
most of a vmapped step in dispatch. Everything else is shared by both paths.
"""

from __future__ import annotations

import copy
import inspect
import math
import re
import signal
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from runner.components.layers import NoisyLinear
from runner.errors import RunError
from runner.loop import EVAL_CHUNK, batch_weights, choose_data_path, epoch_row, non_finite_loss
from runner.training.metrics import align
from runner.training.signals import Interrupted

if TYPE_CHECKING:
    from runner.job import Job

MemberCallback = Callable[[int, int, dict[str, float]], None]  # (member, epoch, row)

# Layers whose forward is a pure function of input and parameters, the same in train and
# eval mode, and which vmap batches: a stacked member computes exactly its solo numbers.
# Not here: dropout and noisy_linear (their random draws cannot match the solo run's),
# batchnorm (running statistics are buffers updated in place). A registered layer of the
# user's without parameters or buffers stacks (through vmap) when its forward runs there.
STACKABLE_LAYERS: tuple[type[nn.Module], ...] = (
    nn.Linear, nn.Identity, nn.ReLU, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.GELU, nn.Sigmoid,
    nn.Tanh, nn.Softmax, nn.LogSoftmax, nn.Flatten, nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d,
)  # fmt: skip
# Optimizers whose update is element by element, so one over [K, ...] tensors is K solo ones.
STACKABLE_OPTIMIZERS: tuple[type[torch.optim.Optimizer], ...] = (
    torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD, torch.optim.RMSprop,
)  # fmt: skip


# Parameterless layers that act element by element: the same on [K, batch, ...] as per member.
ELEMENTWISE_LAYERS: tuple[type[nn.Module], ...] = (
    nn.Identity, nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.Sigmoid, nn.Tanh,
)  # fmt: skip
# Losses that are an elementwise term reduced by mean or sum: reduced per member instead.
ELEMENTWISE_LOSSES: tuple[type[nn.Module], ...] = (
    nn.BCELoss, nn.BCEWithLogitsLoss, nn.MSELoss, nn.L1Loss, nn.HuberLoss, nn.SmoothL1Loss,
)  # fmt: skip

# (stacked parameters, input, shared): input is [K, batch, ...], or [batch, ...] that every
# member takes (shared, for evaluation) -> [K, batch, ...].
StackedForward = Callable[[dict[str, torch.Tensor], torch.Tensor, bool], torch.Tensor]


class NotStackable(RunError):
    """The jobs cannot be trained as one stacked model (the message says which key)."""


class StackInterrupted(Interrupted):
    """A signal stopped stacked training at once: each member's rows of the epochs every
    member finished (the weights are mid-epoch: no state is written back)."""

    def __init__(self, err: KeyboardInterrupt, results: list[MemberResult], epoch: int) -> None:
        super().__init__(getattr(err, "signum", None) or signal.SIGINT, epoch, at_once=True)
        self.results = results


@dataclass
class MemberResult:
    """One member's outcome: its per-epoch rows, and where and why it failed, if it did."""

    history: list[dict[str, float]] = field(default_factory=list)
    failed_at: int | None = None  # the epoch whose loss was not finite (no row for it)
    error: str | None = None  # the message the solo run's NonFiniteLoss would carry


def _leaves(model: nn.Module) -> list[nn.Module]:
    """The model's modules that hold no others, in order."""
    return [m for m in model.modules() if not list(m.children())]


def _layer_types(model: nn.Module) -> list[type[nn.Module]]:
    """The model's leaf module types, in order (its architecture, shapes aside)."""
    return [type(m) for m in _leaves(model)]


def _shapes(model: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    """Names and shapes of the model's parameters and buffers."""
    tensors = [*model.named_parameters(), *model.named_buffers()]
    return [(name, tuple(t.shape)) for name, t in tensors]


def _l1_names(job: Job) -> list[str]:
    """Names of the parameters the job's L1 penalty covers."""
    ids = {id(p) for p in job.parts.l1_params}
    return [name for name, p in job.parts.model.named_parameters() if id(p) in ids]


def _data_equal(a: Job, b: Job) -> bool:
    """Whether two jobs train and validate on identical tensors."""
    keys = ("x_train", "y_train", "x_val", "y_val")
    return all(torch.equal(getattr(a.data, k), getattr(b.data, k)) for k in keys)


def _lr(parts: Any) -> float:
    """The learning rate a member's optimizer (of its TrainingParts) steps with now."""
    return parts.optimizer.param_groups[0]["lr"]


MEMBER_ARGS = ("lr", "weight_decay")  # optimizer arguments each member may have its own of


def _shared_args(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer arguments every member of a stack must share."""
    return {k: v for k, v in optimizer.defaults.items() if k not in MEMBER_ARGS}


def _constructor_args(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """The optimizer's defaults that its constructor takes (AdamW's defaults also hold
    `decoupled_weight_decay`, which AdamW's constructor refuses)."""
    accepted = inspect.signature(type(optimizer).__init__).parameters
    return {k: v for k, v in optimizer.defaults.items() if k in accepted}


def _weight_decay(parts: Any) -> float:
    return float(parts.optimizer.defaults.get("weight_decay", 0.0))


RANDOM_DRAWS = (
    "it draws random numbers while training (stacked, no member could draw its solo run's)"
)


def _why_not_stackable(module: nn.Module) -> str | None:
    """Why a layer cannot be stacked by its kind alone: state the members would share, or
    draws that cannot match the solo run's (None: it may stack; a registered layer of the
    user's is then tried under vmap, `_draws_or_fails_vmapped`)."""
    for leaf in _leaves(module):
        kind = type(leaf)
        if kind in STACKABLE_LAYERS:
            continue
        if isinstance(leaf, (nn.modules.dropout._DropoutNd, NoisyLinear)):
            return RANDOM_DRAWS
        if list(leaf.buffers()):
            return "it keeps buffers it updates in place (e.g. running statistics)"
        if list(leaf.parameters()):
            return (
                "it holds parameters of its own (of the layers with parameters only linear, "
                "prelu and conv2d stack)"
            )
    return None


def _user_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in _leaves(model) if type(m) not in STACKABLE_LAYERS]


def _draws_or_fails_vmapped(job: Job) -> str | None:
    """For a model with registered layers of the user's (parameter-free): run its training
    forward once on two rows as stacked training does, under vmap, which refuses random
    draws; the reason, naming the layer, if that fails (None: it stacks)."""
    t, spec = job.parts, job.spec
    if not any(_user_layers(module) for module in t.model):
        return None
    params, buffers = stack_module_state([t.model, t.model])
    rows = job.data.x_train[:2].to(next(iter(params.values())).device)
    was_training = t.model.training
    t.model.train()
    try:
        with torch.random.fork_rng(devices=[]):  # (a draw must not move this job's seed)
            vmap(lambda p, b, x: functional_call(t.model, (p, b), (x,)), (0, 0, None))(
                params, buffers, rows
            )
    except Exception as err:  # the user's code: any failure means it cannot stack
        layer = next(
            (lay for lay, module in zip(spec.model.layers, t.model, strict=True)
             if _user_layers(module)),
            None,
        )  # fmt: skip
        text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        why = (
            RANDOM_DRAWS
            if "random" in text.lower()
            else f"its forward cannot run under torch.func.vmap ({text})"
        )
        where = f"{layer.key}: layer {layer.type!r}" if layer else "model.layers"
        return f"{where} is not stackable: {why}"
    finally:
        t.model.train(was_training)
    return None


def stackable(jobs: Sequence[Job]) -> str | None:
    """None if `jobs` can train as one stacked model, else the reason, naming the config key."""
    if not jobs:
        return "no jobs"
    first = jobs[0]
    t0 = first.parts
    for job in jobs:
        t, spec = job.parts, job.spec
        if job.resume is not None:
            return "resume: a resumed run continues its own optimizer state and history"
        if isinstance(t.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            return "scheduler: a schedule driven by each member's metric would couple them"
        if t.grad_clip is not None:
            return "trainer.grad_clip: clipping the stacked gradient would couple the members"
        if t.on_nan != "stop":
            return "trainer.on_nan: skipping batches per member is not supported stacked"
        if choose_data_path(t.data_path, job.data, t.device) != "memory":
            return "trainer.data_path: only the memory path is supported stacked"
        for layer, module in zip(spec.model.layers, t.model, strict=True):
            why = _why_not_stackable(module)
            if why:
                return f"{layer.key}: layer {layer.type!r} is not stackable: {why}"
        if len(t.optimizer.param_groups) != 1:
            return "optim: the optimizer must have one parameter group"
        if type(t.optimizer) not in STACKABLE_OPTIMIZERS:
            return f"optim.name: {spec.optim.type!r} is not stackable (not element by element)"
        if any(p.dtype != torch.float32 for p in t.model.parameters()):
            return "model: only float32 parameters are supported stacked"
    drawn = _draws_or_fails_vmapped(first)
    if drawn:
        return drawn
    for job in jobs[1:]:
        t = job.parts
        if _layer_types(t.model) != _layer_types(t0.model) or _shapes(t.model) != _shapes(t0.model):
            return "model.layers: the members' architectures differ"
        if t.device != t0.device:
            return "device: the members run on different devices"
        if not _data_equal(job, first):
            return "data: the members train on different data"
        if type(t.loss_fn) is not type(t0.loss_fn) or repr(t.loss_fn) != repr(t0.loss_fn):
            return "model.loss: the members' losses differ"
        if t.loss_fn.__dict__.keys() != t0.loss_fn.__dict__.keys() or any(
            not isinstance(v, torch.Tensor) and v != t0.loss_fn.__dict__[k]
            for k, v in t.loss_fn.__dict__.items()
            if not k.startswith("_")
        ):
            return "model.loss: the members' loss arguments differ"
        loss_buffers = dict(t.loss_fn.named_buffers())
        first_loss_buffers = dict(t0.loss_fn.named_buffers())
        if loss_buffers.keys() != first_loss_buffers.keys() or any(
            not torch.equal(v, first_loss_buffers[k]) for k, v in loss_buffers.items()
        ):
            return "model.loss: the members' loss weights differ"
        if type(t.optimizer) is not type(t0.optimizer):
            return "optim.name: the members' optimizers differ"
        if _shared_args(t.optimizer) != _shared_args(t0.optimizer):
            return "optim: the members' optimizer arguments differ (beyond lr, weight_decay)"
        if type(t.scheduler) is not type(t0.scheduler):
            return "scheduler: the members' learning-rate schedules differ"
        if t.batch_size != t0.batch_size:
            return "trainer.batch_size: the members' batch sizes differ"
        if t.epochs != t0.epochs:
            return "trainer.epochs: the members' epoch counts differ"
        if bool(t.l1_strength) != bool(t0.l1_strength) or _l1_names(job) != _l1_names(first):
            return "model.l1: the members' L1 penalties differ (beyond their strength)"
        if type(t.metrics) is not type(t0.metrics) or vars(t.metrics) != vars(t0.metrics):
            return "data.metric: the members' metrics differ"
    return None


def stacked_state(jobs: Sequence[Job]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The members' parameters and buffers as [K, ...] tensors (copies, on the device)."""
    device = jobs[0].parts.device
    return stack_module_state([job.parts.model.to(device) for job in jobs])


def _shift(dim: int, shared: bool) -> int:
    """A member's dim on the stacked tensor: non-negative dims move past the member dim."""
    return dim + 1 if dim >= 0 and not shared else dim


def _fast_layer(name: str, module: nn.Module) -> StackedForward | None:
    """The layer applied to [K, batch, ...] (or shared [batch, ...]) with its [K, ...]
    parameters, or None if it cannot be applied so."""
    kind = type(module)
    if kind is nn.Linear:
        weight, bias = f"{name}.weight", f"{name}.bias" if module.bias is not None else None

        def linear(p: dict[str, torch.Tensor], x: torch.Tensor, shared: bool) -> torch.Tensor:
            # The stacked weight keeps nn.Linear's [K, out, in] (optimizer, L1, write-back).
            w = p[weight]
            if shared:  # one [rows, K*out] matmul: no K copies of the input
                k, width = len(w), w.shape[1]
                out = (x @ w.reshape(k * width, -1).T).unflatten(-1, (k, width)).movedim(-2, 0)
                return out if bias is None else out + p[bias].view(k, *[1] * (x.dim() - 1), width)
            flat = x if x.dim() == 3 else x.reshape(len(x), -1, x.shape[-1])
            wt = w.transpose(1, 2)
            out = (
                torch.bmm(flat, wt)
                if bias is None
                else torch.baddbmm(p[bias].unsqueeze(1), flat, wt)
            )
            return out if x.dim() == 3 else out.view(*x.shape[:-1], out.shape[-1])

        return linear
    if kind in ELEMENTWISE_LAYERS:
        return lambda p, x, shared: module(x)
    if kind in (nn.Softmax, nn.LogSoftmax) and module.dim is not None:
        fn = torch.softmax if kind is nn.Softmax else torch.log_softmax
        return lambda p, x, shared: fn(x, _shift(module.dim, shared))
    if kind is nn.Flatten:
        return lambda p, x, shared: x.flatten(
            _shift(module.start_dim, shared), _shift(module.end_dim, shared)
        )
    if kind is nn.PReLU and module.num_parameters == 1:
        weight = f"{name}.weight"

        def prelu(p: dict[str, torch.Tensor], x: torch.Tensor, shared: bool) -> torch.Tensor:
            # Each member's own slope, broadcast over its slice (or over the shared input).
            slope = p[weight].view(-1, *[1] * (x.dim() - (0 if shared else 1)))
            return torch.where(x > 0, x, slope * x)  # F.prelu's branches and gradients

        return prelu
    return None  # e.g. conv2d, pooling, or prelu with per-channel slopes: vmap


def fast_forward(model: nn.Module) -> StackedForward | None:
    """The model's forward on stacked inputs with [K, ...] parameters, or None."""
    if type(model) is not nn.Sequential:
        return None
    layers = []
    for name, module in model.named_children():
        layer = (
            None if list(module.children()) or list(module.buffers()) else _fast_layer(name, module)
        )
        if layer is None:
            return None
        # After the first layer with parameters the member dim is there.
        layers.append((layer, bool(list(module.parameters()))))
    if not any(has_member_weights for _, has_member_weights in layers):
        return None  # the output would have no member dim (no optimizer takes this anyway)

    def forward(p: dict[str, torch.Tensor], x: torch.Tensor, shared: bool = False) -> torch.Tensor:
        for layer, has_member_weights in layers:
            x = layer(p, x, shared)
            shared = shared and not has_member_weights
        return x

    return forward


def member_losses(loss_fn: nn.Module) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Each member's loss ([K]) from stacked outputs and targets ([K, batch, ...])."""
    vmapped = vmap(lambda out, y: loss_fn(align(out, y), y))
    reduction = getattr(loss_fn, "reduction", None)
    if (
        type(loss_fn) not in ELEMENTWISE_LOSSES
        or reduction not in ("mean", "sum")
        or getattr(loss_fn, "weight", None) is not None
        or getattr(loss_fn, "pos_weight", None) is not None
    ):
        return vmapped
    # Unreduced terms, then the solo reduction over each member's own slice (no vmap).
    each = copy.copy(loss_fn)
    each.reduction = "none"
    reduce = torch.mean if reduction == "mean" else torch.sum

    def losses(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        aligned = align(out, y)
        if aligned.shape != y.shape:  # broadcasting: as the solo loss does it, per member
            return vmapped(out, y)
        return reduce(each(aligned, y).flatten(1), dim=1)

    return losses


class _Stack:
    """The live members' stacked parameters, buffers and optimizer; `members[i]` is the job
    index of stack position i. Failed members are cut out, so they cost nothing and cannot
    raise again."""

    def __init__(self, jobs: Sequence[Job], per_member: bool = False) -> None:
        t0 = jobs[0].parts
        self.members = list(range(len(jobs)))
        self.params, self.buffers = stacked_state(jobs)
        # One optimizer of the solo type and arguments (fused included) over [K, ...] tensors,
        # at the rate the members' schedules give now. With rates or weight decays of their
        # own, it takes a unit step without decay (`step_members` scales it per member).
        unit_step = {"lr": 1.0, "weight_decay": 0.0}
        self.optimizer = _optimizer_over(
            self.params, t0.optimizer, 1.0 if per_member else _lr(t0),
            args=unit_step if per_member else None,
        )  # fmt: skip

    def member_state(self, pos: int, optimizer: bool = True) -> MemberState:
        """Copies of one member's weights, buffers and (unless not asked) optimizer state,
        by parameter name."""
        return MemberState(
            {n: p[pos].detach().clone() for n, p in self.params.items()},
            {n: b[pos].clone() for n, b in self.buffers.items()},
            {n: _param_state_rows(self.optimizer, p, pos) for n, p in self.params.items()}
            if optimizer
            else {},
        )

    def keep(self, positions: list[int]) -> None:
        """Cut the stack down to `positions`, optimizer state included."""
        params = {n: _slice(p, p, positions).requires_grad_() for n, p in self.params.items()}
        state = {n: _param_state_rows(self.optimizer, p, positions) for n, p in self.params.items()}
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer = _optimizer_over(params, self.optimizer, lr, state=state)
        self.params = params
        self.buffers = {n: _slice(b, b, positions) for n, b in self.buffers.items()}
        self.members = [self.members[i] for i in positions]


@dataclass
class MemberState:
    """One member's slice of the stack: weights, buffers and optimizer state by name."""

    params: dict[str, torch.Tensor]
    buffers: dict[str, torch.Tensor]
    optimizer: dict[str, dict[str, Any]]


def _optimizer_over(
    params: dict[str, torch.Tensor],
    like: torch.optim.Optimizer,
    lr: float,
    state: dict[str, dict[str, Any]] | None = None,
    args: dict[str, Any] | None = None,
) -> torch.optim.Optimizer:
    """An optimizer of `like`'s type and constructor arguments (`args` overriding them) over
    the stacked `params`, stepping at `lr`, with each parameter's `state` by name (if given)."""
    optimizer = type(like)(list(params.values()), **(_constructor_args(like) | (args or {})))
    optimizer.param_groups[0]["lr"] = lr
    for name, param_state in (state or {}).items():
        optimizer.state[params[name]] = param_state
    return optimizer


def _param_state_rows(
    optimizer: torch.optim.Optimizer, param: torch.Tensor, rows: list[int] | int
) -> dict[str, Any]:
    """A stacked parameter's optimizer state cut to the members at `rows` (one position:
    that member's, without the member dim): per-member entries (moments) sliced, the rest
    (step counts) copied."""
    positions = [rows] if isinstance(rows, int) else rows
    cut = {}
    for key, value in optimizer.state.get(param, {}).items():
        if not _per_member(value, param):
            cut[key] = _copy(value)
            continue
        sliced = _slice(value, param, positions)
        cut[key] = sliced.squeeze(0) if isinstance(rows, int) else sliced
    return cut


def _per_member(value: Any, param: torch.Tensor) -> bool:
    """Whether an optimizer state entry has one slice per member (moments, not step counts)."""
    return isinstance(value, torch.Tensor) and value.shape == param.shape


def _slice(value: torch.Tensor, like: torch.Tensor, positions: list[int]) -> torch.Tensor:
    """The rows `positions` of a [K, ...] tensor, as a fresh tensor."""
    return value.detach()[torch.tensor(positions, dtype=torch.long, device=like.device)].clone()


def _copy(value: Any) -> Any:
    """A tensor cloned, anything else as is."""
    return value.clone() if isinstance(value, torch.Tensor) else value


def _column(
    steps: list[tuple[list[int], list[torch.Tensor | None]]], live: list[int], i: int
) -> list[torch.Tensor]:
    """Item i of every step's results, for the members `live` (a gather only at steps where
    a member since cut out was still there)."""
    return [
        values[i] if ids == live else values[i][[ids.index(k) for k in live]]  # type: ignore[index]
        for ids, values in steps
    ]


def stack_fit(
    jobs: Sequence[Job],
    on_epoch: MemberCallback | None = None,
    *,
    fast_path: bool = True,
    should_stop: Callable[[], bool] | None = None,
) -> list[MemberResult]:
    """Train `jobs` as one stacked model; each member's rows match its solo `fit`.
    `should_stop`, asked after each epoch: true ends the training there (Ctrl-C), every
    member's state written back as at the end of that epoch.

    The forward pass takes the fast path (`fast_forward`) where the model allows it and
    `fast_path` is true, else vmap over functional_call; the results are the same.

    A member fails where its solo run would: a non-finite epoch loss (the solo
    NonFiniteLoss message), or an error its own step raises (e.g. BCE refusing a nan
    output). It stops there (failed_at, error) while the others go on. A member whose
    monitored metric stops it early (trainer.early_stop) is frozen after that epoch, as its
    solo run ends there, and with trainer.keep=best its best epoch's weights are kept in its
    job.best_state. At the end every member's weights and optimizer state are written back
    into its own job.parts (a failed or stopped member's as they were then).
    """
    reason = stackable(jobs)
    if reason is not None:
        raise NotStackable(f"cannot train these runs stacked: {reason}")
    return _StackedTraining(jobs, fast_path).train(on_epoch, should_stop)


class _StackedForward:
    """The stacked model's forward passes, on the fast path or vmapped over functional_call:
    every member on its own batch (`all_members`), one member alone (`member`: which one raises),
    every member on the same rows (`shared`: validation)."""

    def __init__(self, model: nn.Module, loss_fn: nn.Module, fast_path: bool) -> None:
        # A weightless copy of the architecture to call functionally with each member's slice.
        self.base = copy.deepcopy(model).to("meta")
        self.loss_fn = loss_fn
        self.losses = member_losses(loss_fn)  # each member's loss, as its solo fit's
        self.fast = fast_forward(self.base) if fast_path else None
        if self.fast is None:
            self._vmapped_losses = vmap(self.member)
            self._vmapped_shared = vmap(
                lambda p, b, x: functional_call(self.base, (p, b), (x,)), (0, 0, None)
            )

    def member(
        self,
        p: dict[str, torch.Tensor],
        b: dict[str, torch.Tensor],
        xb: torch.Tensor,
        yb: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One member's loss and output on its batch, with its own parameters and buffers."""
        out = functional_call(self.base, (p, b), (xb,))
        return self.loss_fn(align(out, yb), yb), out

    def all_members(
        self,
        p: dict[str, torch.Tensor],
        b: dict[str, torch.Tensor],
        xb: torch.Tensor,
        yb: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Every member's loss ([K]) and output ([K, batch, ...]) on its own batch."""
        if self.fast is None:
            return self._vmapped_losses(p, b, xb, yb)
        out = self.fast(p, xb, False)
        return self.losses(out, yb), out

    def shared(
        self, p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], x: torch.Tensor
    ) -> torch.Tensor:
        """Every member's output ([K, rows, ...]) on the same rows x."""
        if self.fast is None:
            return self._vmapped_shared(p, b, x)
        return self.fast(p, x, True)


# Per optimizer step: the members live at it, and their [loss, output, L1 norm] (tensors, no
# sync), one row per member.
StepResults = list[tuple[list[int], list[torch.Tensor | None]]]


class _StackedTraining:
    """One stacked training of a seed group, in the steps `train` takes each epoch: `shuffle`
    (each member's own batch order), `step` on every batch (each live member's optimizer
    step; a member whose own step raises is `fail`ed, cut out), `epoch_losses`, `evaluate`
    (every member's train and val metrics at once), `record` (each member's row, or its
    NonFiniteLoss), `step_schedules`; at the end `write_back` (each member's state into its
    own job)."""

    def __init__(self, jobs: Sequence[Job], fast_path: bool) -> None:
        self.jobs = jobs
        self.member_parts = [job.parts for job in jobs]
        t0 = self.t0 = self.member_parts[0]
        self.device = device = t0.device
        self.per_member = (
            len({_lr(t) for t in self.member_parts}) > 1
            or len({_weight_decay(t) for t in self.member_parts}) > 1
        )
        self.strengths = torch.tensor(
            [t.l1_strength for t in self.member_parts], dtype=torch.float64
        )
        self.one_strength = len({t.l1_strength for t in self.member_parts}) == 1
        self.stack = _Stack(jobs, self.per_member)
        self.forward = _StackedForward(t0.model, t0.loss_fn, fast_path)
        self.l1_names = _l1_names(jobs[0]) if t0.l1_strength and t0.l1_params else []
        data = jobs[0].data
        self.x_train, self.y_train = data.x_train.to(device), data.y_train.to(device)
        self.x_val, self.y_val = data.x_val.to(device), data.y_val.to(device)
        self.weights = batch_weights(len(self.x_train), t0.batch_size, device).double()
        self.results = [MemberResult() for _ in jobs]
        self.finals: dict[int, MemberState] = {}  # members' end states, by job index

    def train(
        self, on_epoch: MemberCallback | None, should_stop: Callable[[], bool] | None
    ) -> list[MemberResult]:
        """Every epoch until the last, until no member is left or `should_stop`; then every
        member's state written back. A KeyboardInterrupt ends it at once: StackInterrupted
        with the rows of the epochs every member finished."""
        finished = 0  # the last epoch every live member has its row for
        try:
            for epoch in range(1, self.t0.epochs + 1):
                if not self.train_epoch(epoch, on_epoch):
                    break
                finished = epoch
                if should_stop is not None and should_stop():
                    break
        except KeyboardInterrupt as err:  # stopped at once (a second Ctrl-C): keep what is whole
            for result in self.results:
                del result.history[finished:]
            raise StackInterrupted(err, self.results, finished) from None
        self.write_back()
        return self.results

    def train_epoch(self, epoch: int, on_epoch: MemberCallback | None) -> bool:
        """One epoch of every live member, rows recorded; False once no member is left."""
        self.forward.base.train()
        x_epoch, y_epoch = self.shuffle()
        at_start = list(self.stack.members)
        steps: StepResults = []
        bs = self.t0.batch_size
        for start in range(0, len(self.x_train), bs):
            rows: list[int] | slice = slice(None)  # nobody left this epoch: no gather
            # (tested first: index() is O(K) per member)
            if len(self.stack.members) != len(at_start):
                rows = [at_start.index(k) for k in self.stack.members]
            xb, yb = x_epoch[rows, start : start + bs], y_epoch[rows, start : start + bs]
            result = self.step(xb, yb, epoch)
            if not result:
                break
            steps.append((list(self.stack.members), result))
        if not self.stack.members:
            return False
        live = self.stack.members
        # The live members' targets in their own batch order.
        y_live = y_epoch if live == at_start else y_epoch[[at_start.index(k) for k in live]]
        self.record(epoch, steps, y_live, on_epoch)
        if not self.stack.members:
            return False
        if self.t0.scheduler is not None:
            self.step_schedules()
        return True

    def shuffle(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The training data in each live member's batch order for this epoch: [K, n, ...]."""
        # Each member draws its order exactly as its solo fit does: CPU generator, then device.
        n, device = len(self.x_train), self.device
        orders = torch.stack(
            [
                torch.randperm(n, generator=self.jobs[k].generator).to(device)
                for k in self.stack.members
            ]
        )
        return self.x_train[orders], self.y_train[orders]

    def step(self, xb: torch.Tensor, yb: torch.Tensor, epoch: int) -> list[torch.Tensor | None]:
        """One optimizer step of every live member: [loss, output, L1 norm] per member, or
        [] when no member is left. A member whose own step raises is cut out (its solo
        run would stop there) and the step is retried for the rest."""
        stack = self.stack
        while True:
            try:
                loss, out = self.forward.all_members(stack.params, stack.buffers, xb, yb)
                break
            except RuntimeError:
                count = len(stack.members)
                bad = self.fail_raising(xb, yb, epoch)
                if not bad:
                    raise  # no single member to blame: a failure of the whole group
                if not stack.members:
                    return []
                keep = [i for i in range(count) if i not in bad]
                xb, yb = xb[keep], yb[keep]
        for p in stack.params.values():
            p.grad = None
        # d(sum)/d(loss_k) = 1: each member's gradient is exactly its own loss's.
        loss.sum().backward()
        norms = self.add_l1() if self.l1_names else None
        if self.per_member:
            step_members(stack, [self.member_parts[k] for k in stack.members])
        else:
            stack.optimizer.step()
        return [loss.detach(), out.detach(), norms]

    def fail_raising(self, xb: torch.Tensor, yb: torch.Tensor, epoch: int) -> list[int]:
        """Find the members whose own step on (xb, yb) raises and fail them; their stack
        positions as they were (none: no single member is to blame)."""
        stack = self.stack
        bad, errors = [], []
        for pos in range(len(stack.members)):
            member_params = {n: p[pos] for n, p in stack.params.items()}
            member_buffers = {n: b[pos] for n, b in stack.buffers.items()}
            try:
                self.forward.member(member_params, member_buffers, xb[pos], yb[pos])
            except RuntimeError as err:
                bad.append(pos)
                errors.append(f"{type(err).__name__}: {err}")
        if bad:
            self.fail(bad, epoch, errors)
        return bad

    def add_l1(self) -> torch.Tensor:
        """The solo L1Penalty, per member: its gradient, strength * sign(w), added to the
        stacked gradients; returns its value from the weights this step used, an L1 norm
        per member ([K], the strength not yet applied)."""
        l1 = [self.stack.params[name].detach() for name in self.l1_names]
        grads = [self.stack.params[name].grad for name in self.l1_names]
        if self.one_strength:
            torch._foreach_add_(grads, torch._foreach_sign(l1), alpha=self.t0.l1_strength)
        else:  # each member's own strength
            strengths = self.strengths[self.stack.members].to(device=self.device, dtype=l1[0].dtype)
            for g, w in zip(grads, l1, strict=True):
                g.add_(torch.sign(w) * strengths.view(-1, *[1] * (w.dim() - 1)))
        return sum(w.reshape(len(w), -1).abs().sum(dim=1) for w in l1)  # type: ignore[return-value]

    def epoch_losses(
        self, steps: StepResults, live: list[int]
    ) -> tuple[torch.Tensor, list[float], list[float] | None]:
        """The live members' per-batch losses ([steps, K], float64), epoch train losses and
        L1 penalties (None without L1), weighted by batch size as in `fit`."""
        step_losses = torch.stack(_column(steps, live, 0)).double()  # [steps, K]
        train_losses = (self.weights @ step_losses).tolist()  # float64 batch weights, as fit
        penalties = None
        if self.l1_names:
            norms = torch.stack(_column(steps, live, 2)).double()
            penalties = (self.strengths[live] * (self.weights @ norms)).tolist()
        return step_losses, train_losses, penalties

    def evaluate(
        self, out_epoch: torch.Tensor, y_live: torch.Tensor, live: list[int]
    ) -> tuple[list[dict[str, float]], list[dict[str, float]]]:
        """Every live member's train metrics (from its epoch's outputs) and val loss and
        metrics, at once (as each solo fit computes its own)."""
        self.forward.base.eval()
        metrics, x_val, y_val = self.t0.metrics, self.x_val, self.y_val
        stack = self.stack
        with torch.inference_mode():
            val_out = (
                torch.cat(
                    [
                        self.forward.shared(stack.params, stack.buffers, x_val[i : i + EVAL_CHUNK])
                        for i in range(0, len(x_val), EVAL_CHUNK)
                    ],
                    dim=1,
                )
                if len(x_val)
                else None
            )
            train_metrics = metrics.compute_each(out_epoch, y_live)
            if val_out is None or not len(y_val):
                return train_metrics, [{} for _ in live]
            y_each = y_val.expand(len(live), *y_val.shape)
            val_metrics = [
                {"loss": loss} | each
                for loss, each in zip(
                    self.forward.losses(val_out, y_each).tolist(),
                    metrics.compute_each(val_out, y_val, shared=True),
                    strict=True,
                )
            ]
        return train_metrics, val_metrics

    def record(
        self,
        epoch: int,
        steps: StepResults,
        y_live: torch.Tensor,
        on_epoch: MemberCallback | None,
    ) -> None:
        """Each live member's row of this epoch (sent to on_epoch), or, where its epoch loss
        is not finite, its failure with the solo NonFiniteLoss message."""
        live = self.stack.members
        step_losses, train_losses, penalties = self.epoch_losses(steps, live)
        # [K, n, ...] in batch order (the last batch may be smaller)
        out_epoch = torch.cat(_column(steps, live, 1), dim=1)
        train_metrics, val_metrics = self.evaluate(out_epoch, y_live, live)
        failed, errors, stopping = [], [], []
        for pos, k in enumerate(live):
            if not math.isfinite(train_losses[pos]):
                failed.append(pos)
                errors.append(str(non_finite_loss(epoch, train_losses[pos], step_losses[:, pos])))
                continue
            t = self.member_parts[k]
            row = epoch_row(
                train_losses[pos],
                train_metrics[pos],
                val_metrics[pos],
                penalties[pos] if penalties is not None else None,
                _lr(t) if t.scheduler is not None else None,  # the rate this epoch used
            )
            self.results[k].history.append(row)
            if t.monitor is not None:  # before on_epoch, as in fit
                self.watch(k, pos, epoch, row)
                if t.monitor.stopped:
                    stopping.append(k)
            if on_epoch is not None:
                on_epoch(k, epoch, row)
        if failed:
            self.fail(failed, epoch, errors)
        if stopping:
            self.stop(stopping)

    def watch(self, k: int, pos: int, epoch: int, row: dict[str, float]) -> None:
        """Member k's monitored metric (trainer.early_stop, trainer.keep): a new best epoch's
        weights are kept for keep=best, as its solo run keeps them."""
        job = self.jobs[k]
        if job.parts.monitor.update(epoch, row) and job.parts.monitor.keep_best:
            state = self.stack.member_state(pos, optimizer=False)
            job.best_state = {**state.params, **state.buffers}

    def stop(self, members: list[int]) -> None:
        """Freeze the members that stopped early (their solo runs end after this epoch, its
        schedule stepped) while the others go on."""
        positions = [self.stack.members.index(k) for k in members]
        if self.t0.scheduler is not None:
            _step_schedules([self.member_parts[k] for k in members], self.stack.optimizer, True)
        for pos, k in zip(positions, members, strict=True):
            self.finals[k] = self.stack.member_state(pos)
        self.stack.keep([i for i in range(len(self.stack.members)) if i not in positions])

    def fail(self, positions: list[int], epoch: int, errors: list[str]) -> None:
        """Record the members at stack `positions` as failed at `epoch` and cut them out."""
        for pos, error in zip(positions, errors, strict=True):
            k = self.stack.members[pos]
            self.results[k].failed_at, self.results[k].error = epoch, error
            self.finals[k] = self.stack.member_state(pos)
        self.stack.keep([i for i in range(len(self.stack.members)) if i not in positions])

    def step_schedules(self) -> None:
        """End the epoch's schedule for every live member."""
        live = [self.member_parts[k] for k in self.stack.members]
        _step_schedules(live, self.stack.optimizer, self.per_member)

    def write_back(self) -> None:
        """Every member's state into its own job: a live member's as it is now, a failed
        member's as it was when it failed."""
        for pos, k in enumerate(self.stack.members):
            self.finals[k] = self.stack.member_state(pos)
        for k, job in enumerate(self.jobs):
            _write_back(job, self.finals[k])


def _step_schedules(
    member_parts: list[Any], optimizer: torch.optim.Optimizer, per_member: bool = False
) -> None:
    """End an epoch's schedule: each live member's own scheduler steps (its state stays its
    solo run's, for its checkpoint), and the stacked optimizer takes the rate they give."""
    with warnings.catch_warnings():
        # The members' own optimizers do not step here (the stacked one does), which torch
        # takes for a scheduler stepped too early.
        warnings.filterwarnings("ignore", message=re.escape("Detected call of `lr_scheduler"))
        for t in member_parts:
            t.scheduler.step()
    if not per_member:  # (else each step reads every member's own rate)
        optimizer.param_groups[0]["lr"] = _lr(member_parts[0])


def step_members(stack: _Stack, member_parts: list[Any]) -> None:
    """One optimizer step where members have their own rate or weight decay: the solo
    update is lr * direction (Adam, AdamW, SGD with momentum, RMSprop alike), so the stacked
    optimizer takes a unit step and each member's slice of it is scaled by its own rate.
    Weight decay is applied as the solo optimizer applies it: added to the gradient (L2), or
    to the weights before the step (AdamW)."""
    params = list(stack.params.values())
    p0 = params[0]
    lrs = torch.tensor([_lr(t) for t in member_parts], dtype=p0.dtype, device=p0.device)
    decays = torch.tensor(
        [_weight_decay(t) for t in member_parts], dtype=p0.dtype, device=p0.device
    )
    decoupled = isinstance(stack.optimizer, torch.optim.AdamW)
    with torch.no_grad():
        for p in params:
            view = (-1, *[1] * (p.dim() - 1))
            if decoupled:
                p.mul_(1 - (lrs * decays).view(view))
            elif p.grad is not None:
                p.grad.add_(p * decays.view(view))
        before = [p.detach().clone() for p in params]
        stack.optimizer.step()
        for p, b in zip(params, before, strict=True):
            p.copy_(b + (p - b) * lrs.view(-1, *[1] * (p.dim() - 1)))


def _write_back(job: Job, state: MemberState) -> None:
    """Put a member's weights and optimizer state into its own model and optimizer, as if
    its solo run had trained them."""
    t = job.parts
    with torch.no_grad():
        for name, p in t.model.named_parameters():
            p.copy_(state.params[name])
        for name, b in t.model.named_buffers():
            b.copy_(state.buffers[name])
    for name, p in t.model.named_parameters():
        t.optimizer.state[p] = state.optimizer[name]
