"""What a person reads about a run in the MLflow UI: a short name that differs where the
configs differ, the command that reproduces it, and a one-paragraph description."""

from __future__ import annotations

GROUPS = ("model", "data", "optim", "scheduler", "experiment", "hparams_search")
SHORT_KEYS = {"seed": "s", "data.fold": "fold"}  # repeats read as "s3", "fold2"
QUIET_KEYS = ("tracking.", "hydra.", "trainer.progress", "trainer.plots", "trainer.log_model")
MAX_NAME = 40
# a config group's choice is logged as this param (the component's name)
GROUP_PARAMS = {"model": "model.name", "data": "data.name", "optim": "optim.name"}


def split_override(override: str) -> tuple[str, str]:
    """`+optim.lr=0.1` -> ("optim.lr", "0.1"); a bare `~key` -> ("key", "")."""
    key, _, value = override.partition("=")
    return key.lstrip("+~"), value


def short_value(key: str, value: str) -> str:
    """One override as few characters as say it: a group's choice by itself (`adam`),
    `s3` for seed=3, else the key's last part (`lr=0.1`)."""
    if key in GROUPS:
        return value
    if key in SHORT_KEYS:
        return f"{SHORT_KEYS[key]}{value}"
    return f"{key.rsplit('.', 1)[-1]}={value}"


def run_name(overrides: list[str], swept: list[str] | None, model: str, optim: str) -> str:
    """What tells the run apart first (the UI shows some 20 characters of a name): its
    seed and fold, then a sweep job's other swept values (`s1 adam`), or a single run's
    other overrides, then its model and optimizer (`s3 epochs=30 xor_deep adam`)."""
    pairs = [split_override(o) for o in overrides]
    pairs = [(k, v) for k, v in pairs if not k.startswith(QUIET_KEYS)]
    if swept:
        pairs = [(k, v) for k, v in pairs if k in swept]
    parts = [short_value(k, v) for k, v in pairs if k in SHORT_KEYS]
    if swept:
        parts += [short_value(k, v) for k, v in pairs if k not in SHORT_KEYS]
    else:
        parts += [
            short_value(k, v) for k, v in pairs if k not in ("model", "optim", *SHORT_KEYS)
        ] + [model, optim]
    name = " ".join(p for p in parts if p) or f"{model} {optim}"
    return name if len(name) <= MAX_NAME else name[: MAX_NAME - 1] + "…"


def command(overrides: list[str], flags: list[str] | tuple[str, ...] = ()) -> str:
    """The command that runs this job alone (what MLflow's Source column shows), each
    override quoted for a shell where it needs it; `flags` (`--config-dir=...`) as given."""
    import shlex

    return " ".join(["python -m runner", *flags, *map(shlex.quote, overrides)])


def describe(
    *,
    model: str,
    params: int,
    data: str,
    sizes: dict[str, int],
    optim: str,
    optim_args: dict,
    epochs: int,
    batch_size: int,
    seed: int,
    metric: str,
    overrides: list[str],
    sweep_parent: str | None = None,
) -> str:
    """The run's description (Markdown, shown on its MLflow page)."""
    split = " / ".join(f"{n:,} {name}" for name, n in sizes.items() if n)
    args = ", ".join(f"{k} {v}" for k, v in optim_args.items())
    lines = [
        f"**{model}** ({params:,} trainable parameters) on **{data}** ({split} rows), "
        f"**{optim}** ({args}), {epochs} epochs of batch {batch_size}, seed {seed}. "
        f"Compared by `{metric}`.",
        "",
        f"Reproduce: `{command(overrides)}`",
    ]
    if sweep_parent:
        lines += ["", f"A job of sweep run `{sweep_parent}`."]
    return "\n".join(lines)
