"""The tag vocabulary: every MLflow tag the runner writes or reads, named once."""

from __future__ import annotations

import getpass
import os
import socket
import subprocess
import sys

from runner.tracking.naming import command

# On every job's run
OVERRIDES = "runner.overrides"  # the command-line overrides, space-separated
DEVICE = "runner.device"
TORCH = "runner.torch"  # torch's version
MODEL = "runner.model"
DATA = "runner.data"
OPTIM = "runner.optim"
TASK = "runner.task"
OUTPUT_DIR = "runner.output_dir"  # Hydra's job folder
HOST = "runner.host"  # with PID: tells a dead process's stale RUNNING run from a live one
PID = "runner.pid"
FINGERPRINT = "runner.fingerprint"  # fingerprint() of the resolved config
PRIMARY_METRIC = "runner.primary_metric"  # what the sweep report compares
CHECKPOINT = "runner.checkpoint"  # the local checkpoint file
SWEEP = "runner.sweep"  # the sweep folder (on jobs and on the sweep's parent run)
SWEEP_JOB = "runner.sweep_job"  # Hydra's job number within the sweep
STACKED = "runner.stacked"  # trained stacked with this many members (hydra/launcher=stacked)
ERROR = "error"  # a failed run's error message
# What `resume=` changed in a continued run ("trainer.epochs 20 -> 40"); its params keep the
# first values (MLflow's params are immutable), its config.yaml and fingerprint are the new.
CONTINUED = "runner.continued"
# Seconds a continued run spent ended (from each interruption to the resume that went on):
# not part of its wall time in the sweep report.
PAUSED = "runner.paused_s"
INIT_FROM = "runner.init_from"  # the run id or models:/ URI whose weights a run started from
EVALUATES = "runner.evaluates"  # on a `runner.evaluate` run: the run whose weights it evaluated
EVAL_SPLIT = "runner.eval_split"  # ... and the rows it evaluated (test, val, train or all)
KEPT_EPOCH = "runner.kept_epoch"  # the epoch whose weights a keep=best run ended with
STOPPED_EARLY = "runner.stopped_early"  # the epoch trainer.early_stop stopped the run after
STOPPED_BY = "runner.stopped_by"  # what last stopped a run before its end (a Slurm time limit)
TIME_TRAIN = "runner.time_train_s"  # the epochs alone, in seconds
TIME_LOGGING = "runner.time_logging_s"  # what training waited for MLflow, in seconds
# On a sweep's parent run
IS_SWEEP = "runner.is_sweep"
SWEEP_FINGERPRINT = "runner.sweep_fingerprint"
BEST_RUN = "runner.best_run"  # the job with the best final primary metric
REUSED_PREFIX = "runner.reused."  # + fingerprint: a FINISHED run a resumed sweep reused
REUSED_AS_PREFIX = "runner.reused_as."  # + fingerprint: the sweep's overrides for that job
# On a run a sweep reused instead of training its job again
REUSED_BY_PREFIX = "runner.reused_by."  # + the sweep's parent run id: the job's overrides
# MLflow's own
PARENT_RUN_ID = "mlflow.parentRunId"
GIT_COMMIT = "mlflow.source.git.commit"
NOTE = "mlflow.note.content"  # the run's description (Markdown) on its page
SOURCE_NAME = "mlflow.source.name"  # the UI's Source column: the command
SOURCE_TYPE = "mlflow.source.type"
USER = "mlflow.user"
DATASET_CONTEXT = "mlflow.data.context"  # on a logged dataset: training


def origin_tags(
    overrides: list[str], output_dir: str, cwd: str, flags: list[str] | None = None
) -> dict[str, str]:
    """Where a run came from: overrides (and `flags` such as --config-dir), job folder,
    host and process, git commit."""
    tags = {
        OVERRIDES: " ".join(overrides) or "(none)",
        SOURCE_NAME: command(overrides, flags or []),
        SOURCE_TYPE: "LOCAL",
        USER: getpass.getuser(),
        OUTPUT_DIR: output_dir,
        HOST: socket.gethostname(),
        PID: str(os.getpid()),
    }
    if "torch" in sys.modules:  # a job's process; never imported just for this
        # A plain str: torch's TorchVersion would make the companion import torch to unpickle it.
        tags[TORCH] = str(sys.modules["torch"].__version__)
    commit = git_commit(cwd)
    if commit:
        tags[GIT_COMMIT] = commit
    return tags


def git_commit(directory: str) -> str | None:
    """The checked-out commit of the repository holding `directory`, if any."""
    try:
        out = subprocess.run(
            ["git", "-C", directory, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None
