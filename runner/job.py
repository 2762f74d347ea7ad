"""One job as a recipe, read top-down: `run_job` → `check` → `setup` → `train`.

Data flows one way: config → validated spec (`check`) → torch objects (`setup`) → the
plain loop (`train`, inside a tracked MLflow run) → metrics → tracker. The run always ends
with a final status. `runner.main` imports this module only inside a job, so a sweep's
launching process never pays for torch.
"""

from __future__ import annotations

import json
import logging
import shlex
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from omegaconf import DictConfig, OmegaConf

from runner import builders, renamed_in
from runner.components.datasets import DataSplits
from runner.components.datasets.tabular import TabularPredictor
from runner.config.launch import Launch
from runner.config.spec import RunSpec, validate
from runner.errors import ConfigError, RunError, StoreError, did_you_mean
from runner.loop import TrainingParts, evaluate, fit
from runner.tracking import (
    Tracker,
    check_server,
    make_tracker,
    naming,
    run_page,
    store_location,
    sweep_record,
    tags,
)
from runner.tracking.dataset_input import dataset_input
from runner.tracking.fingerprint import fingerprint, fingerprinted
from runner.tracking.init_from import initial_weights
from runner.tracking.model_registry import register
from runner.tracking.params import flatten
from runner.tracking.pictures import picture_data
from runner.tracking.resume import load_resume
from runner.tracking.summary import model_summary, trainable_parameters
from runner.training import checkpoint, device, signals, sweep_signals
from runner.training.early_stopping import Monitor
from runner.training.metrics import VALIDATION_METRICS, primary_metric
from runner.training.progress import EpochProgress, metric_text
from runner.training.seeding import seed_everything
from runner.training.signals import STOP, Interrupted, stop_on_signals

log = logging.getLogger("runner")


@dataclass
class Job:
    """Everything `setup` built for one run."""

    spec: RunSpec
    config: dict[str, Any]  # the resolved config, logged as the run's params
    fingerprint: str
    data: DataSplits
    parts: TrainingParts  # model, loss, optimizer, ...: what `fit` trains
    generator: torch.Generator  # batch order
    trainable_params: int  # how many parameters the model trains
    summary: str  # the model summary table
    resume: dict[str, Any] | None = None  # a loaded checkpoint to continue from
    best_state: dict[str, torch.Tensor] | None = None  # keep=best: the best epoch's weights
    kept_epoch: int | None = None  # keep=best: the epoch whose weights the run ended with


def run_job(cfg: DictConfig, launch: Launch, companion: Any = None) -> float | None:
    """One validated, tracked training run; returns its final validation metric.

    A single run raises its failures (the entry point prints known ones in one line). In a
    sweep they are logged, recorded on the job's run, and the other jobs go on; an
    interrupted sweep starts no new job.
    `companion`: a started MLflow companion process to log through (single runs).
    """
    if not launch.multirun:
        return _run(cfg, launch, companion)
    with sweep_signals.job_signals():
        if sweep_signals.interrupted(launch):
            return sweep_signals.job_not_started(launch)
        try:
            return _run(cfg, launch, None)
        except KeyboardInterrupt as err:
            return sweep_signals.job_interrupted(launch, signals.interruption(err))


def _run(cfg: DictConfig, launch: Launch, companion: Any) -> float | None:
    try:
        config, spec = check(cfg)
        if not launch.multirun:  # (a sweep's start checked it already)
            check_server(store_location(spec.tracking)[0])  # before any data is loaded
        done = already_finished(config, spec, launch)
        if done is not None:
            return done.data.metrics.get(primary_metric(spec.task, spec.metric))
        spec = sweep_record.continue_interrupted(spec, launch, fingerprint(config))
        job = setup(config, spec, launch.parallel)
    except ConfigError as err:
        if not launch.multirun:
            raise
        log.error("job %s failed: config error: %s", launch.job_num, err)
        sweep_record.record_failed_setup(cfg, launch, err)
        return None
    log.info("model %s on %s\n%s", spec.model.name, job.parts.device, job.summary)
    tracker = make_tracker(spec.tracking, companion)
    try:
        with stop_on_signals():
            return train(job, launch, tracker)
    except KeyboardInterrupt as err:  # the run has ended (KILLED, unless it had finished)
        stop = signals.interruption(err)
        stop.run_id, stop.run_status = tracker.run_id, tracker.final_status
        stop.handed_off = tracker.handed_off
        if stop.run_id and stop.run_status != "FINISHED" and not launch.multirun:
            stop.command = continue_command(launch, stop.run_id)  # (a sweep gives its own)
        raise stop from None
    except Exception as err:  # the run has ended FAILED already, its error recorded
        if not launch.multirun:
            if isinstance(err, RunError):
                err.run_id, err.run_status = tracker.run_id, tracker.final_status
            if isinstance(err, StoreError):
                err.then = kept_training(job, launch, tracker.run_id)
            raise
        log.error("job %s failed: %s: %s", launch.job_num, type(err).__name__, err)
        return None


