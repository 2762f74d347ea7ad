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
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from runner import builders, checkpoint, datasets  # noqa: F401  (registers components)
from runner.datasets import DataSplits
from runner.device import resolve_device, thread_count
from runner.errors import ArtifactStoreError, ConfigError
from runner.loop import NonFiniteLoss, Trainer, evaluate, fit
from runner.metrics import TaskMetrics, primary_metric
from runner.params import flatten
from runner.progress import EpochProgress
from runner.registry import DATASETS
from runner.seeding import seed_everything
from runner.spec import RunSpec, TrackingSpec, plugin_list, validate
from runner.summary import model_summary, trainable_parameters
from runner.sweep import REUSED_PREFIX, SweepInfo, fingerprint, parallel_jobs, read_sweep

if TYPE_CHECKING:  # mlflow is imported only where a job logs in-process
    from mlflow.entities import Run

    from runner.tracking import Tracker

log = logging.getLogger("runner")
# Models this large spend their steps in multi-threaded kernels that a busy companion
# process slows; smaller ones (XOR's 37 parameters) are bound by Python on one core.
KERNEL_BOUND_PARAMS = 10_000


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
    resume: dict[str, Any] | None = None  # a loaded checkpoint to continue from


def load_plugins(names: list[str]) -> None:
    """Import the modules a config lists under `plugins:` so their registrations run."""
    for i, name in enumerate(names):
        try:
            importlib.import_module(name)
        except Exception as err:  # ImportError, or the module failing as it loads
            raise ConfigError(
                f"plugins[{i}]: cannot import {name!r}: {type(err).__name__}: {err}"
            ) from None


def load_data(spec: RunSpec) -> DataSplits:
    """Call the registered dataset loader with the config's arguments."""
    return DATASETS.get(spec.data.type, "data.type").target(**spec.data.args)


def check(cfg: DictConfig) -> tuple[dict[str, Any], RunSpec]:
    """Resolve and validate the config (plugins first, so their names exist)."""
    config = OmegaConf.to_container(cfg, resolve=True)
    load_plugins(plugin_list(config.get("plugins")))
    return config, validate(config)


def setup(config: dict[str, Any], spec: RunSpec, parallel: int = 1) -> Job:
    """Load data and build every torch object; raises ConfigError on bad input."""
    torch.set_num_threads(thread_count(spec.trainer.threads, parallel))
    generator = seed_everything(spec.seed, spec.trainer.deterministic)
    data = load_data(spec)
    declared = config["data"].get("num_outputs")
    if declared is not None and declared != data.num_outputs:
        raise ConfigError(
            f"data.num_outputs: {declared!r} but the loaded data has {data.num_outputs} outputs"
        )
    model, infos = builders.build_model(spec.model, data.input_shape)
    if spec.trainer.threads == "auto" and trainable_parameters(infos) < KERNEL_BOUND_PARAMS:
        torch.set_num_threads(1)  # tiny tensors: extra threads only spin, on a busy core
    builders.check_output(infos, data.task, data.num_outputs)
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
        on_nan=spec.trainer.on_nan,
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
        "runner.host": socket.gethostname(),
        "runner.pid": str(os.getpid()),
    }
    if hydra_cfg.mode == RunMode.MULTIRUN:
        tags["runner.sweep"] = str(Path(hydra_cfg.sweep.dir).resolve())
        tags["runner.sweep_job"] = str(hydra_cfg.job.num)
    commit = _git_commit(hydra_cfg.runtime.cwd)
    if commit:
        tags["mlflow.source.git.commit"] = commit
    return tags


