"""One job: config → validated spec → torch objects → loop → metrics → MLflow.

Shaped like a recipe: `setup` builds everything (and fails on bad input before any run
starts), `train` runs the loop inside a tracked MLflow run, and the run always ends with a
final status.
"""

from __future__ import annotations

import importlib
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from runner import builders, datasets  # noqa: F401  (registers built-in components)
from runner.choices import group_choice_problems
from runner.datasets import DataSplits
from runner.device import resolve_device
from runner.errors import ConfigError
from runner.loop import Trainer, evaluate, fit
from runner.metrics import TaskMetrics
from runner.progress import EpochProgress
from runner.registry import DATASETS
from runner.seeding import seed_everything
from runner.spec import RunSpec, validate
from runner.summary import model_summary, trainable_parameters
from runner.tracking import Tracker, flatten

log = logging.getLogger("runner")
PROJECT_ROOT = Path(__file__).resolve().parents[1]
# `${runner.project:}` in a config: the project's folder, for files that ship with it.
OmegaConf.register_new_resolver("runner.project", lambda: str(PROJECT_ROOT), replace=True)


@dataclass
class Job:
    """Everything `setup` built for one run."""

    spec: RunSpec
    config: dict[str, Any]
    data: DataSplits
    trainer: Trainer
    generator: torch.Generator
    params: int
    summary: str


def load_plugins(names: list[str]) -> None:
    """Import the modules a config lists under `plugins:` so their registrations run."""
    for i, name in enumerate(names):
        try:
            importlib.import_module(name)
        except ImportError as err:
            raise ConfigError(f"plugins[{i}]: cannot import {name!r}: {err}") from None


def load_data(spec: RunSpec) -> DataSplits:
    """Call the registered dataset loader with the config's arguments."""
    return DATASETS.get(spec.data.type, "data.type").target(**spec.data.args)


def setup(cfg: DictConfig) -> Job:
    """Validate, load data and build every torch object; raises ConfigError on bad input."""
    config = OmegaConf.to_container(cfg, resolve=True)
    load_plugins(list(config.get("plugins") or []))
    spec = validate(config)
    generator = seed_everything(spec.seed)
    data = load_data(spec)
    declared = config["data"].get("num_outputs")
    if declared is not None and declared != data.num_outputs:
        raise ConfigError(
            f"data.num_outputs: {declared!r} but the loaded data has {data.num_outputs} outputs"
        )
    model, infos = builders.build_model(spec.model, data.input_shape)
    builders.check_output(spec.model, infos, data.task, data.num_outputs)
    device = resolve_device(spec.device)
    trainer = Trainer(
        model=model,
        loss_fn=builders.build_loss(spec.model.loss),
        optimizer=builders.build_optimizer(spec.optim, list(model.parameters())),
        metrics=TaskMetrics(
            data.task, builders.output_kind(spec.model), data.target_mean, data.target_std
        ),
        device=device,
        epochs=spec.trainer.epochs,
        batch_size=spec.trainer.batch_size,
        l1_params=builders.l1_parameters(model, spec.model),
        l1_strength=spec.model.l1.strength,
        grad_clip=spec.trainer.grad_clip,
    )
    trainer.scheduler = builders.build_scheduler(spec.scheduler, trainer.optimizer, spec.trainer)
    summary = model_summary(infos, data.input_shape, str(device))
    return Job(spec, config, data, trainer, generator, trainable_parameters(infos), summary)