def continue_command(launch: Launch, run_id: str) -> str:
    """The command that continues this run from its checkpoint (its config folders too)."""
    kept = [o for o in launch.overrides if not o.startswith(("resume=", "+resume="))]
    return naming.command([*kept, f"resume={run_id}"], config_dir_flags(launch))


def kept_training(job: Job, launch: Launch, run_id: str | None) -> str | None:
    """For a run the store failed: where its training is kept, and the command that records
    it (the run, or a new one) once the store is free; None without a checkpoint."""
    path = launch.checkpoint_path
    if not path.is_file():
        return None
    saved, epochs = checkpoint.load(path)["epoch"], job.spec.trainer.epochs
    where = "all" if saved >= epochs else f"the first {saved} of"
    rest = "" if saved >= epochs else " and train the rest"
    # The file, not the run id: it also works once a damaged store has been moved aside.
    command = continue_command(launch, shown_path(path))
    return (
        f"{where} {epochs} epochs are kept in {shown_path(path)}; once the store works again, "
        f"record them{rest} with: {command}"
    )


def shown_path(path: Path) -> str:
    """A path as a command line shows it: relative to the working folder when under it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def config_dir_flags(launch: Launch) -> list[str]:
    """The `--config-dir` flags the command was given (its user config folders)."""
    return [f"--config-dir={shlex.quote(folder)}" for folder in launch.config_dirs]


def already_finished(config: dict[str, Any], spec: RunSpec, launch: Launch) -> Any:
    """In a re-run sweep: the FINISHED run of this exact config (logged as skipped), else None."""
    if not (launch.sweep and spec.sweep.skip_finished):
        return None
    done = sweep_record.finished_run(
        spec.tracking, launch.sweep, fingerprint(config), launch.overrides
    )
    if done is not None:
        made_by = done.data.tags.get(tags.SOURCE_NAME)
        log.info(
            "skipped job %s (%s): this exact config already FINISHED as run %s (%s)%s; "
            "sweep.skip_finished=false reruns it",
            launch.job_num, " ".join(launch.overrides) or "no overrides", done.info.run_id,
            done.info.run_name, f", made by `{made_by}`" if made_by else "",
        )  # fmt: skip
    return done


def check(cfg: DictConfig) -> tuple[dict[str, Any], RunSpec]:
    """Resolve the config and validate it (registering built-ins and plugins first)."""
    config = OmegaConf.to_container(cfg, resolve=True)
    return config, validate(config)


def setup(config: dict[str, Any], spec: RunSpec, parallel: int = 1) -> Job:
    """Load data and build every torch object (and the resume state, if asked); raises
    ConfigError on bad input, before any run starts."""
    device.set_threads(spec.trainer.threads, parallel)
    generator = seed_everything(spec.seed, spec.trainer.deterministic)
    data = builders.build_data(spec.data, config["data"].get("num_outputs"))
    model, infos = builders.build_model(spec.model, data.input_shape)
    if spec.model.init_from and not spec.resume:  # (a resumed run's checkpoint has its own)
        weights = initial_weights(spec.model.init_from, spec.tracking)
        builders.load_initial_weights(model, spec.model, weights)
    builders.check_output(infos, data.task, data.num_outputs)
    trainable_params = trainable_parameters(infos)
    device.set_threads(spec.trainer.threads, parallel, trainable_params)
    run_device = device.resolve_device(spec.device)
    parts = builders.build_training_parts(spec, model, data, run_device)
    parts.monitor = monitor(spec, data)
    fp = fingerprint(config)
    resume = load_resume(spec, config, parts, generator) if spec.resume else None
    summary = model_summary(infos, data.input_shape, str(run_device))
    return Job(
        spec=spec, config=config, fingerprint=fp, data=data, parts=parts,
        generator=generator, trainable_params=trainable_params, summary=summary, resume=resume,
        best_state=resume.get("best_model") if resume else None,
    )  # fmt: skip


def monitor(spec: RunSpec, data: DataSplits) -> Monitor | None:
    """What `trainer.early_stop` and `trainer.keep=best` watch, or None: a validation metric
    the run logs (a ConfigError, before training, when there is none to watch)."""
    stop, keep, validates = spec.trainer.early_stop, spec.trainer.keep, len(data.x_val) > 0
    keep_best = keep == "best" or (keep is None and validates)  # (null: best where it can)
    if stop.patience is None and not keep_best:
        return None
    key = "trainer.early_stop.patience" if stop.patience is not None else "trainer.keep"
    if not validates:
        setting = "trainer.early_stop.patience" if key.endswith("patience") else "trainer.keep=best"
        raise ConfigError(
            f"{key}: watches a validation metric, and data {spec.data.name!r} has no "
            f"validation rows (hold some out with data.val_size, or drop {setting})"
        )
    primary = primary_metric(data.task, spec.metric)
    metric = stop.metric or primary
    logged = ["val_loss", *(f"val_{m}" for m in VALIDATION_METRICS[data.task])]
    if primary not in logged:
        logged.append(primary)
    if metric not in logged:
        raise ConfigError(
            f"trainer.early_stop.metric: {metric!r} is not a metric this run validates."
            f"{did_you_mean(metric, logged)} Allowed: {', '.join(logged)}"
        )
    if metric.endswith("_r2") and len(data.x_val) < 2:
        raise ConfigError(
            f"{'trainer.early_stop.metric' if stop.metric else 'metric'}: {metric!r} is "
            f"undefined on the {len(data.x_val)} validation row of data {spec.data.name!r} (R² "
            "needs targets that vary): watch val_rmse, or hold out more rows with data.val_size"
        )
    return Monitor(metric, stop.patience, stop.min_delta, keep_best=keep_best)


def train(job: Job, launch: Launch, tracker: Tracker) -> float | None:
    """Run the loop inside an MLflow run and log everything; returns the final val metric."""
    spec, resume = job.spec, job.resume
    resumed_run = resume and resume["run_id"]
    if device.is_kernel_bound(job.trainable_params):
        tracker.wait_imports()  # and then yield: the companion would slow every kernel
    name, labels = launch_name(launch, spec), run_tags(job, launch)
    with tracker.run(name, labels, launch.parent_run_id, resumed_run, launch.started_at):
        if not resumed_run:  # a new run (also for a checkpoint no store took: it records it)
            log_inputs(job, launch, tracker)
        elif resume["continued"]:
            log_continued(job, launch, tracker)
        if resumed_run and resume.get("ended_at"):
            paused = resume["paused_before"] + max(0.0, launch.started_at - resume["ended_at"])
            tracker.set_tags({tags.PAUSED: f"{paused:.1f}"})
        left = epochs_left(job)
        if resumed_run and left:
            tracker.model_outdated()
        if resume is not None and left:  # the same run goes on: same params
            log.info("resuming at epoch %d", resume["epoch"] + 1)
        elif not left:  # stopped while writing its end (or the store failed): only that is left
            log.info("every epoch is trained: writing the run's end (test split, plots, model)")
        epoch_end = EpochEnd(job, tracker, launch)
        started = time.perf_counter()
        if left:
            log.info("training starts")
        try:
            history = fit(
                job.parts, job.data, job.generator, epoch_end,
                start_epoch=resume["epoch"] + 1 if resume else 1, history=epoch_end.seen[:],
            )  # fmt: skip
        except KeyboardInterrupt as err:
            raise epoch_end.stopped(err) from None
        except BaseException:
            epoch_end.keep_last_checkpoint()  # the last good state goes with the failed run
            raise
        finally:
            epoch_end.progress.close()
        train_seconds = time.perf_counter() - started - epoch_end.logging_seconds
        # The run exists by now (its end needs it): the last checkpoint names it, so that a
        # resume from the file continues this run.
        epoch_end.save_checkpoint(len(history), wait_for_run=True)
        epoch_end.keep_last_checkpoint()
        # From here a signal stops the run at once, KILLED (as one that came after the last
        # epoch's check): `resume=` then writes just its end.
        signals.set_mode("interrupt")
        try:
            if STOP.signum is not None:
                raise Interrupted(STOP.signum)
            final = log_end(job, history, tracker, epoch_end, train_seconds)
            tracker.settle()  # the plots and the model are stored
        except KeyboardInterrupt as err:
            stop = signals.interruption(err)
            stop.epoch = stop.checkpoint_epoch = spec.trainer.epochs
            stop.writing_end = True
            raise stop from None
    signals.note_run(tracker.run_id, tracker.final_status)
    if spec.sweep.register and not launch.multirun:  # (a sweep registers its best job)
        register_run(job, tracker, final)
    return announce_end(job, launch, tracker, final)


def register_run(job: Job, tracker: Tracker, final: dict[str, float]) -> None:
    """`sweep.register` on a single run: its model as the registered model's new version."""
    metric = primary_metric(job.data.task, job.spec.metric)
    value = final.get(metric)
    shown = "?" if value is None else f"{value:.6g}"
    description = f"Run {tracker.run_id} ({job.spec.model.name}), final {metric} = {shown}."
    register(tracker.uri, str(tracker.run_id), str(job.spec.sweep.register), description)