@torch.inference_mode()
def picture_data(job: Job, history: list[dict[str, float]]) -> dict[str, Any]:
    """What the plots need, as plain arrays: drawing happens where the tracker lives."""
    t, data = job.trainer, job.data
    pictures: dict[str, Any] = {"history": history, "primary": t.metrics.primary}
    if data.input_shape == (2,) and data.task != "regression":
        points = torch.cat([data.x_train, data.x_val])
        lo, hi = points.min(0).values - 0.1, points.max(0).values + 0.1
        gx, gy = torch.meshgrid(
            torch.linspace(lo[0], hi[0], 200), torch.linspace(lo[1], hi[1], 200), indexing="xy"
        )
        grid = torch.stack([gx.reshape(-1), gy.reshape(-1)], dim=1).to(t.device)
        t.model.eval()
        pred = t.metrics.predict(t.model(grid).cpu()).reshape(gx.shape)
        pictures["regions"] = {
            "grid_x": gx.numpy(), "grid_y": gy.numpy(), "grid_pred": pred.numpy(),
            "x_train": data.x_train.numpy(), "y_train": data.y_train.numpy(),
            "x_val": data.x_val.numpy(), "y_val": data.y_val.numpy(),
        }  # fmt: skip
    if len(data.y_val):
        _, outputs = evaluate(t.model, t.loss_fn, t.metrics, data.x_val.to(t.device), data.y_val)
        pred = t.metrics.predict(outputs.cpu())
        if data.task == "regression":
            true = data.y_val * data.target_std + data.target_mean
            pictures["regression"] = {"y_true": true.numpy(), "y_pred": pred.numpy()}
        else:
            pictures["confusion"] = {
                "y_true": data.y_val.long().numpy(),
                "y_pred": pred.numpy(),
                "class_names": data.class_names,
            }
    return pictures


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
    resume = job.resume
    fp = fingerprint(job.config)
    with tracker.run(run_name, tags, parent, run_id=resume["run_id"] if resume else None):
        log.info("MLflow run in experiment %r (store: %s)", spec.tracking.experiment, tracker.uri)
        if resume is None:
            tracker.end_stale_runs(fp, socket.gethostname())
            tracker.log_params({**flatten(job.config), "trainable_params": str(job.params)})
            tracker.log_metrics({"trainable_params": job.params}, step=0)
            tracker.log_text(OmegaConf.to_yaml(OmegaConf.create(job.config)), "config.yaml")
            tracker.log_text(job.summary, "model_summary.txt")
            tracker.log_dir(Path(hydra_cfg.runtime.output_dir) / ".hydra", "hydra")
        else:  # the same run goes on: its params stay as first logged
            log.info("resuming at epoch %d", resume["epoch"] + 1)
        # Epochs whose metrics MLflow already holds are not logged twice; those a killed
        # process had not flushed yet come back from the checkpoint's history.
        logged = tracker.logged_steps("train_loss") if resume else set()
        for epoch, row in enumerate(resume["history"] if resume else [], start=1):
            if epoch not in logged:
                tracker.log_metrics(row, step=epoch)
                logged.add(epoch)
        ckpt_path = Path(hydra_cfg.runtime.output_dir).resolve() / "checkpoints" / "last.pt"
        tracker.set_tags({"runner.checkpoint": str(ckpt_path)})

        label = f"{spec.model.name}/{spec.optim.name}"
        progress = EpochProgress(spec.trainer.epochs, spec.trainer.progress, label)
        seen = list(resume["history"]) if resume else []
        logging_seconds = 0.0

        def save_checkpoint(epoch: int, wait_for_run: bool = False) -> None:
            # Periodic saves never wait for the MLflow companion; the last one before a stop
            # does, so that resuming from the file finds its run.
            run_id = tracker.wait_run_id() if wait_for_run else tracker.run_id
            state = checkpoint.capture(t, job.generator, epoch, seen, run_id, fp)
            checkpoint.save(state, ckpt_path)
            tracker.flush()  # MLflow is never behind the checkpoint

        def on_epoch(epoch: int, metrics: dict[str, float]) -> None:
            nonlocal logging_seconds
            started = time.perf_counter()
            if epoch not in logged:
                tracker.log_metrics(metrics, step=epoch)
            tracker.poll()  # a failed artifact or store write stops the run now
            logging_seconds += time.perf_counter() - started
            progress(epoch, metrics)
            seen.append(metrics)
            every = spec.trainer.checkpoint_every
            stop = STOP.signum  # read once: a signal may land at any line
            if (every and epoch % every == 0) or stop is not None:
                save_checkpoint(epoch, wait_for_run=stop is not None)
            if stop is not None:
                raise Interrupted(stop, epoch)

        if job.params >= KERNEL_BOUND_PARAMS and torch.get_num_threads() > 1:
            tracker.wait_warm()  # its imports would slow every multi-threaded kernel
        started = time.perf_counter()
        log.info("training starts")
        try:
            history = fit(
                t, job.data, job.generator, on_epoch,
                start_epoch=resume["epoch"] + 1 if resume else 1, history=seen[:],
            )  # fmt: skip
        except BaseException:
            if ckpt_path.exists():  # the last good state goes with the failed or killed run
                tracker.log_artifact(ckpt_path, "checkpoints")
            raise
        finally:
            progress.close()
        save_checkpoint(spec.trainer.epochs, wait_for_run=True)
        tracker.log_artifact(ckpt_path, "checkpoints")
        flush_started = time.perf_counter()
        tracker.flush()
        logging_seconds += time.perf_counter() - flush_started
        train_seconds = time.perf_counter() - started
        log.info(
            "training took %.2f s, of which MLflow metric logging %.3f s (%.1f%%)",
            train_seconds, logging_seconds, 100 * logging_seconds / train_seconds,
        )  # fmt: skip
        tracker.log_metrics(
            {"time_train_s": train_seconds, "time_logging_s": logging_seconds},
            step=spec.trainer.epochs,
        )
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
            tracker.log_pictures(picture_data(job, history))
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
    from runner.tracking import Tracker

    tracker = Tracker(spec)
    try:
        with tracker.run(hydra_cfg.job.override_dirname, tags, parent_run_id=sweep.parent_run_id):
            tracker.log_params(flatten(config))
            raise err
    except ConfigError:
        pass  # recorded; the caller reports it


