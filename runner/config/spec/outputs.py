"""Does the model's last layer emit what its loss expects?

A layer that squashes its input registers what it emits (`output` meta: probability,
log_probability, bounded; `same` for one that passes values on, as dropout does); any other
layer emits raw scores, `logits`. A loss registers what it expects (`output` meta; `takes`
when it accepts more than that: cross_entropy also takes log-probabilities, since
log_softmax changes nothing under it). `bce_with_logits` after a sigmoid squashes twice and
trains stuck near chance without an error, `bce` without one fails or misleads: both are
config errors naming the layer and the loss that fits. Regression losses take any output.
"""

from __future__ import annotations

from runner.config.spec.schema import Component, LayerSpec
from runner.registry import LAYERS, LOSSES

# How a message names what a layer emits or a loss expects.
WORDS = {
    "logits": "raw scores (logits)",
    "probability": "probabilities",
    "log_probability": "log-probabilities",
    "bounded": "values squashed into (-1, 1)",
}


def _emits(layer: str) -> str:
    return LAYERS.get(layer, "model.layers").meta.get("output", "logits")


def _fits(layer: str, task: str) -> bool:
    """Whether a squashing layer suits the task (softmax over one output is always 1)."""
    tasks = LAYERS.get(layer, "model.layers").meta.get("tasks")
    return tasks is None or task in tasks


def _takes(loss: str) -> tuple[str, ...]:
    meta = LOSSES.get(loss, "model.loss").meta
    return tuple(meta.get("takes", (meta.get("output"),)))


def _losses_after(emits: str, task: str) -> list[str]:
    """The task's losses that take what a layer emits."""
    return [e.name for e in LOSSES if task in e.meta.get("tasks", ()) and emits in _takes(e.name)]


def _quoted(names: list[str]) -> str:
    return " or ".join(repr(n) for n in names)


def loss_output_problem(loss: Component, layers: list[LayerSpec], task: str) -> str | None:
    """One message when the last layer's output is not what the loss expects; None when it
    is, or when the loss takes any output."""
    expects = LOSSES.get(loss.type, loss.key).meta.get("output")
    last = next((la for la in reversed(layers) if _emits(la.type) != "same"), None)
    if expects not in WORDS or last is None:
        return None
    emits = _emits(last.type)
    if emits in _takes(loss.type) and _fits(last.type, task):
        return None
    chosen = f"{loss.type!r}" + (" (what loss auto picks)" if loss.name == "auto" else "")
    head = f"{loss.key}.name: {chosen} expects {WORDS[expects]}, but the model ends with "
    head += f"{last.type} ({last.key})"
    if expects == "logits":  # a squashing layer before a loss that squashes itself
        fitting = _losses_after(emits, task)
        use = f"after a {last.type} use {_quoted(fitting)}, or " if fitting else ""
        return f"{head}, which outputs {WORDS[emits]}; {use}remove the {last.type} layer"
    squashers = [e.name for e in LAYERS if e.meta.get("output") == expects and _fits(e.name, task)]
    raw = _losses_after("logits", task)
    why = f", which outputs {WORDS[emits]}" if emits != "logits" else ""
    if emits == expects:  # the right kind of layer for another task
        why = f", which does not fit a {task} task"
    fixes = [f"end the model with a {' or '.join(squashers)} layer"] if squashers else []
    fixes += [f"use {_quoted(raw)} on its raw outputs"] if raw else []
    return f"{head}{why}" + (f"; {', or '.join(fixes)}" if fixes else "")