def epochs_left(job: Job) -> bool:
    """Whether the run has epochs to train (a resumed one may have stopped, or stopped early)."""
    resume = job.resume
    if resume is None:
        return True
    return resume["epoch"] < job.spec.trainer.epochs and not checkpoint.stopped_early(resume)


def log_end(
    job: Job,
    history: list[dict[str, float]],
    tracker: Tracker,
    epoch_end: EpochEnd,
    train_seconds: float,
) -> dict[str, float]:
    """What a run logs once every epoch is trained and checkpointed: its times, the test
    split, the plots and the model; returns its final metrics."""
    epoch_end.flush()
    if epoch_end.trained:  # (none when a run stopped while writing its end is continued)
        log.info(
            "training took %.2f s, and MLflow logging %.3f s more (%.1f%%)",
            train_seconds, epoch_end.logging_seconds,
            100 * epoch_end.logging_seconds / (train_seconds + epoch_end.logging_seconds),
        )  # fmt: skip
        tracker.set_tags(
            {
                tags.TIME_TRAIN: f"{train_seconds:.3f}",
                tags.TIME_LOGGING: f"{epoch_end.logging_seconds:.3f}",
            }
        )
    return log_final(job, history, tracker)


def launch_name(launch: Launch, spec: RunSpec) -> str:
    """The run's short name (runner.tracking.naming): its swept values in a sweep."""
    return naming.run_name(launch.overrides, launch.swept, spec.model.name, spec.optim.name)