def run_job(cfg: DictConfig, hydra_cfg: Any, companion: Any = None) -> float | None:
    """One validated, tracked training run; in a sweep, failures are logged, not raised.

    `companion`: a started MLflow companion process (runner.sidecar) to log through.
    """
    in_sweep = hydra_cfg.mode == RunMode.MULTIRUN
    sweep = read_sweep(hydra_cfg.sweep.dir) if in_sweep else None
    try:
        config, spec = check(cfg)
        if sweep and spec.sweep.skip_finished:
            # Checked before any data is loaded: a resumed sweep skips finished jobs fast.
            from runner.tracking import Tracker

            done = finished_run(Tracker(spec.tracking), sweep, fingerprint(config))
            if done is not None:
                log.info(
                    "skipped job %s: this exact config already FINISHED as run %s (%s); "
                    "sweep.skip_finished=false reruns it",
                    hydra_cfg.job.num, done.info.run_id, done.info.run_name,
                )  # fmt: skip
                return done.data.metrics.get(primary_metric(spec.task))
        # Training keeps every core: the MLflow companion is busy only at the run's start
        # and end, and a matrix-heavy model (MNIST) needs both cores in between.
        job = setup(config, spec, parallel_jobs(hydra_cfg) if in_sweep else 1)
        if spec.resume:
            job.resume = load_resume(spec.resume, spec, config, job)
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
    tracker = make_tracker(spec, companion)
    with stop_on_signals():
        if not in_sweep:
            try:
                return train(job, hydra_cfg, tracker, None)
            except (NonFiniteLoss, ArtifactStoreError) as err:  # known: a message, no traceback
                if os.environ.get("HYDRA_FULL_ERROR"):
                    raise
                print(f"error: {err} (run {tracker.run_id or ''} ended FAILED)", file=sys.stderr)
                sys.exit(1)
        try:
            return train(job, hydra_cfg, tracker, sweep)
        except Exception as err:  # the run is already FAILED in MLflow; the other jobs go on
            log.error("job %s failed: %s: %s", hydra_cfg.job.num, type(err).__name__, err)
            return None


def make_tracker(spec: RunSpec, companion: Any) -> Any:
    """A RemoteTracker served by the companion process, or an in-process Tracker."""
    if companion is not None:
        from runner.sidecar import RemoteTracker

        return RemoteTracker(spec.tracking, companion)
    from runner.tracking import Tracker

    return Tracker(spec.tracking)


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM arrived: the run stopped after a checkpointed epoch."""

    def __init__(self, signum: int, epoch: int) -> None:
        super().__init__(f"stopped by signal {signum} after epoch {epoch}")
        self.signum = signum


class _StopRequest:
    """The first SIGINT/SIGTERM asks to stop after the current epoch; a second stops now."""

    signum: int | None = None


STOP = _StopRequest()


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within a job: SIGINT/SIGTERM end the epoch, write a checkpoint, end the run KILLED."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def request(signum: int, frame: Any) -> None:
        if STOP.signum is not None:
            raise KeyboardInterrupt  # asked twice: stop at once
        STOP.signum = signum
        log.warning("signal %d: stopping after this epoch (send it again to stop now)", signum)

    previous = {sig: signal.signal(sig, request) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        STOP.signum = None
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def load_resume(target: str, spec: RunSpec, config: dict[str, Any], job: Job) -> dict[str, Any]:
    """Load the checkpoint named by `resume=` (a file, or an MLflow run id) into the job."""
    path = Path(target).expanduser()
    run_id = None
    if not path.is_file():
        path, run_id = _checkpoint_of_run(target, spec), target
    try:
        state = checkpoint.load(path)
    except Exception as err:  # a truncated or foreign file: say so, never execute it
        raise ConfigError(f"resume: {str(path)!r} is not a readable checkpoint ({err})") from None
    if state["fingerprint"] != fingerprint(config):
        raise ConfigError(
            f"resume: the checkpoint {str(path)!r} was written by a different config; resume "
            "with the same overrides as the original run (resume= aside)"
        )
    if state["epoch"] >= spec.trainer.epochs:
        raise ConfigError(
            f"resume: run {state['run_id']} already trained all {state['epoch']} epochs"
        )
    state["run_id"] = state["run_id"] or run_id  # written before the run id was known
    checkpoint.restore(state, job.trainer, job.generator)
    return state


def _checkpoint_of_run(run_id: str, spec: RunSpec) -> Path:
    """A run's checkpoint: its local file if still there, else the one logged to MLflow."""
    from runner.tracking import Tracker

    tracker = Tracker(spec.tracking)
    try:
        run = tracker.client.get_run(run_id)
    except Exception:
        raise ConfigError(
            f"resume: {run_id!r} is neither a checkpoint file nor an MLflow run id in {tracker.uri}"
        ) from None
    local = Path(run.data.tags.get("runner.checkpoint", ""))
    if local.is_file():
        return local
    try:
        return Path(tracker.client.download_artifacts(run_id, "checkpoints/last.pt"))
    except Exception:
        raise ConfigError(f"resume: run {run_id} has no checkpoint (local or logged)") from None