def _git_commit(directory: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", "-C", directory, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def run_tags(job: Job, hydra_cfg: Any) -> dict[str, str]:
    """Tags that say where a run came from: overrides, device, versions, sweep, commit."""
    overrides = list(hydra_cfg.overrides.task)
    tags = {
        "runner.overrides": " ".join(overrides) or "(none)",
        "runner.device": str(job.trainer.device),
        "runner.torch": torch.__version__,
        "runner.model": job.spec.model.name,
        "runner.data": job.spec.data.name,
        "runner.optim": job.spec.optim.name,
        "runner.task": job.data.task,
        "runner.output_dir": hydra_cfg.runtime.output_dir,
    }
    if hydra_cfg.mode == RunMode.MULTIRUN:
        tags["runner.sweep"] = str(Path(hydra_cfg.sweep.dir).resolve())
        tags["runner.sweep_job"] = str(hydra_cfg.job.num)
    commit = _git_commit(hydra_cfg.runtime.cwd)
    if commit:
        tags["mlflow.source.git.commit"] = commit
    return tags


def log_pictures(tracker: Tracker, job: Job, history: list[dict[str, float]]) -> None:
    """Learning curves, decision regions (2-D inputs), confusion matrix or predicted vs true."""
    from runner import plots

    t, data = job.trainer, job.data
    figures = {"plots/learning_curves.png": plots.learning_curves(history, t.metrics.primary)}
    if data.input_shape == (2,) and data.task != "regression":
        figures["plots/decision_regions.png"] = plots.decision_regions(
            t.model, t.metrics, data.x_train, data.y_train, data.x_val, data.y_val
        )
    if len(data.y_val):
        _, outputs = evaluate(t.model, t.loss_fn, t.metrics, data.x_val.to(t.device), data.y_val)
        pred = t.metrics.predict(outputs.cpu())
        if data.task == "regression":
            true = data.y_val * data.target_std + data.target_mean
            figures["plots/predicted_vs_true.png"] = plots.predicted_vs_true(true, pred)
        else:
            figures["plots/confusion_matrix.png"] = plots.confusion_matrix(
                data.y_val.long(), pred, data.class_names
            )
    for path, figure in figures.items():
        tracker.log_figure(figure, path)
        plots.close(figure)


def train(job: Job, hydra_cfg: Any) -> float | None:
    """Run the loop inside an MLflow run and log everything; returns the final val metric."""
    spec, t = job.spec, job.trainer
    tracker = Tracker(spec.tracking)
    run_name = hydra_cfg.job.override_dirname or f"{spec.model.name}-{spec.optim.name}"
    with tracker.run(run_name, run_tags(job, hydra_cfg)):
        log.info("MLflow run %s in experiment %r", tracker.run_id, spec.tracking.experiment)
        tracker.log_params({**flatten(job.config), "trainable_params": str(job.params)})
        tracker.log_metrics({"trainable_params": job.params}, step=0)
        tracker.log_text(OmegaConf.to_yaml(OmegaConf.create(job.config)), "config.yaml")
        tracker.log_text(job.summary, "model_summary.txt")
        tracker.log_dir(Path(hydra_cfg.runtime.output_dir) / ".hydra", "hydra")

        label = f"{spec.model.name}/{spec.optim.name}"
        progress = EpochProgress(spec.trainer.epochs, spec.trainer.progress, label)

        def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
            tracker.log_metrics(metrics, step=epoch)
            progress(epoch, metrics)

        try:
            history = fit(t, job.data, job.generator, on_epoch)
        finally:
            progress.close()
        final = history[-1]
        if job.data.x_test is not None:
            test, _ = evaluate(
                t.model, t.loss_fn, t.metrics, job.data.x_test.to(t.device),
                job.data.y_test.to(t.device),
            )  # fmt: skip
            final = {**final, **{f"test_{k}": v for k, v in test.items()}}
            tracker.log_metrics({f"test_{k}": v for k, v in test.items()}, step=spec.trainer.epochs)
        tracker.flush()
        log.info("final: %s", " ".join(f"{k}={v:.4f}" for k, v in final.items()))
        if spec.trainer.plots:
            log_pictures(tracker, job, history)
        if spec.trainer.log_model:
            example = job.data.x_val[:5] if len(job.data.x_val) else job.data.x_train[:5]
            tracker.log_model(t.model.cpu().eval(), example.numpy())
    return final.get(f"val_{t.metrics.primary}")


@hydra.main(version_base="1.3", config_path=str(PROJECT_ROOT / "conf"), config_name="config")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point: one validated, tracked training run per job."""
    hydra_cfg = HydraConfig.get()
    try:
        job = setup(cfg)
    except ConfigError as err:
        if hydra_cfg.mode == RunMode.RUN and not os.environ.get("HYDRA_FULL_ERROR"):
            print(f"config error: {err}", file=sys.stderr)
            sys.exit(1)  # one clear message, no traceback
        log.error("config error: %s", err)
        raise  # in a sweep: this job fails, the others still run
    log.info("model %s on %s\n%s", job.spec.model.name, job.trainer.device, job.summary)
    return train(job, hydra_cfg)


def cli() -> None:
    """`python -m runner`: reject unknown config-group choices early, then hand over to Hydra."""
    problems = group_choice_problems(sys.argv[1:], PROJECT_ROOT / "conf")
    if problems:
        print(f"config error: {ConfigError(problems)}", file=sys.stderr)
        sys.exit(1)
    main()
