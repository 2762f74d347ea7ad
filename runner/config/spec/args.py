"""Component arguments checked against the registered callable's own signature: unknown,
missing, wrongly typed or out-of-range arguments, each one message naming the key."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from typing import Any

from runner.errors import did_you_mean

# Value ranges by argument name, shared by every component that takes such an argument.
# (low, high, low_inclusive): None means unbounded on that side.
RANGES: dict[str, tuple[float | None, float | None, bool]] = {
    "lr": (0, None, False),
    "momentum": (0, None, True),
    "dampening": (0, None, True),
    "weight_decay": (0, None, True),
    "alpha": (0, None, True),
    "eps": (0, None, False),
    "p": (0, 1, True),
    "in_features": (1, None, True),
    "out_features": (1, None, True),
    "in_channels": (1, None, True),
    "out_channels": (1, None, True),
    "num_features": (1, None, True),
    "std": (0, None, True),
    "noise_std": (0, None, True),
    "gamma": (0, None, False),
    "step_size": (1, None, True),
    "T_max": (1, None, True),
    "n_samples": (2, None, True),
    "val_size": (0, None, True),
    "delta": (0, None, False),
    "beta": (0, None, False),
    "width": (1, None, True),
    "depth": (0, None, True),
    "dropout": (0, 1, True),
    "seed": (0, 2**32 - 1, True),
}

# Allowed values by argument name, where the constructor accepts any string and the
# mistake would only surface mid-training. The loop needs one scalar loss per batch.
CHOICES: dict[str, tuple[str, ...]] = {"reduction": ("mean", "sum")}


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _type_problem(key: str, value: Any, param: inspect.Parameter) -> str | None:
    """Compare `value` with the kind of value the parameter's default or annotation implies."""
    default, annotation = param.default, str(param.annotation)
    if value is None:
        if default is None:
            return None
        if default is inspect.Parameter.empty:
            return f"{key}: null is not allowed; a value is required"
        return f"{key}: null is not allowed; give a value (default: {default!r})"
    if isinstance(default, bool) or annotation == "bool" or annotation == "<class 'bool'>":
        expected, ok = "true or false", isinstance(value, bool)
    elif annotation in ("int", "<class 'int'>"):
        expected, ok = "an integer", isinstance(value, int) and not isinstance(value, bool)
    elif is_number(default) or annotation in ("float", "<class 'float'>"):
        expected, ok = "a number", is_number(value)
    elif isinstance(default, str) or annotation in ("str", "<class 'str'>"):
        expected, ok = "a string", isinstance(value, str)
    elif isinstance(default, (tuple, list)):
        expected, ok = "a list", isinstance(value, (list, tuple))
    else:
        return None
    return None if ok else f"{key}: {value!r} is not {expected}"


def range_problem(key: str, name: str, value: Any) -> str | None:
    """Check a numeric value against RANGES for its argument name."""
    if isinstance(value, float) and math.isnan(value):
        return f"{key}: nan is not allowed"
    if name not in RANGES or not is_number(value):
        return None
    low, high, inclusive = RANGES[name]
    too_low = low is not None and (value < low if inclusive else value <= low)
    too_high = high is not None and value > high
    if not (too_low or too_high):
        return None
    bound = ">=" if inclusive else ">"
    allowed = f"{bound} {low}" if high is None else f"{low} to {high}"
    return f"{key}: {value!r} is out of range; allowed: {allowed}"


def signature_params(target: Callable[..., Any]) -> dict[str, inspect.Parameter]:
    """Named parameters of a callable or class constructor (no self, *args, **kwargs)."""
    sig = inspect.signature(target)
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {n: p for n, p in sig.parameters.items() if p.kind in kinds and n != "self"}


def check_args(
    key: str,
    kind: str,
    type_name: str,
    target: Callable[..., Any],
    args: dict[str, Any],
    skip_first: bool = False,
    provided: set[str] = frozenset(),
) -> list[str]:
    """Problems with `args` for `target`: unknown, missing, wrongly typed or out-of-range."""
    params = signature_params(target)
    if skip_first:  # initializers take the tensor first
        params = dict(list(params.items())[1:])
    # What the builder passes itself (the optimizer's params, the scheduler's optimizer) is
    # not the user's to set.
    params = {n: p for n, p in params.items() if n not in ("params", "optimizer")}
    problems = []
    for name, value in args.items():
        if name not in params:
            problems.append(
                f"{key}.{name}: {kind} {type_name!r} has no argument {name!r}."
                f"{did_you_mean(name, params)} Allowed: {', '.join(params) or 'none'}."
            )
            continue
        problem = _type_problem(f"{key}.{name}", value, params[name])
        problem = problem or range_problem(f"{key}.{name}", name, value)
        if not problem and name in CHOICES and value not in CHOICES[name]:
            problem = f"{key}.{name}: {value!r} is not allowed; allowed: {', '.join(CHOICES[name])}"
        if problem:
            problems.append(problem)
    for name, param in params.items():
        required = param.default is inspect.Parameter.empty
        if required and name not in args and name not in provided:
            problems.append(f"{key}.{name}: missing; {kind} {type_name!r} requires it")
    return problems