def log_final(job: Job, history: list[dict[str, float]], tracker: Tracker) -> dict[str, float]:
    """The kept epoch's metrics (the last, or with keep=best the best) with the test split's,
    then the plots and the model, all of the kept weights."""
    kept = keep_weights(job, history, tracker)
    final = history[kept - 1] | evaluate_test(job, tracker)
    tracker.flush()
    log_outputs(job, history, tracker, kept)
    return final


def keep_weights(job: Job, history: list[dict[str, float]], tracker: Tracker) -> int:
    """Put the kept weights in the model and record the watched metric's best epoch (and
    an early stop); returns the kept epoch."""
    watched = job.parts.monitor
    if watched is not None and watched.best_epoch is None and history:
        log.warning(
            "%s had no value in any epoch (not computed, or NaN): no epoch was judged best, "
            "and the run keeps its last weights", watched.metric,
        )  # fmt: skip
    if watched is None or watched.best_epoch is None:
        return len(history)
    step = len(history)
    tracker.log_metrics(
        {"best_epoch": float(watched.best_epoch), f"best_{watched.metric}": watched.best},
        step=step,
    )
    if watched.stopped:
        tracker.set_tags({tags.STOPPED_EARLY: str(watched.stopped_epoch)})
        log.info(
            "stopped early after epoch %d: %s last improved at epoch %d (%s)",
            watched.stopped_epoch, watched.metric, watched.best_epoch,
            metric_text(watched.metric, watched.best),
        )  # fmt: skip
    if not watched.keep_best or job.best_state is None:
        return len(history)
    tracker.set_tags({tags.KEPT_EPOCH: str(watched.best_epoch)})
    job.kept_epoch = watched.best_epoch
    job.parts.model.load_state_dict(job.best_state)
    log.info("keeping epoch %d's weights (best %s)", watched.best_epoch, watched.metric)
    return watched.best_epoch


