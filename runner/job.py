"""One job: config → validated spec → torch objects → loop → metrics → MLflow.

Shaped like a recipe: `check` validates, `setup` builds everything (and fails on bad input
before any run starts), `train` runs the loop inside a tracked MLflow run, and the run
always ends with a final status. `runner.main` imports this module only inside a job, so
a sweep's launching process never pays for torch.
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

import torch
from hydra.types import RunMode
from mlflow.entities import Run
from omegaconf import DictConfig, OmegaConf

from runner import builders, datasets  # noqa: F401  (registers built-in components)
from runner.datasets import DataSplits
from runner.device import resolve_device, thread_count
from runner.errors import ConfigError
from runner.loop import Trainer, evaluate, fit
from runner.metrics import TaskMetrics, primary_metric
from runner.progress import EpochProgress
from runner.registry import DATASETS
from runner.report import REUSED_PREFIX
from runner.seeding import seed_everything
from runner.spec import RunSpec, TrackingSpec, validate
from runner.summary import model_summary, trainable_parameters
from runner.sweep import SweepInfo, fingerprint, read_sweep
from runner.tracking import Tracker, flatten

log = logging.getLogger("runner")


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


def check(cfg: DictConfig) -> tuple[dict[str, Any], RunSpec]:
    """Resolve and validate the config (plugins first, so their names exist)."""
    config = OmegaConf.to_container(cfg, resolve=True)
    load_plugins(list(config.get("plugins") or []))
    return config, validate(config)


def setup(config: dict[str, Any], spec: RunSpec, parallel: int = 1) -> Job:
    """Load data and build every torch object; raises ConfigError on bad input."""
    torch.set_num_threads(thread_count(spec.trainer.threads, parallel))
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
    model.to(device)  # before the optimizer, so fused kernels see the device
    trainer = Trainer(
        model=model,
        loss_fn=builders.build_loss(spec.model.loss),
        optimizer=builders.build_optimizer(spec.optim, list(model.parameters()), device),
        metrics=TaskMetrics(
            data.task, builders.output_kind(spec.model), data.target_mean, data.target_std
        ),
        device=device,
        epochs=spec.trainer.epochs,
        batch_size=spec.trainer.batch_size,
        l1_params=builders.l1_parameters(model, spec.model),
        l1_strength=spec.model.l1.strength,
        grad_clip=spec.trainer.grad_clip,
        data_path=spec.trainer.data_path,
        num_workers=spec.trainer.num_workers,
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


def finished_run(tracker: Tracker, sweep: SweepInfo, fp: str) -> Run | None:
    """In a re-run sweep: the FINISHED run of this exact config, linked to this sweep."""
    done = tracker.find_finished(fp)
    if done is not None and done.data.tags.get("mlflow.parentRunId") != sweep.parent_run_id:
        tracker.client.set_tag(sweep.parent_run_id, f"{REUSED_PREFIX}{fp[:16]}", done.info.run_id)
    return done


def train(job: Job, hydra_cfg: Any, tracker: Tracker, sweep: SweepInfo | None) -> float | None:
    """Run the loop inside an MLflow run and log everything; returns the final val metric."""
    spec, t = job.spec, job.trainer
    primary = primary_metric(job.data.task)
    run_name = hydra_cfg.job.override_dirname or f"{spec.model.name}-{spec.optim.name}"
    tags = run_tags(job, hydra_cfg)
    tags |= {"runner.fingerprint": fingerprint(job.config), "runner.primary_metric": primary}
    parent = sweep.parent_run_id if sweep else None
    with tracker.run(run_name, tags, parent_run_id=parent):
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
    return final.get(primary)


def record_failed_setup(cfg: DictConfig, hydra_cfg: Any, err: ConfigError) -> None:
    """In a sweep, a job whose config is bad still gets a FAILED child run saying why."""
    sweep = read_sweep(hydra_cfg.sweep.dir)
    if sweep is None:
        return
    config = OmegaConf.to_container(cfg, resolve=False)
    experiment = OmegaConf.select(cfg, "tracking.experiment", default="runner")
    spec = TrackingSpec(sweep.tracking_uri, "outputs", str(experiment))
    tags = {
        "runner.overrides": " ".join(hydra_cfg.overrides.task) or "(none)",
        "runner.sweep": str(Path(hydra_cfg.sweep.dir).resolve()),
        "runner.sweep_job": str(hydra_cfg.job.num),
    }
    tracker = Tracker(spec)
    try:
        with tracker.run(hydra_cfg.job.override_dirname, tags, parent_run_id=sweep.parent_run_id):
            tracker.log_params(flatten(config))
            raise err
    except ConfigError:
        pass  # recorded; the caller reports it


def run_job(cfg: DictConfig, hydra_cfg: Any) -> float | None:
    """One validated, tracked training run; in a sweep, failures are logged, not raised."""
    in_sweep = hydra_cfg.mode == RunMode.MULTIRUN
    sweep = read_sweep(hydra_cfg.sweep.dir) if in_sweep else None
    try:
        config, spec = check(cfg)
        if sweep and spec.sweep.skip_finished:
            # Checked before any data is loaded: a resumed sweep skips finished jobs fast.
            done = finished_run(Tracker(spec.tracking), sweep, fingerprint(config))
            if done is not None:
                log.info(
                    "skipped job %s: this exact config already FINISHED as run %s (%s); "
                    "sweep.skip_finished=false reruns it",
                    hydra_cfg.job.num, done.info.run_id, done.info.run_name,
                )  # fmt: skip
                return done.data.metrics.get(primary_metric(spec.task))
        job = setup(config, spec, parallel_jobs(hydra_cfg) if in_sweep else 1)
    except ConfigError as err:
        if not in_sweep and not os.environ.get("HYDRA_FULL_ERROR"):
            print(f"config error: {err}", file=sys.stderr)
            sys.exit(1)  # one clear message, no traceback
        log.error("job %s failed: config error: %s", hydra_cfg.job.num, err)
        if not in_sweep:
            raise
        record_failed_setup(cfg, hydra_cfg, err)
        return None
    log.info("model %s on %s\n%s", spec.model.name, job.trainer.device, job.summary)
    tracker = Tracker(spec.tracking)
    if not in_sweep:
        return train(job, hydra_cfg, tracker, None)
    try:
        return train(job, hydra_cfg, tracker, sweep)
    except Exception as err:  # the run is already FAILED in MLflow; the other jobs go on
        log.error("job %s failed: %s: %s", hydra_cfg.job.num, type(err).__name__, err)
        return None


def parallel_jobs(hydra_cfg: Any) -> int:
    """How many jobs the launcher runs at once (joblib's n_jobs; 1 for the basic launcher)."""
    n_jobs = OmegaConf.select(hydra_cfg, "launcher.n_jobs", default=None)
    if not isinstance(n_jobs, int):
        return 1
    return n_jobs if n_jobs > 0 else max(1, (os.cpu_count() or 1) + 1 + n_jobs)
