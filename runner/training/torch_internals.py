"""torch's internals that the runner relies on, all here (none is torch's public API).

Checked against torch 2.14.1 (`CHECKED_AGAINST`); tests/test_dependency_internals.py fails,
naming the name, on a torch that changed one.

torch's optimizers import `torch._dynamo` (the compiler, about 1.3 s of CPU: more than
training a small model) on their first call, only to mark where `torch.compile` must not
trace: their `step` runs inside a wrapper that calls `torch._dynamo.graph_break()` around it,
and `__init__`, `zero_grad`, `state_dict`, `load_state_dict` and `add_param_group` run
through `torch._disable_dynamo`. The runner never compiles an optimizer, so `spare_dynamo`
lets an optimizer class skip that import:

- `torch.optim.optimizer._use_grad_for_differentiable`: the step's wrapper. Replaced on the
  class by one that sets the grad mode exactly as it does, without the graph breaks; only if
  its code names what was checked (`USE_GRAD_NAMES`), else left as it is.
- `torch._compile._disable_dynamo`: its wrapper caches the disabled function in the wrapped
  function's `__dynamo_disable` attribute; set to the function itself, it is called directly.
- `Optimizer.profile_hook_step` and the `hooked` mark: a class already stepped has its step
  wrapped once more (hooks, profiler), kept around the replacement.

Where `torch._dynamo` is loaded already (something compiles), or a name moved, nothing
changes: the first step imports the compiler as before (said once, at debug level).
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from types import CodeType
from typing import Any

import torch

from runner.errors import DependencyMoved

log = logging.getLogger("runner")

CHECKED_AGAINST = "2.14.1"
# What torch 2.14.1's step wrapper refers to: grad mode, `defaults["differentiable"]` and
# the graph breaks; a wrapper naming anything else does more, and is left alone.
USE_GRAD_NAMES = frozenset({
    "torch._dynamo", "_dynamo", "cast", "Optimizer", "is_grad_enabled", "set_grad_enabled",
    "defaults", "graph_break",
})  # fmt: skip
MOVED = "torch's optimizers import torch._dynamo on their first call (about 1 s more)"


def moved(name: str) -> DependencyMoved:
    """The one-line error for a torch internal `name` that changed."""
    return DependencyMoved("torch", name, CHECKED_AGAINST)


def _probe() -> None:
    """A function to wrap, to find the code of torch's wrappers."""


@functools.cache
def wrapper_codes() -> tuple[CodeType, CodeType]:
    """The code objects of torch's `_disable_dynamo` wrapper and of the optimizers' step
    wrapper, as torch builds them; DependencyMoved if either is gone or changed."""
    try:
        from torch._compile import _disable_dynamo
        from torch.optim.optimizer import _use_grad_for_differentiable
    except ImportError as err:
        raise moved(f"torch._compile._disable_dynamo or its optimizer wrapper ({err})") from err
    disabled, stepped = _disable_dynamo(_probe), _use_grad_for_differentiable(_probe)
    for wrapper, name in ((disabled, "_disable_dynamo"), (stepped, "_use_grad_for_differentiable")):
        if getattr(wrapper, "__wrapped__", None) is not _probe:
            raise moved(f"the function wrapped by {name} (its __wrapped__)")
    names = set(stepped.__code__.co_names)
    if names != USE_GRAD_NAMES:
        raise moved(f"_use_grad_for_differentiable as checked (it now names {sorted(names)})")
    if not callable(getattr(torch.optim.Optimizer, "profile_hook_step", None)):
        raise moved("torch.optim.Optimizer.profile_hook_step")
    return disabled.__code__, stepped.__code__


def _in_grad_mode(step: Callable[..., Any]) -> Callable[..., Any]:
    """`step` run as torch's wrapper runs it, without telling torch.compile where to break."""

    @functools.wraps(step)
    def step_in_grad_mode(*args: Any, **kwargs: Any) -> Any:
        before = torch.is_grad_enabled()
        try:
            torch.set_grad_enabled(args[0].defaults["differentiable"])
            return step(*args, **kwargs)
        finally:
            torch.set_grad_enabled(before)

    return step_in_grad_mode


def spare_dynamo(optimizer_class: type) -> None:
    """Let `optimizer_class` (a torch.optim.Optimizer) be built and stepped without
    importing torch._dynamo, unless it is loaded already or torch changed its wrappers."""
    if "torch._dynamo" in sys.modules or not issubclass(optimizer_class, torch.optim.Optimizer):
        return
    try:
        disable_code, step_code = wrapper_codes()
    except DependencyMoved as err:
        err.fall_back(log, MOVED, logging.DEBUG)
        return
    for cls in optimizer_class.__mro__:
        for attr in list(vars(cls).values()):
            if getattr(attr, "__code__", None) is disable_code:
                attr.__wrapped__.__dynamo_disable = attr.__wrapped__
        step = vars(cls).get("step")
        hooked = getattr(step, "hooked", False)  # stepped once: torch's hook wrapper outside
        inner = step.__wrapped__ if hooked else step
        if getattr(inner, "__code__", None) is not step_code:
            continue
        spared = _in_grad_mode(inner.__wrapped__)
        if hooked:
            spared = torch.optim.Optimizer.profile_hook_step(spared)
            spared.hooked = True
        cls.step = spared