def announce_end(job: Job, launch: Launch, tracker: Tracker, final: dict[str, float]) -> Any:
    """The closing line, once the run has ended; returns the final validation metric."""
    log.info("final: %s", closing_line(final, job, time.time() - launch.started_at, tracker))
    return final.get(primary_metric(job.data.task, job.spec.metric))


SHOWN_LAST = ("val_", "test_", "train_")  # the closing line's order


def closing_line(final: dict[str, float], job: Job, seconds: float, tracker: Tracker) -> str:
    """The run's end in one line: its final metrics, its time, and where to see it."""
    shown = [
        f"{k}={metric_text(k, v)}"
        for prefix in SHOWN_LAST
        for k, v in final.items()
        if k.startswith(prefix) and k != "train_total_loss"
    ]
    where = run_page(tracker.uri, tracker.experiment_id, tracker.run_id)
    kept = ""
    if job.kept_epoch is not None and job.parts.monitor is not None:
        kept = f", epoch {job.kept_epoch}'s weights (best {job.parts.monitor.metric})"
    return f"{' '.join(shown)} in {seconds:.1f} s{kept}; see {where}"


def run_tags(job: Job, launch: Launch) -> dict[str, str]:
    """Where the run came from and what it trains, as MLflow tags."""
    spec = job.spec
    run = tags.origin_tags(
        launch.overrides, str(launch.output_dir), launch.cwd, config_dir_flags(launch)
    )
    run |= {
        tags.DEVICE: str(job.parts.device),
        tags.MODEL: spec.model.name,
        tags.DATA: spec.data.name,
        tags.OPTIM: spec.optim.name,
        tags.TASK: job.data.task,
        tags.FINGERPRINT: job.fingerprint,
        tags.PRIMARY_METRIC: primary_metric(job.data.task, spec.metric),
        tags.NOTE: description(job, launch),
    }
    if spec.model.init_from:
        run[tags.INIT_FROM] = spec.model.init_from
    if launch.multirun:
        run |= {tags.SWEEP: str(launch.sweep_dir), tags.SWEEP_JOB: str(launch.job_num)}
    return run


def description(job: Job, launch: Launch) -> str:
    """The run's page text: what trained on what, and the command to run it again."""
    spec, data = job.spec, job.data
    sizes = {"train": len(data.x_train), "validation": len(data.x_val)}
    sizes["test"] = 0 if data.x_test is None else len(data.x_test)
    return naming.describe(
        model=spec.model.name, params=job.trainable_params, data=spec.data.name, sizes=sizes,
        optim=spec.optim.name, optim_args=spec.optim.args, epochs=spec.trainer.epochs,
        batch_size=spec.trainer.batch_size, seed=spec.seed,
        metric=primary_metric(data.task, spec.metric), overrides=launch.overrides,
        sweep_parent=launch.parent_run_id,
    )  # fmt: skip


def log_inputs(job: Job, launch: Launch, tracker: Tracker) -> None:
    """What a new run starts with: params, resolved config, model summary, Hydra's folder."""
    tracker.end_stale_runs(job.fingerprint, socket.gethostname())
    tracker.log_params({**flatten(job.config), "trainable_params": str(job.trainable_params)})
    tracker.log_dataset(dataset_input(job.spec.data, job.data))
    tracker.log_text(config_yaml(job.config), "config.yaml")
    tracker.log_text(job.summary, "model_summary.txt")
    if job.data.encoder is not None:  # every statistic fitted on the training rows
        tracker.log_text(json.dumps(job.data.encoder.state(), indent=1), "data/encoder.json")
    tracker.log_dir(launch.output_dir / ".hydra", "hydra")


def log_continued(job: Job, launch: Launch, tracker: Tracker) -> None:
    """A run continued with more epochs (or other end settings): what changed, and the
    config it now follows (tag, fingerprint, page text and config.yaml)."""
    changes = job.resume["continued"] if job.resume else []
    log.info("continuing run with %s", ", ".join(changes))
    tracker.set_tags(
        {
            tags.CONTINUED: "; ".join(changes),
            tags.FINGERPRINT: job.fingerprint,
            tags.NOTE: description(job, launch),
        }
    )
    tracker.log_text(config_yaml(job.config), "config.yaml")


def config_yaml(config: dict[str, Any]) -> str:
    """The resolved config as YAML, as OmegaConf writes it (libyaml's dumper where there is
    one: a sweep writes one per member)."""
    dumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)
    return yaml.dump(config, Dumper=dumper, sort_keys=False, allow_unicode=True)


class EpochEnd:
    """What ends each epoch: log its metrics, show progress, checkpoint; and, where a signal
    asked to stop, end the run there (raises Interrupted)."""

    def __init__(self, job: Job, tracker: Tracker, launch: Launch) -> None:
        self.job, self.tracker, self.path = job, tracker, launch.checkpoint_path
        self.sweep_dir = launch.sweep_dir  # a sweep's interruption is marked there
        spec = job.spec
        left = epochs_left(job)
        self.progress = EpochProgress(
            spec.trainer.epochs, spec.trainer.progress if left else "none",
            f"{spec.model.name}/{spec.optim.name}",
            done=job.resume["epoch"] if job.resume else 0,
        )  # fmt: skip
        self.seen = list(job.resume["history"]) if job.resume else []
        self.saved_epoch = job.resume["epoch"] if job.resume else None  # last checkpoint
        self.stopping: int | None = None  # the epoch a signal stops the run after
        self.logged = self._replay_history()
        self.logging_seconds = 0.0
        tracker.set_tags({tags.CHECKPOINT: str(self.path)})

    def _replay_history(self) -> set[int]:
        """On resume: epochs MLflow holds are not logged twice; those a killed process had
        not flushed come back from the checkpoint's history."""
        if self.job.resume is None:
            return set()
        logged = self.tracker.logged_steps("train_loss")
        for epoch, row in enumerate(self.seen, start=1):
            if epoch not in logged:
                self.tracker.log_metrics(row, step=epoch)
                logged.add(epoch)
        return logged

    @property
    def trained(self) -> bool:
        """Whether this process trained any epoch (a resumed run may have none left)."""
        return len(self.seen) > (self.job.resume["epoch"] if self.job.resume else 0)

    def __call__(self, epoch: int, metrics: dict[str, float]) -> None:
        started = time.perf_counter()
        try:
            if epoch not in self.logged:
                self.tracker.log_metrics(metrics, step=epoch)
            self.tracker.check_errors()  # a failed artifact or store write stops the run now
        except StoreError:  # this epoch is trained: its checkpoint keeps it for resume=
            self.seen.append(metrics)
            self.save_checkpoint(epoch, flush=False)
            raise
        self.logging_seconds += time.perf_counter() - started
        self.progress(epoch, metrics)
        self.seen.append(metrics)
        self.keep_if_best(epoch)
        every = self.job.spec.trainer.checkpoint_every
        stop = STOP.signum  # read once: a signal may land at any line
        if stop is None and self.sweep_dir is not None:  # the sweep was stopped elsewhere
            stop = sweep_signals.sweep_interrupted(self.sweep_dir)
        if stop is not None:
            self.stopping = epoch
        if (every and epoch % every == 0) or stop is not None:
            self.save_checkpoint(epoch, wait_for_run=stop is not None)
        if stop is not None:
            raise Interrupted(stop, epoch)

    def keep_if_best(self, epoch: int) -> None:
        """keep=best: this epoch's weights, if the watched metric is at its best (kept in
        memory, and in checkpoints/best.pt beside the last checkpoint)."""
        job, watched = self.job, self.job.parts.monitor
        if watched is None or not watched.keep_best or watched.best_epoch != epoch:
            return
        job.best_state = {k: v.detach().clone() for k, v in job.parts.model.state_dict().items()}
        checkpoint.save_weights(job.best_state, epoch, self.path.with_name("best.pt"))

    def stopped(self, err: KeyboardInterrupt) -> Interrupted:
        """What a signal that stopped training stopped: the epochs and the checkpoint (kept
        with the run)."""
        stop = signals.interruption(err)
        if stop.epoch is None:  # stopped at once: within an epoch, or saving the last one
            stop.epoch = self.stopping or len(self.seen)
            stop.at_once = self.stopping is None
        stop.checkpoint_epoch = self.saved_epoch
        self.keep_last_checkpoint()
        return stop

    def save_checkpoint(self, epoch: int, wait_for_run: bool = False, flush: bool = True) -> None:
        """Write the checkpoint; MLflow is never behind it (`flush`: not for a store that
        failed). Periodic saves never wait for the companion; the last before a stop does,
        so resuming from the file finds its run."""
        try:
            run_id = self.tracker.wait_run_id() if wait_for_run else self.tracker.run_id
        except StoreError:  # no run to name: the training is kept all the same
            self.save_checkpoint(epoch, flush=False)
            raise
        job = self.job
        state = checkpoint.capture(
            job.parts, job.generator, epoch, self.seen, run_id, job.fingerprint,
            fingerprinted(job.config), job.best_state,
        )  # fmt: skip
        checkpoint.save(state, self.path)
        self.saved_epoch = epoch
        if flush:
            self.tracker.flush()

    def keep_last_checkpoint(self) -> None:
        """Log the checkpoint file with the run, if one was written."""
        if self.path.exists():
            self.tracker.log_artifact(self.path, "checkpoints")

    def flush(self) -> None:
        """Write every metric sent so far; the wait counts as logging time."""
        started = time.perf_counter()
        self.tracker.flush()
        self.logging_seconds += time.perf_counter() - started


def evaluate_test(job: Job, tracker: Tracker) -> dict[str, float]:
    """Evaluate the test split once, if the data has one, and log it as test_*."""
    t, data = job.parts, job.data
    if data.x_test is None:
        return {}
    x, y = data.x_test.to(t.device), data.y_test.to(t.device)
    test = {f"test_{k}": v for k, v in evaluate(t.model, t.loss_fn, t.metrics, x, y)[0].items()}
    tracker.log_metrics(test, step=job.spec.trainer.epochs)
    return test


def log_outputs(
    job: Job, history: list[dict[str, float]], tracker: Tracker, kept: int | None = None
) -> None:
    """The plots (drawn by the tracker from plain arrays) and the trained model (`kept`: the
    epoch whose weights the model holds, marked on the learning curves)."""
    t, data = job.parts, job.data
    if job.spec.trainer.plots:
        spec = job.spec
        pictures = picture_data(
            t, data, history, model_name=spec.model.name, loss_name=spec.model.loss.type,
            target_name=str(spec.data.args.get("target", "")), kept_epoch=kept,
        )  # fmt: skip
        tracker.log_pictures(pictures)
    if not job.spec.trainer.log_model:
        return
    model = t.model.cpu().eval()
    if data.encoder is not None:  # a table: the logged model takes raw rows
        m = t.metrics
        predictor = TabularPredictor(
            data.encoder, model, data.task, m.output_kind, m.target_mean, m.target_std,
            data.class_names,
        )  # fmt: skip
        tracker.log_predictor(predictor, data.raw_example)
    else:
        example = data.x_val[:5] if len(data.x_val) else data.x_train[:5]
        tracker.log_model(model, example.numpy())


__getattr__ = renamed_in(__name__)  # names this module had before (runner.RENAMED)
